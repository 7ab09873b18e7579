"""Who is on the other end of a Unix stream socket, as the kernel recorded it.

``SO_PEERCRED`` gives the uid and gid, ``SO_PEERGROUPS`` the supplementary
groups, both captured by the kernel when the peer called connect(): a process
that dropped groups before connecting is seen without them, and nothing the
peer writes on the socket can change either value.
"""

from __future__ import annotations

import errno
import socket
import struct

# Python's socket module does not export SO_PEERGROUPS (Linux >= 4.13). 59 is
# its value in asm-generic/socket.h, used by every architecture we run on.
SO_PEERGROUPS: int = getattr(socket, "SO_PEERGROUPS", 59)

_UCRED = struct.Struct("=iII")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_GID_SIZE = 4
_FAST_GROUPS = 1024  # bytes: Python's getsockopt buffer limit (256 groups)
NGROUPS_MAX = 65536


def peer_credentials(sock: socket.SocketType) -> tuple[int, int, tuple[int, ...]]:
    """(uid, gid, supplementary gids) of the connected peer. OSError if unavailable."""
    _pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _FAST_GROUPS)
    except OSError as err:
        if err.errno != errno.ERANGE:
            raise
        raw = _peer_groups_large(sock.fileno())
    if len(raw) % _GID_SIZE:
        raise OSError(errno.EPROTO, "SO_PEERGROUPS returned a partial gid")
    return uid, gid, tuple(memoryview(raw).cast("I").tolist())


def _peer_groups_large(fd: int) -> bytes:
    """SO_PEERGROUPS with a buffer for NGROUPS_MAX gids (more than Python's limit).

    Only reached for peers in more than 256 groups, so ctypes is imported lazily.
    """
    import ctypes  # noqa: PLC0415 - rare path; keeps the daemon's import cost low

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(NGROUPS_MAX * _GID_SIZE)
    size = ctypes.c_uint32(len(buf))
    if libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buf, ctypes.byref(size)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"SO_PEERGROUPS: {errno.errorcode.get(code, code)}")
    return buf.raw[: size.value]


__all__ = ["SO_PEERGROUPS", "peer_credentials"]
