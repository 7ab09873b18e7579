"""OPA client: only a well-formed decision comes back; everything else is a 503.

The real OPA cannot be made to send garbage, so the failure modes are played
by a tiny local HTTP peer; the happy path against the real OPA is in
tests/integration.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tokensvc.opa import DECISION_PATH, OpaClient, OpaUnavailable, parse_decision

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
    with OpaClient(peer) as opa:
        out = opa.decide(INPUT)
    assert out.decision.allow is True
    assert out.decision.visible_projects == ("ml",)
    assert out.decision_id == "abc"
    assert Peer.seen == [{"path": DECISION_PATH, "body": {"input": INPUT}}]


def test_connection_is_kept_alive(peer: str) -> None:
    reply(200, {"result": {"allow": False, "reasons": ["no"]}})
    with OpaClient(peer) as opa:
        for _ in range(3):
            assert opa.decide(INPUT).decision.reasons == ("no",)
    assert len(Peer.seen) == 3
    assert len(Peer.clients) == 1  # one TCP connection for all three


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
        (200, [], "malformed"),
        (200, b"{not json", "malformed"),
        (200, b"\xff\xfe", "malformed"),
        (500, {"result": {"allow": True}}, "http_status"),
        (404, {"code": "not found"}, "http_status"),
    ],
)
def test_fails_closed(peer: str, status: int, body: object, failure: str) -> None:
    reply(status, body)
    with OpaClient(peer) as opa, pytest.raises(OpaUnavailable) as err:
        opa.decide(INPUT)
    assert err.value.failure == failure


def test_timeout_fails_closed(peer: str) -> None:
    reply(200, {"result": {"allow": True}})
    Peer.delay = 0.5
    with OpaClient(peer, timeout=0.1) as opa, pytest.raises(OpaUnavailable) as err:
        opa.decide(INPUT)
    assert err.value.failure == "timeout"


def test_unreachable_fails_closed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        with OpaClient(f"http://127.0.0.1:{port}") as opa:
            with pytest.raises(OpaUnavailable) as err:
                opa.decide(INPUT)
            assert err.value.failure == "unreachable"
            assert opa.ready() is False


def test_ready_follows_health_with_bundles(peer: str) -> None:
    with OpaClient(peer) as opa:
        reply(200, {})
        assert opa.ready() is True
        reply(500, {"error": "bundle not activated"})
        assert opa.ready() is False
    assert Peer.seen[0]["path"] == "/health?bundles"


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


def test_answer_too_large_fails_closed(peer: str) -> None:
    reply(200, b'{"result": {"allow": true}, "pad": "' + b"x" * (1 << 20) + b'"}')
    with OpaClient(peer) as opa, pytest.raises(OpaUnavailable, match="too large") as err:
        opa.decide(INPUT)
    assert err.value.failure == "malformed"


class RawPeer:
    """Answers each connection's first request with ``answer`` and hangs up."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0
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
            with conn:
                self.connections += 1
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(self.answer)
            self.hung_up.release()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join()


def test_connection_closed_by_opa_while_idle_is_replaced() -> None:
    body = b'{"result": {"allow": false, "reasons": ["no"]}}'
    # No "Connection: close": the client pools the socket, then finds it closed.
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    peer = RawPeer(answer)
    try:
        with OpaClient(peer.url) as opa:
            for _ in range(3):
                assert opa.decide(INPUT).decision.reasons == ("no",)
                # Idle, then closed by OPA (a hang-up racing a new request is
                # a 503: the request may have reached OPA, it is not resent).
                assert peer.hung_up.acquire(timeout=5)
        assert peer.connections == 3
    finally:
        peer.close()


def test_malformed_http_answer_fails_closed() -> None:
    peer = RawPeer(b"HTTP/1.1 two hundred\r\n\r\n")
    try:
        with OpaClient(peer.url) as opa, pytest.raises(OpaUnavailable) as err:
            opa.decide(INPUT)
        assert err.value.failure == "malformed"
    finally:
        peer.close()


def test_answer_cut_short_fails_closed() -> None:
    peer = RawPeer(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"result": ')
    try:
        with OpaClient(peer.url) as opa, pytest.raises(OpaUnavailable) as err:
            opa.decide(INPUT)
        assert err.value.failure == "unreachable"
    finally:
        peer.close()
