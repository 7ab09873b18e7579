"""What every command group shares: the handler type, argument types, printing reasons.

Argument types raise ``argparse.ArgumentTypeError`` (exit 2, usage); nothing
here imports more than the standard library and the settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# Not `from typing import TYPE_CHECKING`: `tokensvc token` starts without importing typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from tokensvc.core.config import Settings


Handler = Callable[[argparse.Namespace, "Settings"], int]
MAX_TTL_ARG = 99999  # what the mint protocol can carry; the daemon enforces its maximum


def ttl(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_TTL_ARG:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds in 1..{MAX_TTL_ARG}")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be in (0, 3600] seconds")
    return value


def non_negative(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise argparse.ArgumentTypeError("must be a whole number >= 0")
    return int(text)


def positive(text: str) -> int:
    value = non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def keyring_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keyring", metavar="PATH", help="key ring file (default: settings 'keyring')"
    )


def print_reasons(headline: str, reasons: Sequence[str], exit_code: int) -> int:
    """``tokensvc: <headline>:`` and one reason per line on stderr; returns ``exit_code``."""
    print(f"tokensvc: {headline}:", file=sys.stderr)
    for reason in reasons:
        print(f"  - {reason}", file=sys.stderr)
    return exit_code


__all__ = [
    "MAX_TTL_ARG",
    "Handler",
    "keyring_option",
    "non_negative",
    "positive",
    "print_reasons",
    "seconds",
    "ttl",
]
