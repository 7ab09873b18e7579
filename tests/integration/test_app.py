"""The HTTP app in-process, no root: every documented status and body against the real OPA.

The server is the real one (uvicorn with the guarded protocol, Starlette app,
admission service, spool submitter) on loopback in a thread of this process
(``support.app_server``); OPA is the module's real OPA with the signed bundle.
Failures are injected only through public interfaces: a Submitter that fails,
an audit writer that fails, an OPA port nobody listens on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from support.app_server import AppServer
from support.opa import OpaHandle, free_port

from tokensvc.cluster.devstack import USER_A, USER_B
from tokensvc.cluster.jobs import JobRecord
from tokensvc.cluster.submitters import SpoolSubmitter

JOB = {"project": "ml-team", "image": "busybox:1.36", "command": ["sleep", "60"]}


@pytest.fixture(scope="module")
def server(opa: OpaHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with AppServer(tmp_path_factory.mktemp("app"), opa_url=opa.url) as running:
        yield running


def call(
    server: AppServer,
    method: str,
    path: str,
    token: str | None = None,
    **kwargs: Any,
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers.update(server.bearer(token))
    return requests.request(method, server.url + path, headers=headers, timeout=10, **kwargs)


def submit(server: AppServer, body: Mapping[str, Any] = JOB, **kwargs: Any) -> requests.Response:
    return call(server, "POST", "/v1/jobs", server.token(USER_A, body=body), json=body, **kwargs)


# --- success --------------------------------------------------------------------------


def test_submit_get_list_priority_cancel(server: AppServer) -> None:
    created = submit(server)
    assert created.status_code == 201
    body = created.json()
    job_id = body["job"]["id"]
    assert created.headers["Location"] == f"/v1/jobs/{job_id}"
    assert len(created.headers["X-Request-Id"]) == 16
    assert body["decision_id"] and body["pod"]["metadata"]["name"] == job_id
    assert job_id in server.spooled()

    got = call(server, "GET", f"/v1/jobs/{job_id}", server.token(USER_A))
    assert got.status_code == 200
    assert got.json()["job"] == body["job"]
    listed = call(server, "GET", "/v1/jobs", server.token(USER_A))
    assert job_id in [j["id"] for j in listed.json()["jobs"]]
    assert listed.json()["decision_id"]

    path = f"/v1/jobs/{job_id}/priority"
    moved = call(server, "PUT", path, server.token(USER_A), json={"priority": 4})
    assert (moved.status_code, moved.json()["job"]["priority"]) == (200, 4)
    assert server.submitter.get(job_id).priority == 4

    cancelled = call(server, "DELETE", f"/v1/jobs/{job_id}", server.token(USER_A))
    assert cancelled.status_code == 200
    assert cancelled.json()["cancelled"] is True and cancelled.json()["job"]["id"] == job_id
    assert job_id not in server.spooled()
    gone = call(server, "GET", f"/v1/jobs/{job_id}", server.token(USER_A))
    assert (gone.status_code, gone.json()) == (404, {"code": "not_found", "error": "no such job"})


def test_operations(server: AppServer) -> None:
    assert call(server, "GET", "/healthz").json() == {"status": "ok"}
    assert call(server, "HEAD", "/healthz").status_code == 200
    assert call(server, "GET", "/readyz").json() == {"status": "ready"}
    doc = call(server, "GET", "/openapi.json").json()
    assert set(doc["paths"]) >= {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/priority"}
    metrics = call(server, "GET", "/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert "tokensvc_request_seconds_bucket" in metrics.text


# --- refusals ---------------------------------------------------------------------------


def test_no_usable_token_is_a_generic_401_and_audited(server: AppServer) -> None:
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer garbage"}):
        resp = call(server, "GET", "/v1/jobs", headers=headers)
        assert resp.status_code == 401
        assert resp.json() == {"code": "invalid_token", "error": "invalid token"}
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        request_id = resp.headers["X-Request-Id"]
        (line,) = [e for e in server.audit_lines if e.get("request_id") == request_id]
        assert line == {"event": "auth_failed", "request_id": request_id, "reason": "invalid"}


def test_authentic_but_unacceptable_tokens_say_why(server: AppServer) -> None:
    expired = server.token(USER_A, issued_ago=3600)
    resp = call(server, "GET", "/v1/jobs", expired)
    assert (resp.status_code, resp.json()["code"]) == (401, "expired")
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    foreign = server.token(USER_A, realm="elsewhere")
    assert call(server, "GET", "/v1/jobs", foreign).json()["code"] == "wrong_realm"


def test_a_retry_of_the_same_request_gets_the_same_job_and_a_replay_after_cancel_409(
    server: AppServer,
) -> None:
    token = server.token(USER_A, body=JOB)
    first = call(server, "POST", "/v1/jobs", token, json=JOB)
    assert first.status_code == 201
    job = first.json()["job"]["id"]
    before = server.spooled()
    again = call(server, "POST", "/v1/jobs", token, json=JOB)  # the answer was lost, say
    assert (again.status_code, again.json()["job"]["id"]) == (200, job)
    assert server.spooled() == before
    cancel = call(server, "DELETE", f"/v1/jobs/{job}", server.token(USER_A))
    assert cancel.status_code == 200
    replay = call(server, "POST", "/v1/jobs", token, json=JOB)
    assert (replay.status_code, replay.json()["code"]) == (409, "replayed")
    assert job not in server.spooled()


def test_a_token_bound_to_another_request_or_unbound_is_401_wrong_request(
    server: AppServer,
) -> None:
    other = {**JOB, "command": ["python", "other.py"]}
    before = server.spooled()
    for token in (server.token(USER_A, body=other), server.token(USER_A)):
        resp = call(server, "POST", "/v1/jobs", token, json=JOB)
        assert (resp.status_code, resp.json()["code"]) == (401, "wrong_request")
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert server.spooled() == before
    refusals = [e for e in server.audit_lines if e.get("event") == "auth_failed"]
    assert [e["reason"] for e in refusals][-2:] == ["wrongrequest", "wrongrequest"]
    # The token shown with the wrong body is not used up: with its own body it submits.
    bound = server.token(USER_A, body=JOB)
    assert call(server, "POST", "/v1/jobs", bound, json=other).status_code == 401
    assert call(server, "POST", "/v1/jobs", bound, json=JOB).status_code == 201


def test_decision_lines_carry_the_replayable_input(server: AppServer) -> None:
    resp = call(server, "POST", "/v1/jobs", server.token(USER_A, body=JOB), json=JOB)
    assert resp.status_code == 201
    (line,) = [e for e in server.audit_lines if e.get("decision_id") == resp.json()["decision_id"]]
    assert line["input"]["identity"] == {
        "uid": USER_A.uid,
        "gid": USER_A.gid,
        "groups": list(USER_A.groups),
    }
    assert line["input"]["action"] == "submit"
    assert line["input"]["request"]["project"] == JOB["project"]
    assert "command" not in line["input"]["request"]  # may carry secrets; no policy reads it
    assert line["revision"] == "test"  # the revision of the bundle that decided


def test_denial_is_403_with_reasons_and_decision_id(server: AppServer) -> None:
    resp = call(server, "POST", "/v1/jobs", server.token(USER_B, body=JOB), json=JOB)
    assert resp.status_code == 403
    body = resp.json()
    assert body["code"] == "denied" and body["error"] == "denied by policy"
    assert body["reasons"] and body["decision_id"]


def test_bodies_malformed_too_large_wrong_type_or_off_schema(server: AppServer) -> None:
    json_type = {"Content-Type": "application/json"}
    bad = submit(server, data=b"{nope", headers=json_type)  # type: ignore[arg-type]
    assert (bad.status_code, bad.json()["code"]) == (400, "malformed_body")
    big = submit(server, {**JOB, "command": ["x" * 4000] * 40})
    assert (big.status_code, big.json()["code"]) == (413, "body_too_large")
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {} if content_type is None else {"Content-Type": content_type}
        resp = call(
            server, "POST", "/v1/jobs", server.token(USER_A), data=json.dumps(JOB), headers=headers
        )
        assert (resp.status_code, resp.json()["code"]) == (415, "unsupported_media_type")
    charset = {"Content-Type": "application/json; charset=utf-8"}
    token = server.token(USER_A, body=JOB)
    ok = call(server, "POST", "/v1/jobs", token, data=json.dumps(JOB), headers=charset)
    assert ok.status_code == 201
    off = submit(server, {**JOB, "uid": 0})
    assert (off.status_code, off.json()["code"]) == (422, "invalid_request")
    assert any("uid" in r for r in off.json()["reasons"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"project":"ml-team","image":"busybox","command":["echo","\\ud800"]}',
        b'{"project":"ml-team","image":"busybox","command":["\\udfff x"]}',
        b'{"project":"ml-team","image":"busybox","command":["x"],"\\ud83d":1}',
    ],
)
def test_lone_surrogates_are_422_before_anything_is_stored(server: AppServer, body: bytes) -> None:
    before = server.spooled()
    decisions = len([e for e in server.audit_lines if e["event"] == "decision"])
    resp = submit(server, data=body, headers={"Content-Type": "application/json"})  # type: ignore[arg-type]
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_request")
    assert any("Unicode" in r for r in resp.json()["reasons"])
    assert server.spooled() == before
    assert len([e for e in server.audit_lines if e["event"] == "decision"]) == decisions


def test_astral_plane_text_is_accepted(server: AppServer) -> None:
    resp = submit(server, {**JOB, "command": ["echo", "\U0001f600 \u00e9"]})
    assert resp.status_code == 201
    assert resp.json()["pod"]["spec"]["containers"][0]["command"][1] == "\U0001f600 \u00e9"


def test_unknown_paths_methods_and_job_ids(server: AppServer) -> None:
    for path in ("/v2/jobs", "/v1/jobs/", "/v1/jobs/x/y/z"):
        resp = call(server, "GET", path)
        assert (resp.status_code, resp.json()) == (404, {"code": "not_found", "error": "not found"})
    resp = call(server, "PATCH", "/v1/jobs")
    assert (resp.status_code, resp.headers["Allow"]) == (405, "GET, POST")
    assert resp.json() == {"code": "method_not_allowed", "error": "method not allowed"}
    resp = call(server, "POST", "/v1/jobs/wsc-job-" + "0" * 32)
    assert (resp.status_code, resp.headers["Allow"]) == (405, "DELETE, GET")
    resp = call(server, "GET", "/v1/jobs/wsc-job-" + "0" * 32 + "/priority")
    assert (resp.status_code, resp.headers["Allow"]) == (405, "PUT")
    assert call(server, "POST", "/healthz").headers["Allow"] == "GET"
    resp = call(server, "GET", "/v1/jobs/not-a-job", server.token(USER_A))
    assert (resp.status_code, resp.json()["code"]) == (404, "not_found")


def test_opa_unreachable_is_503_created_false(tmp_path: Path) -> None:
    with AppServer(tmp_path, opa_url=f"http://127.0.0.1:{free_port()}") as server:
        resp = submit(server)
        assert resp.status_code == 503
        assert resp.json()["code"] == "policy_unavailable" and resp.json()["created"] is False
        assert call(server, "GET", "/readyz").status_code == 503
        assert server.spooled() == []


# --- no error answers 500 after storing anything ----------------------------------------


class _Unrenderable(SpoolSubmitter):
    """Stores the pod, then returns a record no JSON encoder can render as UTF-8."""

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        return dataclasses.replace(super().create(manifest), project="\ud800")


class _FailsAfterStoring(SpoolSubmitter):
    """Stores the pod, then fails in a way the submitter contract does not foresee."""

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        super().create(manifest)
        raise RuntimeError("lost the answer")


class _CannotRollBack(_FailsAfterStoring):
    def delete(self, name: str) -> None:
        raise OSError("read-only file system")


@pytest.mark.parametrize("submitter", [_Unrenderable, _FailsAfterStoring])
def test_failure_after_storing_rolls_back_and_answers_503(
    opa: OpaHandle, tmp_path: Path, submitter: type[SpoolSubmitter]
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with AppServer(tmp_path, opa_url=opa.url, submitter=submitter(spool, fsync=False)) as server:
        resp = submit(server)
        assert resp.status_code == 503
        assert (resp.json()["code"], resp.json()["created"]) == ("submit_failed", False)
        assert server.spooled() == []
        kinds = [e["kind"] for e in server.audit_lines if e["event"] == "not_created"]
        assert kinds == ["rolled_back"]


def test_failed_rollback_says_created_is_unknown(opa: OpaHandle, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with AppServer(tmp_path, opa_url=opa.url, submitter=_CannotRollBack(spool, fsync=False)) as s:
        resp = submit(s)
        assert (resp.status_code, resp.json()["created"]) == (503, None)


def test_audit_write_failing_stores_nothing(opa: OpaHandle, tmp_path: Path) -> None:
    def audit(event: Mapping[str, Any]) -> None:
        if event.get("event") == "decision":
            raise OSError("audit log unwritable")

    with AppServer(tmp_path, opa_url=opa.url, audit=audit) as server:
        resp = submit(server)
        assert resp.status_code == 500  # refused before anything was stored
        assert resp.json() == {"code": "internal", "error": "internal error"}
        assert server.spooled() == []
        assert submit(server).status_code == 500  # and stays refused, never half done
        assert server.spooled() == []
