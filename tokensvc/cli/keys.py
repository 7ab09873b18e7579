"""``tokensvc keygen`` and ``tokensvc keys …``: parsing and printing only (library: core.keys)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tokensvc.cli.common import keyring_option

if TYPE_CHECKING:
    from tokensvc.core.config import Settings


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
            print(f"{'KEY ID':<16}  {'STATE':<8}  CREATED")
            for item in listing:
                created = datetime.fromtimestamp(int(str(item["created"])), UTC)
                print(f"{item['key_id']!s:<16}  {item['state']!s:<8}  {created:%Y-%m-%dT%H:%M:%SZ}")
        return 0
    if action == "add":
        key = keys.add_key(path)
        print(f"added key {key.key_id} (accepted; activate: tokensvc keys rotate {key.key_id})")
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


def add_commands(sub: Any) -> None:
    """``keygen`` and ``keys list|add|rotate|retire|remove``."""
    p = sub.add_parser("keygen", help="create a new key ring (O_EXCL, mode 0600)")
    keyring_option(p)
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("keys", help="list or change the keys in a key ring")
    keyring_option(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("list", help="key ids, states and creation times (never secrets)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    actions.add_parser("add", help="add a new accepted key (distribute, then rotate to it)")
    a = actions.add_parser("rotate", help="activate KEY_ID, or a brand-new key if none given")
    a.add_argument("key_id", nargs="?", metavar="KEY_ID")
    a = actions.add_parser("retire", help="retire a key: its tokens fail with exit code 15")
    a.add_argument("key_id", metavar="KEY_ID")
    a = actions.add_parser("remove", help="delete a retired key for good")
    a.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=_cmd_keys)


__all__ = ["add_commands"]
