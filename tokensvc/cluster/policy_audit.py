"""Audit of live jobs: which pending or running jobs would the active policy no longer allow?

A job is admitted once, at submit; a policy change afterwards (a grant
removed, a level lowered, a revocation) does not reach the pods already
created. :func:`audit_jobs` closes that gap: it takes the jobs the submitter
holds now, finds each one's submit decision in the server's audit log (the
pod records the ``decision_id`` it was admitted under; the decision line
holds the input OPA saw, minus secrets), evaluates that input again with the
real OPA against the active policy, and reports each job whose submit would
now be denied, with the policy's reasons. :func:`cancel_jobs` cancels them.

A job whose submit decision is not in the log given (rotated away, or OPA
ran without decision logging, so no id was recorded) cannot be replayed: it
is reported as *unreplayable* and never cancelled on a guess.

The replayed identity is what the audit line kept (uid, gid, groups):
policy that reads other identity fields (revocation by token id, host or
key) cannot match a replay; revoke those jobs by their token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from tokensvc.cluster.audit import audit_line
from tokensvc.cluster.jobs import JobRecord
from tokensvc.cluster.jobstore import Submitter
from tokensvc.cluster.policy_tools import RecordedDecision, read_decisions, replay_input
from tokensvc.core.errors import NotFound, SubmitFailed

# Phases of a job that still holds (or will hold) what its decision granted.
LIVE_PHASES: Final = frozenset({"Pending", "Running"})

Verdict = Literal["allowed", "denied", "unreplayable"]
# Evaluates the decision for each input with the real OPA; None where undefined.
Evaluator = Callable[[Sequence[Mapping[str, Any]]], list[Any]]


@dataclass(frozen=True)
class AuditedJob:
    """One live job and what the active policy says about its submit today."""

    job: JobRecord
    verdict: Verdict
    recorded: RecordedDecision | None = None
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job.to_json(),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "recorded_revision": self.recorded.revision if self.recorded else None,
        }


@dataclass(frozen=True)
class AuditReport:
    """Every live job, judged; the lists a reviewer acts on."""

    jobs: tuple[AuditedJob, ...]

    @property
    def denied(self) -> list[AuditedJob]:
        """Jobs the active policy would no longer allow."""
        return [j for j in self.jobs if j.verdict == "denied"]

    @property
    def unreplayable(self) -> list[AuditedJob]:
        """Jobs without a recorded submit decision to replay."""
        return [j for j in self.jobs if j.verdict == "unreplayable"]

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": len(self.jobs),
            "denied": [j.to_json() for j in self.denied],
            "unreplayable": [j.to_json() for j in self.unreplayable],
        }


def submit_decisions(lines: Iterable[str]) -> dict[str, RecordedDecision]:
    """The allowed submit decisions of an audit log, by decision id (a later line wins)."""
    return {
        rec.decision_id: rec
        for rec in read_decisions(lines)
        if rec.decision_id is not None and rec.allow and rec.input.get("action") == "submit"
    }


def live_jobs(submitter: Submitter) -> list[JobRecord]:
    """The jobs the submitter holds that are pending or running, sorted by name."""
    return [job for job in submitter.list() if job.phase in LIVE_PHASES]


def _reasons(decision: Any) -> tuple[str, ...]:
    if not isinstance(decision, dict):
        return ("decision undefined: no policy answered (the server would refuse with 503)",)
    reasons = tuple(str(r) for r in decision.get("reasons") or [])
    return reasons or ("request denied: no rule permits it",)


def audit_jobs(
    jobs: Sequence[JobRecord],
    recorded: Mapping[str, RecordedDecision],
    evaluate: Evaluator,
) -> AuditReport:
    """Replay each job's recorded submit against the active policy (one evaluation for all).

    A job is *denied* unless the decision is the JSON literal ``allow: true``
    (an undefined decision is a denial, as on the request path).
    """
    replayable: list[tuple[JobRecord, RecordedDecision]] = []
    judged: dict[str, AuditedJob] = {}
    for job in jobs:
        rec = recorded.get(job.decision_id) if job.decision_id else None
        if rec is None:
            judged[job.name] = AuditedJob(job, "unreplayable")
        else:
            replayable.append((job, rec))
    decisions = evaluate([replay_input(rec.input) for _, rec in replayable])
    for (job, rec), decision in zip(replayable, decisions, strict=True):
        allowed = isinstance(decision, dict) and decision.get("allow") is True
        judged[job.name] = (
            AuditedJob(job, "allowed", rec)
            if allowed
            else AuditedJob(job, "denied", rec, _reasons(decision))
        )
    return AuditReport(tuple(judged[job.name] for job in jobs))


CancelResult = Literal["cancelled", "not_found", "failed"]


def cancel_jobs(
    jobs: Iterable[AuditedJob],
    submitter: Submitter,
    *,
    policy: str,
    audit: Callable[[Mapping[str, Any]], None] = audit_line,
) -> dict[str, CancelResult]:
    """Cancel each job (``submitter.delete``), one ``policy_cancel`` audit line each.

    The line names the job, its owner and project, the decision it was
    admitted under, the policy that no longer allows it and why, and the
    result: ``cancelled``, ``not_found`` (gone already) or ``failed`` (the
    store's error; the job may still run). A failure does not stop the rest.
    """
    results: dict[str, CancelResult] = {}
    for audited in jobs:
        job = audited.job
        result: CancelResult
        error = None
        try:
            submitter.delete(job.name)
            result = "cancelled"
        except NotFound:
            result = "not_found"
        except SubmitFailed as err:
            result, error = "failed", str(err)
        line: dict[str, Any] = {
            "event": "policy_cancel",
            "job": job.name,
            "owner_uid": job.owner_uid,
            "project": job.project,
            "decision_id": job.decision_id,
            "recorded_revision": audited.recorded.revision if audited.recorded else None,
            "policy": policy,
            "reasons": list(audited.reasons),
            "result": result,
        }
        if error is not None:
            line["error"] = error
        audit(line)
        results[job.name] = result
    return results


def format_audit(report: AuditReport) -> str:
    """The report as a reviewer reads it: one block per job the policy no longer allows."""
    lines = [
        f"{len(report.jobs)} live jobs audited: {len(report.denied)} no longer allowed, "
        f"{len(report.unreplayable)} without a recorded decision"
    ]
    if report.denied:
        lines += ["", "NO LONGER ALLOWED:"]
        for audited in report.denied:
            job = audited.job
            lines.append(
                f"  {job.name}  uid {job.owner_uid}  project {job.project}  {job.phase}"
                f"  (decision {job.decision_id})"
            )
            lines += [f"    - {reason}" for reason in audited.reasons]
    if report.unreplayable:
        lines += ["", "UNREPLAYABLE (submit decision not in the log):"]
        for audited in report.unreplayable:
            job = audited.job
            lines.append(
                f"  {job.name}  uid {job.owner_uid}  project {job.project}"
                f"  (decision {job.decision_id or '-'})"
            )
    return "\n".join(lines)


__all__ = [
    "LIVE_PHASES",
    "AuditReport",
    "AuditedJob",
    "Evaluator",
    "audit_jobs",
    "cancel_jobs",
    "format_audit",
    "live_jobs",
    "submit_decisions",
]
