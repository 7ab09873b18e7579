"""OPA REST client: ask ``data.wsc.authz.decision``, fail closed on anything odd.

The server asks OPA (a sidecar holding the signed policy bundle) one question
per job call. Every way that question can go wrong -- refused connection,
timeout, non-200, a body that is not JSON, an undefined decision (no
``result``), a result without a boolean ``allow`` or with fields of the wrong
type -- raises :class:`OpaUnavailable` (a :class:`PolicyUnavailable`, HTTP 503)
so the caller can only ever act on a well-formed decision. Nothing is judged by
truthiness: ``allow`` must be the JSON literal ``true``.

Asynchronous: the server asks on its event loop, so a decision costs no
thread hop (two wake-ups of a worker thread per request cost more CPU than
the client itself). The transport is a small pool of kept-alive connections
and httptools' C response parser (llhttp, the one uvicorn parses requests
with): one ``write`` per decision and no Python header parsing; nothing in
it blocks. docs/api.md records why this is a small client rather than
opa-python-client, requests or urllib3.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import httptools

from tokensvc.core.errors import PolicyUnavailable

DECISION_PATH: Final = "/v1/data/wsc/authz/decision"
HEALTH_PATH: Final = "/health"
DEFAULT_URL: Final = "http://127.0.0.1:8181"
DEFAULT_TIMEOUT: Final = 1.0  # seconds, per connect and per request
# A decision document is a few hundred bytes; anything near this is not ours.
MAX_RESPONSE_BYTES: Final = 1 << 20
# Status line and headers of an OPA answer are a few hundred bytes.
_MAX_HEAD_BYTES: Final = 64 * 1024
MAX_SUPPLEMENTAL_GROUPS: Final = 16  # NFS AUTH_SYS carries at most 16

Action = Literal["submit", "get", "list", "cancel", "set_priority"]
ACTIONS: Final[frozenset[str]] = frozenset({"submit", "get", "list", "cancel", "set_priority"})
Privilege = Literal["viewer", "member", "admin"]
_PRIVILEGES: Final[frozenset[str]] = frozenset({"viewer", "member", "admin"})

OpaFailure = Literal["unreachable", "timeout", "http_status", "malformed", "undefined"]


class OpaUnavailable(PolicyUnavailable):
    """OPA gave no usable decision; ``failure`` names the kind (for metrics)."""

    def __init__(self, failure: OpaFailure, message: str) -> None:
        self.failure: OpaFailure = failure
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class RunAs:
    """The uid and primary gid a job's processes run as."""

    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class GrantedMount:
    """One NFS mount the policy granted: an admin-provisioned PVC and a path inside it."""

    export: str
    pvc: str
    sub_path: str
    read_only: bool
    path: str | None = None  # the normalised path the user asked for, when the policy echoes it


@dataclass(frozen=True, slots=True)
class Decision:
    """A well-formed ``data.wsc.authz.decision`` document."""

    allow: bool
    reasons: tuple[str, ...] = ()
    run_as: RunAs | None = None
    supplemental_groups: tuple[int, ...] = ()
    privileges: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[GrantedMount, ...] = ()
    visible_projects: tuple[str, ...] = ()
    priority: int | None = None


def _malformed(what: str) -> OpaUnavailable:
    return OpaUnavailable("malformed", f"policy decision malformed: {what}")


def _int(value: object, what: str) -> int:
    # bool is an int in Python; a JSON true is never a uid.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(f"{what} is not an integer")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _malformed(f"{what} is not a string")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _malformed(f"{what} is not a list")
    return value


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{what} is not an object")
    return value


def _mount(raw: object, i: int) -> GrantedMount:
    m = _dict(raw, f"mounts[{i}]")
    read_only = m.get("read_only")
    if not isinstance(read_only, bool):
        raise _malformed(f"mounts[{i}].read_only is not a boolean")
    path = m.get("path")
    return GrantedMount(
        export=_str(m.get("export"), f"mounts[{i}].export"),
        pvc=_str(m.get("pvc"), f"mounts[{i}].pvc"),
        sub_path=_str(m.get("sub_path"), f"mounts[{i}].sub_path"),
        read_only=read_only,
        path=None if path is None else _str(path, f"mounts[{i}].path"),
    )


def parse_decision(result: object) -> Decision:
    """Turn OPA's ``result`` into a :class:`Decision`, or raise :class:`OpaUnavailable`.

    Optional fields may be absent; present fields must have the documented type.
    An allowed decision is checked as strictly as a denied one: a policy bug
    must surface as 503, never as a pod with guessed values.
    """
    doc = _dict(result, "result")
    allow = doc.get("allow")
    if not isinstance(allow, bool):
        raise _malformed("allow is not a boolean")
    reasons = tuple(_str(r, "reasons[]") for r in _list(doc.get("reasons", []), "reasons"))
    run_as = None
    if "run_as" in doc:
        ra = _dict(doc["run_as"], "run_as")
        run_as = RunAs(uid=_int(ra.get("uid"), "run_as.uid"), gid=_int(ra.get("gid"), "run_as.gid"))
    groups = tuple(
        _int(g, "supplemental_groups[]")
        for g in _list(doc.get("supplemental_groups", []), "supplemental_groups")
    )
    if len(groups) > MAX_SUPPLEMENTAL_GROUPS:
        raise _malformed(f"more than {MAX_SUPPLEMENTAL_GROUPS} supplemental groups")
    privileges: dict[str, str] = {}
    for name, level in _dict(doc.get("privileges", {}), "privileges").items():
        if level not in _PRIVILEGES:
            raise _malformed(f"privileges[{name!r}] is not viewer, member or admin")
        privileges[name] = level
    mounts = tuple(_mount(m, i) for i, m in enumerate(_list(doc.get("mounts", []), "mounts")))
    visible = tuple(
        _str(p, "visible_projects[]")
        for p in _list(doc.get("visible_projects", []), "visible_projects")
    )
    priority = None if doc.get("priority") is None else _int(doc["priority"], "priority")
    return Decision(
        allow=allow,
        reasons=reasons,
        run_as=run_as,
        supplemental_groups=groups,
        privileges=privileges,
        mounts=mounts,
        visible_projects=visible,
        priority=priority,
    )


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """A decision and the id OPA logged it under (``None`` when decision logging is off)."""

    decision: Decision
    decision_id: str | None


def decision_result(status: int, data: bytes) -> DecisionResult:
    """Judge OPA's answer to a decision query: a :class:`DecisionResult` or :class:`OpaUnavailable`.

    Anything but a 200 whose JSON body holds a well-formed ``result`` fails
    closed. An absent ``result`` means the rule is undefined (bundle missing
    or not yet activated): never allow.
    """
    if status != 200:
        raise OpaUnavailable("http_status", f"policy engine answered HTTP {status}")
    try:
        body = json.loads(data)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise OpaUnavailable("malformed", "policy engine sent malformed JSON") from err
    if not isinstance(body, dict):
        raise _malformed("response is not an object")
    if "result" not in body:
        raise OpaUnavailable("undefined", "policy decision undefined (bundle not loaded?)")
    decision = parse_decision(body["result"])
    decision_id = body.get("decision_id")
    if decision_id is not None and not isinstance(decision_id, str):
        raise _malformed("decision_id is not a string")
    return DecisionResult(decision=decision, decision_id=decision_id)


class _Connection(asyncio.Protocol):
    """One kept-alive connection to OPA: one request at a time, the answer parsed by httptools.

    The protocol object is also the parser's callback target. Every way an
    exchange can end badly (timeout, hang-up, bytes nobody asked for, a
    parser error, an answer too large) aborts the connection: a connection
    that is out of step with OPA is never reused.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.keep_alive = False
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._received = 0

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.done():
            self.abort()  # nothing was asked (or we gave up): OPA is out of step
            return
        self._received += len(data)
        if self._received > MAX_RESPONSE_BYTES + _MAX_HEAD_BYTES:
            self._fail(_malformed("response too large"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            # httptools wraps what a callback below raises; keep its message.
            cause = err.__context__
            self._fail(
                cause
                if isinstance(cause, OpaUnavailable)
                else OpaUnavailable("malformed", "policy engine sent a malformed HTTP answer")
            )

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        answer = self._answer
        if answer is not None and not answer.done():
            # A hang-up before the answer was complete: the request may have
            # been evaluated, so it is not resent; the caller gets a 503.
            answer.set_exception(OpaUnavailable("unreachable", "policy engine unreachable"))

    # --- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        answer = self._answer
        if answer is None or answer.done():  # a second answer in the same read
            raise OpaUnavailable("malformed", "policy engine sent an answer nobody asked for")

    def on_body(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > MAX_RESPONSE_BYTES:
            raise _malformed("response too large")
        self._body.append(data)

    def on_message_complete(self) -> None:
        # Only meaningful now: llhttp resets its flags once the message is done.
        self.keep_alive = self._parser.should_keep_alive()
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result((self._parser.get_status_code(), b"".join(self._body)))

    # --- use ----------------------------------------------------------------------------

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        """Write one request (one ``write``), await its answer: (status, body)."""
        transport = self._transport
        if transport is None or self.closed:
            raise OpaUnavailable("unreachable", "policy engine unreachable")
        answer: asyncio.Future[tuple[int, bytes]] = self._loop.create_future()
        self._answer, self._body, self._body_size, self._received = answer, [], 0, 0
        self.keep_alive = False
        transport.write(request)
        # A plain timer, not asyncio.timeout(): one heap entry, no task bookkeeping.
        timer = self._loop.call_later(timeout, self._time_out)
        try:
            return await answer
        except BaseException:
            self.abort()  # failed, timed out or cancelled: the connection is out of step
            raise
        finally:
            timer.cancel()

    def _time_out(self) -> None:
        self._fail(OpaUnavailable("timeout", "policy engine timed out"))

    def _fail(self, error: OpaUnavailable) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_exception(error)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self.keep_alive = False
        if self._transport is not None:
            self._transport.abort()


class OpaClient:
    """Asynchronous client for one OPA sidecar, used on the server's event loop.

    A bounded pool of kept-alive connections (``pool_size``; beyond it a
    query waits for a free connection, within the timeout). A request is one
    pre-built ``write`` (head and body together) and the answer is parsed by
    httptools (C) as it arrives: no thread hop, no Python header parsing.
    Only connection *establishment* is retried (once): a request that may
    have reached OPA is never sent twice. The timeout bounds connecting,
    waiting for a connection, and each request's whole exchange.

    Bound to the event loop it is first used on; :meth:`close` on that loop.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = 16,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("OPA url must start with http:// or https://")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("OPA timeout must be a positive number of seconds")
        if pool_size < 1:
            raise ValueError("OPA pool size must be at least 1")
        self.url = url.rstrip("/")
        self.timeout = timeout
        parts = urlsplit(self.url)
        # No path, query or user:password@ (which would travel in the Host header).
        if not parts.hostname or parts.path or parts.query or "@" in parts.netloc:
            raise ValueError("OPA url must be scheme://host[:port]")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        host = b"Host: " + parts.netloc.encode("idna") + b"\r\n"
        accept = b"Accept: application/json\r\n"
        # Everything but the length and the body is the same for every decision.
        self._decide_head = (
            b"POST " + DECISION_PATH.encode() + b" HTTP/1.1\r\n" + host + accept
            + b"Content-Type: application/json\r\nContent-Length: "
        )  # fmt: skip
        self._health_request = b"GET " + HEALTH_PATH.encode() + b"?bundles HTTP/1.1\r\n" + host
        self._health_request += accept + b"\r\n"
        self._slots = asyncio.Semaphore(pool_size)  # connections in use, at most pool_size
        self._idle: list[_Connection] = []
        self._closed = False

    async def close(self) -> None:
        """Close every connection; queries after this fail closed."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.abort()
        await asyncio.sleep(0)  # let the transports finish closing on this loop

    async def __aenter__(self) -> OpaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- queries ----------------------------------------------------------------------

    async def decide(self, input_doc: Mapping[str, Any]) -> DecisionResult:
        """POST ``{"input": input_doc}`` to the decision path; fail closed."""
        payload = json.dumps({"input": input_doc}, separators=(",", ":")).encode()
        request = self._decide_head + b"%d\r\n\r\n" % len(payload) + payload
        return decision_result(*await self._exchange(request))

    async def ready(self) -> bool:
        """True once OPA is up and every configured bundle has been activated."""
        try:
            status, _ = await self._exchange(self._health_request)
        except OpaUnavailable:
            return False
        return status == 200

    # --- transport --------------------------------------------------------------------

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._closed:
            raise OpaUnavailable("unreachable", "policy engine client is closed")
        if self._slots.locked():
            # Every connection is busy: wait for one, but not beyond the timeout.
            try:
                async with asyncio.timeout(self.timeout):
                    await self._slots.acquire()
            except TimeoutError as err:
                raise OpaUnavailable("timeout", "policy engine timed out") from err
        else:
            await self._slots.acquire()  # returns at once
        try:
            conn = self._checkout() or await self._connect()
            result = await conn.exchange(request, self.timeout)
            if conn.keep_alive and not conn.closed and not self._closed:
                self._idle.append(conn)
            else:
                conn.abort()
            return result
        finally:
            self._slots.release()

    def _checkout(self) -> _Connection | None:
        # Connections OPA closed while idle were marked by the loop; skip them.
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        error = OpaUnavailable("unreachable", "policy engine unreachable")
        for _ in range(2):  # establishment only is retried: nothing was sent yet
            try:
                async with asyncio.timeout(self.timeout):
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop),
                        self._host,
                        self._port,
                        ssl=self._tls,
                        server_hostname=self._host if self._tls is not None else None,
                    )
            except TimeoutError as err:  # before OSError: TimeoutError is one
                error = OpaUnavailable("timeout", "policy engine timed out")
                error.__cause__ = err
            except ssl.SSLError as err:
                error = OpaUnavailable("unreachable", "policy engine TLS handshake failed")
                error.__cause__ = err
            except OSError as err:
                error = OpaUnavailable("unreachable", "policy engine unreachable")
                error.__cause__ = err
            else:
                return conn
        raise error


__all__ = [
    "ACTIONS",
    "DECISION_PATH",
    "DEFAULT_URL",
    "Action",
    "Decision",
    "DecisionResult",
    "GrantedMount",
    "OpaClient",
    "OpaUnavailable",
    "RunAs",
    "decision_result",
    "parse_decision",
]
