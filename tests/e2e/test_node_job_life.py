"""A job's life for its user, on the real node: phases, exit codes and output through the server.

The server is the real HTTP app (uvicorn, admission service, real OPA with
the signed bundle of policies/) in this process, its Kubernetes submitter
pointed at the node's API server; the client is the CLI's own
(:class:`~tokensvc.cluster.client.JobClient`) with tokens sealed by the
server's key and bound as the CLI binds them. Jobs really run on the node:
their phases and exit codes are what the kubelet reported, their output
what the container wrote, read by the server through the API server.

The last test is the same life as users meet it: the CLI (``tokensvc
submit``, ``jobs``, ``job``, ``logs [--follow]``) run as real users through
the mint daemon, against ``tokensvc server`` on the node's API server.

Whether a followed output arrives as it is written is shown without timing:
the job prints a line and then waits for a file that only the test creates
(through the API server's exec, as the job's own uid); the line must have
arrived, with the job still running, before the test lets it go on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest
import requests
from integration.admission_stack import run_as, stack_fixture
from jobpods import delete_and_wait
from kubernetes.stream import stream
from realnode import JOBS_NAMESPACE, Cluster
from support.app_server import REALM, AppServer
from support.binding import forge_token
from support.opa import OpaHandle, start_opa

from tokensvc.cluster.client import JobClient
from tokensvc.cluster.devstack import USER_A, USER_B, USER_C, Stack, User
from tokensvc.cluster.jobs import parse_job_request
from tokensvc.cluster.kube import KubernetesSubmitter
from tokensvc.core.digest import action_digest, request_digest
from tokensvc.core.errors import PolicyDenied, ServerBusy

pytestmark = pytest.mark.root

JOB_IMAGE = "tokensvc.local/job:0.1.0"
RUN_TIMEOUT = 120.0  # a deadline for the node to get on, not a measurement
GO_FILE = "/tmp/go"


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaHandle]:
    handle = start_opa(tmp_path_factory.mktemp("opa"))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def core(cluster: Cluster) -> Iterator[kubernetes.client.CoreV1Api]:
    """The admin's API client for this module (closed at its end: no socket left open)."""
    api_client = cluster.api.api_client("admin")
    yield kubernetes.client.CoreV1Api(api_client)
    api_client.close()


@pytest.fixture(scope="module")
def server(
    cluster: Cluster, opa: OpaHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    submitter = KubernetesSubmitter(
        namespace=JOBS_NAMESPACE, kubeconfig=str(cluster.api.kubeconfig("admin")), timeout=10
    )
    with AppServer(tmp_path_factory.mktemp("life"), opa_url=opa.url, submitter=submitter) as s:
        yield s


def client(server: AppServer, user: User, binding: str | None) -> JobClient:
    """The CLI's client, its token for ``user`` bound to ``binding`` as the CLI binds it."""

    def token() -> str:
        return forge_token(server.ring, user, realm=REALM, host="e2e", binding=binding)

    return JobClient(server.url, token, timeout=30)


def submit(server: AppServer, script: str) -> str:
    body = {"project": "ml-team", "image": JOB_IMAGE, "command": ["/bin/sh", "-c", script]}
    request = parse_job_request(body)
    with client(server, USER_A, request_digest(request.to_input())) as c:
        done = c.submit(request)
    assert done["job"]["phase"] == "Pending"
    return str(done["job"]["id"])


def get(server: AppServer, job: str, user: User = USER_A) -> dict[str, Any]:
    with client(server, user, action_digest("get", job)) as c:
        found: dict[str, Any] = c.get(job)["job"]
    return found


def listed(server: AppServer, job: str) -> dict[str, Any]:
    with client(server, USER_A, action_digest("list", "")) as c:
        (found,) = [j for j in c.list() if j["id"] == job]
    return found


def wait_for(server: AppServer, job: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the job through the server until ``done`` holds; the phases seen on the way."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        seen = get(server, job)
        if done(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{job}: still {seen}")
        time.sleep(0.25)  # polling the job's status: the server offers no watch


def output(server: AppServer, job: str, *, follow: bool) -> bytes:
    with client(server, USER_A, action_digest("logs", job)) as c:
        return b"".join(c.logs(job, follow=follow))


def test_a_job_succeeds_and_its_output_is_read_through_the_server(
    core: kubernetes.client.CoreV1Api, server: AppServer
) -> None:
    job = submit(server, "echo first line; echo second line; echo to stderr >&2")
    try:
        assert listed(server, job)["phase"] in ("Pending", "Running", "Succeeded")
        done = wait_for(server, job, lambda j: j["phase"] in ("Succeeded", "Failed"))
        assert (done["phase"], done["exit_code"], done["reason"]) == ("Succeeded", 0, "Completed")
        assert done["started"] and done["finished"] and done["owner_uid"] == USER_A.uid
        assert listed(server, job) == done
        text = output(server, job, follow=False).decode()
        # stdout and stderr are separate pipes: each in order, interleaved as the runtime read them.
        lines = text.splitlines()
        assert [line for line in lines if line != "to stderr"] == ["first line", "second line"]
        assert sorted(lines) == ["first line", "second line", "to stderr"]
        assert output(server, job, follow=True).decode() == text  # an ended job's follow ends
        # A member whose level may see others' jobs reads it too; a stranger is refused.
        with client(server, USER_C, action_digest("logs", job)) as c:
            assert b"".join(c.logs(job)).decode() == text
        with (
            client(server, USER_B, action_digest("logs", job)) as c,
            pytest.raises(PolicyDenied) as denied,
        ):
            b"".join(c.logs(job))
        assert denied.value.reasons == ("job of another user in a project you are not a member of",)
    finally:
        delete_and_wait(core, job, JOBS_NAMESPACE)


def test_a_failing_job_is_failed_with_its_exit_code(
    core: kubernetes.client.CoreV1Api, server: AppServer
) -> None:
    job = submit(server, "echo about to fail; exit 7")
    try:
        done = wait_for(server, job, lambda j: j["phase"] in ("Succeeded", "Failed"))
        assert (done["phase"], done["exit_code"], done["reason"]) == ("Failed", 7, "Error")
        assert listed(server, job)["exit_code"] == 7
        assert output(server, job, follow=False) == b"about to fail\n"
    finally:
        delete_and_wait(core, job, JOBS_NAMESPACE)


def let_go(core: kubernetes.client.CoreV1Api, job: str) -> None:
    """Create the file the job waits for, inside its container (as the job's own uid)."""
    exec_session = stream(
        core.connect_get_namespaced_pod_exec,
        job,
        JOBS_NAMESPACE,
        container="job",
        command=["touch", GO_FILE],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    try:
        exec_session.run_forever(timeout=RUN_TIMEOUT)
        assert exec_session.returncode == 0, exec_session.read_all()
    finally:
        exec_session.close()
        # The websocket's close() does nothing once the peer has closed the
        # session; shutdown() closes its socket whatever happened.
        exec_session.sock.shutdown()


def test_follow_streams_lines_as_they_are_printed_and_ends_with_the_container(
    core: kubernetes.client.CoreV1Api, server: AppServer
) -> None:
    marker = secrets.token_hex(4)
    script = (
        f"echo before {marker}; "
        f"while ! test -e {GO_FILE}; do sleep 0.1; done; "
        f"echo after {marker}; exit 3"
    )
    job = submit(server, script)
    try:
        running = wait_for(server, job, lambda j: j["phase"] != "Pending")
        assert (running["phase"], running["exit_code"]) == ("Running", None)
        with client(server, USER_A, action_digest("logs", job)) as c:
            chunks = c.logs(job, follow=True)
            received = b""
            while b"before" not in received:
                received += next(chunks)
            # The first line came while the job waits: it has not ended.
            still = get(server, job)
            assert (still["phase"], still["exit_code"]) == ("Running", None)
            let_go(core, job)
            received += b"".join(chunks)  # ends only when the container ends
        assert received.decode().splitlines() == [f"before {marker}", f"after {marker}"]
        done = wait_for(server, job, lambda j: j["phase"] in ("Succeeded", "Failed"))
        assert (done["phase"], done["exit_code"]) == ("Failed", 3)
    finally:
        delete_and_wait(core, job, JOBS_NAMESPACE)


def test_output_before_the_container_starts_is_not_started(
    core: kubernetes.client.CoreV1Api, server: AppServer
) -> None:
    # An image the node does not have (and may not pull): the container never starts.
    body = {"project": "ml-team", "image": "tokensvc.local/absent:0", "command": ["true"]}
    request = parse_job_request(body)
    with client(server, USER_A, request_digest(request.to_input())) as c:
        job = str(c.submit(request)["job"]["id"])
    try:
        seen = get(server, job)
        assert (seen["phase"], seen["exit_code"], seen["started"]) == ("Pending", None, None)
        resp = requests.get(
            f"{server.url}/v1/jobs/{job}/logs",
            headers=server.bearer(server.token(USER_A)),
            timeout=30,
        )
        assert (resp.status_code, resp.json()["code"]) == (409, "not_started")
    finally:
        delete_and_wait(core, job, JOBS_NAMESPACE)


@pytest.fixture(scope="module")
def stack(cluster: Cluster, opa: OpaHandle) -> Iterator[Stack]:
    """The stack as users meet it: mint daemon, ``tokensvc server`` on the node's API server."""
    settings: dict[str, str | int | float] = {
        "submitter": "kubernetes",
        "kubeconfig": str(cluster.api.kubeconfig("admin")),
        "namespace": JOBS_NAMESPACE,
    }
    yield from stack_fixture(external_opa=opa.url, server_settings=settings)


def test_the_cli_shows_a_jobs_life_and_output(stack: Stack) -> None:
    script = "echo one; echo two; exit 5"
    submitted = run_as(
        stack, USER_A, "submit", "--project", "ml-team", "--image", JOB_IMAGE, "-o", "json",
        "--", "/bin/sh", "-c", script,
    )  # fmt: skip
    assert submitted.code == 0, submitted.err
    job = submitted.json()["job"]["id"]
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            (seen,) = [
                j for j in run_as(stack, USER_A, "jobs", "-o", "json").json() if j["id"] == job
            ]
            if seen["phase"] in ("Succeeded", "Failed") or time.monotonic() > deadline:
                break
            time.sleep(0.25)  # polling the job's status: the server offers no watch
        assert (seen["phase"], seen["exit_code"]) == ("Failed", 5)
        table = run_as(stack, USER_A, "jobs").out.splitlines()
        (row,) = [line for line in table if line.startswith(job)]
        assert row.split()[-2:] == ["Failed", "5"]

        shown = run_as(stack, USER_A, "job", job)
        assert shown.code == 0, shown.err
        fields = dict(line.split(":", 1) for line in shown.out.splitlines())
        assert fields["phase"].strip() == "Failed" and fields["exit code"].strip() == "5"
        assert fields["reason"].strip() == "Error" and fields["owner uid"].strip() == "1002"
        assert run_as(stack, USER_A, "job", job, "-o", "json").json() == seen

        for args in ((), ("--follow",)):
            printed = run_as(stack, USER_A, "logs", *args, job)
            assert (printed.code, printed.out) == (0, "one\ntwo\n"), printed.err
        refused = run_as(stack, USER_B, "logs", job)
        assert refused.code == 7
        assert "job of another user in a project you are not a member of" in refused.err
    finally:
        run_as(stack, USER_A, "cancel", job)


def follow_first_line(server: AppServer, job: str) -> tuple[JobClient, Iterator[bytes]]:
    """A followed output, read up to its first line and left open; busy answers are retried."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        c = client(server, USER_A, action_digest("logs", job))
        chunks = c.logs(job, follow=True)
        try:
            received = b""
            while b"\n" not in received:
                received += next(chunks)
        except ServerBusy:
            c.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # a slot is freed once the server has seen its client go
            continue
        return c, chunks


def test_a_client_that_goes_away_gives_its_stream_back(
    core: kubernetes.client.CoreV1Api, server: AppServer
) -> None:
    job = submit(server, f"echo waiting; while ! test -e {GO_FILE}; do sleep 0.1; done")
    try:
        wait_for(server, job, lambda j: j["phase"] != "Pending")
        # The in-process server follows at most 2 outputs at once (8 threads):
        # six clients that each go away mid-stream must not use them up.
        for _ in range(6):
            c, chunks = follow_first_line(server, job)
            chunks.close()  # hangs up mid-stream
            c.close()
        held = [follow_first_line(server, job) for _ in range(2)]
        with (
            client(server, USER_A, action_digest("logs", job)) as third,
            pytest.raises(ServerBusy),  # the limit holds while both are read
        ):
            next(third.logs(job, follow=True))
        for c, chunks in held:
            chunks.close()
            c.close()
    finally:
        delete_and_wait(core, job, JOBS_NAMESPACE)
