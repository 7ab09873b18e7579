"""The admission path without HTTP: token → OPA input → decision → pod → submitter.

Every action is a coroutine on the server's event loop; blocking steps (the
submitter, the audit line) run in the service's bounded thread pool (see
:class:`AdmissionService`). Errors are the :mod:`tokensvc.core.errors` tree plus
the few defined here; the HTTP layer maps each to one status code.

The OPA input is built from exactly three sources: the token's claims (who),
the validated request body (what), and for actions on an existing job the
owner and project recorded on its pod (whose). Nothing a client sends can
name a uid, gid or group list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from tokensvc.cluster.audit import audit_line, loggable_input
from tokensvc.cluster.consumed import TokenRecord
from tokensvc.cluster.joblogs import MAX_LOG_BYTES, LogStream
from tokensvc.cluster.jobs import JobRecord, JobRequest, job_name
from tokensvc.cluster.jobstore import IdentityMismatch, JobExists
from tokensvc.cluster.launcher import LaunchRefused, build_manifest
from tokensvc.cluster.metrics import Metrics
from tokensvc.cluster.opa import Action, DecisionResult, OpaClient, OpaUnavailable
from tokensvc.cluster.shadow import DEFAULT_MAX_IN_FLIGHT, ShadowPolicy
from tokensvc.cluster.submitters import SubmitFailed, Submitter
from tokensvc.core.claims import Claims
from tokensvc.core.digest import action_digest, request_digest
from tokensvc.core.errors import (
    InvalidToken,
    NotFound,
    PolicyDenied,
    PolicyUnavailable,
    Replayed,
    ServerBusy,
    TokenRejected,
    TokenServiceError,
)
from tokensvc.core.validate import TokenValidator

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submitted job: its record, the pod manifest and the decision id behind it.

    ``existing`` is True when the job was created by an earlier request with
    the same token and body (an idempotent retry after a lost answer).
    """

    job: JobRecord
    pod: dict[str, Any]
    decision_id: str | None
    existing: bool = False


@dataclass(frozen=True, slots=True)
class Acted:
    """The outcome of get/cancel/set_priority on one job."""

    job: JobRecord
    decision_id: str | None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated token: its claims and the id of the key that sealed it."""

    claims: Claims
    key_id: str

    def identity(self) -> dict[str, Any]:
        """The ``identity`` of the OPA input: the claims, and the key (revocations by key)."""
        return {**self.claims.to_identity(), "key_id": self.key_id}


class JobOutput:
    """A job's output being read: :meth:`chunks` as they arrive, then :meth:`close` (always).

    Every read runs in the service's thread pool; :meth:`close` makes a read
    blocked there return at once, so a client that goes away frees its
    thread.
    """

    def __init__(
        self, job: JobRecord, decision_id: str | None, stream: LogStream, service: AdmissionService
    ) -> None:
        self.job = job
        self.decision_id = decision_id
        self._stream = stream
        self._service: AdmissionService | None = service

    async def chunks(self) -> AsyncIterator[bytes]:
        """Each chunk of output as it arrives; ends when the output ends."""
        service = self._service
        while service is not None:
            chunk = await service.blocking(self._stream.read)
            if not chunk:
                return
            yield chunk

    async def close(self) -> None:
        """Stop reading and release the stream (idempotent)."""
        service, self._service = self._service, None
        if service is None:
            return
        self._stream.shutdown()
        try:
            await service.blocking(self._stream.close)
        finally:
            service._log_stream_closed()


@dataclass(frozen=True, slots=True)
class Listed:
    jobs: list[JobRecord]
    decision_id: str | None


class AdmissionService:
    """Authenticate, ask the policy, act. One instance per server process.

    Used on the server's event loop. What is pure CPU runs there: token
    validation (AEAD and the in-memory replay cache), the OPA query (an
    asynchronous client), the pod manifest. What may block -- the submitter
    (spool directory with fsync, or the Kubernetes API) and the audit line (a
    write to stderr, which is a pipe under systemd or Kubernetes) -- runs in a
    bounded ``ThreadPoolExecutor``, so the loop never blocks. An allowed
    decision's audit line travels with the request's next blocking step and is
    written before the action it allowed.

    Nothing is left stored behind a failure: a mutating action either builds
    its answer before it stores (cancel, set_priority), or stores last and
    removes what it stored when the answer cannot be built (submit).
    """

    def __init__(
        self,
        *,
        validator: TokenValidator,
        opa: OpaClient,
        submitter: Submitter,
        namespace: str,
        metrics: Metrics | None = None,
        audit: Callable[[Mapping[str, Any]], None] = audit_line,
        clock: Callable[[], float] = time.time,
        threads: int = 64,
        allow_unbound_submit: bool = False,
        allow_unbound_actions: bool = True,
        shadow_opa: OpaClient | None = None,
        shadow_max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if threads < 1:
            raise ValueError("the service needs at least one worker thread")
        self.validator = validator
        self.opa = opa
        self.submitter = submitter
        self.namespace = namespace
        self.metrics = metrics or Metrics()
        self._audit = audit
        self._clock = clock
        self.allow_unbound_submit = allow_unbound_submit
        self.allow_unbound_actions = allow_unbound_actions
        # At most ``threads`` blocking calls at once; more wait in the executor's queue.
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokensvc")
        # A job's output holds a worker thread for as long as it is read: at
        # most a quarter of them, so the other actions always find threads.
        self.max_log_streams = max(1, threads // 4)
        self._log_streams = 0
        # A candidate policy asked beside every decision; never on the request path.
        self.shadow = (
            None
            if shadow_opa is None
            else ShadowPolicy(
                shadow_opa,
                metrics=self.metrics,
                audit=audit,
                blocking=self.blocking,
                max_in_flight=shadow_max_in_flight,
            )
        )

    async def blocking(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a worker thread (file or network I/O); the loop stays free."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def close(self) -> None:
        """Close OPA's connections (the candidate's too) and the submitter; stop the threads."""
        await self.opa.close()
        if self.shadow is not None:
            await self.shadow.close()
        await self.blocking(self.submitter.close)
        self._executor.shutdown(wait=False)  # nothing is running: the last call was awaited

    def _audited(self, line: Mapping[str, Any], fn: Callable[..., _T], *args: Any) -> _T:
        """In a worker thread: write a decision's audit line, then do what it allowed."""
        self._audit(line)
        return fn(*args)

    # --- steps ----------------------------------------------------------------------

    async def authenticate(self, token: str | None, *, request_id: str = "") -> Caller:
        """The caller behind a genuine, current token; InvalidToken or TokenRejected otherwise.

        ``None`` stands for a request without a usable bearer token; it is
        refused and audited like a forged one. The token is not used up yet:
        each action checks its binding and records its use (:meth:`_consume`)
        once the request it is for is known. Each refusal is audited by its
        kind only: never the token, and for an unauthenticated token nothing
        from inside it.
        """
        try:
            if token is None:
                raise InvalidToken
            claims, key = self.validator.authenticate(token, now=self._clock())
        except (InvalidToken, TokenRejected) as err:
            await self._refused(err, request_id)
            raise
        return Caller(claims=claims, key_id=key.key_id)

    async def _consume(
        self,
        caller: Caller,
        digest: str,
        *,
        unbound_allowed: bool,
        request_id: str,
        remember: bool = True,
    ) -> None:
        """The token may serve the request with this digest, and only once (audited if not).

        Pure CPU on the loop: the in-memory replay cache never blocks.
        ``remember=False`` leaves the replay decision to the job store's
        durable consumed-token record (a bound submit token).
        """
        try:
            self.validator.consume(
                caller.claims,
                now=self._clock(),
                request_digest=digest,
                unbound_allowed=unbound_allowed,
                remember=remember,
            )
        except TokenRejected as err:
            await self._refused(err, request_id)
            raise

    async def _refused(self, err: TokenServiceError, request_id: str) -> None:
        reason = "invalid" if isinstance(err, InvalidToken) else type(err).__name__.lower()
        self.metrics.auth_failures.labels(reason).inc()
        line = {"event": "auth_failed", "request_id": request_id, "reason": reason}
        await self.blocking(self._audit, line)

    async def _decide(
        self,
        caller: Caller,
        action: Action,
        request: dict[str, Any],
        *,
        request_id: str,
        job: str | None,
    ) -> tuple[DecisionResult, dict[str, Any]]:
        """Ask OPA; raise PolicyDenied or PolicyUnavailable (audited) unless allowed.

        Returns the decision and its audit line, which the caller writes in its
        next blocking step, before it acts on the decision.
        """
        claims = caller.claims
        doc = {"identity": caller.identity(), "action": action, "request": request}
        audit: dict[str, Any] = {
            "event": "decision",
            "request_id": request_id,
            "decision_id": None,
            "revision": None,
            "uid": claims.uid,
            "gid": claims.gid,
            "groups": list(claims.groups),
            "action": action,
            "allow": False,
            "reasons": [],
            "job": job,
            "input": loggable_input(doc),
        }
        started = time.perf_counter()
        try:
            result = await self.opa.decide(doc)
        except OpaUnavailable as err:
            self.metrics.opa_seconds.observe(time.perf_counter() - started)
            self.metrics.opa_errors.labels(err.failure).inc()
            self.metrics.decision_results[action, "error"].inc()
            await self.blocking(self._audit, {**audit, "error": str(err)})
            raise
        self.metrics.opa_seconds.observe(time.perf_counter() - started)
        if self.shadow is not None:
            self.shadow.observe(doc, result, action=action, request_id=request_id)
        decision = result.decision
        audit.update(
            decision_id=result.decision_id,
            revision=result.revision,
            allow=decision.allow,
            reasons=list(decision.reasons),
        )
        self.metrics.decision_results[action, "allow" if decision.allow else "deny"].inc()
        if not decision.allow:
            await self.blocking(self._audit, audit)
            raise PolicyDenied(decision.reasons, result.decision_id)
        return result, audit

    # --- actions --------------------------------------------------------------------

    async def submit(
        self,
        caller: Caller,
        request: JobRequest,
        *,
        request_id: str,
        answer: Callable[[Submitted], _R],
    ) -> _R:
        """Create the job at most once per submit token and return ``answer(submitted)``.

        The token's consumed-token record is claimed in the job store before
        the job is created (held), marked admitted, and only then is the job
        released to run: a retry of the same request with the same token
        resumes or returns that job; any other use of the token is Replayed,
        on every replica, after any restart, after the job is gone. If the
        store fails, or ``answer`` raises, a job this call created is removed
        again and :class:`SubmitFailed` says whether that worked (``created``
        False) or is unknown (None).
        """
        claims = caller.claims
        name = job_name(claims.token_id)
        asked = request.to_input()  # what the token is bound to and what OPA is asked
        digest = request_digest(asked)
        # A bound token's replays are decided by the durable record; an
        # unbound one (allowed by a setting) is also remembered in memory.
        await self._consume(
            caller,
            digest,
            unbound_allowed=self.allow_unbound_submit,
            request_id=request_id,
            remember=claims.binding is None,
        )
        result, decided = await self._decide(
            caller, "submit", asked, request_id=request_id, job=name
        )
        try:
            # The manifest dict directly (equal to pod_manifest(build_pod(...)), tested):
            # no pydantic models on the hot path.
            manifest = build_manifest(
                claims,
                result.decision,
                request,
                namespace=self.namespace,
                decision_id=result.decision_id,
            )
        except LaunchRefused as err:
            # An allow we cannot honour is a policy bug: fail closed, loudly.
            self.metrics.opa_errors.labels("unusable").inc()
            not_created = self._not_created(request_id, name, "unusable", str(err))
            await self.blocking(self._audited, decided, self._audit, not_created)
            raise PolicyUnavailable(f"policy decision unusable: {err}") from err
        record = TokenRecord(claims.token_id, digest, claims.expires_at + self.validator.skew)
        job, created = await self.blocking(
            self._create_once, decided, manifest, record, request_id, name
        )
        done = Submitted(
            job=job, pod=manifest, decision_id=result.decision_id, existing=not created
        )
        try:
            return answer(done)
        except Exception as err:
            if not created:
                raise  # the job is an earlier request's: never removed for this answer
            await self.blocking(self._roll_back, request_id, name, type(err).__name__)
            raise SubmitFailed("the answer could not be built; no job was created") from err

    def _create_once(
        self,
        decided: Mapping[str, Any],
        manifest: dict[str, Any],
        record: TokenRecord,
        request_id: str,
        name: str,
    ) -> tuple[JobRecord, bool]:
        """In a worker thread: audit the decision, claim the token, create, admit, release.

        Returns the job and whether this call created it.
        """
        self._audit(decided)
        try:
            earlier = self.submitter.records.claim(record)
        except SubmitFailed as err:
            self.metrics.submit_failures.labels("backend").inc()
            self._audit(self._not_created(request_id, name, "record", str(err)))
            raise SubmitFailed(str(err), status=err.status, created=False) from err
        if earlier is not None:
            if not hmac.compare_digest(earlier.digest, record.digest):
                self._refuse_replay(request_id, name, "token already used for another request")
            if earlier.state == "admitted":
                return self._admitted_earlier(request_id, name), False
        made = self._create(manifest, request_id, name)
        created = made is not None
        try:
            # An existing pod is the same request's, made by an earlier or a
            # concurrent attempt (which may have rolled it back since).
            job = made if made is not None else self.submitter.get(name)
            self.submitter.records.admit(record.token_id)
            self.submitter.release(name)
        except (SubmitFailed, NotFound) as err:
            # Not admitted, or not released: answered as a failure, so it must not run.
            if created:
                self._roll_back(request_id, name, "release failed")  # created=None if it fails
                raise SubmitFailed(str(err), created=False) from err
            # Another attempt's job: left held for that attempt's retry, or the reconciler.
            raise SubmitFailed(str(err), created=None) from err
        return job, created

    def _admitted_earlier(self, request_id: str, name: str) -> JobRecord:
        """A retry after the job was admitted: that job, if it still exists; else Replayed."""
        try:
            job = self.submitter.get(name)
        except NotFound:
            self._refuse_replay(request_id, name, "token already used; its job is gone")
        self.submitter.release(name)  # an earlier release may have been lost
        return job

    def _refuse_replay(self, request_id: str, name: str, message: str) -> NoReturn:
        self.metrics.submit_failures.labels("exists").inc()
        self._audit(self._not_created(request_id, name, "replayed", message))
        raise Replayed(message)

    def _create(self, manifest: dict[str, Any], request_id: str, name: str) -> JobRecord | None:
        """In a worker thread: create the pod, held; None if it exists already.

        Only a request holding this token's record with the same digest gets
        here, so an existing pod of this name is that same request's: an
        earlier attempt, or a concurrent one on another replica.
        """
        try:
            return self.submitter.create(manifest)
        except JobExists:
            return None
        except SubmitFailed as err:
            self.metrics.submit_failures.labels("backend").inc()
            self._audit(self._not_created(request_id, name, "backend", str(err)))
            raise
        except Exception as err:
            # Not one of the submitter's own errors: it may have stored the pod.
            self._roll_back(request_id, name, type(err).__name__)
            raise SubmitFailed("the job store failed; no job was created") from err

    async def reconcile(self, *, hold_deadline: float) -> None:
        """Remove jobs held past ``hold_deadline`` seconds and expired token records.

        A held job belongs to a submit that never released it (its server
        stopped, or its answer was a failure): it never ran, and no answer
        said it exists. Safe on every replica at once: a job or record
        already removed by another is simply gone.
        """
        now = self._clock()
        held = await self.blocking(self.submitter.held, now - hold_deadline)
        for name in held:
            try:
                await self.blocking(self.submitter.delete, name)
            except NotFound:
                continue
            self.metrics.reconciled.inc()
            line = {"event": "reconciled", "job": name, "reason": "held past the deadline"}
            await self.blocking(self._audit, line)
        await self.blocking(self.submitter.records.purge_expired, now)
        await self.verify_identities()

    async def verify_identities(self) -> None:
        """Delete every started job not shown to run as exactly its pod asked.

        The pod asks for exactly the decision's uid, gid and groups. A node
        whose runtime ignores ``supplementalGroupsPolicy: Strict`` (or adds
        groups from the image) runs the job as someone the policy did not
        decide: ``identity_mismatch``, audited with both identities. A node
        that does not report Strict support, or a running container that
        reports no identity, leaves nothing to compare: fail closed,
        ``strict_unsupported``, audited with node and reason. Each deletion
        is counted under its own metric.
        """
        for wrong in await self.blocking(self.submitter.identity_violations):
            try:
                await self.blocking(self.submitter.delete, wrong.name)
            except NotFound:
                continue
            if isinstance(wrong, IdentityMismatch):
                self.metrics.identity_mismatches.inc()
                event = "identity_mismatch"
            else:
                self.metrics.strict_unsupported.inc()
                event = "strict_unsupported"
            await self.blocking(self._audit, {"event": event, **wrong.to_audit()})

    def _roll_back(self, request_id: str, name: str, error: str) -> None:
        """In a worker thread: remove a job whose submit is answered with a failure.

        Raises SubmitFailed with ``created=None`` when the job may still exist.
        """
        self.metrics.submit_failures.labels("backend").inc()
        try:
            self.submitter.delete(name)
        except NotFound:
            pass  # never stored
        except Exception as err:
            self._audit(self._not_created(request_id, name, "rollback_failed", type(err).__name__))
            raise SubmitFailed(
                "the job store failed; the job may have been created", created=None
            ) from err
        self._audit(self._not_created(request_id, name, "rolled_back", error))

    @staticmethod
    def _not_created(request_id: str, job: str, kind: str, error: str) -> dict[str, Any]:
        """After an allow, the job was not created after all (the decision line says allow)."""
        return {
            "event": "not_created",
            "request_id": request_id,
            "job": job,
            "kind": kind,
            "error": error,
        }

    async def _job_action(
        self,
        caller: Caller,
        action: Action,
        name: str,
        *,
        request_id: str,
        extra: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, DecisionResult, dict[str, Any]]:
        body = extra or {}
        await self._consume(
            caller,
            action_digest(action, name, **body),
            unbound_allowed=self.allow_unbound_actions,
            request_id=request_id,
        )
        # Owner and project come from the stored pod, never from the client.
        job = await self.blocking(self.submitter.get, name)
        request = {"job": job.to_input(), **body}
        result, decided = await self._decide(
            caller, action, request, request_id=request_id, job=name
        )
        return job, result, decided

    async def get(self, caller: Caller, name: str, *, request_id: str) -> Acted:
        job, result, decided = await self._job_action(caller, "get", name, request_id=request_id)
        await self.blocking(self._audit, decided)
        return Acted(job=job, decision_id=result.decision_id)

    async def cancel(
        self, caller: Caller, name: str, *, request_id: str, answer: Callable[[Acted], _R]
    ) -> _R:
        """Delete the job; ``answer`` (the job as it was) is built before anything changes."""
        job, result, decided = await self._job_action(caller, "cancel", name, request_id=request_id)
        answered = answer(Acted(job=job, decision_id=result.decision_id))
        await self.blocking(self._audited, decided, self.submitter.delete, name)
        return answered

    async def set_priority(
        self,
        caller: Caller,
        name: str,
        priority: int,
        *,
        request_id: str,
        answer: Callable[[Acted], _R],
    ) -> _R:
        """Store the decided priority; ``answer`` is built before anything changes."""
        job, result, decided = await self._job_action(
            caller, "set_priority", name, request_id=request_id, extra={"priority": priority}
        )
        decided_priority = result.decision.priority
        new = priority if decided_priority is None else decided_priority
        answered = answer(
            Acted(job=dataclasses.replace(job, priority=new), decision_id=result.decision_id)
        )
        await self.blocking(self._audited, decided, self.submitter.set_priority, name, new)
        return answered

    async def logs(self, caller: Caller, name: str, *, follow: bool, request_id: str) -> JobOutput:
        """The job's output, once the policy allows ``logs`` on it (the rights of ``get``).

        :class:`ServerBusy` when ``max_log_streams`` outputs are being read
        already; the store's :class:`NotStarted`, :class:`NoLogs` or
        ``NotFound`` otherwise. The caller must :meth:`JobOutput.close` it.
        """
        if self._log_streams >= self.max_log_streams:
            raise ServerBusy(f"{self.max_log_streams} job outputs are being read; try again")
        self._log_streams += 1  # on the loop: no other request runs between check and count
        try:
            job, result, decided = await self._job_action(
                caller, "logs", name, request_id=request_id
            )
            stream = await self.blocking(
                self._audited,
                decided,
                functools.partial(
                    self.submitter.logs, job, follow=follow, limit_bytes=MAX_LOG_BYTES
                ),
            )
        except BaseException:
            self._log_streams -= 1
            raise
        return JobOutput(job, result.decision_id, stream, self)

    def _log_stream_closed(self) -> None:
        self._log_streams -= 1

    async def list(self, caller: Caller, *, request_id: str) -> Listed:
        await self._consume(
            caller,
            action_digest("list", ""),
            unbound_allowed=self.allow_unbound_actions,
            request_id=request_id,
        )
        claims = caller.claims
        result, decided = await self._decide(caller, "list", {}, request_id=request_id, job=None)
        visible = set(result.decision.visible_projects)
        # The store filters (the spool by its index, without parsing a manifest).
        jobs = await self.blocking(
            self._audited,
            decided,
            functools.partial(self.submitter.list, owner_uid=claims.uid, projects=visible),
        )
        return Listed(jobs=jobs, decision_id=result.decision_id)


__all__ = [
    "Acted",
    "AdmissionService",
    "Caller",
    "JobOutput",
    "Listed",
    "Submitted",
]
