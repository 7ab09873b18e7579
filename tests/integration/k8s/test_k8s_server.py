"""The server with the Kubernetes submitter, two replicas, one real API server.

Real OPA (signed bundle), real kube-apiserver (Pod Security "restricted"),
the launcher's RBAC identity. Two server processes share the key ring but
not their replay caches: the same submit token sent to both creates exactly
one pod, because the pod name derives from the token id and the API server
refuses the second (409 AlreadyExists -> our 409).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from admission_stack import forge_token, job_body, needs_root, stack_fixture
from kube import JOBS_NAMESPACE, KubeAPI
from support.opa import OpaHandle

from tokensvc.cluster.devstack import ADMIN, USER_A, USER_B, Stack, User

pytestmark = [needs_root, pytest.mark.usefixtures("deployed_rbac")]


@pytest.fixture(scope="module")
def stack(opa: OpaHandle, kube_api: KubeAPI) -> Iterator[Stack]:
    settings = {
        "submitter": "kubernetes",
        "kubeconfig": str(kube_api.kubeconfig("launcher")),
        "namespace": JOBS_NAMESPACE,
    }
    yield from stack_fixture(external_opa=opa.url, server_settings=settings)


BODY = job_body("ml-team", ("/nfs/projects/ml/data", "ro"))


def post(url: str, token: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/jobs", json=BODY, headers={"Authorization": f"Bearer {token}"}, timeout=15
    )


def submit_token(stack: Stack, user: User = USER_A) -> str:
    return forge_token(stack, user, body=BODY)


def test_submit_creates_the_pod_in_the_cluster(stack: Stack, kube_api: KubeAPI) -> None:
    resp = post(stack.server_url, submit_token(stack))
    assert resp.status_code == 201, resp.text
    name = resp.json()["job"]["id"]
    pod = kube_api.core().read_namespaced_pod(name, JOBS_NAMESPACE)
    ctx = pod.spec.security_context
    assert (ctx.run_as_user, ctx.run_as_group, ctx.supplemental_groups) == (1002, 2001, [2001])
    assert ctx.supplemental_groups_policy == "Strict"
    assert pod.metadata.labels["tokensvc.io/owner-uid"] == "1002"
    assert pod.metadata.annotations["tokensvc.io/decision-id"] == resp.json()["decision_id"]
    mount = pod.spec.containers[0].volume_mounts[0]
    assert (mount.mount_path, mount.sub_path, mount.read_only) == (
        "/nfs/projects/ml/data",
        "ml/data",
        True,
    )


def test_replay_across_replicas_creates_one_pod(stack: Stack, kube_api: KubeAPI) -> None:
    second = stack.start_replica("server-2")
    try:
        token = submit_token(stack)
        first = post(stack.server_url, token)
        assert first.status_code == 201
        name = first.json()["job"]["id"]
        # A replica that never saw this token: the same request gets the same job ...
        again = post(second, token)
        assert (again.status_code, again.json()["job"]["id"]) == (200, name)
        pods = kube_api.core().list_namespaced_pod(
            JOBS_NAMESPACE, label_selector=f"tokensvc.io/token-id={name.removeprefix('wsc-job-')}"
        )
        assert len(pods.items) == 1
        # ... and once the job is deleted, the token is refused on both replicas.
        kube_api.core().delete_namespaced_pod(name, JOBS_NAMESPACE, grace_period_seconds=0)
        for url in (second, stack.server_url):
            replay = post(url, token)
            assert (replay.status_code, replay.json()["code"]) == (409, "replayed")
    finally:
        stack.stop_process("server-2")


def test_job_actions_read_the_owner_from_the_cluster(stack: Stack, kube_api: KubeAPI) -> None:
    name = post(stack.server_url, submit_token(stack)).json()["job"]["id"]
    url = f"{stack.server_url}/v1/jobs/{name}"
    denied = requests.delete(
        url, headers={"Authorization": f"Bearer {forge_token(stack, USER_B)}"}, timeout=15
    )
    assert denied.status_code == 403
    prio = requests.put(
        f"{url}/priority",
        json={"priority": 8},
        headers={"Authorization": f"Bearer {forge_token(stack, ADMIN)}"},
        timeout=15,
    )
    assert prio.status_code == 200, prio.text
    pod = kube_api.core().read_namespaced_pod(name, JOBS_NAMESPACE)
    assert pod.metadata.annotations["tokensvc.io/priority"] == "8"
    gone = requests.delete(
        url, headers={"Authorization": f"Bearer {forge_token(stack, USER_A)}"}, timeout=15
    )
    assert gone.status_code == 200
    listed = requests.get(
        f"{stack.server_url}/v1/jobs",
        headers={"Authorization": f"Bearer {forge_token(stack, ADMIN)}"},
        timeout=15,
    ).json()["jobs"]
    assert name not in [j["id"] for j in listed]
