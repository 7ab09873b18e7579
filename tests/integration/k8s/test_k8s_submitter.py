"""KubernetesSubmitter against a real kube-apiserver, as the launcher's RBAC identity.

The pods come from the real build_pod, so this also proves the API server
(schema + Pod Security "restricted" admission) accepts exactly what the
launcher generates, with PVC subPath mounts.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import pytest
from kube import JOBS_NAMESPACE, KubeAPI

from tokensvc.cluster.jobs import JobRequest, MountRequest
from tokensvc.cluster.launcher import build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, GrantedMount, RunAs
from tokensvc.cluster.submitters import JobExists, KubernetesSubmitter, SubmitFailed
from tokensvc.core.errors import NotFound, Replayed

pytestmark = pytest.mark.usefixtures("deployed_rbac")


@dataclasses.dataclass(frozen=True)
class Ident:
    uid: int
    token_id: str
    gid: int = 2001
    groups: tuple[int, ...] = (2001, 2004)


def manifest(uid: int = 1002) -> dict[str, Any]:
    decision = Decision(
        allow=True,
        run_as=RunAs(uid, 2001),
        supplemental_groups=(2001, 2004),
        mounts=(
            GrantedMount("projects", "nfs-projects", "ml/data", True, "/nfs/projects/ml/data"),
            GrantedMount("home", "nfs-home", str(uid), False, f"/nfs/home/{uid}"),
        ),
        priority=3,
    )
    request = JobRequest(
        project="ml-team",
        image="registry.invalid/train:1",
        command=("python", "train.py"),
        mounts=(
            MountRequest("/nfs/projects/ml/data", "ro"),
            MountRequest(f"/nfs/home/{uid}", "rw"),
        ),
        systems=2,
    )
    ident = Ident(uid, secrets.token_hex(16))
    return pod_manifest(build_pod(ident, decision, request, decision_id="d-k8s"))


@pytest.fixture
def submitter(kube_api: KubeAPI) -> Any:
    sub = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("launcher")), timeout=10
    )
    yield sub
    sub.close()


def test_create_get_list_priority_delete(submitter: KubernetesSubmitter) -> None:
    pod = manifest()
    record = submitter.create(pod)
    name = record.name
    try:
        got = submitter.get(name)
        assert (got.owner_uid, got.project, got.priority) == (1002, "ml-team", 3)
        assert got.decision_id == "d-k8s" and got.phase == "Pending"
        assert got.created is not None
        assert name in [r.name for r in submitter.list()]
        assert submitter.set_priority(name, 7).priority == 7
        assert submitter.get(name).priority == 7
    finally:
        submitter.delete(name)
    with pytest.raises(NotFound):
        submitter.get(name)
    with pytest.raises(NotFound):
        submitter.delete(name)


def test_replayed_submit_collides(submitter: KubernetesSubmitter) -> None:
    pod = manifest()
    name = submitter.create(pod).name
    try:
        other = manifest(uid=1005)
        other["metadata"] = {**pod["metadata"]}  # same token id, someone else's pod
        with pytest.raises(JobExists) as err:
            submitter.create(other)
        assert isinstance(err.value, Replayed)
        assert submitter.get(name).owner_uid == 1002  # the first one stands
    finally:
        submitter.delete(name)


def test_pods_not_made_by_us_are_not_jobs(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    pod = manifest()
    del pod["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    name = pod["metadata"]["name"]
    kube_api.core("admin").create_namespaced_pod(JOBS_NAMESPACE, pod)
    try:
        with pytest.raises(NotFound):
            submitter.get(name)
        with pytest.raises(NotFound):
            submitter.delete(name)  # never deletes a pod that is not ours
        assert name not in [r.name for r in submitter.list()]
    finally:
        kube_api.core("admin").delete_namespaced_pod(name, JOBS_NAMESPACE, grace_period_seconds=0)


def test_forbidden_namespace_is_a_clean_failure(kube_api: KubeAPI) -> None:
    sub = KubernetesSubmitter(
        namespace="default", kubeconfig=str(kube_api.kubeconfig("launcher")), timeout=10
    )
    try:
        with pytest.raises(SubmitFailed, match="403"):
            sub.create(manifest())
    finally:
        sub.close()


def test_unreachable_api_server_is_submit_failed(tmp_path: Any, kube_api: KubeAPI) -> None:
    config = kube_api.kubeconfig("launcher").read_text()
    dead = tmp_path / "kubeconfig"
    dead.write_text(config.replace(kube_api.url, "https://127.0.0.1:1"))
    sub = KubernetesSubmitter(namespace=JOBS_NAMESPACE, kubeconfig=str(dead), timeout=2)
    try:
        with pytest.raises(SubmitFailed):
            sub.create(manifest())
    finally:
        sub.close()


def test_bad_kubeconfig_is_submit_failed(tmp_path: Any) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("not: [a kubeconfig")
    with pytest.raises(SubmitFailed, match="configuration"):
        KubernetesSubmitter(kubeconfig=str(bad))
