"""``tokensvc mintd``: the user-node daemon that mints tokens for local processes.

Shape (MUNGE's munged, without its threads): one process, one epoll loop, no
thread or process per request.

* Start as root: load the key ring (refusing an insecure one), check that the
  socket directory is root-owned and not writable by group or others, bind
  the socket (mode 0666: any local user may ask for *its own* token), then
  optionally drop to ``--user`` (the key stays in memory only).
* Per connection: the caller's uid, gid and supplementary groups are read
  from the kernel (SO_PEERCRED, SO_PEERGROUPS) right after accept(); the
  request may only carry a TTL and the fixed-size digest of the request the
  token is for (``protocol``: at most 77 bytes, exact grammar, parsed
  before anything else is done).
* Only the ring's active key mints, and only inside its validity window
  (not-before/not-after, checked at every mint): outside it every request
  is refused with ``ERR key`` and a ``refused`` audit line, never sealed with
  another key.
* A client usually sends its request before the daemon accepts, so the
  request is read at once without touching epoll; only slow clients are
  parked in epoll with a deadline (``timeout``). At most ``max_connections``
  are parked, and one uid at most half of them: past that the oldest (of that
  uid) is dropped. Slow or idle clients (slow-loris, half-closed) cost one
  file descriptor for at most ``timeout`` seconds, and a uid that opens many
  crowds out only itself; a well-behaved client is answered at once.
* One JSON audit line per mint on stderr (uid, gid, groups, user, token id,
  ttl, whether it is bound, key id; never the token, its binding or a key),
  written once per loop iteration.
* SIGTERM/SIGINT: stop, remove the socket, exit 0. SIGHUP: reload the key
  ring (works while the daemon still runs as a user that can read it).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import gc
import json
import os
import pwd
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tokensvc.core.claims import new_claims
from tokensvc.core.config import Settings
from tokensvc.core.errors import ConfigError, KeyFileError
from tokensvc.core.keys import Key, KeyRing
from tokensvc.core.token import Sealer
from tokensvc.usernode.peercred import peer_credentials
from tokensvc.usernode.protocol import (
    MAX_REQUEST,
    OK_PREFIX,
    RequestError,
    error_reply,
    parse_request,
)

LISTEN_BACKLOG = 1024
ACCEPT_BATCH = 64  # accepts per wake-up before other connections get a turn
NAME_CACHE_SECONDS = 60.0
NAME_CACHE_MAX = 4096
REFUSAL_LOG_PER_SECOND = 10  # refusals are logged, but a flood cannot flood the log
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
PIPE_BUF = 4096  # writes up to this size to a pipe are atomic: workers' lines never mix
_SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
# Several worker processes share one listener: EPOLLEXCLUSIVE wakes one of them
# per connection instead of all (no thundering herd).
_LISTEN_EVENTS = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
_RECV_FLAGS = socket.MSG_DONTWAIT


@dataclass(frozen=True, slots=True)
class MintParams:
    """What the loop needs from the settings, resolved once at start."""

    realm: str
    host: str
    default_ttl: int
    max_ttl: int
    max_connections: int
    timeout: float


class _Conn:
    """A client that has not finished its exchange within one accept."""

    __slots__ = ("buf", "closed", "deadline", "gid", "groups", "out", "sock", "uid")

    def __init__(
        self, sock: socket.SocketType, uid: int, gid: int, groups: tuple[int, ...], deadline: float
    ) -> None:
        self.sock = sock
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.deadline = deadline
        self.buf = b""
        self.out = b""  # reply bytes not yet accepted by the kernel
        self.closed = False


def _json_line(event: str, **fields: object) -> bytes:
    line = {"ts": round(time.time(), 3), "event": event, **fields}
    return (json.dumps(line, separators=(",", ":")) + "\n").encode()


class MintDaemon:
    """The accept/serve loop around an already-bound, listening socket."""

    def __init__(
        self,
        ring: KeyRing,
        listener: socket.socket,
        params: MintParams,
        *,
        keyring_path: str | None = None,
        log_fd: int = 2,
    ) -> None:
        self._key: Key = ring.active
        self._sealer = Sealer(self._key, max_ttl=params.max_ttl)
        self._listener = listener
        self._lfd = listener.fileno()
        self.params = params
        self._keyring_path = keyring_path
        self._log_fd = log_fd
        self._epoll = select.epoll()
        self._conns: dict[int, _Conn] = {}
        self._queue: collections.deque[_Conn] = collections.deque()  # by deadline
        self._names: dict[int, tuple[str, str, float]] = {}
        self._parked_by_uid: dict[int, int] = {}
        self._per_uid_max = max(1, params.max_connections // 2)
        self._pending_log: list[bytes] = []
        self._refusals_window = 0.0
        self._refusals_logged = 0
        self._refusals_suppressed = 0
        self._accept_paused_until = 0.0
        self._stop = False
        self._reload = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.mints = 0
        self.refusals = 0
        # Ready-made pieces of the audit line (constant for the daemon's life).
        self._audit_tail = f',"key_id":"{self._key.key_id}"}}\n'

    # --- control ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (thread- and signal-safe)."""
        self._stop = True
        self._wake()

    def request_reload(self) -> None:
        """Ask the loop to reload the key ring file before the next request."""
        self._reload = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full pipe: already awake
            os.write(self._wake_w, b"\0")

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads the key ring (main thread only)."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # --- loop ---------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until ``stop()``; parked connections are closed on the way out."""
        ep = self._epoll
        ep.register(self._lfd, _LISTEN_EVENTS)
        ep.register(self._wake_r, select.EPOLLIN)
        try:
            while not self._stop:
                events = ep.poll(self._poll_timeout())
                for fd, _mask in events:
                    if fd == self._lfd:
                        self._accept_batch()
                    elif fd == self._wake_r:
                        self._drain_wake()
                    else:
                        conn = self._conns.get(fd)
                        if conn is not None:
                            self._progress(conn)
                if self._reload:  # normally handled on the wake-up; never missed
                    self._drain_wake()
                self._expire(time.monotonic())
                self._flush_log()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._flush_log()
            ep.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _poll_timeout(self) -> float:
        now = time.monotonic()
        if self._accept_paused_until:
            if now >= self._accept_paused_until:
                self._accept_paused_until = 0.0
                self._epoll.register(self._lfd, _LISTEN_EVENTS)
            else:
                return self._accept_paused_until - now
        queue = self._queue
        while queue and queue[0].closed:
            queue.popleft()
        if not queue:
            return -1
        return max(0.0, queue[0].deadline - now)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass
        if self._reload:
            self._reload = False
            self._reload_keyring()

    # --- per connection -----------------------------------------------------------

    def _accept_batch(self) -> None:
        listener = self._listener
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: make room, and stop accepting briefly
                    # rather than spin on a listener that stays readable.
                    if self._queue:
                        self._evict_oldest()
                    self._epoll.unregister(self._lfd)
                    self._accept_paused_until = time.monotonic() + 0.05
                    self._log_error("accept", err)
                return
            self._start(sock)

    def _start(self, sock: socket.SocketType) -> None:
        try:
            # The kernel's record of the peer, taken at connect(); nothing the
            # peer sends can change it.
            uid, gid, groups = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        # Fast path: the request is nearly always queued already, so answer it
        # now; only slow clients get a _Conn, a deadline and an epoll entry.
        try:
            data = sock.recv(MAX_REQUEST + 1, _RECV_FLAGS)
        except BlockingIOError:
            data = None
        except OSError:
            sock.close()
            return
        if data == b"":
            sock.close()  # connected and hung up: nothing to answer
            return
        conn = None
        if data is not None and (b"\n" in data or len(data) > MAX_REQUEST):
            reply = self._answer(uid, gid, groups, data)
            try:
                sent = sock.send(reply, _SEND_FLAGS)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = len(reply)  # peer gone: nothing more to do
            if sent == len(reply):
                sock.close()
                return
            conn = _Conn(sock, uid, gid, groups, time.monotonic() + self.params.timeout)
            conn.out = reply[sent:]
        else:
            conn = _Conn(sock, uid, gid, groups, time.monotonic() + self.params.timeout)
            conn.buf = data or b""
        self._park(conn)

    def _park(self, conn: _Conn) -> None:
        """Wait for a slow client in epoll, within its own uid's share of the slots.

        A uid over its share loses its own oldest connection, so one user
        opening many idle connections only ever crowds out itself.
        """
        uid = conn.uid
        parked = self._parked_by_uid.get(uid, 0)
        if parked >= self._per_uid_max:
            self._evict_oldest(uid)
        elif len(self._conns) >= self.params.max_connections:
            self._evict_oldest()
        self._parked_by_uid[uid] = self._parked_by_uid.get(uid, 0) + 1
        fd = conn.sock.fileno()
        self._conns[fd] = conn
        self._queue.append(conn)
        self._epoll.register(fd, select.EPOLLOUT if conn.out else select.EPOLLIN)

    def _progress(self, conn: _Conn) -> None:
        if conn.out:
            self._send(conn, conn.out)
            return
        try:
            data = conn.sock.recv(MAX_REQUEST + 1 - len(conn.buf), _RECV_FLAGS)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if data:
            buf = conn.buf + data
            if b"\n" not in buf and len(buf) <= MAX_REQUEST:
                conn.buf = buf
                return
        elif conn.buf:
            buf = conn.buf  # half-closed before the newline: judge what came
        else:
            self._close(conn)  # hung up without a request: nothing to answer
            return
        self._send(conn, self._answer(conn.uid, conn.gid, conn.groups, buf))

    def _answer(self, uid: int, gid: int, groups: tuple[int, ...], request: bytes) -> bytes:
        try:
            ttl, bind = parse_request(request)
            if ttl is None:
                ttl = self.params.default_ttl
            elif ttl > self.params.max_ttl:
                raise RequestError("ttl", f"ttl must be 1..{self.params.max_ttl} seconds")
        except RequestError as err:
            self._log_refusal(uid, gid, err.code)
            return err.reply
        return self._mint(uid, gid, groups, ttl, bind)

    def _mint(
        self, uid: int, gid: int, groups: tuple[int, ...], ttl: int, bind: str | None
    ) -> bytes:
        now = time.time()
        if not self._key.in_window(now):
            # The caller learns only that nothing may mint now; the audit line says why.
            expired = self._key.not_after is not None and now >= self._key.not_after
            self._log_refusal(uid, gid, "key-expired" if expired else "key-not-yet-valid")
            return error_reply("key", "no key may mint now; ask an administrator")
        name, name_json = self._user_name(uid, now)
        try:
            claims = new_claims(
                uid=uid,
                gid=gid,
                groups=groups,
                user=name,
                host=self.params.host,
                realm=self.params.realm,
                ttl=ttl,
                now=now,
                max_ttl=self.params.max_ttl,
                binding=bind,
            )
            token = self._sealer.seal(claims)
        except ValueError as err:
            # An identity the token cannot carry (e.g. uid 4294967295); the
            # caller learns only that minting failed.
            self._log_error("mint", err, uid=uid)
            self._log_refusal(uid, gid, "internal")
            return error_reply("internal", "cannot mint a token for this caller")
        self.mints += 1
        self._pending_log.append(
            f'{{"ts":{now:.3f},"event":"mint","uid":{uid},"gid":{gid},'
            f'"groups":[{",".join(map(str, claims.groups))}],"user":{name_json},'
            f'"token_id":"{claims.token_id}","ttl":{ttl},"expires_at":{claims.expires_at},'
            f'"bound":{"false" if bind is None else "true"}{self._audit_tail}'.encode()
        )
        return OK_PREFIX + token.encode() + b"\n"

    def _send(self, conn: _Conn, reply: bytes) -> None:
        try:
            sent = conn.sock.send(reply, _SEND_FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent == len(reply):
            self._close(conn)
            return
        # Rare: a reply larger than the socket buffer (huge group lists) or a
        # peer that stopped reading. Finish it from epoll, within the deadline.
        conn.out = reply[sent:]
        fd = conn.sock.fileno()
        if fd in self._conns:  # parked already; else _start() parks it for EPOLLOUT
            self._epoll.modify(fd, select.EPOLLOUT)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        fd = conn.sock.fileno()
        if self._conns.pop(fd, None) is not None:
            self._epoll.unregister(fd)
            left = self._parked_by_uid[conn.uid] - 1
            if left:
                self._parked_by_uid[conn.uid] = left
            else:
                del self._parked_by_uid[conn.uid]
        conn.sock.close()

    def _expire(self, now: float) -> None:
        queue = self._queue
        while queue and (queue[0].closed or queue[0].deadline <= now):
            conn = queue.popleft()
            if not conn.closed:
                self._log_refusal(conn.uid, conn.gid, "timeout")
                if not conn.out:  # best effort: tell it why, never wait for it
                    self._try_send(conn, error_reply("timeout", "request not received in time"))
                self._close(conn)

    def _evict_oldest(self, uid: int | None = None) -> None:
        """Drop the longest-waiting connection (of ``uid``, if given)."""
        while self._queue and self._queue[0].closed:
            self._queue.popleft()
        for conn in self._queue:  # ordered by age; closed ones are skipped
            if not conn.closed and (uid is None or conn.uid == uid):
                self._log_refusal(conn.uid, conn.gid, "busy")
                if not conn.out:
                    self._try_send(conn, error_reply("busy", "too many connections; retry"))
                self._close(conn)
                return

    @staticmethod
    def _try_send(conn: _Conn, reply: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(reply, _SEND_FLAGS)

    # --- helpers ------------------------------------------------------------------

    def _user_name(self, uid: int, now: float) -> tuple[str, str]:
        """Informational user name for ``uid`` ("" if none), cached briefly."""
        hit = self._names.get(uid)
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = ""
        if len(name.encode("utf-8", "replace")) > 255 or not name.isprintable():
            name = ""  # not something a token can carry
        if len(self._names) >= NAME_CACHE_MAX:
            self._names.clear()
        entry = (name, json.dumps(name), now + NAME_CACHE_SECONDS)
        self._names[uid] = entry
        return entry[0], entry[1]

    def _reload_keyring(self) -> None:
        if self._keyring_path is None:
            return
        try:
            ring = KeyRing.load(self._keyring_path)
        except KeyFileError as err:
            self._log(_json_line("reload-failed", keyring=self._keyring_path, error=str(err)))
            return
        self._key = ring.active
        self._sealer = Sealer(self._key, max_ttl=self.params.max_ttl)
        self._audit_tail = f',"key_id":"{self._key.key_id}"}}\n'
        self._log(
            _json_line(
                "reloaded",
                keyring=self._keyring_path,
                key_id=self._key.key_id,
                not_before=self._key.not_before,
                not_after=self._key.not_after,
            )
        )

    def _log_refusal(self, uid: int, gid: int, code: str) -> None:
        self.refusals += 1
        now = time.monotonic()
        if now - self._refusals_window >= 1.0:
            if self._refusals_suppressed:
                self._log(_json_line("refusals-suppressed", count=self._refusals_suppressed))
            self._refusals_window = now
            self._refusals_logged = 0
            self._refusals_suppressed = 0
        if self._refusals_logged >= REFUSAL_LOG_PER_SECOND:
            self._refusals_suppressed += 1
            return
        self._refusals_logged += 1
        self._log(_json_line("refused", uid=uid, gid=gid, reason=code))

    def _log_error(self, where: str, err: Exception, **fields: object) -> None:
        self._log(_json_line("error", where=where, error=str(err), **fields))

    def _log(self, line: bytes) -> None:
        self._pending_log.append(line)

    def _flush_log(self) -> None:
        """Write pending lines in as few writes as possible, each at most PIPE_BUF
        bytes of whole lines (atomic on a pipe, so workers' lines never interleave)."""
        lines = self._pending_log
        if not lines:
            return
        self._pending_log = []
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if size + len(line) > PIPE_BUF and chunk:
                self._write_log(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        self._write_log(b"".join(chunk))

    def _write_log(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._log_fd, view) :]
        except OSError:
            pass  # no log sink (stderr closed): keep serving


# --- start-up: socket directory, socket, privileges -------------------------------


def check_socket_dir(directory: str) -> None:
    """Refuse a socket directory (or parent) that someone but root could tamper with.

    The directory must be a real directory owned by root (or the daemon's own
    euid) and not writable by group or others; every parent must be owned by
    root or the daemon and not writable by group or others unless sticky
    (like /tmp), so nobody can replace the socket or move the directory.
    """
    euid = os.geteuid()
    path = os.path.abspath(directory)
    first = True
    while True:
        try:
            st = os.lstat(path)
        except OSError as err:
            raise ConfigError(f"socket directory {path}: {err.strerror}") from None
        where = f"socket directory {path}" if first else f"directory {path} (holding the socket)"
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(f"{where} is insecure: it is a symlink; use the real path")
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{where} is not a directory")
        if st.st_uid not in (0, euid):
            raise ConfigError(
                f"{where} is insecure: owned by uid {st.st_uid}, must be owned by root"
            )
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (first or not st.st_mode & stat.S_ISVTX):
            raise ConfigError(
                f"{where} is insecure: writable by group or others "
                f"(perms={stat.S_IMODE(st.st_mode):04o})"
            )
        parent = os.path.dirname(path)
        if parent == path:
            return
        path, first = parent, False


def bind_socket(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """Create the listening socket (mode 0666) in a checked directory.

    A stale socket left by a crashed daemon is replaced; a live one (another
    daemon answers) or any other kind of file is an error. Returns the socket
    and the (device, inode) of the socket file, to remove only our own.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.lexists(directory):
        try:
            os.mkdir(directory, 0o755)
        except OSError as err:
            raise ConfigError(
                f"cannot create socket directory {directory}: {err.strerror}"
            ) from None
    check_socket_dir(directory)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens
        else:
            raise ConfigError(f"another mint daemon is already listening on {path}")
        finally:
            probe.close()
    # Bind and listen under a temporary name, then rename into place: the
    # socket path only ever names a socket that is already listening.
    temp = os.path.join(directory, f".mintd-{os.getpid()}")
    if len(temp.encode()) > 107 or os.path.lexists(temp):
        temp = path  # no room for a temporary name (or it is taken): bind in place
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(temp)
        # Connecting needs write permission on the socket: every local user may
        # ask (for its own identity only). The directory check protects it.
        os.chmod(temp, 0o666)  # noqa: S103
        sock.listen(min(LISTEN_BACKLOG, socket.SOMAXCONN))
        if temp != path:
            os.rename(temp, path)
    except OSError as err:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ConfigError(f"cannot create socket {path}: {err.strerror}") from None
    finally:
        os.umask(old_umask)
    sock.setblocking(False)
    st = os.lstat(path)
    return sock, (st.st_dev, st.st_ino)


def resolve_user(user: str) -> tuple[int, int]:
    """(uid, gid) for a user name, or a numeric uid (its passwd gid, else gid = uid)."""
    if user.isdigit():
        uid = int(user)
        try:
            return uid, pwd.getpwuid(uid).pw_gid
        except KeyError:
            return uid, uid
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"unknown user {user!r} (mintd --user)") from None
    return entry.pw_uid, entry.pw_gid


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid with no supplementary groups, irrevocably.

    The kernel also marks the process non-dumpable on this change, so the
    new uid cannot ptrace it or read its memory (where the key lives).
    """
    if os.geteuid() != 0:
        raise ConfigError("mintd --user needs the daemon to start as root")
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as err:
        raise ConfigError(f"cannot drop privileges to uid {uid}: {err.strerror}") from None
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise ConfigError("privileges could not be dropped (setuid(0) still works)")


def _raise_fd_limit(wanted: int) -> None:
    """Lift the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit)."""
    import resource  # noqa: PLC0415 - start-up only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):  # best effort: eviction copes
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if set."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(target)
            sock.send(state.encode())
        except OSError:
            pass


def run(
    settings: Settings,
    *,
    allow_insecure: bool = False,
    on_ready: Callable[[MintDaemon], None] | None = None,
) -> int:
    """Start, serve until SIGTERM/SIGINT (or ``stop()``), clean up. Returns 0.

    Raises InsecureKeyFile / KeyFileError for the key ring and ConfigError
    for the socket, its directory or the user to drop to, before serving.
    """
    ring = KeyRing.load(settings.keyring, allow_insecure=allow_insecure)
    target = resolve_user(settings.mintd.user) if settings.mintd.user else None
    params = MintParams(
        realm=settings.realm,
        host=settings.host or socket.gethostname(),
        default_ttl=settings.default_ttl,
        max_ttl=settings.max_ttl,
        max_connections=settings.mintd.max_connections,
        timeout=settings.mintd.timeout,
    )
    _raise_fd_limit(settings.mintd.max_connections + 64)
    listener, identity = bind_socket(settings.socket)
    try:
        if target is not None:
            drop_privileges(*target)
        start = _json_line(
            "start",
            socket=settings.socket,
            realm=params.realm,
            host=params.host,
            key_id=ring.active.key_id,
            not_before=ring.active.not_before,
            not_after=ring.active.not_after,
            uid=os.getuid(),
            pid=os.getpid(),
            workers=settings.mintd.workers,
        )
        _write_all(2, start)
        # Everything allocated so far lives as long as the daemon: move it out of
        # the collector's sight, so collections stay cheap and forked workers do
        # not copy shared pages just by scanning them.
        gc.freeze()
        if settings.mintd.workers == 1:
            daemon = MintDaemon(ring, listener, params, keyring_path=settings.keyring)
            del ring  # only the daemon's reference to the active key remains
            if threading.current_thread() is threading.main_thread():
                daemon.install_signal_handlers()
                # Whoever started us may have left these blocked; a daemon that
                # cannot hear SIGTERM/SIGHUP is no good.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            _notify_systemd("READY=1")
            if on_ready is not None:
                on_ready(daemon)
            _serve(daemon)
        else:
            _supervise(ring, listener, params, settings)
        _notify_systemd("STOPPING=1")
    finally:
        listener.close()
        _remove_socket(settings.socket, identity)
    return 0


def _serve(daemon: MintDaemon) -> None:
    daemon.serve_forever()
    daemon._log(_json_line("stop", pid=os.getpid(), mints=daemon.mints, refusals=daemon.refusals))
    daemon._flush_log()


def _worker(
    ring: KeyRing, listener: socket.socket, params: MintParams, keyring: str, mask: set[int]
) -> None:
    """Body of a forked worker process; never returns."""
    code = 1
    try:
        daemon = MintDaemon(ring, listener, params, keyring_path=keyring)
        daemon.install_signal_handlers()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # signals held since fork arrive now
        _serve(daemon)
        code = 0
    finally:
        os._exit(code)  # never run the parent's clean-up (socket removal) in a worker


def _supervise(
    ring: KeyRing, listener: socket.socket, params: MintParams, settings: Settings
) -> None:
    """Run ``workers`` processes on the shared listener; forward signals; replace crashed ones.

    Each worker is a complete daemon (own epoll loop, own connection budget);
    the kernel hands each connection to one of them. The supervisor serves
    nothing and holds no connection.
    """
    stopping = False
    handlers_installed = False
    children: dict[int, float] = {}  # pid -> start time
    original = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) - _SIGNALS

    def spawn() -> None:
        # Signals stay blocked across fork until each side has its own handlers:
        # a worker must never run the supervisor's handler, nor die of a default one.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        pid = os.fork()
        if pid == 0:
            _worker(ring, listener, params, settings.keyring, original)
        children[pid] = time.monotonic()
        if handlers_installed:
            signal.pthread_sigmask(signal.SIG_SETMASK, original)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for _ in range(settings.mintd.workers):
        spawn()  # leaves the signals blocked until the handlers below exist
    for signum in _SIGNALS:
        signal.signal(signum, forward)
    handlers_installed = True
    signal.pthread_sigmask(signal.SIG_SETMASK, original)
    _notify_systemd("READY=1")
    failures = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        _write_all(2, _json_line("error", where="worker", pid=pid, exit=code))
        failures = failures + 1 if time.monotonic() - started < 1.0 else 0
        if failures >= 5:  # crashing at start: give up rather than spin
            forward(signal.SIGTERM, None)
            raise ConfigError("mint daemon workers keep failing at start; see the log")
        spawn()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_socket(path: str, identity: tuple[int, int]) -> None:
    """Unlink the socket if it is still ours (after --user this may be impossible:
    the root-owned directory is not ours to write; systemd's RuntimeDirectory
    removes it, and the next start replaces a stale one)."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)
    except OSError as err:
        if err.errno != errno.ENOENT:
            sys.stderr.write(
                _json_line("error", where="remove-socket", error=err.strerror).decode()
            )


__all__ = [
    "MintDaemon",
    "MintParams",
    "bind_socket",
    "check_socket_dir",
    "drop_privileges",
    "resolve_user",
    "run",
]
