"""Two `tokensvc server` replicas on one real API server (kubernetes submitter).

Each replica has its own in-memory replay cache, so only the API server can
arbitrate between them: the pod name is derived from the submit token, and
the second create of that name fails with AlreadyExists -> 409 "token already
used", with no second pod: a submit token creates at most one job. Job
actions read owner and project from the stored pod. Real OPA with the
repository's policies and data.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from kube import BIN_DIR, JOBS_NAMESPACE, REPO, KubeAPI, Proc, apiserver_pid, spawn, wait_ready
from support.binding import forge_token

from tokensvc.cluster.devstack import USER_A, Stack, User, free_port
from tokensvc.cluster.launcher import LABEL_MANAGED_BY, LABEL_OWNER_UID, LABEL_TOKEN_ID, MANAGED_BY
from tokensvc.core.keys import KeyRing
from tokensvc.core.token import open_token

pytestmark = pytest.mark.usefixtures("deployed_rbac")

BODY = {
    "project": "ml-team",
    "image": "registry.invalid/train:1",
    "command": ["sleep", "60"],
    "mounts": [{"path": "/nfs/projects/ml", "mode": "rw"}],
}


@dataclass
class Replicas:
    urls: list[str]
    keyring: Path
    realm: str

    def token(self, who: User = USER_A, body: Any = BODY) -> tuple[str, str]:
        """A fresh token for `who` (sealed with the replicas' key, bound to `body`) and its id."""
        ring = KeyRing.load(self.keyring)
        token = forge_token(ring, who, realm=self.realm, host="login1", body=body)
        return token, open_token(token, ring)[0].token_id

    def call(self, i: int, method: str, path: str, token: str, **kw: Any) -> requests.Response:
        with requests.Session() as s:
            s.trust_env = False
            return s.request(
                method,
                self.urls[i] + path,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
                **kw,
            )


def _server_config(path: Path, stack: Stack, port: int, kubeconfig: Path) -> None:
    path.write_text(
        f'realm = "{stack.realm}"\n'
        f'keyring = "{stack.keyring}"\n'
        "\n[server]\n"
        'bind = "127.0.0.1"\n'
        f"port = {port}\n"
        f'opa_url = "{stack.opa_url}"\n'
        'submitter = "kubernetes"\n'
        f'namespace = "{JOBS_NAMESPACE}"\n'
        f'kubeconfig = "{kubeconfig}"\n'
        # Short, so that a stalled API server is over within the test's patience.
        "kube_timeout = 1.0\n"
        "hold_deadline = 6.0\n"
        "reconcile_interval = 1.0\n"
    )


@pytest.fixture(scope="module")
def replicas(kube_api: KubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("replicas")
    stack = Stack(
        workdir=workdir / "stack",
        opa=str(BIN_DIR / "opa"),
        policy_paths=[str(REPO / "policies" / "wsc"), str(REPO / "policies" / "data")],
        realm="test",
    )
    procs: list[Proc] = []
    try:
        stack.prepare()  # key ring, work dirs
        stack.start_opa()  # one OPA is enough: it holds no per-request state
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")}
        urls = []
        for name in ("a", "b"):
            port = free_port()
            config = workdir / f"server-{name}.conf"
            _server_config(config, stack, port, kube_api.kubeconfig("launcher"))
            proc = spawn(
                f"server-{name}",
                [sys.executable, "-m", "tokensvc", "server"],
                workdir,
                env | {"TOKENSVC_CONFIG": str(config)},
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            with requests.Session() as s:
                s.trust_env = False
                wait_ready(
                    proc,
                    lambda s=s, url=url: s.get(f"{url}/readyz", timeout=2).status_code == 200,
                    f"server {name}",
                    time.monotonic() + 60,
                )
            urls.append(url)
        yield Replicas(urls=urls, keyring=stack.keyring, realm=stack.realm)
    finally:
        for proc in procs:
            proc.stop()
        stack.stop()


def _pods(kube_api: KubeAPI, token_id: str) -> list[str]:
    pods = kube_api.core().list_namespaced_pod(
        JOBS_NAMESPACE, label_selector=f"{LABEL_TOKEN_ID}={token_id}"
    )
    return [p.metadata.name for p in pods.items]


def test_replay_on_the_other_replica_is_refused(kube_api: KubeAPI, replicas: Replicas) -> None:
    token, token_id = replicas.token()
    first = replicas.call(0, "POST", "/v1/jobs", token, json=BODY)
    assert first.status_code == 201, first.text
    job = f"wsc-job-{token_id}"
    # Replica b never saw the token: only the API server's record can tell it
    # was used. The same request gets the same job back (a retry) ...
    second = replicas.call(1, "POST", "/v1/jobs", token, json=BODY)
    assert (second.status_code, second.json()["job"]["id"]) == (200, job), second.text
    assert _pods(kube_api, token_id) == [job]
    # ... and once the pod is deleted, neither replica lets the token start another.
    kube_api.core().delete_namespaced_pod(job, JOBS_NAMESPACE, grace_period_seconds=0)
    for i in (0, 1):
        again = replicas.call(i, "POST", "/v1/jobs", token, json=BODY)
        assert (again.status_code, again.json()["code"]) == (409, "replayed")
    assert _pods(kube_api, token_id) == []


def test_simultaneous_replay_on_both_replicas_creates_one_pod(
    kube_api: KubeAPI, replicas: Replicas
) -> None:
    token, token_id = replicas.token()
    statuses: list[int] = []
    bodies: list[str] = []
    barrier = threading.Barrier(2)

    def submit(i: int) -> None:
        barrier.wait()
        resp = replicas.call(i, "POST", "/v1/jobs", token, json=BODY)
        statuses.append(resp.status_code)
        bodies.append(resp.text)

    threads = [threading.Thread(target=submit, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200, 201], bodies  # one created it, the other got it back
    assert len(_pods(kube_api, token_id)) == 1


def test_job_actions_read_owner_from_the_stored_pod(kube_api: KubeAPI, replicas: Replicas) -> None:
    token, token_id = replicas.token()
    created = replicas.call(0, "POST", "/v1/jobs", token, json=BODY)
    assert created.status_code == 201, created.text
    job = f"wsc-job-{token_id}"

    seen = replicas.call(1, "GET", f"/v1/jobs/{job}", replicas.token(body=None)[0])
    assert seen.status_code == 200, seen.text
    assert seen.json()["job"]["owner_uid"] == 1002

    # The stored pod now says uid 1004 (not in ml-team) owns it: ada, a plain
    # member, may no longer cancel it -- on either replica.
    def relabel(uid: str) -> None:
        kube_api.core().patch_namespaced_pod(
            job, JOBS_NAMESPACE, {"metadata": {"labels": {LABEL_OWNER_UID: uid}}}
        )

    relabel("1004")
    for i in (0, 1):
        refused = replicas.call(i, "DELETE", f"/v1/jobs/{job}", replicas.token(body=None)[0])
        assert refused.status_code == 403, refused.text
    assert _pods(kube_api, token_id) == [job]

    relabel("1002")
    cancelled = replicas.call(1, "DELETE", f"/v1/jobs/{job}", replicas.token(body=None)[0])
    assert cancelled.status_code == 200, cancelled.text
    assert _pods(kube_api, token_id) == []


def test_a_stalled_api_server_leaves_no_job_behind_a_failed_answer(
    kube_api: KubeAPI, replicas: Replicas
) -> None:
    """Submits on both replicas while the API server is stopped, then resumes.

    Every answer comes within the submit deadline (7 calls of kube_timeout =
    1 s, plus OPA); afterwards every 201/200 has its released pod, and once
    the reconciler has run no pod is left held: a job whose submit failed
    never runs (only a truly unknown outcome, created null, may have one).
    """
    pid = apiserver_pid(kube_api)
    results: list[tuple[str, int, dict[str, Any], float]] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        token, token_id = replicas.token()
        started = time.monotonic()
        resp = replicas.call(i % 2, "POST", "/v1/jobs", token, json=BODY)
        with lock:
            results.append((token_id, resp.status_code, resp.json(), time.monotonic() - started))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads[:4]:
        t.start()
    os.kill(pid, signal.SIGSTOP)
    try:
        for t in threads[4:]:
            t.start()
        time.sleep(2.5)  # the stall itself: what the test is about, not a wait for readiness
    finally:
        os.kill(pid, signal.SIGCONT)
    for t in threads:
        t.join(60)
    assert len(results) == 12
    assert max(elapsed for *_, elapsed in results) < 7 * 1.0 + 3
    assert {status for _, status, _, _ in results} <= {200, 201, 503}
    # Wait for the reconcilers (every second, on both replicas) to clear held pods.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pods = (
            kube_api.core()
            .list_namespaced_pod(JOBS_NAMESPACE, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}")
            .items
        )
        if not any(p.spec.scheduling_gates for p in pods):
            break
        time.sleep(0.5)
    pods = {p.metadata.name: p for p in kube_api.core().list_namespaced_pod(JOBS_NAMESPACE).items}
    assert not any(p.spec.scheduling_gates for p in pods.values())
    for token_id, status, body, _ in results:
        name = f"wsc-job-{token_id}"
        if status in (200, 201):
            assert name in pods, body
        elif body.get("created") is False:
            assert name not in pods, body
        else:
            assert body.get("created") is None, body
