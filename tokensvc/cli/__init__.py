"""``tokensvc`` command line: parse arguments, call the library, map errors to exit codes.

Every failure the library raises on purpose is a ``TokenServiceError``; it is
printed as ``tokensvc: <message>`` on stderr and the process exits with its
``exit_code`` (table in docs/operations.md). Bad command lines exit 2
(argparse). Nothing here decides anything: each command is one library call
plus formatting.

Adding a command: write ``_add_<name>(sub)`` that creates the subparser and
sets ``func`` to a ``(args, settings) -> int`` handler, and call it from
``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tokensvc.cli.jobs import OVERRIDES as JOB_OVERRIDES
from tokensvc.cli.jobs import add_job_commands
from tokensvc.core.config import Settings, load_settings, settings_replace
from tokensvc.core.errors import TokenServiceError

Handler = Callable[[argparse.Namespace, Settings], int]
MAX_TTL_ARG = 99999  # what the mint protocol can carry; the daemon enforces its maximum


def _ttl(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_TTL_ARG:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds in 1..{MAX_TTL_ARG}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be in (0, 3600] seconds")
    return value


def _keyring_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keyring", metavar="PATH", help="key ring file (default: settings 'keyring')"
    )


# --- keys ---------------------------------------------------------------------------


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


def _add_keys(sub: Any) -> None:
    p = sub.add_parser("keygen", help="create a new key ring (O_EXCL, mode 0600)")
    _keyring_option(p)
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("keys", help="list or change the keys in a key ring")
    _keyring_option(p)
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


# --- mint daemon and tokens -------------------------------------------------------------


def _cmd_mintd(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.usernode import daemon as mintd  # noqa: PLC0415

    return mintd.run(settings)


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.usernode.client import mint  # noqa: PLC0415

    print(mint(args.ttl, settings.socket, timeout=args.timeout))
    return 0


def _read_token_arg(text: str) -> str:
    if text != "-":
        return text
    from tokensvc.core.token import MAX_TOKEN_LEN  # noqa: PLC0415

    data = sys.stdin.read(MAX_TOKEN_LEN + 2)
    return data[:-1] if data.endswith("\n") else data


def _cmd_decode(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.core.keys import KeyRing  # noqa: PLC0415
    from tokensvc.core.token import open_token  # noqa: PLC0415
    from tokensvc.core.validate import check_claims  # noqa: PLC0415

    token = _read_token_arg(args.token)
    ring = KeyRing.load(settings.keyring)
    claims, key = open_token(token, ring)
    # Realm, time and key state, but no replay cache: decoding does not use up the token.
    check_claims(
        claims,
        key,
        realm=settings.realm,
        now=time.time(),
        max_ttl=settings.max_ttl,
        skew=settings.max_skew,
    )
    print(json.dumps({**claims.to_dict(), "key_id": key.key_id}, indent=2, sort_keys=True))
    return 0


def _add_tokens(sub: Any) -> None:
    p = sub.add_parser("mintd", help="run the user-node mint daemon (as root)")
    p.add_argument("--socket", metavar="PATH", help="listening socket (default: settings)")
    _keyring_option(p)
    p.add_argument("--user", metavar="USER", help="drop privileges to USER after loading keys")
    p.set_defaults(func=_cmd_mintd)

    p = sub.add_parser("token", help="print a token for the calling user")
    p.add_argument("--ttl", type=_ttl, metavar="S", help="lifetime in seconds")
    p.add_argument("--socket", metavar="PATH", help="mint daemon socket")
    p.add_argument(
        "--timeout", type=_seconds, default=5.0, metavar="S", help="give up after S seconds"
    )
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("decode", help="open a token and print its claims (needs the key ring)")
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    _keyring_option(p)
    p.add_argument("--realm", help="expected realm (default: settings 'realm')")
    p.set_defaults(func=_cmd_decode)


# --- entry point -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokensvc",
        description="Identity tokens and OPA-backed authorization for compute clusters.",
        epilog="Exit codes: see docs/operations.md.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="settings file (default: $TOKENSVC_CONFIG or /etc/tokensvc/tokensvc.conf)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_keys(sub)
    _add_tokens(sub)
    add_job_commands(sub)
    return parser


# Command-line options that override a setting: option name -> Settings path.
_OVERRIDES = {
    "keyring": ("keyring",),
    "socket": ("socket",),
    "realm": ("realm",),
    "user": ("mintd", "user"),
    **JOB_OVERRIDES,
}


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    for option, where in _OVERRIDES.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if len(where) == 1:
            settings = settings_replace(settings, **{where[0]: value})
        else:
            section = getattr(settings, where[0])
            settings = settings_replace(
                settings, **{where[0]: settings_replace(section, **{where[1]: value})}
            )
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args, _settings(args))
    except TokenServiceError as err:
        print(f"tokensvc: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
