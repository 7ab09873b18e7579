"""The mint daemon's line protocol, version 1: pure parsing and formatting, no I/O.

One request, one reply, then the daemon closes the connection::

    request = "MINT1" [ " " ttl ] LF          ; at most MAX_REQUEST (32) bytes
    ttl     = %x31-39 0*4%x30-39              ; 1..99999, ASCII digits, no leading zero
    reply   = "OK " token LF
            / "ERR " code " " message LF      ; code: lowercase letters and "-"

The request carries nothing but the requested lifetime: who is asking comes
from the kernel (SO_PEERCRED / SO_PEERGROUPS), never from these bytes. The
grammar is exact: no other whitespace, no CR, no sign, nothing after LF.
Refusals say what was wrong with the *request* and nothing else (no key ids,
no identities, no internal state).

Error codes: ``malformed`` (not the grammar), ``too-long`` (more than
MAX_REQUEST bytes), ``version`` (unknown protocol version), ``ttl`` (outside
1..max_ttl), ``timeout`` (request not complete within the deadline), ``busy``
(too many connections; retry), ``internal`` (the daemon could not mint).
"""

from __future__ import annotations

import re

from tokensvc.core.errors import DaemonUnavailable, MintRefused

VERSION_TAG = b"MINT1"
MAX_REQUEST = 32  # bytes, including the LF
MAX_REPLY = 512 * 1024  # a token with 65536 groups is ~350 KiB of text
MAX_TTL_DIGITS = 5

_TTL = re.compile(rb"[1-9][0-9]{0,4}")
_WITH_TTL = VERSION_TAG + b" "
_BARE = VERSION_TAG + b"\n"
_OTHER_VERSION = re.compile(rb"MINT(?!1[ \n])[0-9]{1,3}[ \n]")
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,%d}" % MAX_REPLY)
_ERR = re.compile(rb"ERR ([a-z-]{1,32}) ([\x20-\x7e]{1,200})\n")

OK_PREFIX = b"OK "


class RequestError(Exception):
    """A request the daemon refuses; ``reply`` is what the client is told."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reply = error_reply(code, message)


def parse_request(data: bytes) -> int | None:
    """The requested TTL of a complete request (``None`` = daemon default).

    ``data`` is everything received so far, up to and including the first LF.
    Range checking against the configured maximum is the caller's job.
    """
    if data == _BARE:
        return None
    if len(data) > MAX_REQUEST:
        raise RequestError("too-long", f"request longer than {MAX_REQUEST} bytes")
    if data.startswith(_WITH_TTL) and data.endswith(b"\n"):
        digits = data[len(_WITH_TTL) : -1]
        if _TTL.fullmatch(digits):
            return int(digits)
    if _OTHER_VERSION.match(data):
        raise RequestError("version", "unsupported protocol version; this daemon speaks MINT1")
    raise RequestError("malformed", "expected 'MINT1 [ttl]' and a newline")


def format_request(ttl: int | None) -> bytes:
    """The request bytes for ``ttl`` (None = the daemon's default)."""
    if ttl is None:
        return _BARE
    if type(ttl) is not int or not 1 <= ttl < 10**MAX_TTL_DIGITS:
        raise ValueError(f"ttl must be an integer in 1..{10**MAX_TTL_DIGITS - 1}")
    return b"%s %d\n" % (VERSION_TAG, ttl)


def ok_reply(token: str) -> bytes:
    return OK_PREFIX + token.encode("ascii") + b"\n"


def error_reply(code: str, message: str) -> bytes:
    return f"ERR {code} {message}\n".encode("ascii")


def parse_reply(data: bytes) -> str:
    """The token in a complete reply; MintRefused for ERR, DaemonUnavailable for garbage."""
    if data.startswith(OK_PREFIX) and data.endswith(b"\n"):
        body = data[len(OK_PREFIX) : -1]
        if _TOKEN.fullmatch(body):
            return body.decode("ascii")
    match = _ERR.fullmatch(data)
    if match:
        code, message = (g.decode("ascii") for g in match.groups())
        raise MintRefused(f"mint daemon refused the request ({code}): {message}")
    raise DaemonUnavailable("mint daemon sent a malformed reply")


__all__ = [
    "MAX_REPLY",
    "MAX_REQUEST",
    "VERSION_TAG",
    "RequestError",
    "error_reply",
    "format_request",
    "ok_reply",
    "parse_reply",
    "parse_request",
]
