"""The OPA image `make images` builds runs on the node as the Deployment runs it:
non-root, no capabilities, RuntimeDefault seccomp, read-only root.

The Deployment sets runAsUser and runAsGroup although the image says
65532:65532: the kubelet hands the runtime the image's uid but not its gid,
so a pod without runAsGroup runs with gid 0 (the second test shows it).
"""

from __future__ import annotations

import secrets

import pytest
from jobpods import run_pod
from realnode import IMAGES, Cluster

pytestmark = pytest.mark.root


def _opa_pod(cluster: Cluster, pod_security: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"opa-{secrets.token_hex(4)}",
            "namespace": cluster.api.jobs_namespace,
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
                **pod_security,
            },
            "containers": [
                {
                    "name": "job",
                    "image": IMAGES["opa"],
                    "imagePullPolicy": "Never",
                    "args": ["eval", "--format", "raw", "1 + 1"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }


def test_opa_image_evaluates_a_query(cluster: Cluster) -> None:
    # As deploy/k8s/server.yaml runs the sidecar.
    ran = run_pod(cluster, _opa_pod(cluster, {"runAsUser": 65532, "runAsGroup": 65532}))
    assert (ran.phase, ran.exit_code) == ("Succeeded", 0), ran.output
    assert ran.output.strip() == "2"
    (cs,) = ran.status.container_statuses
    assert (cs.user.linux.uid, cs.user.linux.gid) == (65532, 65532)


def test_without_run_as_group_the_image_gid_is_lost(cluster: Cluster) -> None:
    ran = run_pod(cluster, _opa_pod(cluster, {}))
    assert ran.phase == "Succeeded", ran.output
    (cs,) = ran.status.container_statuses
    assert (cs.user.linux.uid, cs.user.linux.gid) == (65532, 0)
