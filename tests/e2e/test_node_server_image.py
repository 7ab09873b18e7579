"""The server image `make images` builds runs on the node as the Deployment runs it.

Debian's Python and the wheels pip installed below /usr/local must work
together in an image with nothing else in it: the Deployment's own command
(`tokensvc server`) starts, and the server's whole stack imports, C
extensions included, as 65532:65532 with a read-only root.
"""

from __future__ import annotations

import secrets

import pytest
from jobpods import run_pod
from realnode import IMAGES, Cluster

pytestmark = pytest.mark.root

# The server's third-party stack, C extensions included.
IMPORTS = (
    "import cryptography.hazmat.primitives.ciphers.aead, httptools, kubernetes.client, "
    "prometheus_client, uvicorn, uvloop, yaml, starlette, aiohttp, jsonschema, "
    "tokensvc.cli, tokensvc.cluster.app; "
    "print(yaml.__with_libyaml__, uvloop.new_event_loop().__class__.__name__)"
)


def _server_pod(cluster: Cluster, command: list[str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"server-{secrets.token_hex(4)}",
            "namespace": cluster.api.jobs_namespace,
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "job",
                    "image": IMAGES["server"],
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }


def test_the_deployments_command_runs(cluster: Cluster) -> None:
    ran = run_pod(cluster, _server_pod(cluster, ["tokensvc", "server", "--help"]))
    assert (ran.phase, ran.exit_code) == ("Succeeded", 0), ran.output
    assert ran.output.startswith("usage: tokensvc server")


def test_the_server_stack_imports(cluster: Cluster) -> None:
    ran = run_pod(cluster, _server_pod(cluster, ["python3.11", "-c", IMPORTS]))
    assert (ran.phase, ran.exit_code) == ("Succeeded", 0), ran.output
    assert ran.output.strip() == "True Loop"
