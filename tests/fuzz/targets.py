"""Fuzz targets: every parser that faces a user, each with an oracle stronger than "no crash".

A target takes the fuzzer's bytes and returns normally when the parser did
the right thing: refused the input with its documented error, or accepted
it *and* the acceptance is provably right. Anything else -- another
exception, a hang, an acceptance that the oracle refutes -- is a finding.

- ``token_open``: ``open_token`` over any text. Only the tokens this module
  sealed itself (the seeds) may open; any other text that opens is a
  forgery (the encoding is canonical, so one token has one spelling).
- ``mint_request``: the daemon's request parser over any bytes. An accepted
  request re-encodes to exactly the same bytes (one spelling per request).
- ``mint_reply``: the client's reply parser over any bytes.
- ``job_request``: the job schema over any JSON. An accepted request
  re-parses from its own body to an equal request and has a canonical
  digest (valid Unicode, no floats).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from tokensvc.cluster.jobs import parse_job_request
from tokensvc.core.claims import Claims
from tokensvc.core.digest import request_digest
from tokensvc.core.errors import DaemonUnavailable, InvalidRequest, InvalidToken, MintRefused
from tokensvc.core.keys import Key, KeyRing
from tokensvc.core.token import Sealer, open_token
from tokensvc.usernode.protocol import RequestError, format_request, parse_reply, parse_request

RING: Final = KeyRing((Key("00112233445566ff", bytes(range(32)), "active", 1_700_000_000),))
_CLAIMS: Final = Claims(
    token_id="0123456789abcdef0123456789abcdef",
    uid=1002,
    gid=2001,
    groups=(2001, 2003),
    user="ada",
    host="login1",
    realm="wsc",
    issued_at=1_700_000_000,
    expires_at=1_700_000_300,
)
_BOUND: Final = replace(_CLAIMS, binding="ab" * 32)
# Both formats still open: version 1 (unbound) and version 2 (unbound and bound).
SEED_TOKENS: Final = (
    *(Sealer(RING.active, version=1).seal_with_nonce(_CLAIMS, bytes([n]) * 12) for n in range(3)),
    Sealer(RING.active).seal_with_nonce(_CLAIMS, bytes([7]) * 12),
    Sealer(RING.active).seal_with_nonce(_BOUND, bytes([8]) * 12),
)


def token_open(data: bytes) -> None:
    text = data.decode("latin-1")
    try:
        claims, _ = open_token(text, RING)
    except InvalidToken:
        return
    if text not in SEED_TOKENS or claims not in (_CLAIMS, _BOUND):
        raise AssertionError(f"a token that was never sealed opened: {text!r}")


def mint_request(data: bytes) -> None:
    try:
        request = parse_request(data)
    except RequestError:
        return
    if format_request(request.ttl, request.bind) != data:
        raise AssertionError(f"request {data!r} accepted but spelled differently")


def mint_reply(data: bytes) -> None:
    try:
        token = parse_reply(data)
    except (MintRefused, DaemonUnavailable):
        return
    if not token.isascii() or f"OK {token}\n".encode() != data:
        raise AssertionError(f"reply {data!r} accepted but spelled differently")


def job_request(data: bytes) -> None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return  # the server answers 400 before the schema sees it
    try:
        request = parse_job_request(doc)
    except InvalidRequest:
        return
    if parse_job_request(request.to_body()) != request:
        raise AssertionError(f"job request {doc!r} does not re-parse to itself")
    request_digest(request.to_input())  # raises ValueError for invalid Unicode or floats


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "token_open": token_open,
    "mint_request": mint_request,
    "mint_reply": mint_reply,
    "job_request": job_request,
}


def seeds() -> dict[str, list[bytes]]:
    """A starting corpus per target: valid inputs and near misses."""
    job = {
        "project": "ml-team",
        "image": "trainer:1",
        "command": ["python", "train.py"],
        "mounts": [{"path": "/nfs/projects/ml/data", "mode": "ro"}],
        "resources": {"systems": 1},
        "priority": 3,
    }
    return {
        "token_open": [t.encode() for t in SEED_TOKENS]
        + [b"", b"AAAA", SEED_TOKENS[0][:-1].encode()],
        "mint_request": [
            b"MINT1\n",
            b"MINT1 300\n",
            b"MINT2 60 " + b"a" * 64 + b"\n",
            b"MINT2 " + b"0" * 64 + b"\n",
            b"MINT1 0\n",
        ],
        "mint_reply": [b"OK " + SEED_TOKENS[0].encode() + b"\n", b"ERR ttl too long\n"],
        "job_request": [json.dumps(job).encode(), json.dumps({**job, "command": ["🚀"]}).encode()],
    }
