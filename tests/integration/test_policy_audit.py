"""`tokensvc policy audit` on the real stack: jobs submitted through the server, real OPA.

A job that lost its grant (a policy copy whose export data no longer names
its project) is listed with the policy's reason; `--cancel` removes it and
writes a `policy_cancel` audit line; a job still allowed is left alone; a
job whose submit decision is not in the log is reported, never cancelled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from admission_stack import (
    ROOT,
    Run,
    forge_token,
    http,
    job_body,
    needs_root,
    spooled,
    stack_fixture,
)
from support.opa import OpaHandle
from support.toolpaths import tool

from tokensvc.cluster.devstack import USER_A, Stack

pytestmark = [needs_root, pytest.mark.root]

ML_RULE = "ml:\n      groups: {ml-team: rw, vision: ro}"


@pytest.fixture(scope="module")
def stack(opa: OpaHandle) -> Iterator[Stack]:
    yield from stack_fixture(external_opa=opa.url)


def policy_copy(tmp_path: Path, old: str, new: str) -> str:
    shutil.copytree(ROOT / "policies/wsc", tmp_path / "wsc")
    shutil.copytree(ROOT / "policies/data", tmp_path / "data")
    exports = tmp_path / "data/wsc/exports/data.yaml"
    text = exports.read_text()
    assert old in text
    exports.write_text(text.replace(old, new))
    return f"{tmp_path / 'wsc'},{tmp_path / 'data'}"


def audit(stack: Stack, policy: str, log: Path, *extra: str) -> Run:
    argv = ["policy", "audit", "--policy", policy, "--opa", tool("opa"), "--decisions", str(log)]
    proc = subprocess.run(
        stack.tokensvc(*argv, *extra),
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def submitted(stack: Stack, body: dict[str, object]) -> str:
    resp = http(stack, "POST", "/v1/jobs", forge_token(stack, USER_A, body=body), json=body)
    assert resp.status_code == 201, resp.text
    name: str = resp.json()["job"]["id"]
    return name


def test_a_job_that_lost_its_grant_is_listed_and_cancelled(stack: Stack, tmp_path: Path) -> None:
    keep = submitted(stack, job_body("ml-team", ("/nfs/datasets/imagenet", "ro")))
    lose = submitted(stack, job_body("ml-team", ("/nfs/projects/ml/data", "rw")))
    log = stack.log("server")
    current = f"{ROOT / 'policies/wsc'},{ROOT / 'policies/data'}"

    unchanged = audit(stack, current, log, "-o", "json")
    assert unchanged.code == 0, unchanged.err
    assert unchanged.json()["denied"] == []

    narrowed = policy_copy(tmp_path, ML_RULE, "ml:\n      groups: {vision: ro}")
    listed = audit(stack, narrowed, log, "-o", "json")
    assert listed.code == 1, listed.err
    report = listed.json()
    assert report["jobs"] == 2 and report["unreplayable"] == []
    (denied,) = report["denied"]
    assert denied["job"]["id"] == lose
    assert denied["recorded_revision"] == "test"  # the bundle that admitted it
    assert denied["reasons"] == [
        'mount "/nfs/projects/ml/data" (rw): rule "/nfs/projects/ml" of export "projects" '
        "grants you no rw access"
    ]
    assert sorted(spooled(stack)) == sorted([keep, lose])  # listing changes nothing

    cancelled = audit(stack, narrowed, log, "--cancel")
    assert cancelled.code == 0, cancelled.err
    assert f"{lose}: cancelled" in cancelled.out and "NO LONGER ALLOWED" in cancelled.out
    assert spooled(stack) == [keep]
    (line,) = [json.loads(x) for x in cancelled.err.splitlines() if "policy_cancel" in x]
    assert line["job"] == lose and line["result"] == "cancelled"
    assert line["owner_uid"] == USER_A.uid and line["project"] == "ml-team"
    assert line["policy"] == narrowed and line["reasons"] == denied["reasons"]

    assert audit(stack, narrowed, log).code == 0  # nothing left to flag
    http(stack, "DELETE", f"/v1/jobs/{keep}", forge_token(stack, USER_A))


def test_a_job_without_its_recorded_decision_is_reported_not_cancelled(
    stack: Stack, tmp_path: Path
) -> None:
    job = submitted(stack, job_body("ml-team", ("/nfs/projects/ml/data", "rw")))
    empty = tmp_path / "rotated.log"
    empty.write_text(json.dumps({"event": "start"}) + "\n")
    narrowed = policy_copy(tmp_path, ML_RULE, "ml:\n      groups: {vision: ro}")
    run = audit(stack, narrowed, empty, "--cancel", "-o", "json")
    assert run.code == 0, run.err
    report = run.json()
    assert report["denied"] == [] and report["cancelled"] == {}
    assert [j["job"]["id"] for j in report["unreplayable"]] == [job]
    assert job in spooled(stack)
