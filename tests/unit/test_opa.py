"""OPA client: only a well-formed decision comes back; everything else is a 503.

The real OPA cannot be made to send garbage, so the failure modes are played
by tiny local HTTP peers (in threads); the client runs on uvloop, as in the
server. The happy path against the real OPA is in
tests/integration/test_opa_client.py and test_server.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

import pytest
import uvloop

from tokensvc.cluster.opa import (
    DECISION_PATH,
    DecisionResult,
    OpaClient,
    OpaUnavailable,
    parse_decision,
)

_T = TypeVar("_T")


def run(main: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine function on a fresh uvloop loop (the server's loop)."""

    async def wrapper() -> _T:
        return await main()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(wrapper())


def decide(url: str, **options: Any) -> DecisionResult:
    """One decision through a fresh client (closed afterwards)."""

    async def main() -> DecisionResult:
        async with OpaClient(url, **options) as opa:
            return await opa.decide(INPUT)

    return run(main)


def failure_of(url: str, **options: Any) -> OpaUnavailable:
    with pytest.raises(OpaUnavailable) as err:
        decide(url, **options)
    return err.value


INPUT = {"identity": {"uid": 1001}, "action": "list", "request": {}}


class Peer(BaseHTTPRequestHandler):
    """Answers every request with the class-level canned reply."""

    protocol_version = "HTTP/1.1"  # keep-alive, like OPA
    status: ClassVar[int] = 200
    body: ClassVar[bytes] = b"{}"
    delay: ClassVar[float] = 0.0
    seen: ClassVar[list[dict[str, Any]]] = []
    clients: ClassVar[set[tuple[str, int]]] = set()

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        assert self.headers["Accept-Encoding"] == "identity"  # the size cap counts plain JSON
        Peer.seen.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        Peer.clients.add(self.client_address)
        self._reply()

    def do_GET(self) -> None:
        Peer.seen.append({"path": self.path})
        self._reply()

    def _reply(self) -> None:
        if Peer.delay:
            threading.Event().wait(Peer.delay)
        self.send_response(Peer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(Peer.body)))
        self.end_headers()
        self.wfile.write(Peer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the timeout test hangs up on purpose: a broken pipe is expected


@pytest.fixture
def peer() -> Iterator[str]:
    Peer.status, Peer.body, Peer.delay, Peer.seen, Peer.clients = 200, b"{}", 0.0, [], set()
    server = QuietServer(("127.0.0.1", 0), Peer)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def reply(status: int, body: object) -> None:
    Peer.status = status
    Peer.body = body if isinstance(body, bytes) else json.dumps(body).encode()


def test_allowed_decision_and_decision_id(peer: str) -> None:
    reply(200, {"result": {"allow": True, "visible_projects": ["ml"]}, "decision_id": "abc"})
    out = decide(peer)
    assert out.decision.allow is True
    assert out.decision.visible_projects == ("ml",)
    assert out.decision_id == "abc"
    assert out.revision is None  # no provenance: policy not from a bundle
    assert Peer.seen == [{"path": DECISION_PATH + "?provenance", "body": {"input": INPUT}}]


@pytest.mark.parametrize(
    ("provenance", "revision"),
    [
        ({"version": "1.22.3", "bundles": {"wsc": {"revision": "4f2a9c1"}}}, "4f2a9c1"),
        ({"version": "1.22.3"}, None),  # OPA loaded directories, not a bundle
        ({"bundles": {"other": {"revision": "x"}}}, None),
        ({"bundles": {"wsc": {}}}, None),  # a manifest without a revision
        ({"bundles": {"wsc": {"revision": ""}}}, None),
    ],
)
def test_the_bundle_revision_comes_from_provenance(
    peer: str, provenance: object, revision: str | None
) -> None:
    reply(200, {"result": {"allow": True}, "decision_id": "abc", "provenance": provenance})
    assert decide(peer).revision == revision


def test_connection_is_kept_alive(peer: str) -> None:
    reply(200, {"result": {"allow": False, "reasons": ["no"]}})

    async def main() -> None:
        async with OpaClient(peer) as opa:
            for _ in range(3):
                assert (await opa.decide(INPUT)).decision.reasons == ("no",)

    run(main)
    assert len(Peer.seen) == 3
    assert len(Peer.clients) == 1  # one TCP connection for all three


def test_concurrent_queries_share_a_bounded_pool(peer: str) -> None:
    reply(200, {"result": {"allow": True}})
    Peer.delay = 0.05

    async def main() -> list[DecisionResult]:
        async with OpaClient(peer, pool_size=2) as opa:
            return await asyncio.gather(*(opa.decide(INPUT) for _ in range(6)))

    assert [r.decision.allow for r in run(main)] == [True] * 6
    assert len(Peer.seen) == 6
    assert len(Peer.clients) == 2  # never more connections than pool_size


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (200, {}, "undefined"),
        (200, {"result": None}, "malformed"),
        (200, {"result": {}}, "malformed"),
        (200, {"result": {"allow": "true"}}, "malformed"),
        (200, {"result": {"allow": 1}}, "malformed"),
        (200, {"result": {"allow": True, "run_as": {"uid": "1001", "gid": 1}}}, "malformed"),
        (200, {"result": {"allow": True, "run_as": {"uid": True, "gid": 1}}}, "malformed"),
        (200, {"result": {"allow": True, "mounts": [{"pvc": "x"}]}}, "malformed"),
        (200, {"result": {"allow": True}, "decision_id": 5}, "malformed"),
        (200, {"result": {"allow": True}, "decision_id": "a/b"}, "malformed"),
        (200, {"result": {"allow": True}, "decision_id": "x" * 129}, "malformed"),
        (200, {"result": {"allow": True}, "provenance": []}, "malformed"),
        (200, {"result": {"allow": True}, "provenance": {"bundles": {"wsc": 1}}}, "malformed"),
        (
            200,
            {"result": {"allow": True}, "provenance": {"bundles": {"wsc": {"revision": 7}}}},
            "malformed",
        ),
        (
            200,
            {"result": {"allow": True}, "provenance": {"bundles": {"wsc": {"revision": "a\nb"}}}},
            "malformed",
        ),
        (200, [], "malformed"),
        (200, b"{not json", "malformed"),
        (200, b"\xff\xfe", "malformed"),
        (500, {"result": {"allow": True}}, "http_status"),
        (404, {"code": "not found"}, "http_status"),
    ],
)
def test_fails_closed(peer: str, status: int, body: object, failure: str) -> None:
    reply(status, body)
    assert failure_of(peer).failure == failure


def test_timeout_fails_closed(peer: str) -> None:
    reply(200, {"result": {"allow": True}})
    Peer.delay = 0.5
    assert failure_of(peer, timeout=0.1).failure == "timeout"


def test_unreachable_fails_closed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        url = f"http://127.0.0.1:{port}"
        assert failure_of(url).failure == "unreachable"

        async def ready() -> bool:
            async with OpaClient(url) as opa:
                return await opa.ready()

        assert run(ready) is False


def test_ready_follows_health_with_bundles(peer: str) -> None:
    async def main() -> tuple[bool, bool]:
        async with OpaClient(peer) as opa:
            reply(200, {})
            first = await opa.ready()
            reply(500, {"error": "bundle not activated"})
            return first, await opa.ready()

    assert run(main) == (True, False)
    assert Peer.seen[0]["path"] == "/health?bundles"


def test_a_closed_client_fails_closed(peer: str) -> None:
    reply(200, {"result": {"allow": True}})

    async def main() -> None:
        opa = OpaClient(peer)
        assert (await opa.decide(INPUT)).decision.allow is True
        await opa.close()
        with pytest.raises(OpaUnavailable):
            await opa.decide(INPUT)

    run(main)


def test_parse_full_decision() -> None:
    d = parse_decision(
        {
            "allow": True,
            "reasons": [],
            "run_as": {"uid": 1001, "gid": 2001},
            "supplemental_groups": [2001],
            "privileges": {"ml": "admin"},
            "mounts": [
                {"export": "e", "pvc": "p", "sub_path": "s", "read_only": True, "path": "/n/s"}
            ],
            "priority": 4,
        }
    )
    assert d.run_as is not None and (d.run_as.uid, d.run_as.gid) == (1001, 2001)
    assert d.mounts[0].path == "/n/s" and d.mounts[0].read_only is True
    assert d.privileges == {"ml": "admin"} and d.priority == 4


@pytest.mark.parametrize(
    "result",
    [
        {"allow": True, "privileges": {"ml": "owner"}},
        {"allow": True, "supplemental_groups": list(range(1, 18))},
        {"allow": True, "reasons": "no"},
        {"allow": True, "priority": "high"},
    ],
)
def test_parse_rejects_wrong_types(result: dict[str, Any]) -> None:
    with pytest.raises(OpaUnavailable):
        parse_decision(result)


def test_client_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="http"):
        OpaClient("unix:///x")
    with pytest.raises(ValueError, match="timeout"):
        OpaClient(timeout=0)
    with pytest.raises(ValueError, match="pool"):
        OpaClient(pool_size=0)
    for url in ("http://opa:8181/v1", "http://opa:8181?x=1", "http://user:pw@opa:8181"):
        with pytest.raises(ValueError, match="scheme://host"):
            OpaClient(url)


def test_answer_too_large_fails_closed(peer: str) -> None:
    reply(200, b'{"result": {"allow": true}, "pad": "' + b"x" * (1 << 20) + b'"}')
    err = failure_of(peer)
    assert err.failure == "malformed"
    assert "too large" in str(err)


class RawPeer:
    """Answers every request with ``answer``; hangs up after the first unless ``keep_open``.

    ``answer`` None reads requests and never answers (a hung OPA).
    """

    def __init__(self, answer: bytes | None, *, keep_open: bool = False) -> None:
        self.answer = answer
        self.keep_open = keep_open
        self.connections = 0
        self.requests = 0
        self.hung_up = threading.Semaphore(0)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.requests += 1
                if self.answer is not None:
                    conn.sendall(self.answer)
                if not self.keep_open:
                    break
        self.hung_up.release()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join()


def http_answer(body: bytes) -> bytes:
    # No "Connection: close": the client may keep the connection.
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


DENY = b'{"result": {"allow": false, "reasons": ["no"]}}'


def test_connection_closed_by_opa_while_idle_is_replaced() -> None:
    peer = RawPeer(http_answer(DENY))

    async def main() -> None:
        async with OpaClient(peer.url) as opa:
            for _ in range(3):
                assert (await opa.decide(INPUT)).decision.reasons == ("no",)
                # Idle, then closed by OPA; the loop notices the hang-up while
                # it waits. (A hang-up racing a new request is a 503: the
                # request may have reached OPA, it is not resent.)
                assert await asyncio.to_thread(peer.hung_up.acquire, True, 5)
                await asyncio.sleep(0.05)

    try:
        run(main)
        assert peer.connections == 3
    finally:
        peer.close()


def test_an_answer_nobody_asked_for_drops_the_connection() -> None:
    # Two answers to one request: the first is used, the connection is out of
    # step with OPA and never reused.
    peer = RawPeer(http_answer(DENY) * 2, keep_open=True)

    async def main() -> None:
        async with OpaClient(peer.url) as opa:
            for _ in range(2):
                assert (await opa.decide(INPUT)).decision.reasons == ("no",)

    try:
        run(main)
        assert peer.connections == 2
    finally:
        peer.close()


def test_waiting_for_a_connection_is_bounded_by_the_timeout() -> None:
    peer = RawPeer(None, keep_open=True)  # reads every request, answers none

    async def main() -> list[BaseException | DecisionResult]:
        async with OpaClient(peer.url, pool_size=1, timeout=0.5) as opa:
            return await asyncio.gather(
                *(opa.decide(INPUT) for _ in range(3)), return_exceptions=True
            )

    try:
        started = time.monotonic()
        outcomes = run(main)
        elapsed = time.monotonic() - started
        assert [getattr(o, "failure", o) for o in outcomes] == ["timeout"] * 3
        assert peer.connections == 1  # one slot: one connection at a time
        assert elapsed < 1.4  # one after the other would take at least 1.5 s
    finally:
        peer.close()


def test_malformed_http_answer_fails_closed() -> None:
    peer = RawPeer(b"HTTP/1.1 two hundred\r\n\r\n")
    try:
        assert failure_of(peer.url).failure == "malformed"
    finally:
        peer.close()


def test_answer_cut_short_fails_closed() -> None:
    peer = RawPeer(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"result": ')
    try:
        assert failure_of(peer.url).failure == "unreachable"
    finally:
        peer.close()


class HangUpOnSecond(RawPeer):
    """Answers the first request on a connection, reads the second and hangs up."""

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            for answer in (self.answer, None):
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.requests += 1
                if answer is not None:
                    conn.sendall(answer)


def test_a_decision_that_may_have_reached_opa_is_never_resent() -> None:
    # The second POST goes out on the kept-alive connection, OPA reads it and
    # hangs up: the decision may have been evaluated, so it is not sent again.
    peer = HangUpOnSecond(http_answer(DENY))

    async def main() -> OpaUnavailable:
        async with OpaClient(peer.url) as opa:
            await opa.decide(INPUT)
            with pytest.raises(OpaUnavailable) as err:
                await opa.decide(INPUT)
            return err.value

    try:
        assert run(main).failure == "unreachable"
        assert (peer.connections, peer.requests) == (1, 2)
    finally:
        peer.close()
