"""Admission end to end: real mint daemon (root), real OPA, real server, users via setpriv.

Users (tokensvc.cluster.devstack, numbers from policies/data): A = uid 1002 in ml-team;
B = uid 1004, a student outside ml-team; C = uid 1005 in ml-team, vision and
students; the admin = uid 1001, admin of ml-team.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import requests
import yaml
from admission_stack import (
    ROOT,
    conftest_binary,
    forge_token,
    http,
    job_body,
    k8s_schema_version,
    needs_root,
    run_as,
    spooled,
    stack_fixture,
)
from support.opa import OpaHandle, start_opa

from tokensvc.cluster.devstack import ADMIN, USER_A, USER_B, USER_C, Stack

pytestmark = [needs_root, pytest.mark.root]


@pytest.fixture(scope="module")
def stack(opa: OpaHandle) -> Iterator[Stack]:
    yield from stack_fixture(external_opa=opa.url)


def submit(stack: Stack, user: Any, project: str, *mounts: str, extra: tuple[str, ...] = ()) -> Any:
    args = ["submit", "--project", project, "--image", "busybox:1.36", "-o", "json"]
    for m in mounts:
        args += ["--mount", m]
    run = run_as(stack, user, *args, *extra, "--", "sleep", "60")
    assert run.code == 0, run.err
    return run.json()


def pod_of(stack: Stack, job_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((stack.spool / f"{job_id}.yaml").read_text())
    return doc


# --- user A: runs as A, with A's groups and mounts ------------------------------------


def test_a_job_runs_as_a_with_a_groups_and_mounts(stack: Stack) -> None:
    done = submit(stack, USER_A, "ml-team", "/nfs/projects/ml/data:rw", "/nfs/datasets/imagenet")
    job_id = done["job"]["id"]
    pod = pod_of(stack, job_id)
    assert pod == done["pod"]  # what the client saw is what was stored
    ctx = pod["spec"]["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (USER_A.uid, 2001)
    assert ctx["supplementalGroups"] == [2001]
    assert ctx["supplementalGroupsPolicy"] == "Strict"
    assert pod["metadata"]["labels"]["tokensvc.io/owner-uid"] == str(USER_A.uid)
    assert pod["metadata"]["labels"]["tokensvc.io/project"] == "ml-team"
    assert pod["metadata"]["annotations"]["tokensvc.io/decision-id"] == done["decision_id"]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/nfs/projects/ml/data"]["subPath"] == "ml/data"
    assert mounts["/nfs/projects/ml/data"]["readOnly"] is False
    assert mounts["/nfs/datasets/imagenet"]["readOnly"] is True
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    assert claims == {"nfs-projects", "nfs-datasets"}


def test_a_sees_and_manages_own_job(stack: Stack) -> None:
    job_id = submit(stack, USER_A, "ml-team")["job"]["id"]
    listed = run_as(stack, USER_A, "jobs", "-o", "json")
    assert job_id in [j["id"] for j in listed.json()]
    assert run_as(stack, USER_A, "priority", job_id, "4").code == 0
    assert pod_of(stack, job_id)["metadata"]["annotations"]["tokensvc.io/priority"] == "4"
    assert run_as(stack, USER_A, "cancel", job_id).code == 0
    assert job_id not in spooled(stack)


# --- B cannot touch A's job; an admin of A's group can -----------------------------------


def test_b_cannot_get_cancel_or_reprioritise_a_job(stack: Stack) -> None:
    job_id = submit(stack, USER_A, "ml-team")["job"]["id"]
    before = pod_of(stack, job_id)
    for args in (("cancel", job_id), ("priority", job_id, "1")):
        run = run_as(stack, USER_B, *args)
        assert run.code == 7, run.err  # PolicyDenied
        assert "denied by policy" in run.err
        assert "not a member" in run.err
    token = forge_token(stack, USER_B)
    resp = http(stack, "GET", f"/v1/jobs/{job_id}", token)
    assert resp.status_code == 403
    assert resp.json()["reasons"]
    assert pod_of(stack, job_id) == before  # untouched
    listed = run_as(stack, USER_B, "jobs", "-o", "json")
    assert job_id not in [j["id"] for j in listed.json()]


def test_admin_of_a_group_can_get_reprioritise_and_cancel(stack: Stack) -> None:
    job_id = submit(stack, USER_A, "ml-team")["job"]["id"]
    resp = http(stack, "GET", f"/v1/jobs/{job_id}", forge_token(stack, ADMIN))
    assert resp.status_code == 200
    assert resp.json()["job"]["owner_uid"] == USER_A.uid
    assert run_as(stack, ADMIN, "priority", job_id, "9").code == 0
    assert pod_of(stack, job_id)["metadata"]["annotations"]["tokensvc.io/priority"] == "9"
    listed = run_as(stack, ADMIN, "jobs", "-o", "json")
    assert job_id in [j["id"] for j in listed.json()]
    assert run_as(stack, ADMIN, "cancel", job_id).code == 0
    assert job_id not in spooled(stack)


# --- C charges each of its groups and gets that group's mounts ----------------------------


@pytest.mark.parametrize(
    ("project", "gid", "mount", "sub_path"),
    [
        ("ml-team", 2001, "/nfs/projects/ml/models", "ml/models"),
        ("vision", 2002, "/nfs/projects/vision/runs", "vision/runs"),
        ("students", 2003, "/nfs/projects/students/c", "students/c"),
    ],
)
def test_c_charges_each_group_with_its_mounts(
    stack: Stack, project: str, gid: int, mount: str, sub_path: str
) -> None:
    done = submit(stack, USER_C, project, f"{mount}:rw")
    ctx = done["pod"]["spec"]["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (USER_C.uid, gid)
    assert ctx["supplementalGroups"] == [gid]
    (vm,) = done["pod"]["spec"]["containers"][0]["volumeMounts"]
    assert (vm["mountPath"], vm["subPath"], vm["readOnly"]) == (mount, sub_path, False)
    assert done["pod"]["metadata"]["labels"]["tokensvc.io/project"] == project


def test_c_mount_of_another_of_its_groups_adds_that_group(stack: Stack) -> None:
    # Charged to students, writing vision's tree: granted through C's vision
    # membership, so the pod carries both gids (project + the granting one).
    done = submit(stack, USER_C, "students", "/nfs/projects/vision/runs:rw")
    ctx = done["pod"]["spec"]["securityContext"]
    assert ctx["runAsGroup"] == 2003
    assert ctx["supplementalGroups"] == [2002, 2003]


# --- tokens: forged, expired, wrong realm, replayed -> 401 -----------------------------------


def test_forged_and_tampered_tokens_get_a_generic_401(stack: Stack) -> None:
    good = forge_token(stack, USER_A)
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for token in ("garbage", "v1.AAAA.BBBB", tampered, "x" * 9000):
        resp = http(stack, "POST", "/v1/jobs", token, json=job_body())
        assert resp.status_code == 401
        assert resp.json() == {"code": "invalid_token", "error": "invalid token"}
    log = stack.log("server").read_text()
    assert good not in log and tampered not in log
    failures = [json.loads(line) for line in log.splitlines() if '"auth_failed"' in line]
    assert {e["reason"] for e in failures} == {"invalid"}
    assert http(stack, "POST", "/v1/jobs", None, json=job_body()).status_code == 401
    assert (
        http(stack, "GET", "/v1/jobs", None, headers={"Authorization": "Basic eDp5"}).status_code
        == 401
    )


def test_expired_and_wrong_realm_tokens_get_401_after_authentication(stack: Stack) -> None:
    expired = forge_token(stack, USER_A, issued_ago=3600, ttl=300)
    resp = http(stack, "POST", "/v1/jobs", expired, json=job_body())
    assert resp.status_code == 401
    assert "expired" in resp.json()["error"]
    foreign = forge_token(stack, USER_A, realm="other-cluster")
    resp = http(stack, "POST", "/v1/jobs", foreign, json=job_body())
    assert resp.status_code == 401
    assert "realm" in resp.json()["error"]


def test_a_retried_submit_gets_its_job_and_its_token_nothing_else(stack: Stack) -> None:
    token = forge_token(stack, USER_A, body=job_body())
    first = http(stack, "POST", "/v1/jobs", token, json=job_body())
    assert first.status_code == 201
    before = spooled(stack)
    again = http(stack, "POST", "/v1/jobs", token, json=job_body())
    assert (again.status_code, again.json()["job"]["id"]) == (200, first.json()["job"]["id"])
    # A token bound to one submit cannot be spent on another call either.
    other = http(stack, "GET", "/v1/jobs", token)
    assert (other.status_code, other.json()["code"]) == (401, "wrong_request")
    assert spooled(stack) == before


def test_replay_after_cancel_and_after_restart_is_refused(stack: Stack) -> None:
    token = forge_token(stack, USER_A, body=job_body())
    first = http(stack, "POST", "/v1/jobs", token, json=job_body())
    assert first.status_code == 201
    job = first.json()["job"]["id"]
    assert http(stack, "DELETE", f"/v1/jobs/{job}", forge_token(stack, USER_A)).status_code == 200
    before = spooled(stack)
    resp = http(stack, "POST", "/v1/jobs", token, json=job_body())
    assert (resp.status_code, resp.json()["code"]) == (409, "replayed")
    stack.stop_process("server")  # nothing of the first server's memory survives
    stack.start_server()
    resp = http(stack, "POST", "/v1/jobs", token, json=job_body())
    assert (resp.status_code, resp.json()["code"]) == (409, "replayed")
    assert spooled(stack) == before


# --- policy denial -> 403 with every reason -----------------------------------------------


def test_policy_denial_lists_every_reason(stack: Stack) -> None:
    run = run_as(
        stack,
        USER_A,
        "submit",
        "--project",
        "vision",
        "--image",
        "busybox",
        "--systems",
        "8",
        "--mount",
        "/etc/shadow",
        "--mount",
        "/nfs/projects/students/x:rw",
        "--",
        "true",
    )
    assert run.code == 7
    reasons = [line for line in run.err.splitlines() if line.startswith("  - ")]
    assert len(reasons) >= 3, run.err
    assert any("vision" in r for r in reasons)
    assert any("/etc/shadow" in r for r in reasons)
    assert any("students" in r for r in reasons)
    body = {**job_body("vision"), "mounts": [{"path": "/etc/shadow", "mode": "ro"}]}
    resp = http(stack, "POST", "/v1/jobs", forge_token(stack, USER_A, body=body), json=body)
    assert resp.status_code == 403
    body = resp.json()
    assert len(body["reasons"]) >= 2 and body["decision_id"]


def test_root_never_launches(stack: Stack) -> None:
    from tokensvc.cluster.devstack import User  # noqa: PLC0415

    root = User("root", 0, 0, (0,), "root")
    resp = http(
        stack, "POST", "/v1/jobs", forge_token(stack, root, body=job_body()), json=job_body()
    )
    assert resp.status_code == 403


# --- request bounds --------------------------------------------------------------------


def test_request_bodies_are_bounded_and_strict(stack: Stack) -> None:
    token = forge_token(stack, USER_A)
    resp = http(stack, "POST", "/v1/jobs", token, json={**job_body(), "uid": 0})
    assert resp.status_code == 422
    assert any("uid" in r for r in resp.json()["reasons"])
    json_type = {"Content-Type": "application/json"}
    resp = http(
        stack, "POST", "/v1/jobs", forge_token(stack, USER_A), data=b"{nope", headers=json_type
    )
    assert resp.status_code == 400
    resp = http(stack, "POST", "/v1/jobs", forge_token(stack, USER_A), data=b"{}")
    assert (resp.status_code, resp.json()["code"]) == (415, "unsupported_media_type")
    big = {**job_body(), "command": ["x" * 4000] * 40}
    resp = http(stack, "POST", "/v1/jobs", forge_token(stack, USER_A, body=big), json=big)
    assert resp.status_code == 413


def test_unknown_job_is_404(stack: Stack) -> None:
    resp = http(stack, "GET", "/v1/jobs/wsc-job-" + "0" * 32, forge_token(stack, USER_A))
    assert resp.status_code == 404
    resp = http(stack, "GET", "/v1/jobs/../../etc", forge_token(stack, USER_A))
    assert resp.status_code == 404


# --- operations: health, readiness, metrics, OpenAPI, audit -------------------------------


def test_health_metrics_openapi(stack: Stack) -> None:
    assert http(stack, "GET", "/healthz").json() == {"status": "ok"}
    assert http(stack, "GET", "/readyz").status_code == 200
    doc = http(stack, "GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/priority"}
    metrics = http(stack, "GET", "/metrics").text
    assert 'tokensvc_decisions_total{action="submit",result="allow"}' in metrics
    assert "tokensvc_opa_decision_seconds_bucket" in metrics


def test_unknown_paths_and_methods(stack: Stack) -> None:
    resp = http(stack, "GET", "/v2/jobs")
    assert (resp.status_code, resp.json()) == (404, {"code": "not_found", "error": "not found"})
    resp = http(stack, "PATCH", "/v1/jobs", forge_token(stack, USER_A))
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET, POST"
    resp = http(stack, "POST", f"/v1/jobs/wsc-job-{'0' * 32}/priority", json={"priority": 1})
    assert (resp.status_code, resp.headers["Allow"]) == (405, "PUT")
    assert http(stack, "POST", "/healthz").status_code == 405
    assert http(stack, "HEAD", "/healthz").status_code == 200


def test_sigterm_finishes_cleanly_with_exit_0(stack: Stack) -> None:
    server = stack.procs["server"]
    stack.stop_process("server")  # SIGTERM, as systemd and the kubelet send it
    try:
        assert server.returncode == 0
    finally:
        stack.start_server()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_acknowledged_job_is_lost_when_the_server_dies_mid_load(
    stack: Stack, signum: int
) -> None:
    """Submits from four threads while the server is killed; every 201 is spooled after."""
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            body = job_body()
            try:
                resp = http(
                    stack, "POST", "/v1/jobs", forge_token(stack, USER_A, body=body), json=body
                )
            except requests.RequestException:
                continue  # the server is down: no answer, nothing acknowledged
            if resp.status_code == 201:
                acknowledged.append(resp.json()["job"]["id"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        while len(acknowledged) < 10:
            time.sleep(0.05)  # waits for load, not for time to pass
        stack.procs["server"].send_signal(signum)
        stack.procs["server"].wait(30)
        stack.start_server()
        mark = len(acknowledged)
        while len(acknowledged) < mark + 10:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    missing = sorted(set(acknowledged) - set(spooled(stack)))
    assert missing == []


def test_audit_has_one_line_per_decision_and_no_token(stack: Stack) -> None:
    token = forge_token(stack, USER_A, body=job_body())
    resp = http(stack, "POST", "/v1/jobs", token, json=job_body())
    assert resp.status_code == 201
    decision_id = resp.json()["decision_id"]
    lines = [json.loads(line) for line in stack.log("server").read_text().splitlines() if line]
    mine = [e for e in lines if e.get("decision_id") == decision_id]
    assert len(mine) == 1
    event = mine[0]
    assert event["uid"] == USER_A.uid and event["action"] == "submit" and event["allow"] is True
    assert event["job"] == resp.json()["job"]["id"] and event["request_id"]
    assert token not in stack.log("server").read_text()


# --- fail closed: OPA stopped, submitter broken ------------------------------------------


def test_opa_stopped_mid_run_gets_503_and_no_pod(tmp_path: Path) -> None:
    own_opa = start_opa(tmp_path)  # this test kills it: not the module's OPA
    try:
        for stack in stack_fixture(external_opa=own_opa.url):
            ok = http(
                stack,
                "POST",
                "/v1/jobs",
                forge_token(stack, USER_A, body=job_body()),
                json=job_body(),
            )
            assert ok.status_code == 201
            before = spooled(stack)
            own_opa.process.terminate()
            own_opa.process.wait(10)
            resp = http(
                stack,
                "POST",
                "/v1/jobs",
                forge_token(stack, USER_A, body=job_body()),
                json=job_body(),
            )
            assert resp.status_code == 503
            assert resp.json()["created"] is False
            run = run_as(stack, USER_A, "submit", "--project", "ml-team", "--image", "b", "--", "x")
            assert run.code == 8, run.err
            assert "policy engine unreachable" in run.err
            assert spooled(stack) == before
            assert http(stack, "GET", "/readyz").status_code == 503
            metrics = http(stack, "GET", "/metrics").text
            assert 'tokensvc_opa_errors_total{kind="unreachable"} 2.0' in metrics
            assert 'tokensvc_decisions_total{action="submit",result="error"} 2.0' in metrics
    finally:
        own_opa.stop()


def test_not_ready_until_the_signed_bundle_is_active(tmp_path: Path) -> None:
    unsigned = start_opa(tmp_path, signed=False, wait=False)  # OPA must refuse it
    stack = Stack(
        workdir=Path(tempfile.mkdtemp(prefix="tsvc-", dir="/tmp")),
        opa=unsigned.url,
        external_opa=unsigned.url,
        realm="test",
    )
    try:
        stack.prepare()
        stack.start_server(ready=False)
        assert http(stack, "GET", "/healthz").status_code == 200
        assert http(stack, "GET", "/readyz").status_code == 503
        resp = http(
            stack, "POST", "/v1/jobs", forge_token(stack, USER_A, body=job_body()), json=job_body()
        )
        assert resp.status_code == 503  # undefined decision: no bundle, no allow
        assert "undefined" in resp.json()["error"]
        assert spooled(stack) == []
        unsigned.publish(unsigned.build_bundle("signed"))  # now a verifiable bundle
        unsigned.wait_ready()
        assert http(stack, "GET", "/readyz").status_code == 200
    finally:
        stack.stop()
        stack.remove()
        unsigned.stop()


def test_submitter_failure_leaves_no_half_state_and_tells_the_client(stack: Stack) -> None:
    # (A server killed by another test may have left a temporary file: not this one's.)
    temporaries = {p for p in stack.spool.iterdir() if p.name.startswith(".tmp")}
    hidden = stack.spool.with_name("spool.away")
    stack.spool.rename(hidden)
    try:
        token = forge_token(stack, USER_A, body=job_body())
        resp = http(stack, "POST", "/v1/jobs", token, json=job_body())
        assert resp.status_code == 503
        assert "no job was created" in resp.json()["error"]
        assert not stack.spool.exists()
        log = stack.log("server").read_text()
        assert '"event":"not_created"' in log and '"kind":"record"' in log
    finally:
        hidden.rename(stack.spool)
    assert {p for p in stack.spool.iterdir() if p.name.startswith(".tmp")} == temporaries


# --- every pod the server spooled: Kubernetes schema (strict) and the conftest rules -----


def test_every_spooled_pod_is_schema_valid_and_restricted(stack: Stack) -> None:
    submit(stack, USER_C, "ml-team", "/nfs/projects/ml/data", "/nfs/datasets/imagenet")
    files = sorted(stack.spool.glob("wsc-job-*.yaml"))
    assert len(files) >= 5
    for path in files:
        manifest = yaml.safe_load(path.read_text())
        kubernetes_validate.validate(copy.deepcopy(manifest), k8s_schema_version(), strict=True)
    conftest = conftest_binary()
    run = subprocess.run(
        [
            conftest,
            "test",
            "--namespace",
            "conftest.pod",
            "--policy",
            str(ROOT / "policies" / "conftest"),
        ]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# --- key rotation: SIGHUP reloads the key ring ------------------------------------------


def test_sighup_reloads_the_key_ring_after_rotation(stack: Stack) -> None:
    import signal  # noqa: PLC0415

    from tokensvc.core.keys import rotate_key  # noqa: PLC0415

    rotate_key(stack.keyring)  # new active key; the old one stays accepted
    token = forge_token(stack, USER_A)  # sealed with the new key
    assert http(stack, "GET", "/v1/jobs", token).status_code == 401  # unknown to the server
    stack.procs["server"].send_signal(signal.SIGHUP)
    for _ in range(100):
        if '"keyring_reloaded"' in stack.log("server").read_text():
            break
        time.sleep(0.05)
    assert http(stack, "GET", "/v1/jobs", forge_token(stack, USER_A)).status_code == 200
    # Tokens minted by the daemon with the old (still accepted) key keep working.
    assert run_as(stack, USER_A, "jobs").code == 0
