"""``tokensvc policy explain|diff|audit``: parsing and printing only.

The libraries are cluster.policy_tools and cluster.policy_audit. Every
decision comes from the real OPA: ``--bundle FILE`` or ``--policy
DIR[,DIR]`` (evaluated with the ``opa`` binary), or ``--opa-url URL`` (a
running OPA). ``diff`` exits 1 when any recorded decision would widen,
unless ``--allow-widening``: it is meant as a merge gate. ``audit`` exits 1
when a live job is no longer allowed and was not cancelled (``--cancel``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokensvc.cli.common import non_negative, positive
from tokensvc.core.errors import ConfigError

if TYPE_CHECKING:
    from tokensvc.core.config import Settings

EXIT_WIDENED = 1
EXIT_NO_LONGER_ALLOWED = 1


def _opa_binary(args: argparse.Namespace) -> str:
    found = args.opa or shutil.which("opa") or ".tools/bin/opa"
    if not Path(found).exists():
        raise ConfigError(f"opa binary {found} not found (give --opa PATH)")
    return str(found)


def _gids(text: str) -> list[int]:
    try:
        gids = [int(g) for g in text.split(",") if g]
    except ValueError:
        raise argparse.ArgumentTypeError("must be gids separated by commas") from None
    if any(g < 0 for g in gids):
        raise argparse.ArgumentTypeError("gids are not negative")
    return gids


def _mount(text: str) -> dict[str, str]:
    path, sep, mode = text.rpartition(":")
    if not sep or mode not in ("ro", "rw"):
        path, mode = text, "ro"
    return {"path": path, "mode": mode}


def _input_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The OPA input the server would send, from the command line."""
    identity = {"uid": args.uid, "gid": args.gid, "groups": args.groups or [args.gid]}
    request: dict[str, Any] = {}
    if args.action == "submit":
        request = {
            "project": args.project,
            "image": args.image,
            "command": ["true"],
            "mounts": args.mount,
            "resources": {"systems": args.systems},
        }
        if args.priority is not None:
            request["priority"] = args.priority
    elif args.action in ("get", "cancel", "set_priority", "logs"):
        request = {"job": {"owner_uid": args.job_owner, "project": args.project}}
        if args.action == "set_priority":
            request["priority"] = args.priority
    return {"identity": identity, "action": args.action, "request": request}


def _recorded_input(path: str, decision_id: str) -> dict[str, Any]:
    from tokensvc.cluster.policy_tools import read_decisions  # noqa: PLC0415

    with open(path, encoding="utf-8", errors="replace") as log:
        for rec in read_decisions(log):
            if rec.decision_id == decision_id:
                return rec.input
    raise ConfigError(f"decision {decision_id} not in {path} (or recorded without its input)")


def _evaluate(args: argparse.Namespace, doc: dict[str, Any], query: str) -> Any:
    from tokensvc.cluster import policy_tools  # noqa: PLC0415

    doc = policy_tools.replay_input(doc)
    if args.opa_url:
        return policy_tools.evaluate_remote(args.opa_url, doc, query)
    version = policy_tools.PolicyVersion.from_arg(args.bundle or args.policy)
    return policy_tools.evaluate(_opa_binary(args), version, [doc], query)[0]


def _evaluate_all(args: argparse.Namespace, docs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The decision for each input on the chosen policy (one ``opa eval``, or the REST API)."""
    from tokensvc.cluster import policy_tools  # noqa: PLC0415

    query = policy_tools.DECISION_QUERY
    if args.opa_url:
        return [policy_tools.evaluate_remote(args.opa_url, doc, query) for doc in docs]
    version = policy_tools.PolicyVersion.from_arg(args.bundle or args.policy)
    return policy_tools.evaluate(_opa_binary(args), version, docs, query)


def _cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.cluster import policy_audit  # noqa: PLC0415
    from tokensvc.cluster.audit import configure_audit_log  # noqa: PLC0415
    from tokensvc.cluster.submitters import submitter_from_settings  # noqa: PLC0415

    recorded: dict[str, Any] = {}
    for path in args.decisions:
        with open(path, encoding="utf-8", errors="replace") as log:
            recorded.update(policy_audit.submit_decisions(log))
    submitter = submitter_from_settings(settings.server)
    try:
        jobs = policy_audit.live_jobs(submitter)
        report = policy_audit.audit_jobs(jobs, recorded, lambda docs: _evaluate_all(args, docs))
        cancelled: dict[str, str] = {}
        if args.cancel and report.denied:
            configure_audit_log()  # policy_cancel lines to stderr, as the server writes its own
            policy = args.opa_url or args.bundle or args.policy
            cancelled = dict(policy_audit.cancel_jobs(report.denied, submitter, policy=policy))
    finally:
        submitter.close()
    if args.output == "json":
        print(json.dumps({**report.to_json(), "cancelled": cancelled}, indent=2, sort_keys=True))
    else:
        print(policy_audit.format_audit(report))
        for name, result in cancelled.items():
            print(f"{name}: {result}")
    left = [j for j in report.denied if cancelled.get(j.job.name) not in ("cancelled", "not_found")]
    return EXIT_NO_LONGER_ALLOWED if left else 0


def _cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    import yaml  # noqa: PLC0415

    from tokensvc.cluster.policy_tools import DECISION_QUERY, EXPLANATION_QUERY  # noqa: PLC0415

    if args.decision_id:
        if not args.audit_log:
            raise ConfigError("--decision-id needs --audit-log FILE")
        doc = _recorded_input(args.audit_log, args.decision_id)
    else:
        if args.uid is None or args.gid is None or args.action is None:
            raise ConfigError("give --uid, --gid and --action (or --decision-id and --audit-log)")
        doc = _input_from_args(args)
    decision = _evaluate(args, doc, DECISION_QUERY)
    explanation = _evaluate(args, doc, EXPLANATION_QUERY)
    if args.output == "json":
        out = {"input": doc, "decision": decision, "explanation": explanation}
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    allowed = isinstance(decision, dict) and decision.get("allow") is True
    print(f"decision: {'ALLOWED' if allowed else 'DENIED'}")
    if decision is None:
        print("  (undefined: no policy answered; the server would refuse with 503)")
    for reason in (decision or {}).get("reasons", []):
        print(f"  - {reason}")
    print("\nwhat decided it:")
    print(yaml.safe_dump(explanation, sort_keys=False, allow_unicode=True), end="")
    return 0


def _cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.cluster import policy_tools  # noqa: PLC0415

    old = policy_tools.PolicyVersion.from_arg(args.old)
    new = policy_tools.PolicyVersion.from_arg(args.new)
    with open(args.decisions, encoding="utf-8", errors="replace") as log:
        decisions = list(policy_tools.read_decisions(log))
    report = policy_tools.diff(_opa_binary(args), old, new, decisions)
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(policy_tools.format_diff(report))
    if report.widened and not args.allow_widening:
        print(
            f"tokensvc: {report.widened} decisions would widen (pass --allow-widening to accept)",
            file=sys.stderr,
        )
        return EXIT_WIDENED
    return 0


def _policy_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", metavar="FILE", help="a policy bundle (.tar.gz)")
    src.add_argument(
        "--policy",
        metavar="DIR[,DIR]",
        default="policies/wsc,policies/data",
        help="policy and data directories (default: policies/wsc,policies/data)",
    )
    src.add_argument("--opa-url", metavar="URL", help="a running OPA, e.g. http://127.0.0.1:8181")
    p.add_argument("--opa", metavar="PATH", help="opa binary (default: on PATH)")


def add_commands(sub: Any) -> None:
    """``policy explain|diff|audit``: what security admins run before and after shipping."""
    p = sub.add_parser("policy", help="explain decisions, diff policy versions, audit live jobs")
    actions = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    e = actions.add_parser("explain", help="a decision and what decided each part of it")
    _policy_source(e)
    e.add_argument("--uid", type=non_negative, help="the caller's uid")
    e.add_argument("--gid", type=non_negative, help="the caller's primary gid")
    e.add_argument("--groups", type=_gids, metavar="G,G", help="supplementary gids")
    e.add_argument(
        "--action",
        choices=("submit", "list", "get", "cancel", "set_priority", "logs"),
        help="the action",
    )
    e.add_argument("--project", metavar="GROUP", help="project group (submit; the job's project)")
    e.add_argument("--image", default="trainer:1", help="image (submit)")
    e.add_argument("--mount", type=_mount, action="append", default=[], metavar="PATH[:ro|:rw]")
    e.add_argument("--systems", type=positive, default=1, metavar="N")
    e.add_argument("--priority", type=non_negative, metavar="P")
    e.add_argument("--job-owner", type=non_negative, metavar="UID", help="the job's owner uid")
    e.add_argument("--decision-id", metavar="ID", help="explain a recorded decision instead")
    e.add_argument(
        "--audit-log", metavar="FILE", help="the server's audit log (with --decision-id)"
    )
    e.add_argument("-o", "--output", choices=("text", "json"), default="text")
    e.set_defaults(func=_cmd_explain)

    d = actions.add_parser("diff", help="replay recorded decisions against two policy versions")
    d.add_argument("old", metavar="OLD", help="bundle file, or DIR[,DIR]")
    d.add_argument("new", metavar="NEW", help="bundle file, or DIR[,DIR]")
    d.add_argument("--decisions", required=True, metavar="LOG", help="the server's audit log")
    d.add_argument("--allow-widening", action="store_true", help="exit 0 even if widened")
    d.add_argument("--opa", metavar="PATH", help="opa binary (default: on PATH)")
    d.add_argument("-o", "--output", choices=("text", "json"), default="text")
    d.set_defaults(func=_cmd_diff)

    a = actions.add_parser(
        "audit", help="live jobs the active policy would no longer allow (--cancel them)"
    )
    _policy_source(a)
    a.add_argument(
        "--decisions",
        required=True,
        action="append",
        metavar="LOG",
        help="the server's audit log (repeat for rotated logs)",
    )
    a.add_argument("--cancel", action="store_true", help="cancel each job no longer allowed")
    a.add_argument("-o", "--output", choices=("text", "json"), default="text")
    a.set_defaults(func=_cmd_audit)


__all__ = ["EXIT_NO_LONGER_ALLOWED", "EXIT_WIDENED", "add_commands"]
