"""``tokensvc keygen`` and ``tokensvc keys …``: parsing and printing only (library: core.keys)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tokensvc.cli.common import keyring_option, non_negative

if TYPE_CHECKING:
    from tokensvc.core.config import Settings
    from tokensvc.core.keys import KeyInfo

DEFAULT_WARN_DAYS = 7


def _when(text: str) -> int:
    """A time as unix seconds, or ISO 8601 with a UTC offset (``2026-03-01T00:00:00Z``)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be unix seconds or ISO 8601 with a zone, e.g. 2026-03-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give the zone explicitly, e.g. a trailing Z for UTC")
    return int(moment.timestamp())


def _stamp(value: int | None) -> str:
    return "-" if value is None else f"{datetime.fromtimestamp(value, UTC):%Y-%m-%dT%H:%M:%SZ}"


def _warnings(listing: list[KeyInfo], now: float, warn_days: int) -> list[str]:
    """Keys that will stop (or have stopped) minting or opening, soonest first."""
    out: list[str] = []
    for item in listing:
        if item["state"] == "retired":
            continue
        key_id, not_after, not_before = item["key_id"], item["not_after"], item["not_before"]
        if not_after is not None and now >= not_after:
            out.append(f"key {key_id} ({item['state']}) expired at {_stamp(not_after)}")
        elif not_after is not None and not_after - now <= warn_days * 86400:
            days = (not_after - now) / 86400
            out.append(
                f"key {key_id} ({item['state']}) expires in {days:.1f} days, at {_stamp(not_after)}"
            )
        if item["state"] == "active" and not_before is not None and now < not_before:
            out.append(f"active key {key_id} is not valid before {_stamp(not_before)}")
        if item["state"] == "active" and not (
            (not_before is None or now >= not_before) and (not_after is None or now < not_after)
        ):
            out.append("nothing can mint now: activate a key that is valid")
    return out


def _cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.core.keys import generate_keyring  # noqa: PLC0415 - keep `token` light

    ring = generate_keyring(settings.keyring)
    print(f"created key ring {settings.keyring} with active key {ring.active.key_id}")
    return 0


def _cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.core import keys  # noqa: PLC0415

    path = settings.keyring
    action: str = args.action
    if action == "list":
        listing = keys.list_keys(path)
        if args.json:
            print(json.dumps(listing, indent=2))
        else:
            print(f"{'KEY ID':<16}  {'STATE':<8}  {'CREATED':<20}  {'NOT BEFORE':<20}  NOT AFTER")
            for item in listing:
                print(
                    f"{item['key_id']:<16}  {item['state']:<8}  {_stamp(item['created']):<20}  "
                    f"{_stamp(item['not_before']):<20}  {_stamp(item['not_after'])}"
                )
        for line in _warnings(listing, time.time(), args.warn_days):
            print(f"tokensvc: warning: {line}", file=sys.stderr)
        return 0
    if action == "add":
        key = keys.add_key(path, not_before=args.not_before, not_after=args.not_after)
        print(f"added key {key.key_id} (accepted; activate: tokensvc keys rotate {key.key_id})")
    elif action == "window":
        key = keys.set_key_window(
            path, args.key_id, not_before=args.not_before, not_after=args.not_after
        )
        print(f"key {key.key_id} valid from {_stamp(key.not_before)} to {_stamp(key.not_after)}")
    elif action == "rotate":
        key = keys.activate_key(path, args.key_id) if args.key_id else keys.rotate_key(path)
        print(f"active key is now {key.key_id}")
    elif action == "retire":
        key = keys.retire_key(path, args.key_id)
        print(f"retired key {key.key_id}")
    else:  # remove
        key = keys.remove_key(path, args.key_id)
        print(f"removed key {key.key_id}")
    return 0


def _window_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--not-before", type=_when, metavar="T", help="first valid instant (unix s or ISO 8601)"
    )
    p.add_argument(
        "--not-after", type=_when, metavar="T", help="first instant no longer valid (same forms)"
    )


def add_commands(sub: Any) -> None:
    """``keygen`` and ``keys list|add|window|rotate|retire|remove``."""
    p = sub.add_parser("keygen", help="create a new key ring (O_EXCL, mode 0600)")
    keyring_option(p)
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("keys", help="list or change the keys in a key ring")
    keyring_option(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser(
        "list", help="key ids, states, creation times and windows (never secrets)"
    )
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument(
        "--warn-days",
        type=non_negative,
        default=DEFAULT_WARN_DAYS,
        metavar="N",
        help=f"warn about keys expiring within N days (default {DEFAULT_WARN_DAYS})",
    )
    a = actions.add_parser("add", help="add a new accepted key (distribute, then rotate to it)")
    _window_options(a)
    a = actions.add_parser(
        "window", help="set KEY_ID's validity window (an end not given stays open)"
    )
    a.add_argument("key_id", metavar="KEY_ID")
    _window_options(a)
    a = actions.add_parser("rotate", help="activate KEY_ID, or a brand-new key if none given")
    a.add_argument("key_id", nargs="?", metavar="KEY_ID")
    a = actions.add_parser("retire", help="retire a key: its tokens fail with exit code 15")
    a.add_argument("key_id", metavar="KEY_ID")
    a = actions.add_parser("remove", help="delete a retired key for good")
    a.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=_cmd_keys)


__all__ = ["add_commands"]
