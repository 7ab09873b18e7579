"""GET /v1/jobs/{id}/logs through the real app and the real OPA, on the spool store.

The spool runs nothing, so it has no output: an allowed request is answered
501 ``no_logs``; the policy's ``logs`` action decides first (403 with every
reason for a user who may not see the job), and the token's binding is
checked like get's. Real output is read on the real node
(tests/e2e/test_node_job_life.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.app_server import REALM, AppServer
from support.binding import forge_token
from support.opa import OpaHandle

from tokensvc.cluster.devstack import USER_A, USER_B, USER_C, User
from tokensvc.core.digest import action_digest

JOB = {"project": "ml-team", "image": "busybox:1.36", "command": ["echo", "hello"]}


@pytest.fixture(scope="module")
def server(opa: OpaHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with AppServer(tmp_path_factory.mktemp("app-logs"), opa_url=opa.url) as running:
        yield running


@pytest.fixture(scope="module")
def job_id(server: AppServer) -> str:
    token = server.token(USER_A, body=JOB)
    created = requests.post(
        server.url + "/v1/jobs", json=JOB, headers=server.bearer(token), timeout=10
    )
    assert created.status_code == 201, created.text
    job: dict[str, Any] = created.json()["job"]
    assert (job["phase"], job["exit_code"], job["reason"]) == ("Pending", None, None)
    return str(job["id"])


def bound_token(server: AppServer, user: User, action: str, job: str) -> str:
    return forge_token(server.ring, user, realm=REALM, binding=action_digest(action, job))


def logs(server: AppServer, job: str, token: str, query: str = "") -> requests.Response:
    return requests.get(
        f"{server.url}/v1/jobs/{job}/logs{query}", headers=server.bearer(token), timeout=10
    )


def test_the_owner_is_allowed_and_the_spool_answers_no_logs(server: AppServer, job_id: str) -> None:
    for query in ("", "?follow=true", "?follow=false"):
        resp = logs(server, job_id, bound_token(server, USER_A, "logs", job_id), query)
        assert resp.status_code == 501, resp.text
        assert resp.json()["code"] == "no_logs"
    decisions = [
        line
        for line in server.audit_lines
        if line.get("event") == "decision" and line.get("action") == "logs"
    ]
    assert decisions and all(d["allow"] and d["job"] == job_id for d in decisions)


def test_a_member_who_may_see_others_jobs_is_allowed(server: AppServer, job_id: str) -> None:
    resp = logs(server, job_id, server.token(USER_C))
    assert (resp.status_code, resp.json()["code"]) == (501, "no_logs")


def test_a_stranger_is_denied_with_every_reason(server: AppServer, job_id: str) -> None:
    resp = logs(server, job_id, bound_token(server, USER_B, "logs", job_id))
    assert resp.status_code == 403
    body = resp.json()
    assert body["code"] == "denied" and body["decision_id"]
    assert body["reasons"] == ["job of another user in a project you are not a member of"]


def test_a_token_bound_to_another_action_is_refused(server: AppServer, job_id: str) -> None:
    for action, job in (("get", job_id), ("logs", "wsc-job-" + "0" * 32)):
        resp = logs(server, job_id, bound_token(server, USER_A, action, job))
        assert (resp.status_code, resp.json()["code"]) == (401, "wrong_request")


@pytest.mark.parametrize("query", ["?follow=yes", "?follow=true&follow=false", "?tail=5"])
def test_only_follow_true_or_false_is_a_query(server: AppServer, job_id: str, query: str) -> None:
    resp = logs(server, job_id, server.token(USER_A), query)
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_request")


def test_no_such_job_is_404(server: AppServer) -> None:
    for job in ("wsc-job-" + "e" * 32, "not-a-job"):
        resp = logs(server, job, server.token(USER_A))
        assert (resp.status_code, resp.json()["code"]) == (404, "not_found")
