"""Shadow mode: a candidate policy evaluated beside every live decision, off the request path.

The candidate is a second OPA (``[server] shadow_opa_url``) serving the
bundle an admin means to ship. For each decision the active OPA made,
:meth:`ShadowPolicy.observe` starts a task that asks the candidate the same
question and compares the two answers (:func:`policy_tools.compare`). The
request never waits for it: ``observe`` only schedules, and the answer, its
status and its latency are the active policy's alone. The candidate cannot
hold the server's resources either: at most ``max_in_flight`` comparisons
run at once (a decision beyond that is dropped and counted), each bounded
by the candidate client's own timeout and connection pool.

Counted in Prometheus (``tokensvc_shadow_*``): agreements, disagreements by
action and kind (widened, narrowed, reasons), candidate failures by kind,
drops. Each disagreement is also an audit line, ``shadow_disagreement``,
with both outcomes and the input minus secrets, so it can be explained and
replayed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from tokensvc.cluster.audit import loggable_input
from tokensvc.cluster.metrics import Metrics
from tokensvc.cluster.opa import Decision, DecisionResult, OpaClient, OpaUnavailable
from tokensvc.cluster.policy_tools import compare

DEFAULT_MAX_IN_FLIGHT: Final = 64

Blocking = Callable[..., Awaitable[Any]]


def decision_doc(decision: Decision) -> dict[str, Any]:
    """A parsed decision as the JSON document :func:`policy_tools.compare` reads."""
    return dataclasses.asdict(decision)


def _outcome(result: DecisionResult) -> dict[str, Any]:
    return {
        "decision_id": result.decision_id,
        "revision": result.revision,
        "allow": result.decision.allow,
        "reasons": list(result.decision.reasons),
    }


class ShadowPolicy:
    """Compares a candidate OPA's decisions with the active ones; never on the request path.

    Used on the server's event loop. ``audit`` is written through
    ``blocking`` (the service's worker threads), as every audit line is.
    """

    def __init__(
        self,
        opa: OpaClient,
        *,
        metrics: Metrics,
        audit: Callable[[Mapping[str, Any]], None],
        blocking: Blocking,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("shadow mode needs room for at least one comparison")
        self.opa = opa
        self.max_in_flight = max_in_flight
        self._metrics = metrics
        self._audit = audit
        self._blocking = blocking
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(
        self,
        doc: Mapping[str, Any],
        active: DecisionResult,
        *,
        action: str,
        request_id: str,
    ) -> None:
        """Schedule the candidate's evaluation of ``doc``; returns at once, never raises."""
        if len(self._tasks) >= self.max_in_flight:
            self._metrics.shadow_decisions.labels("dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._compare(doc, active, action=action, request_id=request_id)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(
        self,
        doc: Mapping[str, Any],
        active: DecisionResult,
        *,
        action: str,
        request_id: str,
    ) -> None:
        started = time.perf_counter()
        try:
            candidate = await self.opa.decide(doc)
        except OpaUnavailable as err:
            self._metrics.shadow_errors.labels(err.failure).inc()
            self._metrics.shadow_decisions.labels("error").inc()
            return
        finally:
            self._metrics.shadow_seconds.observe(time.perf_counter() - started)
        change = compare(decision_doc(active.decision), decision_doc(candidate.decision))
        if change.outcome == "same":
            self._metrics.shadow_decisions.labels("agree").inc()
            return
        self._metrics.shadow_decisions.labels("disagree").inc()
        self._metrics.shadow_disagreements.labels(action, change.outcome).inc()
        line = {
            "event": "shadow_disagreement",
            "request_id": request_id,
            "action": action,
            "outcome": change.outcome,
            "active": _outcome(active),
            "candidate": _outcome(candidate),
            "gained": change.gained,
            "lost": change.lost,
            "input": loggable_input(doc),
        }
        await self._blocking(self._audit, line)

    async def close(self) -> None:
        """Abandon comparisons still running and close the candidate's connections."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.opa.close()


__all__ = ["DEFAULT_MAX_IN_FLIGHT", "ShadowPolicy", "decision_doc"]
