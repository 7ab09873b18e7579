"""client.mint against stand-in peers on real Unix sockets: every failure maps to one error."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tokensvc.core.errors import DaemonUnavailable, MintRefused
from tokensvc.usernode.client import mint

Behaviour = Callable[[socket.socket], None]


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Callable[[Behaviour], str]]:
    """Start a one-connection server that runs ``behaviour`` on the accepted socket."""
    threads: list[threading.Thread] = []
    servers: list[socket.socket] = []

    def start(behaviour: Behaviour) -> str:
        path = str(tmp_path / f"peer{len(servers)}.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        servers.append(server)

        def run() -> None:
            conn, _ = server.accept()
            with conn:
                behaviour(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for thread in threads:
        thread.join(timeout=5)
    for server in servers:
        server.close()


def _reply(data: bytes) -> Behaviour:
    def behaviour(conn: socket.socket) -> None:
        assert conn.recv(64) == b"MINT1 42\n"
        conn.sendall(data)

    return behaviour


def test_token_returned(peer: Callable[[Behaviour], str]) -> None:
    assert mint(42, peer(_reply(b"OK abc-_123\n"))) == "abc-_123"


def test_reply_in_pieces(peer: Callable[[Behaviour], str]) -> None:
    def behaviour(conn: socket.socket) -> None:
        conn.recv(64)
        for piece in (b"OK ", b"abc", b"def\n"):
            conn.sendall(piece)
            time.sleep(0.02)

    assert mint(42, peer(behaviour)) == "abcdef"


def test_refusal(peer: Callable[[Behaviour], str]) -> None:
    path = peer(_reply(b"ERR ttl ttl must be 1..3600 seconds\n"))
    with pytest.raises(MintRefused) as info:
        mint(42, path)
    assert str(info.value) == "mint daemon refused the request (ttl): ttl must be 1..3600 seconds"
    assert info.value.exit_code == 6


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "closed the connection without a reply"),
        (b"OK abc", "closed the connection without a reply"),
        (b"HELLO\n", "malformed reply"),
        (b"OK a b\n", "malformed reply"),
    ],
)
def test_broken_peers(peer: Callable[[Behaviour], str], data: bytes, message: str) -> None:
    with pytest.raises(DaemonUnavailable, match=message) as info:
        mint(42, peer(_reply(data)))
    assert info.value.exit_code == 5


def test_silent_peer_times_out(peer: Callable[[Behaviour], str]) -> None:
    release = threading.Event()
    path = peer(lambda conn: release.wait(5) and None)
    started = time.monotonic()
    with pytest.raises(DaemonUnavailable, match="timed out"):
        mint(42, path, timeout=0.3)
    assert time.monotonic() - started < 2
    release.set()


def test_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(DaemonUnavailable, match="is not running"):
        mint(socket_path=str(path))


def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailable, match="is not running"):
        mint(socket_path=str(tmp_path / "absent.sock"))


@pytest.mark.parametrize("ttl", [0, -5, 100000, True])
def test_bad_ttl_is_a_caller_error(tmp_path: Path, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl must be"):
        mint(ttl, str(tmp_path / "never-used.sock"))


def test_a_bound_request_sends_mint2_with_the_digest(peer: Callable[[Behaviour], str]) -> None:
    digest = "ab" * 32
    seen: list[bytes] = []

    def behaviour(conn: socket.socket) -> None:
        seen.append(conn.recv(128))
        conn.sendall(b"OK tok\n")

    assert mint(42, peer(behaviour), bind=digest) == "tok"
    assert seen == [b"MINT2 42 " + digest.encode() + b"\n"]


def test_a_malformed_binding_is_refused_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bind"):
        mint(42, str(tmp_path / "nobody.sock"), bind="AB" * 32)
