"""Policy administration on the real OPA: explain a decision, diff two policy versions, audit jobs.

Nothing here re-implements the policy: every decision is evaluated by the
``opa`` binary (``opa eval`` over a bundle file or policy directories) or by
a running OPA's REST API. What is ours is the bookkeeping around it: which
inputs to replay (the server's audit log records each decision's input as
OPA saw it, identity reduced to uid, gid and groups), and how two outcomes
compare.

How outcomes compare (:func:`compare`): an undefined decision counts as a
denial (fail closed). Allowed where it was denied, or allowed with anything
more -- a supplemental group, a mount, write where it was read-only, a
higher privilege, another visible project, another uid or gid -- is a
*widening*; the reverse a *narrowing*; a change in the reasons of a denial
alone is *reasons*. A change can widen and narrow at once; it counts as
widened, which is what a merge gate must stop.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from tokensvc.core.errors import ConfigError, PolicyUnavailable

DECISION_QUERY: Final = "data.wsc.authz.decision"
EXPLANATION_QUERY: Final = "data.wsc.authz.explanation"
_REPLAY_ROOT: Final = "tokensvc_replay"  # where the inputs go in the evaluation's data
_PRIVILEGE_RANK: Final = {"viewer": 1, "member": 2, "admin": 3}
# What of an identity the audit log keeps, and so what a replay can see.
REPLAYED_IDENTITY_FIELDS: Final = ("uid", "gid", "groups")
EVAL_TIMEOUT: Final = 600.0

Outcome = Literal["widened", "narrowed", "reasons", "same"]


@dataclass(frozen=True)
class PolicyVersion:
    """A policy to evaluate: a bundle file, or policy and data directories.

    Directories are loaded as ``opa run`` loads them (``*_test.rego`` files
    included, conftest samples ignored); a bundle exactly as built.
    """

    bundle: Path | None = None
    paths: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if (self.bundle is None) == (not self.paths):
            raise ConfigError("a policy version is one bundle file or one or more directories")

    @classmethod
    def from_arg(cls, text: str) -> PolicyVersion:
        """``FILE.tar.gz`` (a bundle) or ``DIR[,DIR...]`` (policy and data directories)."""
        if text.endswith((".tar.gz", ".tgz")):
            bundle = Path(text)
            if not bundle.is_file():
                raise ConfigError(f"bundle {text} does not exist")
            return cls(bundle=bundle)
        paths = tuple(Path(p) for p in text.split(",") if p)
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing or not paths:
            raise ConfigError(f"policy directory {', '.join(missing) or text!r} does not exist")
        return cls(paths=paths)

    def opa_args(self) -> list[str]:
        if self.bundle is not None:
            return ["--bundle", str(self.bundle)]
        args: list[str] = ["--ignore", "samples"]
        for path in self.paths:
            args += ["--data", str(path)]
        return args

    def __str__(self) -> str:
        return str(self.bundle) if self.bundle else ",".join(map(str, self.paths))


def evaluate(
    opa: str, version: PolicyVersion, inputs: Sequence[Mapping[str, Any]], query: str
) -> list[Any]:
    """``query`` for each input with the real OPA, in one ``opa eval``; None where undefined.

    The inputs travel as data under a root of their own, and one
    comprehension evaluates the query ``with input as`` each of them, so a
    day of decisions costs one process, not one per decision.
    """
    if not inputs:
        return []
    with tempfile.TemporaryDirectory(prefix="tokensvc-policy-") as tmp:
        data = Path(tmp) / "replay.json"
        data.write_text(json.dumps({_REPLAY_ROOT: {"inputs": list(inputs)}}))
        expr = f"{{i: d | some i, x in data.{_REPLAY_ROOT}.inputs; d := {query} with input as x}}"
        cmd = [opa, "eval", "--format", "json", *version.opa_args(), "--data", str(data), expr]
        try:
            run = subprocess.run(
                cmd, capture_output=True, text=True, timeout=EVAL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise PolicyUnavailable(f"cannot run {opa} eval: {err}") from err
    if run.returncode != 0:
        detail = run.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise PolicyUnavailable(f"opa eval of {version} failed: {detail[0]}")
    try:
        result = json.loads(run.stdout)["result"][0]["expressions"][0]["value"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise PolicyUnavailable(f"opa eval of {version} gave no result") from err
    # Object keys come back as strings: "0", "1", ...
    return [result.get(str(i)) for i in range(len(inputs))]


# --- recorded decisions --------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedDecision:
    """One decision line of the server's audit log: its id, input and outcome."""

    decision_id: str | None
    input: dict[str, Any]
    allow: bool
    revision: str | None = None


def read_decisions(lines: Iterable[str]) -> Iterator[RecordedDecision]:
    """The decisions of an audit log (JSON lines); other events and non-JSON lines are skipped.

    Only lines that carry the decision's input can be replayed.
    """
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("event") != "decision":
            continue
        doc = event.get("input")
        if not isinstance(doc, dict):
            continue
        decision_id = event.get("decision_id")
        revision = event.get("revision")
        yield RecordedDecision(
            decision_id=decision_id if isinstance(decision_id, str) else None,
            input=doc,
            allow=event.get("allow") is True,
            revision=revision if isinstance(revision, str) else None,
        )


def replay_input(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An OPA input as the audit log keeps it: the identity reduced to uid, gid, groups."""
    identity = doc.get("identity") or {}
    kept = {k: identity[k] for k in REPLAYED_IDENTITY_FIELDS if k in identity}
    return {**doc, "identity": kept}


# --- comparing outcomes --------------------------------------------------------------------


def _allowed(decision: Any) -> bool:
    return isinstance(decision, dict) and decision.get("allow") is True


def _grants(decision: Any) -> dict[str, set[Any]]:
    """What an allowed decision gives, as sets that can only grow or shrink."""
    if not _allowed(decision):
        return {}
    mounts = decision.get("mounts") or []
    privileges = decision.get("privileges") or {}
    run_as = decision.get("run_as") or {}
    return {
        "supplemental_groups": set(decision.get("supplemental_groups") or []),
        "mounts": {(m.get("export"), m.get("sub_path")) for m in mounts},
        "writable_mounts": {
            (m.get("export"), m.get("sub_path")) for m in mounts if m.get("read_only") is False
        },
        "privileges": {
            (group, rank)
            for group, level in privileges.items()
            for rank in range(1, _PRIVILEGE_RANK.get(level, 0) + 1)
        },
        "visible_projects": set(decision.get("visible_projects") or []),
        "run_as": {(run_as.get("uid"), run_as.get("gid"))},
    }


@dataclass(frozen=True)
class Change:
    """How one recorded input's decision differs between two policy versions."""

    outcome: Outcome
    gained: dict[str, list[Any]] = field(default_factory=dict)
    lost: dict[str, list[Any]] = field(default_factory=dict)
    reasons_before: tuple[str, ...] = ()
    reasons_after: tuple[str, ...] = ()


def _reasons(decision: Any) -> tuple[str, ...]:
    if not isinstance(decision, dict):
        return ("decision undefined",)
    return tuple(str(r) for r in decision.get("reasons") or [])


def compare(before: Any, after: Any) -> Change:
    """Compare two decisions for the same input (see the module docstring)."""
    was, now = _allowed(before), _allowed(after)
    if was != now:
        outcome: Outcome = "widened" if now else "narrowed"
        return Change(outcome, reasons_before=_reasons(before), reasons_after=_reasons(after))
    if not now:
        if _reasons(before) == _reasons(after):
            return Change("same")
        return Change("reasons", reasons_before=_reasons(before), reasons_after=_reasons(after))
    old, new = _grants(before), _grants(after)
    gained = {k: sorted(new[k] - old[k], key=repr) for k in new if new[k] - old[k]}
    lost = {k: sorted(old[k] - new[k], key=repr) for k in old if old[k] - new[k]}
    if gained:
        return Change("widened", gained, lost)
    if lost:
        return Change("narrowed", gained, lost)
    return Change("same")


@dataclass
class DiffReport:
    """Every changed outcome of a replay, grouped by kind."""

    total: int = 0
    changes: dict[Outcome, list[tuple[RecordedDecision, Change]]] = field(
        default_factory=lambda: {"widened": [], "narrowed": [], "reasons": []}
    )

    @property
    def widened(self) -> int:
        return len(self.changes["widened"])

    def to_json(self) -> dict[str, Any]:
        return {
            "decisions": self.total,
            **{
                kind: [
                    {
                        "decision_id": rec.decision_id,
                        "input": rec.input,
                        "gained": change.gained,
                        "lost": change.lost,
                        "reasons_before": list(change.reasons_before),
                        "reasons_after": list(change.reasons_after),
                    }
                    for rec, change in entries
                ]
                for kind, entries in self.changes.items()
            },
        }


def diff(
    opa: str, old: PolicyVersion, new: PolicyVersion, decisions: Sequence[RecordedDecision]
) -> DiffReport:
    """Replay every recorded input against both versions; report what changed."""
    inputs = [replay_input(d.input) for d in decisions]
    # The two versions are independent processes: evaluate them side by side.
    with ThreadPoolExecutor(max_workers=2) as pool:
        old_run = pool.submit(evaluate, opa, old, inputs, DECISION_QUERY)
        new_run = pool.submit(evaluate, opa, new, inputs, DECISION_QUERY)
        before, after = old_run.result(), new_run.result()
    report = DiffReport(total=len(decisions))
    for rec, b, a in zip(decisions, before, after, strict=True):
        change = compare(b, a)
        if change.outcome != "same":
            report.changes[change.outcome].append((rec, change))
    return report


def evaluate_remote(opa_url: str, doc: Mapping[str, Any], query: str, timeout: float = 10.0) -> Any:
    """``query`` for one input on a running OPA's REST API; None where undefined."""
    import requests  # noqa: PLC0415 - only this path talks HTTP

    path = query.removeprefix("data.").replace(".", "/")
    try:
        resp = requests.post(
            f"{opa_url.rstrip('/')}/v1/data/{path}", json={"input": doc}, timeout=timeout
        )
        body = resp.json()
    except (requests.RequestException, ValueError) as err:
        raise PolicyUnavailable(f"OPA at {opa_url} gave no answer: {err}") from err
    if resp.status_code != 200 or not isinstance(body, dict):
        raise PolicyUnavailable(f"OPA at {opa_url} answered HTTP {resp.status_code}")
    return body.get("result")


def _who(doc: Mapping[str, Any]) -> str:
    identity = doc.get("identity") or {}
    request = doc.get("request") or {}
    what = request.get("project") or (request.get("job") or {}).get("project") or ""
    return f"uid {identity.get('uid')} {doc.get('action')} {what}".rstrip()


def format_diff(report: DiffReport) -> str:
    """The report as a table a reviewer reads: one line per changed decision, grouped."""
    lines = [
        f"{report.total} recorded decisions replayed: {report.widened} widened, "
        f"{len(report.changes['narrowed'])} narrowed, "
        f"{len(report.changes['reasons'])} with other reasons only"
    ]
    for kind in ("widened", "narrowed", "reasons"):
        entries = report.changes[kind]
        if not entries:
            continue
        lines += ["", f"{kind.upper()}:", f"  {'DECISION':<38} {'WHO':<32} CHANGE"]
        for rec, change in entries:
            if change.gained or change.lost:
                what = "; ".join(
                    [f"+{k} {v}" for k, v in change.gained.items()]
                    + [f"-{k} {v}" for k, v in change.lost.items()]
                )
            else:
                what = f"{list(change.reasons_before)} -> {list(change.reasons_after)}"
            lines.append(f"  {rec.decision_id or '-':<38} {_who(rec.input):<32} {what}")
    return "\n".join(lines)


__all__ = [
    "DECISION_QUERY",
    "EXPLANATION_QUERY",
    "Change",
    "DiffReport",
    "PolicyVersion",
    "RecordedDecision",
    "compare",
    "diff",
    "evaluate",
    "evaluate_remote",
    "format_diff",
    "read_decisions",
    "replay_input",
]
