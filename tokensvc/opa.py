"""OPA REST client: ask ``data.wsc.authz.decision``, fail closed on anything odd.

The server asks OPA (a sidecar holding the signed policy bundle) one question
per job call. Every way that question can go wrong -- refused connection,
timeout, non-200, a body that is not JSON, an undefined decision (no
``result``), a result without a boolean ``allow`` or with fields of the wrong
type -- raises :class:`OpaUnavailable` (a :class:`PolicyUnavailable`, HTTP 503)
so the caller can only ever act on a well-formed decision. Nothing is judged by
truthiness: ``allow`` must be the JSON literal ``true``.

Blocking by design: the server calls it from worker threads, never from the
event loop. The transport is a few kept-alive sockets and httptools' C
response parser (llhttp, the one uvicorn parses requests with): one
``sendall`` per decision and no Python header parsing. docs/api.md records
why this is a small wrapper rather than opa-python-client, requests or urllib3.
"""

from __future__ import annotations

import json
import math
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import httptools

from tokensvc.errors import PolicyUnavailable

DECISION_PATH: Final = "/v1/data/wsc/authz/decision"
HEALTH_PATH: Final = "/health"
DEFAULT_URL: Final = "http://127.0.0.1:8181"
DEFAULT_TIMEOUT: Final = 1.0  # seconds, per connect and per read
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


class _Reply:
    """httptools callbacks for one response: body (bounded), completion, keep-alive."""

    __slots__ = ("body", "complete", "keep_alive", "parser", "size")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size <= MAX_RESPONSE_BYTES:
            self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True
        # Only meaningful now: llhttp resets its flags once the message is done.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


def _dropped(sock: socket.socket) -> bool:
    """An idle kept-alive connection that is readable was closed by OPA (or is out of step)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class OpaClient:
    """Blocking, thread-safe client for one OPA sidecar.

    A small pool of kept-alive connections, each used by one thread at a
    time. A request is sent in one ``sendall`` (head and body together) and
    the answer parsed by httptools (C); ``requests`` and urllib3 cost
    0.3-0.8 ms of CPU more per decision (docs/api.md). Only connection
    *establishment* is retried (once): a request that may have reached OPA
    is never sent twice. The timeout applies to connect and to each
    send/receive.
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
        self.url = url.rstrip("/")
        self.timeout = timeout
        parts = urlsplit(self.url)
        if not parts.hostname or parts.path or parts.query:
            raise ValueError("OPA url must be scheme://host[:port]")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._netloc = parts.netloc.encode("idna")
        self._max_idle = pool_size
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()

    def __enter__(self) -> OpaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        try:
            sock = self._connect_once()
        except OpaUnavailable:
            sock = self._connect_once()  # establishment only: nothing was sent yet
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            except OSError as err:  # ssl.SSLError and timeouts are OSErrors
                sock.close()
                raise OpaUnavailable("unreachable", "policy engine TLS handshake failed") from err
        return sock

    def _connect_once(self) -> socket.socket:
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self.timeout)
        except TimeoutError as err:
            raise OpaUnavailable("timeout", "policy engine timed out") from err
        except OSError as err:
            raise OpaUnavailable("unreachable", "policy engine unreachable") from err
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _checkout(self) -> socket.socket:
        with self._lock:
            while self._idle:
                sock = self._idle.pop()
                if not _dropped(sock):
                    return sock
                sock.close()
        return self._connect()

    def _checkin(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(sock)
                return
        sock.close()

    def _exchange(self, sock: socket.socket, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request, read one response: (status, body, keep-alive)."""
        reply = _Reply()
        parser = reply.parser = httptools.HttpResponseParser(reply)
        sock.sendall(request)
        received = 0
        while not reply.complete:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed before the answer was complete")
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES + _MAX_HEAD_BYTES:
                raise _malformed("response too large")
            parser.feed_data(chunk)
        if reply.size > MAX_RESPONSE_BYTES:
            raise _malformed("response too large")
        reply.parser = None  # break the cycle: freed at once, not by the GC
        return parser.get_status_code(), b"".join(reply.body), reply.keep_alive

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: ".encode() + self._netloc
        head += b"\r\nAccept: application/json\r\n"
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        request = head + b"\r\n" + (body or b"")
        sock = self._checkout()
        try:
            status, data, keep = self._exchange(sock, request)
        except OpaUnavailable:
            sock.close()
            raise
        except TimeoutError as err:
            sock.close()
            raise OpaUnavailable("timeout", "policy engine timed out") from err
        except httptools.HttpParserError as err:
            sock.close()
            raise OpaUnavailable("malformed", "policy engine sent a malformed HTTP answer") from err
        except OSError as err:
            sock.close()
            raise OpaUnavailable("unreachable", "policy engine unreachable") from err
        if keep:
            self._checkin(sock)
        else:
            sock.close()
        return status, data

    def decide(self, input_doc: Mapping[str, Any]) -> DecisionResult:
        """POST ``{"input": input_doc}`` to the decision path; fail closed."""
        payload = json.dumps({"input": input_doc}, separators=(",", ":")).encode()
        status, data = self._request("POST", DECISION_PATH, payload)
        if status != 200:
            raise OpaUnavailable("http_status", f"policy engine answered HTTP {status}")
        try:
            body = json.loads(data)
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
            raise OpaUnavailable("malformed", "policy engine sent malformed JSON") from err
        if not isinstance(body, dict):
            raise _malformed("response is not an object")
        if "result" not in body:
            # OPA omits `result` when the rule is undefined: the bundle is
            # missing or not yet activated. Undefined is never allow.
            raise OpaUnavailable("undefined", "policy decision undefined (bundle not loaded?)")
        decision = parse_decision(body["result"])
        decision_id = body.get("decision_id")
        if decision_id is not None and not isinstance(decision_id, str):
            raise _malformed("decision_id is not a string")
        return DecisionResult(decision=decision, decision_id=decision_id)

    def ready(self) -> bool:
        """True once OPA is up and every configured bundle has been activated."""
        try:
            status, _ = self._request("GET", HEALTH_PATH + "?bundles")
        except OpaUnavailable:
            return False
        return status == 200


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
    "parse_decision",
]
