"""A job's run as its pod's status reports it: phase, exit code, reason, start and end.

The kubelet writes the pod's ``status``; the API server stores it. This
module only reads that document (the pod as a plain dict, camelCase keys as
the API serves it) and never guesses: a field the status does not hold is
None. Job pods never restart (``restartPolicy: Never``), so the job
container's current state is its only run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tokensvc.cluster.launcher import CONTAINER_NAME

# What a pod without a phase is: the API server sets Pending on create, so
# only a manifest that was never stored (the spool's) lacks one.
DEFAULT_PHASE: Final = "Pending"


@dataclass(frozen=True, slots=True)
class JobRun:
    """The run fields of a :class:`~tokensvc.cluster.jobs.JobRecord`.

    - ``phase``: the pod's phase (Pending, Running, Succeeded, Failed, Unknown);
      once the job container has terminated, Succeeded or Failed by its exit
      code, as the kubelet will write it;
    - ``exit_code``: the job container's, once it has terminated;
    - ``reason``: the job container's state reason (``ContainerCreating``,
      ``ErrImageNeverPull``, ``Completed``, ``Error``, ``OOMKilled``, ...) or,
      while it has no state, why the pod is not scheduled (``SchedulingGated``
      while the job is held for admission, ``Unschedulable``);
    - ``started``, ``finished``: RFC 3339 times the container started and
      ended; ``started`` is ``""`` for a running container whose status
      gives no time (it has started all the same).
    """

    phase: str = DEFAULT_PHASE
    exit_code: int | None = None
    reason: str | None = None
    started: str | None = None
    finished: str | None = None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _container_run(status: dict[str, Any]) -> JobRun:
    for cs in status.get("containerStatuses") or []:
        if not isinstance(cs, dict) or cs.get("name") != CONTAINER_NAME:
            continue
        state = cs.get("state") or {}
        done = state.get("terminated")
        if isinstance(done, dict):
            code = done.get("exitCode")
            return JobRun(
                exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                reason=_text(done.get("reason")),
                started=_text(done.get("startedAt")),
                finished=_text(done.get("finishedAt")),
            )
        running = state.get("running")
        if isinstance(running, dict):
            return JobRun(started=_text(running.get("startedAt")) or "")
        waiting = state.get("waiting")
        if isinstance(waiting, dict):
            return JobRun(reason=_text(waiting.get("reason")))
    return JobRun()


def _unscheduled_reason(status: dict[str, Any]) -> str | None:
    """The reason of a PodScheduled condition that is not True (held, or no node fits)."""
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "PodScheduled":
            return _text(cond.get("reason")) if cond.get("status") != "True" else None
    return None


def job_run(manifest: dict[str, Any]) -> JobRun:
    """The run of the job whose pod (a dict, as the API serves it) this is."""
    status = manifest.get("status")
    if not isinstance(status, dict):
        return JobRun()
    phase = _text(status.get("phase")) or DEFAULT_PHASE
    run = _container_run(status)
    if run.exit_code is not None and phase in ("Pending", "Running"):
        # The kubelet records the container's end before the pod's phase (one
        # status sync later). With one container that never restarts, the
        # phase it will write is already decided: report that, not the lag.
        phase = "Succeeded" if run.exit_code == 0 else "Failed"
    reason = run.reason or _unscheduled_reason(status) or _text(status.get("reason"))
    return JobRun(phase, run.exit_code, reason, run.started, run.finished)


__all__ = ["DEFAULT_PHASE", "JobRun", "job_run"]
