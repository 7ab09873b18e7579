"""Connection limits for uvicorn that a hostile client cannot get around.

uvicorn's own ``limit_concurrency`` counts open connections and requests in
flight together, so connections that never send a request lock out real ones,
and its httptools protocol neither bounds a request head nor gives it a
deadline. :func:`guarded_protocol` returns a subclass of uvicorn's httptools
protocol that adds, per connection:

- a deadline for the request head: a connection must deliver a complete head
  within ``head_timeout`` seconds of opening (or of the first byte of its next
  request), otherwise it is closed; between requests uvicorn's keep-alive
  timeout applies;
- a cap on the head's size: beyond ``max_head_bytes`` the client gets 431 and
  the connection is closed, after buffering at most one read beyond the cap;
- a cap on open connections that counts idle ones separately: once more than
  ``max_connections`` are open, the connection that has been idle (no request
  in flight) the longest is shed; connections serving a request are never
  shed, so idle sockets cannot push out work, and work is bounded on its own
  by :class:`InFlightLimit`.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tokensvc.core.errors import HeadersTooLarge, ServerBusy

# ASGI's three arguments: plain dicts and two coroutines.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# File descriptors kept free for everything that is not a client connection
# (OPA's pool, the spool, logs): beyond the process's limit accept() fails
# and the kernel queues new clients where no shedding can reach them.
_RESERVED_FDS: Final = 128


def _fd_budget() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(16, soft - _RESERVED_FDS)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds on what one client can hold; every field is enforced by this module or uvicorn."""

    head_timeout: float = 10.0  # seconds to deliver a complete request head
    keep_alive_timeout: int = 5  # seconds an idle keep-alive connection stays open
    body_timeout: float = 10.0  # seconds to deliver a request body once its head arrived
    max_head_bytes: int = 32 * 1024  # request line and headers (a token is at most 8 KiB)
    max_connections: int = 1024  # open sockets; the longest idle is shed beyond it
    max_in_flight: int = 512  # requests being served; beyond it 503 at once

    def connection_cap(self) -> int:
        """``max_connections``, lowered to what the process's file descriptor limit allows."""
        return min(self.max_connections, _fd_budget())


def _answer(status_line: bytes, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        b"HTTP/1.1 " + status_line + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(payload)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return head + payload


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline, a head size cap and idle shedding."""

    limits: ClassVar[ServerLimits] = ServerLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._reading_head = False
        self._head_bytes = 0
        self._refused = False
        self._idle_since = time.monotonic()

    # --- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_deadline()
        if len(self.connections) > self.limits.connection_cap():  # an O(n) scan, only when full
            self._shed_longest_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _in_flight(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _shed_longest_idle(self) -> None:
        """Close the connection idle the longest (possibly this one); never one in flight."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, GuardedProtocol)
            and not c._in_flight()
            and not c.transport.is_closing()  # shed already, gone on the next loop turn
        ]
        if not idle:
            self.transport.close()  # every other connection is serving a request
            return
        oldest = min(idle, key=lambda c: c._idle_since)
        oldest.transport.close()

    # --- request head -----------------------------------------------------------------

    def _start_head_deadline(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_late)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._in_flight() and not self.transport.is_closing():
            self.transport.close()  # nothing to answer: no request was read

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0
        self._start_head_deadline()  # a no-op while the connection's first deadline runs

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_deadline()
        # Exact size of what was parsed (one read may hold a whole oversized head).
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_head_bytes:
            self._refuse_head()
            raise _HeadRefused
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_head and not self._refused:
            # The whole read went into an unfinished head: count it before the
            # parser is given more, so a huge header is never buffered.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse_head()

    def _refuse_head(self) -> None:
        self._refused = True
        self._reading_head = False
        self._cancel_head_deadline()
        err = HeadersTooLarge([f"request head larger than {self.limits.max_head_bytes} bytes"])
        body = {"code": err.code, "error": str(err)}
        self.transport.write(_answer(b"431 Request Header Fields Too Large", body))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refused head was answered already
            super().send_400_response(msg)


def guarded_protocol(limits: ServerLimits) -> type[GuardedProtocol]:
    """The protocol class to pass as uvicorn's ``http``, enforcing ``limits``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


class InFlightLimit:
    """ASGI wrapper: at most ``limit`` HTTP requests served at once; beyond that 503 at once.

    Counts requests, not sockets: idle connections are bounded by
    :class:`GuardedProtocol`, so they never use up this limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await _busy(send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def _busy(send: Send) -> None:
    body = json.dumps(
        {"code": ServerBusy.code, "error": "server busy, try again", "created": False},
        separators=(",", ":"),
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    await send(
        {"type": "http.response.start", "status": ServerBusy.http_status, "headers": headers}
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["GuardedProtocol", "InFlightLimit", "ServerLimits", "guarded_protocol"]
