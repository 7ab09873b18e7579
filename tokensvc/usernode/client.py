"""User-node client library: ask the local mint daemon for a token.

``mint()`` is what job-submission code calls (``tokensvc token`` is a thin
wrapper around it). The daemon learns who is asking from the kernel, so the
only things sent are the requested lifetime and, for a token bound to one
request, that request's digest (``core.digest.request_digest``).
"""

from __future__ import annotations

import os
import socket
import time

from tokensvc.core.errors import DaemonUnavailable
from tokensvc.usernode.protocol import MAX_REPLY, format_request, parse_reply

DEFAULT_TIMEOUT = 5.0  # seconds for connect + request + reply together


def default_socket() -> str:
    """``$TOKENSVC_SOCKET``, else the settings file's ``socket``, else the built-in default."""
    path = os.environ.get("TOKENSVC_SOCKET")
    if path:
        return path
    from tokensvc.core.config import load_settings  # noqa: PLC0415 - only when not given

    return load_settings().socket


def mint(
    ttl: int | None = None,
    socket_path: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    bind: str | None = None,
) -> str:
    """A fresh token for the calling process's own uid, gid and groups.

    ``ttl`` in seconds (None: the daemon's default). ``bind``: the digest (64
    lowercase hex digits) of the one request the token is for; the server
    then accepts it for that request only. None: an unbound token. Raises
    ValueError for a ttl that is not an integer in 1..99999 or a malformed
    ``bind``, MintRefused when the daemon refuses (e.g. ttl above its
    maximum, or no key valid now), DaemonUnavailable when it cannot be
    reached or does not answer within ``timeout`` seconds.
    """
    request = format_request(ttl, bind)
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    path = socket_path or default_socket()
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonUnavailable(f"mint daemon is not running (no listener at {path})") from None
        except OSError as err:
            raise DaemonUnavailable(
                f"cannot connect to mint daemon at {path}: {_why(err)}"
            ) from None
        try:
            sock.sendall(request)
            reply = _read_reply(sock, deadline)
        except OSError as err:
            raise DaemonUnavailable(f"mint daemon at {path} failed: {_why(err)}") from None
    finally:
        sock.close()
    return parse_reply(reply)


def _read_reply(sock: socket.socket, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)  # nearly always the whole reply at once
        if not chunk:
            raise DaemonUnavailable("mint daemon closed the connection without a reply")
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)
        if size > MAX_REPLY:
            raise DaemonUnavailable("mint daemon sent an oversized reply")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(remaining)


def _why(err: OSError) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    return err.strerror or type(err).__name__


__all__ = ["DEFAULT_TIMEOUT", "default_socket", "mint"]
