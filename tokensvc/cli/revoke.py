"""``tokensvc revoke token|uid|host|key|list``: parsing and printing only (library: revocations).

Writes the revocations data file of the policy (default
``policies/data/wsc/revocations/data.yaml``); ``make bundle`` ships it,
signed, and every replica applies it within one bundle poll.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tokensvc.cli.common import non_negative

if TYPE_CHECKING:
    from tokensvc.core.config import Settings

# Where a checkout keeps the policy's admin data (the bundle is built from there).
DEFAULT_FILE = "policies/data/wsc/revocations/data.yaml"
_KINDS = {"token": "token_ids", "uid": "uids", "host": "hosts", "key": "key_ids"}


def _when(text: str) -> int:
    """Unix seconds, or an ISO 8601 time (UTC unless it names a zone)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be unix seconds or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.cluster import revocations  # noqa: PLC0415

    if args.what == "list":
        print(json.dumps(revocations.load(args.file), indent=2, sort_keys=True))
        return 0
    kind = _KINDS[args.what]
    now = int(time.time())
    subject: str | int = args.subject
    before = None
    if kind in ("uids", "hosts"):
        before = args.before if args.before is not None else now
    rev = revocations.Revocation(kind, subject, args.reason, now, before)  # type: ignore[arg-type]
    revocations.add(args.file, rev)
    since = (
        ""
        if before is None
        else f" (tokens issued before {datetime.fromtimestamp(before, UTC):%Y-%m-%dT%H:%M:%SZ})"
    )
    print(f"revoked {args.what} {subject}{since} in {args.file}; run `make bundle` to ship it")
    return 0


def add_commands(sub: Any) -> None:
    """``revoke``: add a revocation to the policy's data."""
    p = sub.add_parser("revoke", help="revoke a token, a user's or a host's tokens, or a key")
    p.add_argument("--file", default=DEFAULT_FILE, metavar="PATH", help=f"default {DEFAULT_FILE}")
    kinds = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, subject, help_text in (
        ("token", "TOKEN_ID", "one token, by its id (from the audit log)"),
        ("uid", "UID", "every token of a user issued before --before"),
        ("host", "HOST", "every token minted on a user node before --before"),
        ("key", "KEY_ID", "every token sealed with a key"),
    ):
        k = kinds.add_parser(name, help=help_text)
        k.add_argument("subject", metavar=subject, type=non_negative if name == "uid" else str)
        k.add_argument("--reason", required=True, help="why (shown in every denial it causes)")
        if name in ("uid", "host"):
            k.add_argument("--before", type=_when, metavar="TIME", help="default: now")
    kinds.add_parser("list", help="print the revocations")
    p.set_defaults(func=_cmd_revoke)


__all__ = ["add_commands"]
