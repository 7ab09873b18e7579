"""KubernetesSubmitter against a real kube-apiserver, as the launcher's RBAC identity.

The pods come from the real build_pod, so this also proves the API server
(schema + Pod Security "restricted" admission) accepts exactly what the
launcher generates, with PVC subPath mounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kube import JOBS_NAMESPACE, KubeAPI, apiserver_pid
from support.reconciler import reconciling_service

from tokensvc.cluster.consumed import TokenRecord
from tokensvc.cluster.jobs import JobRequest, MountRequest
from tokensvc.cluster.kube import ADMISSION_GATE
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
        with pytest.raises(SubmitFailed, match="403") as err:
            sub.create(manifest())
        assert err.value.created is False  # refused: nothing was stored
    finally:
        sub.close()


def kubeconfig_for(kube_api: KubeAPI, url: str, tmp_path: Path) -> str:
    """The launcher's kubeconfig, pointed at another address."""
    path = tmp_path / "kubeconfig"
    path.write_text(kube_api.kubeconfig("launcher").read_text().replace(kube_api.url, url))
    return str(path)


def timed_failure(action: Callable[[], object]) -> tuple[SubmitFailed, float]:
    started = time.monotonic()
    with pytest.raises(SubmitFailed) as err:
        action()
    return err.value, time.monotonic() - started


def every_action(sub: KubernetesSubmitter) -> dict[str, tuple[Callable[[], object], int]]:
    """Each action, and how many calls (of ``sub.timeout`` each) its deadline allows."""
    name = f"wsc-job-{'0' * 32}"
    return {
        "create": (lambda: sub.create(manifest()), 2),
        "get": (lambda: sub.get(name), 1),
        "list": (sub.list, 1),
        "delete": (lambda: sub.delete(name), 2),
        "set_priority": (lambda: sub.set_priority(name, 1), 2),
    }


def test_refused_connection_fails_at_once_with_nothing_created(
    tmp_path: Path, kube_api: KubeAPI
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
        url = f"https://127.0.0.1:{s.getsockname()[1]}"
        sub = KubernetesSubmitter(
            namespace=JOBS_NAMESPACE, kubeconfig=kubeconfig_for(kube_api, url, tmp_path), timeout=2
        )
        try:
            for what, (action, _) in every_action(sub).items():
                err, elapsed = timed_failure(action)
                assert err.created is False, what  # no connection: nothing sent
                assert elapsed < 1.0, what  # no retries, no waiting for a timeout
        finally:
            sub.close()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A real socket that accepts connections and never answers (nor reads)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join()
        for conn in accepted:
            conn.close()


def test_a_server_that_never_answers_is_bounded_by_the_deadline(
    tmp_path: Path, kube_api: KubeAPI
) -> None:
    timeout = 0.5
    with silent_server() as url:
        sub = KubernetesSubmitter(
            namespace=JOBS_NAMESPACE,
            kubeconfig=kubeconfig_for(kube_api, url, tmp_path),
            timeout=timeout,
        )
        try:
            for what, (action, calls) in every_action(sub).items():
                err, elapsed = timed_failure(action)
                # Connected, then silence: whether a request was acted on is unknown.
                assert err.created is None, what
                assert elapsed < calls * timeout + 0.5, (what, elapsed)
        finally:
            sub.close()


def test_a_stopped_api_server_is_bounded_by_the_deadline(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    pid = apiserver_pid(kube_api)
    timeout = 1.0
    sub = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("launcher")), timeout=timeout
    )
    pod = manifest()
    sub.list()  # a kept-alive connection: the next requests are sent for sure
    os.kill(pid, signal.SIGSTOP)
    try:
        err, elapsed = timed_failure(lambda: sub.create(pod))
        assert err.created is None  # sent, never answered: it may exist
        assert elapsed < 2 * timeout + 0.5
        for what, (action, calls) in every_action(sub).items():
            if what != "create":
                err, elapsed = timed_failure(action)
                assert elapsed < calls * timeout + 0.5, (what, elapsed)
    finally:
        os.kill(pid, signal.SIGCONT)
        sub.close()
    # The API server may yet act on what it had received; leave nothing behind.
    with contextlib.suppress(NotFound):
        submitter.delete(pod["metadata"]["name"])
    assert submitter.list() is not None  # the API server serves again


def test_bad_kubeconfig_is_submit_failed(tmp_path: Any) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("not: [a kubeconfig")
    with pytest.raises(SubmitFailed, match="configuration"):
        KubernetesSubmitter(kubeconfig=str(bad))


# --- held until admitted; consumed-token records ------------------------------------------


def _gates(kube_api: KubeAPI, name: str) -> list[str]:
    pod = kube_api.core().read_namespaced_pod(name, JOBS_NAMESPACE)
    return [g.name for g in (pod.spec.scheduling_gates or [])]


def test_a_job_is_created_held_and_runs_only_once_released(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    name = submitter.create(manifest()).name
    try:
        assert _gates(kube_api, name) == [ADMISSION_GATE]  # the scheduler ignores it
        assert name in submitter.held(older_than=time.time() + 60)
        assert name not in submitter.held(older_than=time.time() - 3600)
        submitter.release(name)
        submitter.release(name)  # idempotent
        assert _gates(kube_api, name) == []
        assert name not in submitter.held(older_than=time.time() + 60)
    finally:
        submitter.delete(name)


def test_the_reconciler_removes_jobs_held_past_the_deadline(
    kube_api: KubeAPI, submitter: KubernetesSubmitter, tmp_path: Path
) -> None:
    held = submitter.create(manifest()).name  # a submit that never released its job
    running = submitter.create(manifest()).name
    submitter.release(running)
    lines: list[dict[str, Any]] = []
    service = reconciling_service(
        submitter,
        namespace=JOBS_NAMESPACE,
        audit=lines.append,
        clock=lambda: time.time() + 3600,  # an hour later: past any deadline
    )
    try:
        asyncio.run(service.reconcile(hold_deadline=120))
        with pytest.raises(NotFound):
            submitter.get(held)
        assert submitter.get(running).name == running  # released: never touched
        assert [line["job"] for line in lines if line["event"] == "reconciled"] == [held]
    finally:
        submitter.delete(running)


def test_consumed_token_records_are_claimed_once_and_admitted(
    submitter: KubernetesSubmitter,
) -> None:
    token = secrets.token_hex(16)
    record = TokenRecord(token, "a" * 64, int(time.time()) + 300)
    assert submitter.records.claim(record) is None
    assert submitter.records.claim(TokenRecord(token, "b" * 64, 1)) == record  # the first stands
    submitter.records.admit(token)
    assert submitter.records.read(token) == dataclasses.replace(record, state="admitted")
    assert submitter.records.purge_expired(now=time.time()) == 0  # not expired yet
    assert submitter.records.purge_expired(now=time.time() + 3600) >= 1
    assert submitter.records.read(token) is None
