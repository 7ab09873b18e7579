"""A job's life as its record reports it: phase, exit code, reason and times from the pod's status.

The statuses below have the shape the kubelet writes (and the API server
serves) at each step of a job pod's life; the spool, which runs nothing,
reports every job Pending and has no output.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from support.binding import forge_token
from support.ident import Ident

from tokensvc.cli import build_parser
from tokensvc.cluster.devstack import USER_A
from tokensvc.cluster.jobs import JobRequest
from tokensvc.cluster.jobstore import record_from_manifest
from tokensvc.cluster.launcher import build_pod, pod_manifest
from tokensvc.cluster.opa import Decision, OpaClient, RunAs
from tokensvc.cluster.service import AdmissionService
from tokensvc.cluster.spool import SpoolSubmitter
from tokensvc.core.errors import NoLogs, NotFound, ServerBusy
from tokensvc.core.keys import KeyRing, new_key
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.validate import TokenValidator


def pod(status: dict[str, Any] | None = None, token_id: str = "b" * 32) -> dict[str, Any]:
    decision = Decision(allow=True, run_as=RunAs(1001, 2001), supplemental_groups=(2001,))
    request = JobRequest(project="ml-team", image="busybox", command=("true",))
    manifest = pod_manifest(build_pod(Ident(1001, token_id), decision, request, decision_id="d"))
    if status is not None:
        manifest["status"] = status
    return manifest


def job_status(state: dict[str, Any], phase: str, name: str = "job") -> dict[str, Any]:
    return {
        "phase": phase,
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": name, "ready": False, "restartCount": 0, "state": state}],
    }


T0, T1 = "2026-12-07T01:00:00Z", "2026-12-07T01:00:05Z"

LIFE = {
    "never stored (no status)": (None, ("Pending", None, None, None, None)),
    "held behind the admission gate": (
        {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
            ],
        },
        ("Pending", None, "SchedulingGated", None, None),
    ),
    "no node fits": (
        {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
        ("Pending", None, "Unschedulable", None, None),
    ),
    "container being created": (
        job_status({"waiting": {"reason": "ContainerCreating"}}, "Pending"),
        ("Pending", None, "ContainerCreating", None, None),
    ),
    "running": (
        job_status({"running": {"startedAt": T0}}, "Running"),
        ("Running", None, None, T0, None),
    ),
    "succeeded": (
        job_status(
            {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": T0,
                    "finishedAt": T1,
                }
            },
            "Succeeded",
        ),
        ("Succeeded", 0, "Completed", T0, T1),
    ),
    "failed with its exit code": (
        job_status(
            {"terminated": {"exitCode": 3, "reason": "Error", "startedAt": T0, "finishedAt": T1}},
            "Failed",
        ),
        ("Failed", 3, "Error", T0, T1),
    ),
    "evicted: the pod's reason": (
        {"phase": "Failed", "reason": "Evicted", "conditions": []},
        ("Failed", None, "Evicted", None, None),
    ),
    "another container's state is not the job's": (
        job_status({"terminated": {"exitCode": 9}}, "Running", name="sidecar"),
        ("Running", None, None, None, None),
    ),
}


@pytest.mark.parametrize("step", LIFE)
def test_the_record_reads_the_run_from_the_pod_status(step: str) -> None:
    status, (phase, exit_code, reason, started, finished) = LIFE[step]
    record = record_from_manifest(pod(status))
    assert (record.phase, record.exit_code, record.reason, record.started, record.finished) == (
        phase,
        exit_code,
        reason,
        started,
        finished,
    )
    assert record.has_run == (started is not None or exit_code is not None)
    doc = record.to_json()
    assert (doc["phase"], doc["exit_code"], doc["reason"]) == (phase, exit_code, reason)
    assert (doc["started"], doc["finished"]) == (started, finished)


def test_a_running_container_without_a_start_time_has_run() -> None:
    record = record_from_manifest(pod(job_status({"running": {}}, "Running")))
    assert record.has_run and record.started == ""


@pytest.mark.parametrize("bad", ["3", True, None, 1.5])
def test_an_exit_code_that_is_not_an_integer_is_not_reported(bad: object) -> None:
    status = job_status({"terminated": {"exitCode": bad, "reason": "Error"}}, "Failed")
    record = record_from_manifest(pod(status))
    assert record.exit_code is None and record.phase == "Failed"


def test_the_spool_runs_nothing_every_job_is_pending_without_output(tmp_path: Path) -> None:
    spool = SpoolSubmitter(tmp_path / "jobs", fsync=False)
    created = spool.create(pod())
    for record in (created, spool.get(created.name), *spool.list()):
        assert (record.phase, record.exit_code, record.reason) == ("Pending", None, None)
        assert not record.has_run
    with pytest.raises(NoLogs) as err:
        spool.logs(created, follow=True, limit_bytes=1024)
    assert (err.value.http_status, err.value.code, err.value.exit_code) == (501, "no_logs", 18)


def test_outputs_read_at_once_are_bounded_and_failures_do_not_use_up_the_bound(
    tmp_path: Path,
) -> None:
    ring = KeyRing((new_key(),))

    async def run() -> None:
        validator = TokenValidator(ring, realm="t", replay=MemoryReplayCache())
        service = AdmissionService(
            validator=validator,
            opa=OpaClient("http://127.0.0.1:1"),  # never asked: no call here reaches the policy
            submitter=SpoolSubmitter(tmp_path / "jobs", fsync=False),
            namespace="wsc-jobs",
            audit=lambda line: None,
            threads=8,
        )
        try:
            assert service.max_log_streams == 2
            missing = "wsc-job-" + "c" * 32
            caller = await service.authenticate(forge_token(ring, USER_A, realm="t"))
            service._log_streams = service.max_log_streams  # as if two were being read
            with pytest.raises(ServerBusy):
                await service.logs(caller, missing, follow=False, request_id="r")
            service._log_streams = 0
            # A failure after the stream was counted (no such job) gives the count back.
            caller = await service.authenticate(forge_token(ring, USER_A, realm="t"))
            with pytest.raises(NotFound):
                await service.logs(caller, missing, follow=False, request_id="r")
            assert service._log_streams == 0
        finally:
            await service.close()

    asyncio.run(run())


def test_the_cli_parses_job_and_logs() -> None:
    parser = build_parser()
    job = parser.parse_args(["job", "wsc-job-" + "d" * 32, "-o", "json"])
    assert (job.job_id, job.output) == ("wsc-job-" + "d" * 32, "json")
    assert parser.parse_args(["job", "wsc-job-" + "d" * 32]).output == "text"
    logs = parser.parse_args(["logs", "--follow", "wsc-job-" + "d" * 32])
    assert logs.follow is True
    assert parser.parse_args(["logs", "wsc-job-" + "d" * 32]).follow is False


def test_a_job_id_that_cannot_be_one_is_refused_before_any_request() -> None:
    from tokensvc.cluster.client import JobClient  # noqa: PLC0415

    def no_token() -> str:
        raise AssertionError("no token may be minted for a malformed id")

    with JobClient("http://127.0.0.1:1", no_token) as client, pytest.raises(NotFound):
        next(iter(client.logs("../etc")))
