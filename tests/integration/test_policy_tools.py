"""`tokensvc policy explain` and `policy diff` on the real OPA, over the repository's policy.

A widening change is caught (exit 1 unless --allow-widening), a narrowing
change is reported, and explain names what decided each part.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.toolpaths import tool

from tokensvc.cli import main
from tokensvc.cluster.policy_tools import Change, compare

ROOT = Path(__file__).resolve().parents[2]
POLICY = f"{ROOT / 'policies/wsc'},{ROOT / 'policies/data'}"

A = {"uid": 1002, "gid": 2001, "groups": [2001]}  # ml-team member
B = {"uid": 1004, "gid": 2003, "groups": [2003]}  # a student


def _submit(identity: dict[str, object], path: str, mode: str) -> dict[str, object]:
    return {
        "identity": identity,
        "action": "submit",
        "request": {
            "project": "ml-team" if identity is A else "students",
            "image": "trainer:1",
            "command": ["python", "train.py"],
            "mounts": [{"path": path, "mode": mode}],
            "resources": {"systems": 1},
        },
    }


def _log(tmp_path: Path, inputs: list[dict[str, object]]) -> Path:
    """An audit log as the server writes it: one decision line per input, among other events."""
    log = tmp_path / "audit.log"
    lines = [json.dumps({"event": "start", "pid": 1})]
    for n, doc in enumerate(inputs):
        lines.append(
            json.dumps({"event": "decision", "decision_id": f"d{n}", "allow": True, "input": doc})
        )
    lines.append("not json at all")
    log.write_text("\n".join(lines) + "\n")
    return log


def _policy_copy(tmp_path: Path, edit: tuple[str, str]) -> str:
    """A copy of the policy whose exports data has one line changed."""
    shutil.copytree(ROOT / "policies/wsc", tmp_path / "wsc")
    shutil.copytree(ROOT / "policies/data", tmp_path / "data")
    exports = tmp_path / "data/wsc/exports/data.yaml"
    old, new = edit
    text = exports.read_text()
    assert old in text
    exports.write_text(text.replace(old, new))
    return f"{tmp_path / 'wsc'},{tmp_path / 'data'}"


INPUTS = [
    _submit(A, "/nfs/projects/ml/data", "rw"),  # allowed rw today
    _submit(B, "/nfs/projects/ml/data", "ro"),  # denied today: students have no rule there
    _submit(A, "/nfs/datasets/imagenet", "ro"),  # allowed ro today
]


def test_diff_of_a_widening_change_fails_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _policy_copy(
        tmp_path,
        (
            "ml:\n      groups: {ml-team: rw, vision: ro}",
            "ml:\n      groups: {ml-team: rw, vision: ro, students: ro}",
        ),
    )
    log = _log(tmp_path, INPUTS)
    args = ["policy", "diff", POLICY, new, "--decisions", str(log), "--opa", tool("opa")]
    assert main([*args, "-o", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["decisions"] == 3
    assert [c["decision_id"] for c in report["widened"]] == ["d1"]
    assert report["narrowed"] == []
    assert main([*args, "--allow-widening"]) == 0
    out = capsys.readouterr().out
    assert "1 widened" in out and "WIDENED:" in out and "d1" in out


def test_diff_of_a_narrowing_change_is_reported_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _policy_copy(tmp_path, ("{ml-team: rw, vision: ro}", "{ml-team: ro, vision: ro}"))
    log = _log(tmp_path, INPUTS)
    code = main(
        ["policy", "diff", POLICY, new, "--decisions", str(log), "--opa", tool("opa"), "-o", "json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["widened"] == []
    assert [c["decision_id"] for c in report["narrowed"]] == ["d0"]


def test_diff_of_the_same_policy_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _log(tmp_path, INPUTS * 50)
    assert (
        main(["policy", "diff", POLICY, POLICY, "--decisions", str(log), "--opa", tool("opa")]) == 0
    )
    assert capsys.readouterr().out.startswith("150 recorded decisions replayed: 0 widened")


def test_explain_names_the_export_rule_and_every_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["policy", "explain", "--policy", POLICY, "--opa", tool("opa"), "-o", "json"]
    who = ["--uid", "1004", "--gid", "2003", "--groups", "2003", "--action", "submit"]
    what = ["--project", "ml-team", "--mount", "/nfs/projects/ml/data:rw"]
    assert main([*args, *who, *what]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"]["allow"] is False
    assert any("not one of your groups" in r for r in out["decision"]["reasons"])
    (mount,) = out["explanation"]["mounts"]
    assert mount["export"]["name"] == "projects"
    assert "no rw access" in mount["refusal"]


def test_explain_a_recorded_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path, INPUTS)
    args = ["policy", "explain", "--policy", POLICY, "--opa", tool("opa")]
    assert main([*args, "--decision-id", "d0", "--audit-log", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: ALLOWED")
    assert main([*args, "--decision-id", "nope", "--audit-log", str(log)]) == 3


@pytest.mark.parametrize(
    ("before", "after", "outcome"),
    [
        ({"allow": False, "reasons": ["x"]}, {"allow": True}, "widened"),
        (None, {"allow": True}, "widened"),  # undefined counts as a denial
        ({"allow": True}, None, "narrowed"),
        ({"allow": False, "reasons": ["x"]}, {"allow": False, "reasons": ["y"]}, "reasons"),
        (
            {"allow": True, "supplemental_groups": [1]},
            {"allow": True, "supplemental_groups": [1, 2]},
            "widened",
        ),
        (
            {"allow": True, "mounts": [{"export": "e", "sub_path": "p", "read_only": True}]},
            {"allow": True, "mounts": [{"export": "e", "sub_path": "p", "read_only": False}]},
            "widened",
        ),
        (
            {"allow": True, "privileges": {"g": "admin"}},
            {"allow": True, "privileges": {"g": "member"}},
            "narrowed",
        ),
        (
            {"allow": True, "run_as": {"uid": 1, "gid": 1}},
            {"allow": True, "run_as": {"uid": 2, "gid": 1}},
            "widened",
        ),
        ({"allow": True, "reasons": []}, {"allow": True, "reasons": []}, "same"),
    ],
)
def test_compare_classifies_changes(before: object, after: object, outcome: str) -> None:
    change: Change = compare(before, after)
    assert change.outcome == outcome
