"""The server's Prometheus metrics (docs/api.md lists them)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from tokensvc.cluster.opa import ACTIONS

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
        self.reconciled = Counter(
            "tokensvc_reconciled_jobs",
            "Held jobs removed because no submit released them in time",
            registry=r,
        )
        self.identity_mismatches = Counter(
            "tokensvc_identity_mismatches",
            "Started jobs deleted because the node reported another uid, gid or groups",
            registry=r,
        )
        self.strict_unsupported = Counter(
            "tokensvc_strict_unsupported_jobs",
            "Started jobs deleted because their node cannot vouch for supplementalGroupsPolicy"
            " Strict (no reported support, or no reported identity)",
            registry=r,
        )
        # Shadow mode (tokensvc.cluster.shadow): the candidate policy beside the active one.
        self.shadow_decisions = Counter(
            "tokensvc_shadow_decisions",
            "Candidate-policy comparisons by result (agree, disagree, error, dropped)",
            ["result"],
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "tokensvc_shadow_disagreements",
            "Candidate decisions unlike the active one, by action and kind",
            ["action", "outcome"],
            registry=r,
        )
        self.shadow_errors = Counter(
            "tokensvc_shadow_errors", "Candidate OPA failures by kind", ["kind"], registry=r
        )
        self.shadow_seconds = Histogram(
            "tokensvc_shadow_decision_seconds",
            "Candidate OPA decision round trip (off the request path)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Children looked up once: ``labels()`` takes a lock and walks a dict per call.
        self.decision_results = {
            (action, result): self.decisions.labels(action, result)
            for action in ACTIONS
            for result in ("allow", "deny", "error")
        }


__all__ = ["Metrics"]
