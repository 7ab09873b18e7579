"""Hostile clients against the real uvicorn server: idle, slow and oversized requests.

Each case runs the server as deployed (guarded protocol, in-flight limit) on
loopback with small limits so the tests are quick; the limits are the
mechanism, their production values are ServerLimits' defaults.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.app_server import AppServer
from support.opa import free_port
from support.raw_http import closed_within, connect, json_body, read_response, request_head

from tokensvc.cluster.http_limits import ServerLimits

LIMITS = ServerLimits(
    head_timeout=1.0,
    keep_alive_timeout=1,
    body_timeout=1.0,
    max_head_bytes=32 * 1024,
    max_connections=100,
    max_in_flight=4,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AppServer]:
    # /healthz needs no OPA: nothing listens on this port.
    with AppServer(tmp_path, opa_url=f"http://127.0.0.1:{free_port()}", limits=LIMITS) as running:
        yield running


def test_600_idle_connections_do_not_lock_out_a_request(tmp_path: Path) -> None:
    # A long head deadline: idle connections are shed by the cap here, not timed out.
    limits = ServerLimits(head_timeout=60.0, max_connections=100)
    with AppServer(tmp_path, opa_url=f"http://127.0.0.1:{free_port()}", limits=limits) as server:
        idle = [connect(server.url) for _ in range(600)]
        try:
            started = time.monotonic()
            resp = requests.get(server.url + "/healthz", timeout=5)
            assert resp.status_code == 200
            assert time.monotonic() - started < 2
            time.sleep(0.2)  # let the loop finish closing what it shed
            assert server.open_connections() <= limits.max_connections
            # The ones shed were the oldest idle ones.
            assert closed_within(idle[0], 1.0)
        finally:
            for sock in idle:
                sock.close()


def test_idle_connection_is_closed_at_the_head_deadline(server: AppServer) -> None:
    with connect(server.url) as sock:
        assert closed_within(sock, LIMITS.head_timeout + 1.5)


def test_slow_head_is_closed_at_its_deadline(server: AppServer) -> None:
    with connect(server.url) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        with pytest.raises(OSError):  # the server hangs up mid-drip
            for _ in range(40):
                sock.sendall(b"X-Drip: 1\r\n")
                time.sleep(0.1)
            raise AssertionError("still open")  # pragma: no cover
        assert time.monotonic() - started < LIMITS.head_timeout + 1.5


def test_idle_keep_alive_connection_is_closed(server: AppServer) -> None:
    with connect(server.url) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        status, _, _ = read_response(sock)
        assert status == 200
        assert closed_within(sock, LIMITS.keep_alive_timeout + 1.5)


def test_oversized_head_is_431(server: AppServer) -> None:
    with connect(server.url) as sock:
        sock.sendall(request_head("GET", "/healthz", "X-Big: " + "a" * (40 * 1024)))
        status, headers, body = read_response(sock)
    assert status == 431
    assert headers["connection"] == "close"
    assert json_body(body)["code"] == "headers_too_large"
    # Just under the cap is served.
    with connect(server.url) as sock:
        sock.sendall(request_head("GET", "/healthz", "X-Big: " + "a" * (30 * 1024)))
        assert read_response(sock)[0] == 200


def test_a_64_mib_header_is_never_buffered(server: AppServer) -> None:
    with connect(server.url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Huge: ")
        sent = 0
        chunk = b"a" * 65536
        with pytest.raises(OSError):
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        # Refused after the cap plus what socket buffers hold, not 64 MiB.
        assert sent < 8 * 1024 * 1024
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


def test_slow_body_is_refused_and_in_flight_requests_are_bounded(server: AppServer) -> None:
    # Heads complete, bodies never come: each holds a request in flight.
    slow = [connect(server.url) for _ in range(LIMITS.max_in_flight)]
    try:
        for sock in slow:
            sock.sendall(
                request_head(
                    "POST",
                    "/v1/jobs",
                    "Content-Type: application/json",
                    "Content-Length: 100",
                )
            )
        time.sleep(0.3)
        busy = requests.get(server.url + "/healthz", timeout=5)
        assert busy.status_code == 503
        assert busy.json()["code"] == "busy"
        for sock in slow:  # each is answered once its body deadline passes
            status, _, body = read_response(sock)
            assert (status, json_body(body)["code"]) == (400, "malformed_body")
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in slow:
            sock.close()
