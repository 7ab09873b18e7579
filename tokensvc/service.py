"""The admission path without HTTP: token → OPA input → decision → pod → submitter.

Every method is blocking (OPA over HTTP, the spool directory or the
Kubernetes API) and is called from a worker thread by :mod:`tokensvc.server`.
Errors are the :mod:`tokensvc.errors` tree plus the few defined here; the
HTTP layer maps each to one status code.

The OPA input is built from exactly three sources: the token's claims (who),
the validated request body (what), and for actions on an existing job the
owner and project recorded on its pod (whose). Nothing a client sends can
name a uid, gid or group list.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from tokensvc.claims import Claims
from tokensvc.errors import InvalidToken, PolicyDenied, PolicyUnavailable, TokenRejected
from tokensvc.jobs import JobRecord, JobRequest, job_name
from tokensvc.launcher import LaunchRefused, build_manifest
from tokensvc.opa import ACTIONS, Action, DecisionResult, OpaClient, OpaUnavailable
from tokensvc.submitters import SubmitFailed, Submitter
from tokensvc.validate import TokenValidator

AUDIT_LOGGER: Final = "tokensvc.audit"
_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Denied(PolicyDenied):
    """Policy denied the request; carries OPA's decision id for the audit trail."""

    def __init__(self, reasons: tuple[str, ...], decision_id: str | None) -> None:
        super().__init__(reasons or ("denied by policy",))
        self.decision_id = decision_id


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
    _AUDIT_LOG.info(json.dumps(event, separators=(",", ":"), sort_keys=True))


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


class AdmissionService:
    """Authenticate, ask the policy, act. One instance per server process."""

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
    ) -> None:
        self.validator = validator
        self.opa = opa
        self.submitter = submitter
        self.namespace = namespace
        self.metrics = metrics or Metrics()
        self._audit = audit
        self._clock = clock

    # --- steps ----------------------------------------------------------------------

    def authenticate(self, token: str, *, request_id: str = "") -> Claims:
        """Claims of a genuine, current, unused token; InvalidToken or TokenRejected otherwise.

        Each refusal is audited by its kind only: never the token, and for an
        unauthenticated token nothing from inside it.
        """
        try:
            return self.validator.validate(token, now=self._clock())
        except (InvalidToken, TokenRejected) as err:
            reason = "invalid" if isinstance(err, InvalidToken) else type(err).__name__.lower()
            self.metrics.auth_failures.labels(reason).inc()
            self._audit({"event": "auth_failed", "request_id": request_id, "reason": reason})
            raise

    def _decide(
        self,
        claims: Claims,
        action: Action,
        request: dict[str, Any],
        *,
        request_id: str,
        job: str | None,
    ) -> DecisionResult:
        """Ask OPA; audit the outcome; raise Denied or PolicyUnavailable unless allowed."""
        doc = {"identity": claims.to_identity(), "action": action, "request": request}
        started = time.perf_counter()
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
        try:
            result = self.opa.decide(doc)
        except OpaUnavailable as err:
            self.metrics.opa_errors.labels(err.failure).inc()
            self.metrics.decision_results[action, "error"].inc()
            self._audit({**audit, "error": str(err)})
            raise
        finally:
            self.metrics.opa_seconds.observe(time.perf_counter() - started)
        decision = result.decision
        audit.update(
            decision_id=result.decision_id, allow=decision.allow, reasons=list(decision.reasons)
        )
        self._audit(audit)
        self.metrics.decision_results[action, "allow" if decision.allow else "deny"].inc()
        if not decision.allow:
            raise Denied(decision.reasons, result.decision_id)
        return result

    # --- actions --------------------------------------------------------------------

    def submit(self, claims: Claims, request: JobRequest, *, request_id: str) -> Submitted:
        name = job_name(claims.token_id)
        result = self._decide(claims, "submit", request.to_input(), request_id=request_id, job=name)
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
            self._audit_not_created(request_id, name, "unusable", str(err))
            raise PolicyUnavailable(f"policy decision unusable: {err}") from err
        try:
            job = self.submitter.create(manifest)
        except TokenRejected as err:  # JobExists: the token was used before
            self.metrics.submit_failures.labels("exists").inc()
            self._audit_not_created(request_id, name, "exists", str(err))
            raise
        except SubmitFailed as err:
            self.metrics.submit_failures.labels("backend").inc()
            self._audit_not_created(request_id, name, "backend", str(err))
            raise
        return Submitted(job=job, pod=manifest, decision_id=result.decision_id)

    def _audit_not_created(self, request_id: str, job: str, kind: str, error: str) -> None:
        """After an allow, the job was not created after all (the decision line says allow)."""
        self._audit(
            {
                "event": "not_created",
                "request_id": request_id,
                "job": job,
                "kind": kind,
                "error": error,
            }
        )

    def _job_action(
        self,
        claims: Claims,
        action: Action,
        name: str,
        *,
        request_id: str,
        extra: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, DecisionResult]:
        # Owner and project come from the stored pod, never from the client.
        job = self.submitter.get(name)
        request = {"job": job.to_input(), **(extra or {})}
        return job, self._decide(claims, action, request, request_id=request_id, job=name)

    def get(self, claims: Claims, name: str, *, request_id: str) -> Acted:
        job, result = self._job_action(claims, "get", name, request_id=request_id)
        return Acted(job=job, decision_id=result.decision_id)

    def cancel(self, claims: Claims, name: str, *, request_id: str) -> Acted:
        job, result = self._job_action(claims, "cancel", name, request_id=request_id)
        self.submitter.delete(name)
        return Acted(job=job, decision_id=result.decision_id)

    def set_priority(self, claims: Claims, name: str, priority: int, *, request_id: str) -> Acted:
        _, result = self._job_action(
            claims, "set_priority", name, request_id=request_id, extra={"priority": priority}
        )
        decided = result.decision.priority
        job = self.submitter.set_priority(name, priority if decided is None else decided)
        return Acted(job=job, decision_id=result.decision_id)

    def list(self, claims: Claims, *, request_id: str) -> Listed:
        result = self._decide(claims, "list", {}, request_id=request_id, job=None)
        visible = set(result.decision.visible_projects)
        jobs = [
            j for j in self.submitter.list() if j.owner_uid == claims.uid or j.project in visible
        ]
        return Listed(jobs=jobs, decision_id=result.decision_id)


__all__ = [
    "AUDIT_LOGGER",
    "Acted",
    "AdmissionService",
    "Denied",
    "Listed",
    "Metrics",
    "Submitted",
    "audit_line",
]
