"""What every job store (submitter) shares: its interface and how a job is read from a pod.

The pod is the single record of a job: owner uid, project and priority are
read back from its labels and annotations, never from a client. Every store
refuses a second pod with the same name (:class:`JobExists`): the name is
derived from the submit token's id, so a replayed submit collides there even
if it slipped past one replica's replay cache.

Stores wrap their libraries' errors at their edge: callers see
:class:`JobExists`, :class:`~tokensvc.core.errors.NotFound` or
:class:`~tokensvc.core.errors.SubmitFailed` only.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from tokensvc.cluster.consumed import RecordStore
from tokensvc.cluster.joblogs import LogStream
from tokensvc.cluster.jobs import JobRecord, is_job_name
from tokensvc.cluster.jobstatus import job_run
from tokensvc.cluster.launcher import (
    ANNOTATION_DECISION_ID,
    ANNOTATION_PRIORITY,
    LABEL_MANAGED_BY,
    LABEL_OWNER_UID,
    LABEL_PROJECT,
    LABEL_TOKEN_ID,
    MANAGED_BY,
)
from tokensvc.core.errors import Replayed, TokenServiceError


class JobExists(Replayed):
    """A job with this token's name already exists: the submit token was used before."""

    def __init__(self, name: str) -> None:
        self.name = name
        TokenServiceError.__init__(self, f"job {name} already exists (token already used)")


@dataclass(frozen=True)
class IdentityMismatch:
    """A started job running as someone else: what its pod asked for, what the node reports.

    Each side is (uid, gid, sorted supplementary groups); the node's is the
    container status's ``user.linux``, the kernel's view the runtime read back.
    """

    name: str
    expected: tuple[int, int, tuple[int, ...]]
    reported: tuple[int, int, tuple[int, ...]]

    def to_audit(self) -> dict[str, Any]:
        def ids(who: tuple[int, int, tuple[int, ...]]) -> dict[str, Any]:
            return {"uid": who[0], "gid": who[1], "groups": list(who[2])}

        return {"job": self.name, "expected": ids(self.expected), "reported": ids(self.reported)}


@dataclass(frozen=True)
class StrictUnsupported:
    """A started job whose node cannot vouch for ``supplementalGroupsPolicy: Strict``.

    Either the node does not report ``status.features.supplementalGroupsPolicy:
    true`` (its kubelet or runtime may merge the image's groups, or ignore the
    field), or a running container reports no ``user.linux`` to compare with
    the decision. Nothing shows who the job runs as, so it is treated like a
    mismatch: fail closed.
    """

    name: str
    node: str
    reason: str

    def to_audit(self) -> dict[str, Any]:
        return {"job": self.name, "node": self.node, "reason": self.reason}


# What the post-launch check finds wrong with a started job.
IdentityViolation: TypeAlias = IdentityMismatch | StrictUnsupported


class Submitter(Protocol):
    """Where pods go. Every method is blocking; the server calls them off the event loop.

    Every method answers within the store's own deadline (documented per
    store) or raises :class:`~tokensvc.core.errors.SubmitFailed`.

    A job is created *held* (it cannot start) and made runnable by
    :meth:`release` once its submit token's record says it was admitted;
    ``records`` keeps those consumed-token records in the same store.
    """

    @property
    def records(self) -> RecordStore:
        """The consumed submit-token records, kept in this store."""

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        """Create the pod, held; :class:`JobExists` if the name is taken."""

    def release(self, name: str) -> None:
        """Let a held job run (idempotent); :class:`NotFound` if there is no such job."""

    def held(self, older_than: float) -> list[str]:
        """Names of jobs still held that were created before ``older_than`` (unix seconds)."""

    def identity_violations(self) -> list[IdentityViolation]:
        """Started jobs not shown to run as their pod asked, one finding per job.

        An :class:`IdentityMismatch` where the node reports another uid, gid
        or groups; a :class:`StrictUnsupported` where it cannot vouch for
        Strict. A job none of whose containers has started is not judged.
        """

    def get(self, name: str) -> JobRecord:
        """The job's record; :class:`NotFound` if there is no such job."""

    def logs(self, job: JobRecord, *, follow: bool, limit_bytes: int) -> LogStream:
        """The output of ``job`` (a record :meth:`get` just read), at most ``limit_bytes``.

        ``follow``: the stream goes on as the job writes and ends when its
        container ends. :class:`~tokensvc.core.errors.NotStarted` while the
        job's container has not started, :class:`~tokensvc.core.errors.NoLogs`
        from a store that keeps no output, ``NotFound`` once the job is gone.
        """

    def list(
        self, *, owner_uid: int | None = None, projects: Collection[str] | None = None
    ) -> list[JobRecord]:
        """Every job this service created, sorted by name; or, filtered, the visible ones.

        Given either filter: the jobs ``owner_uid`` owns and those in one of
        ``projects`` (what the policy's ``visible_projects`` lets a caller see).
        """

    def delete(self, name: str) -> None:
        """Cancel the job; :class:`NotFound` if there is no such job."""

    def set_priority(self, name: str, priority: int) -> JobRecord:
        """Record a new priority on the job; :class:`NotFound` if there is no such job."""

    def close(self) -> None:
        """Release connections."""


def record_from_manifest(manifest: dict[str, Any]) -> JobRecord:
    """Read a job record from a pod dict; ValueError if it is not one of ours."""
    meta = manifest.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not is_job_name(name):
        raise ValueError("not a tokensvc job name")
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        raise ValueError("pod not managed by tokensvc")
    owner = labels.get(LABEL_OWNER_UID, "")
    project = labels.get(LABEL_PROJECT)
    token_id = labels.get(LABEL_TOKEN_ID)
    if not (isinstance(owner, str) and owner.isascii() and owner.isdigit()):
        raise ValueError("owner label missing or not a uid")
    if not isinstance(project, str) or not isinstance(token_id, str):
        raise ValueError("project or token-id label missing")
    raw_priority = annotations.get(ANNOTATION_PRIORITY)
    priority = (
        int(raw_priority)
        if isinstance(raw_priority, str) and raw_priority.isascii() and raw_priority.isdigit()
        else None
    )
    decision_id = annotations.get(ANNOTATION_DECISION_ID)
    created = meta.get("creationTimestamp")
    run = job_run(manifest)
    return JobRecord(
        name=name,
        owner_uid=int(owner),
        project=project,
        priority=priority,
        token_id=token_id,
        decision_id=decision_id if isinstance(decision_id, str) else None,
        phase=run.phase,
        created=str(created) if created is not None else None,
        exit_code=run.exit_code,
        reason=run.reason,
        started=run.started,
        finished=run.finished,
    )


__all__ = [
    "IdentityMismatch",
    "IdentityViolation",
    "JobExists",
    "StrictUnsupported",
    "Submitter",
    "record_from_manifest",
]
