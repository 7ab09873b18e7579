"""A job's life through a real API server: phase, exit code and reason as the kubelet writes them.

There is no kubelet here, so the test writes each pod status through the
API server's ``pods/status`` subresource as a kubelet would (as the admin
identity: the server's own identity may not), after binding the pod to a
node as the scheduler would. What the server reads back -- through the
Kubernetes submitter and through the HTTP app with the real OPA -- is what
the API server stored. Output cannot be read without a kubelet: a job that
has not started is answered 409 ``not_started`` before any log request is
made; real output is read on the real node (tests/e2e/test_node_job_life.py).
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kube import JOBS_NAMESPACE, KubeAPI, bind_pod, report_job_container
from support.app_server import AppServer
from support.ident import Ident
from support.opa import OpaHandle

from tokensvc.cluster.devstack import USER_A, USER_B
from tokensvc.cluster.jobs import JobRequest
from tokensvc.cluster.kube import KubernetesSubmitter
from tokensvc.cluster.launcher import build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, RunAs
from tokensvc.core.errors import NotStarted

pytestmark = pytest.mark.usefixtures("deployed_rbac")

NODE = "tokensvc-fake-node"  # a name only: no kubelet answers for it
IMAGE = "registry.invalid/job:1"
T0, T1 = "2026-12-07T01:00:00Z", "2026-12-07T01:00:05Z"


def at(text: str | None) -> datetime.datetime:
    """An RFC 3339 time (the API serves ``Z``; the client writes ``+00:00``)."""
    assert text
    return datetime.datetime.fromisoformat(text)


def manifest(uid: int = USER_A.uid) -> dict[str, Any]:
    decision = Decision(allow=True, run_as=RunAs(uid, 2001), supplemental_groups=(2001,))
    request = JobRequest(project="ml-team", image=IMAGE, command=("true",))
    return pod_manifest(
        build_pod(Ident(uid, secrets.token_hex(16)), decision, request, decision_id="d-life")
    )


@pytest.fixture
def submitter(kube_api: KubeAPI) -> Iterator[KubernetesSubmitter]:
    sub = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("launcher")), timeout=10
    )
    yield sub
    sub.close()


def bind(kube_api: KubeAPI, name: str) -> None:
    bind_pod(kube_api, name, NODE)


def write_status(kube_api: KubeAPI, name: str, phase: str, state: dict[str, Any]) -> None:
    report_job_container(kube_api, name, phase=phase, state=state, image=IMAGE)


def run_through(kube_api: KubeAPI, submitter: KubernetesSubmitter, exit_code: int) -> str:
    """Create, release, bind and run a job to its end with ``exit_code``; its name."""
    name = submitter.create(manifest()).name
    submitter.release(name)
    bind(kube_api, name)
    write_status(kube_api, name, "Running", {"running": {"startedAt": T0}})
    ended = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": T0,
        "finishedAt": T1,
    }
    write_status(kube_api, name, "Succeeded" if exit_code == 0 else "Failed", {"terminated": ended})
    return name


def test_phases_from_held_to_succeeded(kube_api: KubeAPI, submitter: KubernetesSubmitter) -> None:
    name = submitter.create(manifest()).name
    try:
        held = submitter.get(name)
        assert (held.phase, held.exit_code, held.reason) == ("Pending", None, "SchedulingGated")
        assert not held.has_run
        with pytest.raises(NotStarted):
            submitter.logs(held, follow=True, limit_bytes=1024)

        submitter.release(name)
        bind(kube_api, name)
        write_status(kube_api, name, "Pending", {"waiting": {"reason": "ContainerCreating"}})
        creating = submitter.get(name)
        assert (creating.phase, creating.reason, creating.has_run) == (
            "Pending",
            "ContainerCreating",
            False,
        )

        write_status(kube_api, name, "Running", {"running": {"startedAt": T0}})
        running = submitter.get(name)
        assert (running.phase, running.exit_code, at(running.started)) == ("Running", None, at(T0))
        assert running.has_run

        done = {"exitCode": 0, "reason": "Completed", "startedAt": T0, "finishedAt": T1}
        write_status(kube_api, name, "Succeeded", {"terminated": done})
        succeeded = submitter.get(name)
        assert (succeeded.phase, succeeded.exit_code, succeeded.reason) == (
            "Succeeded",
            0,
            "Completed",
        )
        assert (at(succeeded.started), at(succeeded.finished)) == (at(T0), at(T1))
        (listed,) = [r for r in submitter.list() if r.name == name]
        assert listed == succeeded
    finally:
        submitter.delete(name)


def test_a_failed_job_reports_its_exit_code(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    name = run_through(kube_api, submitter, exit_code=3)
    try:
        failed = submitter.get(name)
        assert (failed.phase, failed.exit_code, failed.reason) == ("Failed", 3, "Error")
    finally:
        submitter.delete(name)


def test_an_ended_job_is_not_running_while_the_pods_phase_lags(
    kube_api: KubeAPI, submitter: KubernetesSubmitter
) -> None:
    # The kubelet writes the container's end first and the pod's phase a sync
    # later; a user asking in between sees how the job ended, not "Running".
    name = submitter.create(manifest()).name
    try:
        submitter.release(name)
        bind(kube_api, name)
        for code, phase in ((0, "Succeeded"), (3, "Failed")):
            ended = {"exitCode": code, "reason": "Error", "startedAt": T0, "finishedAt": T1}
            write_status(kube_api, name, "Running", {"terminated": ended})
            record = submitter.get(name)
            assert (record.phase, record.exit_code) == (phase, code)
    finally:
        submitter.delete(name)


@pytest.fixture
def server(
    opa: OpaHandle, kube_api: KubeAPI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    sub = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(kube_api.kubeconfig("launcher")), timeout=10
    )
    with AppServer(tmp_path_factory.mktemp("life"), opa_url=opa.url, submitter=sub) as running:
        yield running


def call(server: AppServer, path: str, token: str) -> requests.Response:
    return requests.get(server.url + path, headers=server.bearer(token), timeout=15)


def test_the_api_shows_phases_and_exit_codes_and_refuses_output_before_the_start(
    kube_api: KubeAPI, server: AppServer, submitter: KubernetesSubmitter
) -> None:
    body = {"project": "ml-team", "image": "registry.invalid/job:1", "command": ["true"]}
    created = requests.post(
        server.url + "/v1/jobs",
        json=body,
        headers=server.bearer(server.token(USER_A, body=body)),
        timeout=15,
    )
    assert created.status_code == 201, created.text
    waiting = created.json()["job"]["id"]
    ended = run_through(kube_api, submitter, exit_code=42)
    try:
        # Released but not scheduled: nothing has run, so there is no output yet.
        resp = call(server, f"/v1/jobs/{waiting}/logs?follow=true", server.token(USER_A))
        assert (resp.status_code, resp.json()["code"]) == (409, "not_started")

        got = call(server, f"/v1/jobs/{ended}", server.token(USER_A)).json()["job"]
        assert (got["phase"], got["exit_code"], got["reason"]) == ("Failed", 42, "Error")
        assert (at(got["started"]), at(got["finished"])) == (at(T0), at(T1))
        listed = call(server, "/v1/jobs", server.token(USER_A)).json()["jobs"]
        phases = {j["id"]: (j["phase"], j["exit_code"]) for j in listed}
        assert phases[ended] == ("Failed", 42)
        assert phases[waiting] == ("Pending", None)

        # Neither owner nor a member who may see others' jobs: 403 before any output.
        denied = call(server, f"/v1/jobs/{ended}/logs", server.token(USER_B))
        assert denied.status_code == 403
        assert denied.json()["reasons"] == [
            "job of another user in a project you are not a member of"
        ]
    finally:
        submitter.delete(waiting)
        submitter.delete(ended)
