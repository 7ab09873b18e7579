"""The mint daemon's line protocol: pure parsing and formatting, no I/O.

One request, one reply, then the daemon closes the connection::

    request = "MINT1" [ " " ttl ] LF                   ; unbound token
            / "MINT2" [ " " ttl ] [ " " digest ] LF    ; bound to digest, if given
                                                       ; at most MAX_REQUEST (77) bytes
    ttl     = %x31-39 0*4%x30-39              ; 1..99999, ASCII digits, no leading zero
    digest  = 64( %x30-39 / %x61-66 )         ; SHA-256 request digest, lowercase hex
    reply   = "OK " token LF
            / "ERR " code " " message LF      ; code: lowercase letters and "-"

The request carries nothing but the requested lifetime and the fixed-size
digest of the request the token is for: who is asking comes from the kernel
(SO_PEERCRED / SO_PEERGROUPS), never from these bytes. The grammar is exact:
no other whitespace, no CR, no sign, no upper-case hex, nothing after LF.
``MINT1`` is kept for clients that bind nothing; both are answered with a
version 2 token. Refusals say what was wrong with the *request* and nothing
else (no key ids, no identities, no internal state).

Error codes: ``malformed`` (not the grammar), ``too-long`` (more than
MAX_REQUEST bytes), ``version`` (unknown protocol version), ``ttl`` (outside
1..max_ttl), ``timeout`` (request not complete within the deadline), ``busy``
(too many connections; retry), ``key`` (no key may mint now: the active key
is outside its validity window), ``internal`` (the daemon could not mint).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from tokensvc.core.errors import DaemonUnavailable, MintRefused

VERSION_TAG = b"MINT1"  # unbound requests
BOUND_TAG = b"MINT2"  # requests that may carry a digest
DIGEST_HEX_LEN = 64
MAX_TTL_DIGITS = 5
MAX_REQUEST = len(BOUND_TAG) + 1 + MAX_TTL_DIGITS + 1 + DIGEST_HEX_LEN + 1  # 77 bytes, with LF
MAX_REPLY = 512 * 1024  # a token with 65536 groups is ~350 KiB of text

# Each alternative is anchored by fullmatch; a digest (64 hex) can never be
# mistaken for a ttl (at most 5 digits). MINT1 is unbound, MINT2 always
# carries a digest: every request has exactly one spelling.
_REQUEST = re.compile(
    rb"MINT1(?: (?P<ttl1>[1-9][0-9]{0,4}))?\n"
    rb"|MINT2(?: (?P<ttl2>[1-9][0-9]{0,4}))? (?P<digest>[0-9a-f]{64})\n"
)
_DIGEST = re.compile(r"[0-9a-f]{64}")
_OTHER_VERSION = re.compile(rb"MINT(?![12][ \n])[0-9]{1,3}[ \n]")
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,%d}" % MAX_REPLY)
_ERR = re.compile(rb"ERR ([a-z-]{1,32}) ([\x20-\x7e]{1,200})\n")

OK_PREFIX = b"OK "


class RequestError(Exception):
    """A request the daemon refuses; ``reply`` is what the client is told."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reply = error_reply(code, message)


class MintRequest(NamedTuple):
    """What a request may ask for: a lifetime and the digest to bind the token to."""

    ttl: int | None  # None: the daemon's default
    bind: str | None  # 64 lowercase hex digits, or None: an unbound token


def parse_request(data: bytes) -> MintRequest:
    """The requested TTL and binding of a complete request.

    ``data`` is everything received so far, up to and including the first LF.
    Range checking of the TTL against the configured maximum is the caller's job.
    """
    if len(data) > MAX_REQUEST:
        raise RequestError("too-long", f"request longer than {MAX_REQUEST} bytes")
    match = _REQUEST.fullmatch(data)
    if match is not None:
        ttl = match["ttl1"] or match["ttl2"]
        digest = match["digest"]
        return MintRequest(
            None if ttl is None else int(ttl), None if digest is None else digest.decode("ascii")
        )
    if _OTHER_VERSION.match(data):
        raise RequestError(
            "version", "unsupported protocol version; this daemon speaks MINT1 and MINT2"
        )
    raise RequestError("malformed", "expected 'MINT1 [ttl]' or 'MINT2 [ttl] digest' and a newline")


def format_request(ttl: int | None, bind: str | None = None) -> bytes:
    """The request bytes for ``ttl`` (None = the daemon's default) and ``bind``.

    Without a binding this is a ``MINT1`` request (understood by every
    daemon); with one, ``MINT2``. ValueError for a ttl outside 1..99999 or a
    binding that is not 64 lowercase hex digits.
    """
    if ttl is not None and (type(ttl) is not int or not 1 <= ttl < 10**MAX_TTL_DIGITS):
        raise ValueError(f"ttl must be an integer in 1..{10**MAX_TTL_DIGITS - 1}")
    if bind is not None and (not isinstance(bind, str) or not _DIGEST.fullmatch(bind)):
        raise ValueError("bind must be a request digest: 64 lowercase hex digits")
    tag = VERSION_TAG if bind is None else BOUND_TAG
    parts = [tag]
    if ttl is not None:
        parts.append(b"%d" % ttl)
    if bind is not None:
        parts.append(bind.encode("ascii"))
    return b" ".join(parts) + b"\n"


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
    "BOUND_TAG",
    "MAX_REPLY",
    "MAX_REQUEST",
    "VERSION_TAG",
    "MintRequest",
    "RequestError",
    "error_reply",
    "format_request",
    "ok_reply",
    "parse_reply",
    "parse_request",
]
