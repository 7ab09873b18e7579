"""HTTPLogStream over a real streamed HTTP body (a local server writing chunks when told to).

Each chunk is handed on as soon as it arrives, the byte bound holds whatever
the source sends, and shutdown() frees a read blocked in another thread.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import urllib3

from tokensvc.cluster.joblogs import HTTPLogStream
from tokensvc.core.errors import SubmitFailed


@dataclass
class Source:
    """What the server sends: each chunk once ``go`` is set for it; then the end, or a hang-up."""

    chunks: list[bytes]
    hang_up: bool = False
    gates: list[threading.Event] = field(init=False)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gates = [threading.Event() for _ in self.chunks]


Serve = Callable[[Source], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serve a :class:`Source` on loopback; its URL."""
    sources: list[Source] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            source = sources[0]
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk, gate in zip(source.chunks, source.gates, strict=True):
                if not gate.wait(30):
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            if not source.hang_up:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
            source.done.set()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def start(source: Source) -> str:
        sources.append(source)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    try:
        yield start
    finally:
        for source in sources:
            for gate in source.gates:
                gate.set()
        server.shutdown()
        server.server_close()


def open_stream(url: str, limit: int = 1 << 20) -> HTTPLogStream:
    pool = urllib3.PoolManager(retries=False)
    response = pool.request("GET", url, preload_content=False, timeout=urllib3.Timeout(10, 30))
    return HTTPLogStream(response, limit_bytes=limit)


def test_each_chunk_is_handed_on_as_it_arrives_then_the_end(serve: Serve) -> None:
    source = Source([b"first line\n", b"second line\n"])
    url = serve(source)
    source.gates[0].set()
    stream = open_stream(url)
    try:
        assert stream.read() == b"first line\n"  # the second is not even sent yet
        assert not source.done.is_set()
        source.gates[1].set()
        assert stream.read() == b"second line\n"
        assert stream.read() == b""
        assert stream.read() == b""
    finally:
        stream.close()


def test_no_more_than_the_limit_is_handed_on(serve: Serve) -> None:
    source = Source([b"a" * 10, b"b" * 10])
    url = serve(source)
    for gate in source.gates:
        gate.set()
    stream = open_stream(url, limit=15)
    try:
        received = b""
        while chunk := stream.read():
            received += chunk
        assert received == b"a" * 10 + b"b" * 5
    finally:
        stream.close()


def test_shutdown_frees_a_read_blocked_in_another_thread(serve: Serve) -> None:
    source = Source([b"started\n", b"never sent\n"])
    url = serve(source)
    source.gates[0].set()
    stream = open_stream(url)
    assert stream.read() == b"started\n"
    results: list[bytes] = []
    reader = threading.Thread(target=lambda: results.append(stream.read()))
    reader.start()
    stream.shutdown()
    reader.join(30)
    assert not reader.is_alive() and results == [b""]
    stream.close()
    assert stream.read() == b""


def test_a_source_that_hangs_up_midway_is_a_failure(serve: Serve) -> None:
    source = Source([b"partial\n"], hang_up=True)
    url = serve(source)
    source.gates[0].set()
    stream = open_stream(url)
    try:
        assert stream.read() == b"partial\n"
        with pytest.raises(SubmitFailed):
            stream.read()
    finally:
        stream.close()
