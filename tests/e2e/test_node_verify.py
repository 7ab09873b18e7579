"""After launch, on the real node: a job running as anyone but its decision is deleted.

The node reports the identity the runtime really gave the container
(``status.containerStatuses[].user.linux``). A pod under ``Merge`` with an
image whose /etc/group adds a group is what a runtime that ignores Strict
would produce: the server's verifier deletes it, audits both identities and
counts it; the same job under Strict is left alone, which also shows the
node passes the check that it reports ``supplementalGroupsPolicy`` support.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from jobpods import delete_pod, launcher_pod
from realnode import IMAGE_EXTRA_GID, IMAGE_USER_UID, IMAGES, JOBS_NAMESPACE, Cluster
from support.reconciler import reconciling_service

from tokensvc.cluster.kube import KubernetesSubmitter

pytestmark = pytest.mark.root

START_TIMEOUT = 120.0


def _reported(cluster: Cluster, name: str) -> Any:
    """Wait until the node reports the started container's identity; that identity."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pod = cluster.core().read_namespaced_pod(name, JOBS_NAMESPACE)
        for status in pod.status.container_statuses or []:
            if status.user is not None and status.user.linux is not None:
                return status.user.linux
        time.sleep(0.2)  # polling the pod's status: there is no event to wait on here
    raise AssertionError(f"{name}: no identity reported within {START_TIMEOUT}s")


def _gone_or_going(cluster: Cluster, name: str) -> bool:
    pods = cluster.core().list_namespaced_pod(JOBS_NAMESPACE).items
    return all(p.metadata.name != name or p.metadata.deletion_timestamp for p in pods)


def test_a_job_the_node_runs_as_someone_else_is_deleted_and_audited(cluster: Cluster) -> None:
    submitter = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(cluster.api.kubeconfig("admin")), timeout=10
    )
    pods = {
        policy: launcher_pod(
            IMAGE_USER_UID,
            IMAGE_USER_UID,
            (30001,),
            "sleep 300",
            image=IMAGES["job-extra-group"],
            policy=policy,
        )
        for policy in ("Merge", "Strict")
    }
    names = {policy: pod["metadata"]["name"] for policy, pod in pods.items()}
    lines: list[dict[str, Any]] = []
    service = reconciling_service(submitter, namespace=JOBS_NAMESPACE, audit=lines.append)
    try:
        for policy, pod in pods.items():
            submitter.create(pod)
            submitter.release(names[policy])
        merged = _reported(cluster, names["Merge"])
        assert IMAGE_EXTRA_GID in merged.supplemental_groups  # the node says so, not the spec
        _reported(cluster, names["Strict"])
        asyncio.run(service.verify_identities())
        assert _gone_or_going(cluster, names["Merge"])
        assert not _gone_or_going(cluster, names["Strict"]), lines
        (line,) = [entry for entry in lines if entry["event"] == "identity_mismatch"]
        assert line["job"] == names["Merge"]
        assert line["expected"]["groups"] == sorted({IMAGE_USER_UID, 30001})
        assert IMAGE_EXTRA_GID in line["reported"]["groups"]
        counted = service.metrics.registry.get_sample_value("tokensvc_identity_mismatches_total")
        assert counted == 1
        registry = service.metrics.registry
        assert registry.get_sample_value("tokensvc_strict_unsupported_jobs_total") == 0
    finally:
        for name in names.values():
            delete_pod(cluster, name, JOBS_NAMESPACE)
        submitter.close()
