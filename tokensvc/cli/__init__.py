"""``tokensvc`` command line: parse arguments, call the library, map errors to exit codes.

Every failure the library raises on purpose is a ``TokenServiceError``; it is
printed as ``tokensvc: <message>`` on stderr and the process exits with its
``exit_code`` (the table in core.errors, printed in docs/operations.md). Bad
command lines exit 2 (argparse). Nothing here decides anything: each command
is one library call plus formatting.

One module per command group (keys, tokens, jobs, server), each with an
``add_commands(sub)``; handlers import the library they call when they run,
so ``tokensvc token`` loads the mint client and nothing of the cluster side.
``tokensvc token`` is also parsed on its own (:func:`tokens.token_main`):
it is what users run most, and building every command's parser would
double its start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tokensvc.core.errors import TokenServiceError

# Not `from typing import TYPE_CHECKING`: `tokensvc token` starts without importing typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from tokensvc.core.config import Settings


def build_parser() -> argparse.ArgumentParser:
    from tokensvc.cli import jobs, keys, policy, revoke, server, tokens  # noqa: PLC0415

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
    for group in (keys, tokens, server, jobs, policy, revoke):
        group.add_commands(sub)
    return parser


# Command-line options that override a setting: option name -> Settings path.
_OVERRIDES: dict[str, tuple[str, ...]] = {
    "keyring": ("keyring",),
    "socket": ("socket",),
    "realm": ("realm",),
    "user": ("mintd", "user"),
    "bind": ("server", "bind"),
    "port": ("server", "port"),
    "opa_url": ("server", "opa_url"),
    "submitter": ("server", "submitter"),
    "spool_dir": ("server", "spool_dir"),
    "server_url": ("server_url",),
}


def _settings(args: argparse.Namespace) -> Settings:
    from tokensvc.core.config import load_settings, settings_replace  # noqa: PLC0415

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
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["token"]:
            from tokensvc.cli.tokens import token_main  # noqa: PLC0415

            return token_main(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args, _settings(args)))
    except TokenServiceError as err:
        print(f"tokensvc: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`tokensvc logs JOB | head`): stop quietly, as
        # shell tools do. stdout now leads nowhere, so the interpreter's own
        # flush at exit does not hit the closed pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for such a writer


__all__ = ["build_parser", "main"]
