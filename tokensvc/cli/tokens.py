"""``tokensvc mintd``, ``token`` and ``decode``: parsing and printing only.

``tokensvc token`` is the path a user runs most: it imports the mint client
and nothing of the cluster side (a test holds that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tokensvc.cli.common import keyring_option, seconds, ttl

# Not `from typing import TYPE_CHECKING`: `tokensvc token` starts without importing typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tokensvc.core.config import Settings


def _cmd_mintd(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.usernode import daemon as mintd  # noqa: PLC0415

    return mintd.run(settings)


def _digest(text: str) -> str:
    if len(text) != 64 or text.strip("0123456789abcdef"):
        raise argparse.ArgumentTypeError("must be 64 lowercase hex digits (a request digest)")
    return text


def _token_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ttl", type=ttl, metavar="S", help="lifetime in seconds")
    p.add_argument("--socket", metavar="PATH", help="mint daemon socket")
    p.add_argument(
        "--timeout", type=seconds, default=5.0, metavar="S", help="give up after S seconds"
    )
    p.add_argument(
        "--bind",
        type=_digest,
        metavar="DIGEST",
        help="bind the token to one request: its digest, 64 lowercase hex digits",
    )


def token_main(argv: list[str]) -> int:
    """``tokensvc token [--ttl S] [--socket PATH] [--timeout S] [--bind DIGEST]``, parsed alone.

    The settings are loaded (and so checked) as for every command; the
    socket is ``--socket``, else the settings' ``socket``. Errors propagate to
    :func:`tokensvc.cli.main`.
    """
    from tokensvc.core.config import load_settings  # noqa: PLC0415
    from tokensvc.usernode.client import mint  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="tokensvc token", description="Print a token for the calling user."
    )
    _token_options(parser)
    args = parser.parse_args(argv)
    settings = load_settings()
    print(mint(args.ttl, args.socket or settings.socket, timeout=args.timeout, bind=args.bind))
    return 0


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from tokensvc.usernode.client import mint  # noqa: PLC0415

    print(mint(args.ttl, settings.socket, timeout=args.timeout, bind=args.bind))
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


def add_commands(sub: Any) -> None:
    """``mintd``, ``token`` and ``decode``."""
    p = sub.add_parser("mintd", help="run the user-node mint daemon (as root)")
    p.add_argument("--socket", metavar="PATH", help="listening socket (default: settings)")
    keyring_option(p)
    p.add_argument("--user", metavar="USER", help="drop privileges to USER after loading keys")
    p.set_defaults(func=_cmd_mintd)

    p = sub.add_parser("token", help="print a token for the calling user")
    _token_options(p)
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("decode", help="open a token and print its claims (needs the key ring)")
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    keyring_option(p)
    p.add_argument("--realm", help="expected realm (default: settings 'realm')")
    p.set_defaults(func=_cmd_decode)


__all__ = ["add_commands"]
