"""The launcher's Kubernetes submitter against the real API server.

Pods built by `build_pod` are admitted under Pod Security "restricted" as the
launcher's identity (RBAC from deploy/k8s); a second create with the same
submit token collides (AlreadyExists -> JobExists, a Replayed) and leaves one
pod, also when two submitters race; and job actions read owner and project
from the pod stored in the API server, not from anything the submitter kept.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kube import JOBS_NAMESPACE, KubeAPI

from tokensvc.cluster.jobs import JobRequest, MountRequest
from tokensvc.cluster.launcher import LABEL_OWNER_UID, LABEL_TOKEN_ID, build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, GrantedMount, RunAs
from tokensvc.cluster.submitters import JobExists, KubernetesSubmitter, SubmitFailed
from tokensvc.core.claims import Claims, new_claims
from tokensvc.core.errors import NotFound, Replayed

pytestmark = pytest.mark.usefixtures("deployed_rbac")

REQUEST = JobRequest(
    project="ml-team",
    image="registry.invalid/train:1",
    command=("python", "train.py"),
    mounts=(
        MountRequest("/nfs/projects/ml", "rw"),
        MountRequest("/nfs/datasets/imagenet", "ro"),
    ),
    systems=2,
)
DECISION = Decision(
    allow=True,
    run_as=RunAs(uid=1002, gid=2001),
    supplemental_groups=(2001, 2004),
    mounts=(
        GrantedMount("projects", "nfs-projects", "ml", read_only=False, path="/nfs/projects/ml"),
        GrantedMount(
            "datasets", "nfs-datasets", "imagenet", read_only=True, path="/nfs/datasets/imagenet"
        ),
    ),
    priority=3,
)


def _claims(uid: int = 1002) -> Claims:
    return new_claims(
        uid=uid, gid=2001, groups=[2001, 2004], user="ada", host="login1", realm="test",
        now=time.time(),
    )  # fmt: skip


def _manifest(claims: Claims | None = None) -> dict[str, Any]:
    pod = build_pod(
        claims or _claims(), DECISION, REQUEST, namespace=JOBS_NAMESPACE, decision_id="dec-1"
    )
    return pod_manifest(pod)


@pytest.fixture
def submitter(kube_api: KubeAPI) -> Iterator[KubernetesSubmitter]:
    sub = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("launcher"))
    )
    yield sub
    sub.close()


def _stored(kube_api: KubeAPI, name: str) -> Any:
    return kube_api.core().read_namespaced_pod(name, JOBS_NAMESPACE)


def _pods_with_token(kube_api: KubeAPI, token_id: str) -> list[str]:
    pods = kube_api.core().list_namespaced_pod(
        JOBS_NAMESPACE, label_selector=f"{LABEL_TOKEN_ID}={token_id}"
    )
    return [p.metadata.name for p in pods.items]


def test_submitted_pod_is_admitted_as_built(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    claims = _claims()
    record = submitter.create(_manifest(claims))
    assert record.name == f"wsc-job-{claims.token_id}"
    pod = _stored(kube_api, record.name)
    ctx = pod.spec.security_context
    assert (ctx.run_as_user, ctx.run_as_group, ctx.run_as_non_root) == (1002, 2001, True)
    assert ctx.supplemental_groups == [2001, 2004]
    assert ctx.supplemental_groups_policy == "Strict"
    assert ctx.seccomp_profile.type == "RuntimeDefault"
    container = pod.spec.containers[0]
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.security_context.allow_privilege_escalation is False
    assert pod.spec.automount_service_account_token is False
    claims_by_volume = {v.name: v.persistent_volume_claim for v in pod.spec.volumes}
    assert {c.claim_name: bool(c.read_only) for c in claims_by_volume.values()} == {
        "nfs-projects": False,
        "nfs-datasets": True,
    }
    mounts = {m.mount_path: (m.sub_path, bool(m.read_only)) for m in container.volume_mounts}
    assert mounts == {
        "/nfs/projects/ml": ("ml", False),
        "/nfs/datasets/imagenet": ("imagenet", True),
    }
    assert pod.metadata.labels[LABEL_OWNER_UID] == "1002"
    assert container.resources.limits == {"tokensvc.io/systems": "2"}


def test_replayed_create_collides_and_leaves_one_pod(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    claims = _claims()
    manifest = _manifest(claims)
    submitter.create(manifest)
    with pytest.raises(JobExists) as caught:
        submitter.create(copy.deepcopy(manifest))
    assert isinstance(caught.value, Replayed)  # reported as a replay (409 / exit 14)
    assert _pods_with_token(kube_api, claims.token_id) == [f"wsc-job-{claims.token_id}"]


def test_racing_submitters_create_one_pod(kube_api: KubeAPI) -> None:
    """Two replicas (two clients, no shared memory) get the same token at once."""
    claims = _claims()
    manifest = _manifest(claims)
    subs = [
        KubernetesSubmitter(
            namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("launcher"))
        )
        for _ in range(2)
    ]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(subs))

    def race(sub: KubernetesSubmitter) -> None:
        barrier.wait()
        try:
            sub.create(copy.deepcopy(manifest))
            outcomes.append("created")
        except JobExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=race, args=(s,)) for s in subs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in subs:
        s.close()
    assert sorted(outcomes) == ["created", "exists"]
    assert len(_pods_with_token(kube_api, claims.token_id)) == 1


def test_job_actions_read_owner_from_stored_pod(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    record = submitter.create(_manifest())
    assert submitter.get(record.name).owner_uid == 1002
    # Someone with API access re-labels the stored pod; the submitter keeps no
    # copy, so every action sees the stored value.
    kube_api.core().patch_namespaced_pod(
        record.name, JOBS_NAMESPACE, {"metadata": {"labels": {LABEL_OWNER_UID: "1005"}}}
    )
    assert submitter.get(record.name).owner_uid == 1005
    assert [j.owner_uid for j in submitter.list() if j.name == record.name] == [1005]
    updated = submitter.set_priority(record.name, 7)
    assert (updated.owner_uid, updated.priority) == (1005, 7)
    assert _stored(kube_api, record.name).metadata.annotations["tokensvc.io/priority"] == "7"
    submitter.delete(record.name)
    with pytest.raises(NotFound):
        submitter.get(record.name)


def test_pods_not_ours_are_invisible_and_untouchable(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    manifest = _manifest()
    del manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    name = manifest["metadata"]["name"]
    kube_api.core().create_namespaced_pod(JOBS_NAMESPACE, manifest)
    with pytest.raises(NotFound):
        submitter.get(name)
    with pytest.raises(NotFound):
        submitter.delete(name)
    assert name not in {j.name for j in submitter.list()}
    assert _stored(kube_api, name).metadata.name == name  # still there


def test_api_server_refuses_a_root_pod_even_if_the_builder_were_wrong(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    """Backstop: a manifest that bypassed build_pod's own refusal still cannot run as root."""
    manifest = _manifest()
    manifest["spec"]["securityContext"]["runAsUser"] = 0
    with pytest.raises(SubmitFailed, match="403"):
        submitter.create(manifest)
    assert _pods_with_token(kube_api, manifest["metadata"]["labels"][LABEL_TOKEN_ID]) == []


def test_identity_without_the_rolebinding_creates_nothing(kube_api: KubeAPI) -> None:
    sub = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("nobody"))
    )
    claims = _claims()
    try:
        with pytest.raises(SubmitFailed, match="403"):
            sub.create(_manifest(claims))
    finally:
        sub.close()
    assert _pods_with_token(kube_api, claims.token_id) == []
