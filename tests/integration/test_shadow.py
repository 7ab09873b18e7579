"""Shadow mode on the real stack: two real OPAs, the active one and a candidate.

A candidate that disagrees (its export data grants ml-team read access to
/nfs/projects/vision) changes no answer, and each disagreement is counted
and logged with both outcomes. A candidate that never answers changes
neither the answers nor their latency; its failures and the comparisons it
crowds out are counted.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from admission_stack import ROOT, forge_token, http, job_body, needs_root, stack_fixture
from support.opa import OpaHandle, start_opa

from tokensvc.cluster.devstack import USER_A, Stack

pytestmark = [needs_root, pytest.mark.root]

VISION = ("/nfs/projects/vision", "ro")  # not granted to ml-team by the active policy
IMAGENET = ("/nfs/datasets/imagenet", "ro")  # granted by both


def site_data() -> dict[str, Any]:
    data = ROOT / "policies/data/wsc"
    return {d.name: yaml.safe_load((d / "data.yaml").read_text()) for d in data.iterdir()}


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaHandle]:
    data = site_data()
    data["exports"]["/nfs/projects"]["rules"]["vision"]["groups"]["ml-team"] = "ro"
    handle = start_opa(tmp_path_factory.mktemp("candidate"), data=data, revision="candidate")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def stack(opa: OpaHandle, candidate: OpaHandle) -> Iterator[Stack]:
    yield from stack_fixture(
        external_opa=opa.url, server_settings={"shadow_opa_url": candidate.url}
    )


@pytest.fixture(scope="module")
def silent_peer() -> Iterator[str]:
    """A listening socket that never accepts: connections open, no answer ever comes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def silent_stack(opa: OpaHandle, silent_peer: str) -> Iterator[Stack]:
    settings = {"shadow_opa_url": silent_peer, "shadow_opa_timeout": 5.0, "shadow_max_in_flight": 1}
    yield from stack_fixture(external_opa=opa.url, server_settings=settings)


def submit(stack: Stack, *mounts: tuple[str, str]) -> tuple[int, float]:
    body = job_body("ml-team", *mounts)
    token = forge_token(stack, USER_A, body=body)
    started = time.perf_counter()
    resp = http(stack, "POST", "/v1/jobs", token, json=body)
    return resp.status_code, time.perf_counter() - started


def metric(stack: Stack, name: str, **labels: str) -> float:
    text = http(stack, "GET", "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{name}\{{{want}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def audit_lines(stack: Stack, event: str) -> list[dict[str, Any]]:
    lines = stack.log("server").read_text().splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e.get("event") == event]


def test_a_disagreeing_candidate_is_counted_and_logged_but_decides_nothing(stack: Stack) -> None:
    assert submit(stack, VISION)[0] == 403  # the active policy's answer
    assert submit(stack, IMAGENET)[0] == 201

    eventually(lambda: metric(stack, "tokensvc_shadow_decisions_total", result="agree") >= 1)
    eventually(lambda: metric(stack, "tokensvc_shadow_decisions_total", result="disagree") >= 1)
    assert (
        metric(stack, "tokensvc_shadow_disagreements_total", action="submit", outcome="widened")
        == 1
    )
    (line,) = audit_lines(stack, "shadow_disagreement")
    assert line["outcome"] == "widened" and line["action"] == "submit"
    assert line["active"]["allow"] is False and line["active"]["revision"] == "test"
    assert any("/nfs/projects/vision" in r for r in line["active"]["reasons"])
    assert line["candidate"]["allow"] is True and line["candidate"]["revision"] == "candidate"
    assert line["candidate"]["reasons"] == []
    assert line["input"]["identity"] == {
        "uid": USER_A.uid,
        "gid": USER_A.gid,
        "groups": list(USER_A.groups),
    }
    (decision,) = [
        e for e in audit_lines(stack, "decision") if e["request_id"] == line["request_id"]
    ]
    assert decision["allow"] is False  # what the server acted on


def test_a_silent_candidate_changes_neither_answers_nor_latency(silent_stack: Stack) -> None:
    for _ in range(3):
        status, seconds = submit(silent_stack, IMAGENET)
        assert status == 201
        assert seconds < 2.5  # the candidate times out only after 5 s
    status, _ = submit(silent_stack, VISION)
    assert status == 403
    # One comparison waits on the silent candidate; the others found no room.
    assert metric(silent_stack, "tokensvc_shadow_decisions_total", result="dropped") >= 3
    eventually(
        lambda: metric(silent_stack, "tokensvc_shadow_errors_total", kind="timeout") >= 1,
        timeout=15,
    )
    assert audit_lines(silent_stack, "shadow_disagreement") == []
