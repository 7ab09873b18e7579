"""The server's OPA client against the real OPA with the signed bundle (deploy/opa config).

The failure modes are played by misbehaving peers in tests/unit/test_opa.py;
here the answers are OPA's own: decisions with a decision id (decision logs
are on), readiness, and many queries at once over a small pool.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop
from support.opa import OpaHandle

from tokensvc.cluster.devstack import USER_A, USER_B
from tokensvc.cluster.opa import DecisionResult, OpaClient


def identity(user: Any) -> dict[str, Any]:
    return {
        "uid": user.uid,
        "gid": user.gid,
        "groups": list(user.groups),
        "user": user.name,
        "host": "login1",
        "realm": "test",
        "token_id": "0" * 32,
    }


def submit(user: Any) -> dict[str, Any]:
    return {
        "identity": identity(user),
        "action": "submit",
        "request": {
            "project": "ml-team",
            "image": "busybox:1.36",
            "command": ["true"],
            "mounts": [{"path": "/nfs/projects/ml/data", "mode": "ro"}],
            "resources": {"systems": 1},
        },
    }


def run(main: Any) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_decisions_readiness_and_a_shared_pool(opa: OpaHandle) -> None:
    async def main() -> tuple[bool, DecisionResult, DecisionResult, list[DecisionResult]]:
        async with OpaClient(opa.url, pool_size=4) as client:
            ready = await client.ready()
            allowed = await client.decide(submit(USER_A))
            denied = await client.decide(submit(USER_B))
            many = await asyncio.gather(*(client.decide(submit(USER_A)) for _ in range(40)))
            return ready, allowed, denied, many

    ready, allowed, denied, many = run(main)
    assert ready is True
    assert allowed.decision.allow is True
    assert allowed.decision.run_as is not None
    assert (allowed.decision.run_as.uid, allowed.decision.run_as.gid) == (USER_A.uid, 2001)
    assert [m.path for m in allowed.decision.mounts] == ["/nfs/projects/ml/data"]
    assert allowed.decision.mounts[0].read_only is True
    assert allowed.decision_id  # decision logging is on: OPA names every decision
    assert allowed.revision == denied.revision == opa.revision() == "test"  # the bundle's
    assert denied.decision.allow is False
    assert denied.decision.reasons
    assert denied.decision.run_as is None
    assert all(m.decision == allowed.decision for m in many)
    assert len({m.decision_id for m in many}) == 40  # one logged decision each
