"""The admission path without HTTP: token → OPA input → decision → pod → submitter.

Every action is a coroutine on the server's event loop; blocking steps (the
submitter, the audit line) run in the service's bounded worker pool (see
:class:`AdmissionService`). Errors are the :mod:`tokensvc.core.errors` tree plus
the few defined here; the HTTP layer maps each to one status code.

The OPA input is built from exactly three sources: the token's claims (who),
the validated request body (what), and for actions on an existing job the
owner and project recorded on its pod (whose). Nothing a client sends can
name a uid, gid or group list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from tokensvc.cluster.jobs import JobRecord, JobRequest, job_name
from tokensvc.cluster.launcher import LaunchRefused, build_manifest
from tokensvc.cluster.opa import ACTIONS, Action, DecisionResult, OpaClient, OpaUnavailable
from tokensvc.cluster.submitters import SubmitFailed, Submitter
from tokensvc.core.claims import Claims
from tokensvc.core.errors import InvalidToken, PolicyDenied, PolicyUnavailable, TokenRejected
from tokensvc.core.validate import TokenValidator

AUDIT_LOGGER: Final = "tokensvc.audit"
_T = TypeVar("_T")
_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    """Prometheus metrics of one server (its own registry, so tests can build many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "tokensvc_decisions",
            "Policy decisions by action and result",
            ["action", "result"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "tokensvc_request_seconds",
            "Job API request latency",
            ["action"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.opa_seconds = Histogram(
            "tokensvc_opa_decision_seconds",
            "OPA decision round trip",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.opa_errors = Counter(
            "tokensvc_opa_errors", "OPA failures (each one a 503)", ["kind"], registry=r
        )
        self.auth_failures = Counter(
            "tokensvc_auth_failures", "Rejected tokens by reason", ["reason"], registry=r
        )
        self.submit_failures = Counter(
            "tokensvc_submit_failures", "Submitter failures by kind", ["kind"], registry=r
        )
        # Children looked up once: ``labels()`` costs a lock and a dict walk per call.
        self.decision_results = {
            (action, result): self.decisions.labels(action, result)
            for action in ACTIONS
            for result in ("allow", "deny", "error")
        }


_AUDIT_LOG: Final = logging.getLogger(AUDIT_LOGGER)


def audit_line(event: Mapping[str, Any]) -> None:
    """Write one audit event as a JSON line (keys sorted) to the audit logger."""
    if _AUDIT_LOG.isEnabledFor(logging.INFO):
        line = json.dumps(event, separators=(",", ":"), sort_keys=True)
        # What Logger.info does, minus finding the caller's source line (a
        # stack walk, ~10 us per line; the audit format is the message alone).
        record = _AUDIT_LOG.makeRecord(AUDIT_LOGGER, logging.INFO, "", 0, line, (), None)
        _AUDIT_LOG.handle(record)


@dataclass(frozen=True, slots=True)
class Submitted:
    """A created job: its record, the pod manifest and the decision id behind it."""

    job: JobRecord
    pod: dict[str, Any]
    decision_id: str | None


@dataclass(frozen=True, slots=True)
class Acted:
    """The outcome of get/cancel/set_priority on one job."""

    job: JobRecord
    decision_id: str | None


@dataclass(frozen=True, slots=True)
class Listed:
    jobs: list[JobRecord]
    decision_id: str | None


class WorkerPool:
    """At most ``size`` threads for blocking calls, awaited from the event loop.

    ``loop.run_in_executor`` with a ``concurrent.futures`` pool costs ~100 us
    of CPU per call on the development VM (its futures and its idle-thread
    semaphore are Python-level locks and conditions, taken on both sides);
    this costs ~40 us: one C queue to the worker, one ``call_soon_threadsafe``
    back. Threads start on demand and stay; beyond ``size`` calls at once,
    work waits in the queue for a free thread.
    """

    def __init__(self, size: int, *, name: str = "tokensvc") -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads free to take a job; guarded by _lock
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Queue ``fn(*args)``; the future (of the running loop) gets its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread will take it
            elif len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        self._jobs.put((loop, future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            _call(*job)
            del job  # nothing of the last call stays alive while the thread waits
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Let the threads finish what they hold, then exit (without waiting for them)."""
        for _ in self._threads:
            self._jobs.put(None)


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _call(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """In a worker thread: run the call, hand its outcome to the loop."""
    try:
        result, error = fn(*args), None
    except BaseException as err:  # noqa: BLE001 (handed to the awaiting coroutine)
        result, error = None, err
    # RuntimeError: the loop is closed, nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the work ran anyway
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class AdmissionService:
    """Authenticate, ask the policy, act. One instance per server process.

    Used on the server's event loop. What is pure CPU runs there: token
    validation (AEAD and the in-memory replay cache), the OPA query (an
    asynchronous client), the pod manifest. What may block -- the submitter
    (spool directory with fsync, or the Kubernetes API) and the audit line (a
    write to stderr, which is a pipe under systemd or Kubernetes) -- runs in
    one hop to a bounded pool of worker threads, so the loop never blocks. An
    allowed decision's audit line travels with the request's next blocking
    step (the spool write for a submit): written before the client is
    answered, without a second hop.
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
    ) -> None:
        self.validator = validator
        self.opa = opa
        self.submitter = submitter
        self.namespace = namespace
        self.metrics = metrics or Metrics()
        self._audit = audit
        self._clock = clock
        self._workers = WorkerPool(threads)

    async def blocking(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a worker thread (file or network I/O); the loop stays free."""
        return await self._workers.run(fn, *args)

    async def close(self) -> None:
        """Close OPA's connections and the submitter; stop the worker threads."""
        await self.opa.close()
        await self.blocking(self.submitter.close)
        self._workers.close()  # nothing is running: the last call was awaited

    def _audited(self, line: Mapping[str, Any], fn: Callable[..., _T], *args: Any) -> _T:
        """In a worker thread: write a decision's audit line, then do what it allowed."""
        self._audit(line)
        return fn(*args)

    # --- steps ----------------------------------------------------------------------

    async def authenticate(self, token: str, *, request_id: str = "") -> Claims:
        """Claims of a genuine, current, unused token; InvalidToken or TokenRejected otherwise.

        Each refusal is audited by its kind only: never the token, and for an
        unauthenticated token nothing from inside it.
        """
        try:
            # Pure CPU on the loop: the in-memory replay cache never blocks. A
            # shared (networked) replay store would have to move to a thread.
            return self.validator.validate(token, now=self._clock())
        except (InvalidToken, TokenRejected) as err:
            reason = "invalid" if isinstance(err, InvalidToken) else type(err).__name__.lower()
            self.metrics.auth_failures.labels(reason).inc()
            line = {"event": "auth_failed", "request_id": request_id, "reason": reason}
            await self.blocking(self._audit, line)
            raise

    async def _decide(
        self,
        claims: Claims,
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
        doc = {"identity": claims.to_identity(), "action": action, "request": request}
        audit: dict[str, Any] = {
            "event": "decision",
            "request_id": request_id,
            "decision_id": None,
            "uid": claims.uid,
            "gid": claims.gid,
            "groups": list(claims.groups),
            "action": action,
            "allow": False,
            "reasons": [],
            "job": job,
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
        decision = result.decision
        audit.update(
            decision_id=result.decision_id, allow=decision.allow, reasons=list(decision.reasons)
        )
        self.metrics.decision_results[action, "allow" if decision.allow else "deny"].inc()
        if not decision.allow:
            await self.blocking(self._audit, audit)
            raise PolicyDenied(decision.reasons, result.decision_id)
        return result, audit

    # --- actions --------------------------------------------------------------------

    async def submit(self, claims: Claims, request: JobRequest, *, request_id: str) -> Submitted:
        name = job_name(claims.token_id)
        result, decided = await self._decide(
            claims, "submit", request.to_input(), request_id=request_id, job=name
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
        job = await self.blocking(self._create, decided, manifest, request_id, name)
        return Submitted(job=job, pod=manifest, decision_id=result.decision_id)

    def _create(
        self, decided: Mapping[str, Any], manifest: dict[str, Any], request_id: str, name: str
    ) -> JobRecord:
        """In a worker thread: the decision's audit line, then the pod."""
        self._audit(decided)
        try:
            return self.submitter.create(manifest)
        except TokenRejected as err:  # JobExists: the token was used before
            self.metrics.submit_failures.labels("exists").inc()
            self._audit(self._not_created(request_id, name, "exists", str(err)))
            raise
        except SubmitFailed as err:
            self.metrics.submit_failures.labels("backend").inc()
            self._audit(self._not_created(request_id, name, "backend", str(err)))
            raise

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
        claims: Claims,
        action: Action,
        name: str,
        *,
        request_id: str,
        extra: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, DecisionResult, dict[str, Any]]:
        # Owner and project come from the stored pod, never from the client.
        job = await self.blocking(self.submitter.get, name)
        request = {"job": job.to_input(), **(extra or {})}
        result, decided = await self._decide(
            claims, action, request, request_id=request_id, job=name
        )
        return job, result, decided

    async def get(self, claims: Claims, name: str, *, request_id: str) -> Acted:
        job, result, decided = await self._job_action(claims, "get", name, request_id=request_id)
        await self.blocking(self._audit, decided)
        return Acted(job=job, decision_id=result.decision_id)

    async def cancel(self, claims: Claims, name: str, *, request_id: str) -> Acted:
        job, result, decided = await self._job_action(claims, "cancel", name, request_id=request_id)
        await self.blocking(self._audited, decided, self.submitter.delete, name)
        return Acted(job=job, decision_id=result.decision_id)

    async def set_priority(
        self, claims: Claims, name: str, priority: int, *, request_id: str
    ) -> Acted:
        _, result, decided = await self._job_action(
            claims, "set_priority", name, request_id=request_id, extra={"priority": priority}
        )
        decided_priority = result.decision.priority
        new = priority if decided_priority is None else decided_priority
        job = await self.blocking(self._audited, decided, self.submitter.set_priority, name, new)
        return Acted(job=job, decision_id=result.decision_id)

    async def list(self, claims: Claims, *, request_id: str) -> Listed:
        result, decided = await self._decide(claims, "list", {}, request_id=request_id, job=None)
        visible = set(result.decision.visible_projects)
        everything = await self.blocking(self._audited, decided, self.submitter.list)
        jobs = [j for j in everything if j.owner_uid == claims.uid or j.project in visible]
        return Listed(jobs=jobs, decision_id=result.decision_id)


__all__ = [
    "AUDIT_LOGGER",
    "Acted",
    "AdmissionService",
    "Listed",
    "Metrics",
    "Submitted",
    "WorkerPool",
    "audit_line",
]
