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
- ``http_request``: the server's HTTP app (routes, headers, JSON bodies,
  the admission service, the spool submitter) called in-process with any
  method, path, headers, token and body. Every answer has a documented
  status (docs/api.md; never 500), an error answer is JSON whose ``code``
  is in the error table with that status, and the spool is unchanged
  unless the answer is 201.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from tokensvc.cluster.app import create_app
from tokensvc.cluster.jobs import parse_job_request
from tokensvc.cluster.opa import OpaClient
from tokensvc.cluster.service import AdmissionService
from tokensvc.cluster.submitters import SpoolSubmitter
from tokensvc.core.claims import Claims, new_claims
from tokensvc.core.digest import request_digest
from tokensvc.core.errors import (
    DaemonUnavailable,
    InvalidRequest,
    InvalidToken,
    MintRefused,
    error_for_code,
)
from tokensvc.core.keys import Key, KeyRing
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.token import Sealer, open_token
from tokensvc.core.validate import TokenValidator
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


# --- the HTTP app ------------------------------------------------------------------------

# Statuses the job API and the operations endpoints may answer (docs/api.md);
# 431 is the protocol's, before the app, and 500 is never right.
HTTP_STATUSES: Final = frozenset({200, 201, 400, 401, 403, 404, 405, 409, 413, 415, 422, 503})
_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
_PATHS: Final = (
    "/v1/jobs",
    "/v1/jobs/wsc-job-0123456789abcdef0123456789abcdef",
    "/v1/jobs/wsc-job-0123456789abcdef0123456789abcdef/priority",
    "/healthz",
    "/readyz",
    "/openapi.json",
)
_HEADER_NAMES: Final = (b"authorization", b"content-type", b"content-length", b"x-request-id")
_HTTP_USER: Final = {"uid": 1002, "gid": 2001, "groups": (2001,), "user": "ada"}
_REALM: Final = "fuzz"


class _StandInOpa:
    """An OPA-speaking peer on the app's loop, answering like the policy for one project.

    The target fuzzes the server, not the policy: submit, list and the job
    actions are allowed for ``ml-team`` without mounts, everything else is
    denied with a reason, so both answers are reached cheaply.
    """

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/data/wsc/authz/decision", self._decide)
        app.router.add_get("/health", self._health)
        self.runner = web.AppRunner(app, access_log=None)
        self.url = ""

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _decide(self, request: web.Request) -> web.Response:
        doc = (await request.json())["input"]
        who, req = doc["identity"], doc["request"]
        allowed = req.get("project", "ml-team") == "ml-team" and not req.get("mounts")
        if not allowed:
            result: dict[str, Any] = {"allow": False, "reasons": ["stand-in: only ml-team"]}
        else:
            result = {
                "allow": True,
                "reasons": [],
                "privileges": {"ml-team": "member"},
                "run_as": {"uid": who["uid"], "gid": 2001},
                "supplemental_groups": [2001],
                "mounts": [],
                "visible_projects": ["ml-team"],
            }
        return web.json_response({"result": result, "decision_id": "fuzz-decision"})


class _HttpApp:
    """The real app (admission service, spool submitter) on one event loop, built once."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.spool = Path(tempfile.mkdtemp(prefix="fuzz-spool-"))
        self.opa = _StandInOpa()
        self.loop.run_until_complete(self.opa.start())
        validator = TokenValidator(RING, realm=_REALM, replay=MemoryReplayCache())
        self.service = AdmissionService(
            validator=validator,
            opa=OpaClient(self.opa.url, timeout=2.0, pool_size=2),
            submitter=SpoolSubmitter(self.spool, fsync=False),
            namespace="wsc-jobs",
            audit=lambda event: None,
            threads=2,
        )
        self.app = create_app(self.service, max_body=4096)
        self.last_token = ""
        atexit.register(self.close)

    def close(self) -> None:
        # Not service.close(): at exit the worker threads are already shut down.
        self.loop.run_until_complete(self.service.opa.close())
        self.service.submitter.close()
        self.loop.run_until_complete(self.opa.runner.cleanup())
        self.loop.close()
        shutil.rmtree(self.spool, ignore_errors=True)

    def stored(self) -> set[Path]:
        return {p for p in self.spool.rglob("*") if p.is_file()}

    def token(self, mode: int, body: bytes, fuzzed: str) -> str | None:
        """By ``mode``: none, fuzzed text, the last one again, fresh and bound to ``body``
        (when it is a job request), fresh and unbound."""
        if mode == 0:
            return None
        if mode == 1:
            return fuzzed
        if mode == 2 and self.last_token:
            return self.last_token
        binding = None
        if mode == 3:
            try:
                binding = request_digest(parse_job_request(json.loads(body)).to_input())
            except (ValueError, RecursionError):
                binding = None
        claims = new_claims(
            **_HTTP_USER, host="fuzz", realm=_REALM, now=time.time(), binding=binding
        )
        self.last_token = Sealer(RING.active).seal(claims)
        return self.last_token

    async def call(
        self, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
    ) -> tuple[int, bytes]:
        """One request through the ASGI app, as uvicorn presents it; the status and body."""
        path = raw_path.decode("ascii")
        query = b""
        if "?" in path:
            path, _, q = path.partition("?")
            query = q.encode("ascii")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": urllib.parse.unquote(path),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
        }
        pending = list(chunks)
        answer: dict[str, Any] = {"status": None, "body": b""}

        async def receive() -> dict[str, Any]:
            if pending:
                chunk = pending.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await self.app(scope, receive, send)
        assert answer["status"] is not None, "no answer"
        return answer["status"], answer["body"]


_HTTP: _HttpApp | None = None


_Request = tuple[str, bytes, list[tuple[bytes, bytes]], list[bytes]]


class _Reader:
    """Takes the fuzzer's bytes from the front; past the end every byte is 0."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at] if self.at < len(self.data) else 0
        self.at += 1
        return value

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def rest(self) -> bytes:
        return self.data[self.at :]


def _fuzzed_request(app: _HttpApp, data: bytes) -> _Request:
    """Method, raw path, headers and body chunks, as uvicorn would hand them to the app.

    Layout: method, path (a known one, or that many bytes of visible ASCII),
    token mode, flags (JSON content type, extra headers, body chunks), each
    extra header (name, length, value), the fuzzed token text if any, the body.
    """
    r = _Reader(data)
    method = _METHODS[r.byte() % len(_METHODS)]
    choice = r.byte()
    if choice < 128:
        raw_path = _PATHS[choice % len(_PATHS)].encode()
    else:  # what httptools lets through: visible ASCII
        raw_path = b"/" + bytes(b for b in r.take(choice - 128) if 33 <= b < 127).lstrip(b"/")
    token_mode = r.byte() % 5
    flags = r.byte()
    headers: list[tuple[bytes, bytes]] = []
    if flags & 1:
        headers.append((b"content-type", b"application/json"))
    for _ in range((flags >> 1) & 3):
        name = _HEADER_NAMES[r.byte() % len(_HEADER_NAMES)]
        value = bytes(b for b in r.take(r.byte() % 64) if b >= 32 and b != 127)
        headers.append((name, value))
    fuzzed_token = r.take(r.byte()).decode("latin-1") if token_mode == 1 else ""
    body = r.rest()
    token = app.token(token_mode, body, fuzzed_token)
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode("utf-8")))
    step = max(1, len(body) // (1 + ((flags >> 3) & 3)))
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    return method, raw_path, headers, chunks


def http_request(data: bytes) -> None:
    global _HTTP  # noqa: PLW0603 (built on first use: the other targets never pay for it)
    if _HTTP is None:
        _HTTP = _HttpApp()
    app = _HTTP
    method, raw_path, headers, chunks = _fuzzed_request(app, data)
    what = f"{method} {raw_path!r}"
    before = app.stored()
    status, answer = app.loop.run_until_complete(app.call(method, raw_path, headers, chunks))
    after = app.stored()

    if status not in HTTP_STATUSES:
        raise AssertionError(f"{what}: status {status} {answer[:200]!r}")
    if status >= 400 and answer:  # a client gone mid-body gets an empty 400
        doc = json.loads(answer)
        cls = error_for_code(doc.get("code"))
        if cls is None or cls.http_status != status:
            raise AssertionError(f"{what}: {status} with {doc!r}")
    if status == 201:
        created = after - before
        if not created or before - after:
            raise AssertionError(
                f"{what}: 201 but the spool changed by {created}, {before - after}"
            )
        for path in created:  # the next input starts from the same spool
            path.unlink()
    elif after != before:
        raise AssertionError(f"{what}: {status} but the spool changed")


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "token_open": token_open,
    "mint_request": mint_request,
    "mint_reply": mint_reply,
    "job_request": job_request,
    "http_request": http_request,
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
        # The provider's leading bytes pick method, path, token and headers; the rest is the body.
        "http_request": [
            prefix + json.dumps(body).encode()
            # POST /v1/jobs, bound token, JSON; GET, unbound token; PUT priority, replayed
            for prefix in (b"\x01\x00\x03\x01", b"\x00\x00\x04\x01", b"\x02\x02\x02\x09")
            for body in ({**job, "mounts": []}, job, {"priority": 2})
        ],
    }
