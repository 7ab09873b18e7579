"""Key ring: 256-bit AES-256-GCM-SIV keys with ids and states, in one root-only file.

A ring holds exactly one *active* key (mints and opens), any number of
*accepted* keys (open only: distributed ahead of activation, or kept after a
rotation until their tokens expire) and *retired* keys (the secret is kept so
a token sealed with it can still be authenticated and then rejected with
``KeyRetired`` rather than the opaque ``InvalidToken``).

Any key may also have a validity window, ``not_before`` ≤ t < ``not_after``
(unix seconds, each optional). The daemon mints only with an active key
inside its window; the server opens only with a key inside its window,
widened by a grace period (``validate.check_claims``).

Pure part: ``Key``, ``KeyRing`` (parse/serialize, state changes return a new
ring). I/O edge: ``KeyRing.load`` (the permission checks of
:mod:`tokensvc.core.keyfile` on the file and every parent directory) and
the ``*_key`` / ``generate_keyring`` helpers behind ``tokensvc keygen``
and ``tokensvc keys ...``. The file format is in docs/token-format.md
("Key ring file").
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, TypedDict

from tokensvc.core import durable, keyfile
from tokensvc.core.errors import KeyFileError

log = logging.getLogger(__name__)

KeyState = Literal["active", "accepted", "retired"]
KEY_STATES: tuple[KeyState, ...] = ("active", "accepted", "retired")


class KeyInfo(TypedDict):
    """What may be shown about a key: everything but the secret."""

    key_id: str
    state: KeyState
    created: int
    not_before: int | None
    not_after: int | None


KEY_LEN = 32  # bytes: AES-256
KEY_ID_LEN = 8  # bytes on the wire; 16 lowercase hex digits in text
MAX_KEYS = 64
MAX_RING_FILE_SIZE = 64 * 1024
RING_MAGIC = "tokensvc-keyring 1"

_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SECRET = re.compile(r"[0-9a-f]{64}")
_CREATED = re.compile(r"0|[1-9][0-9]{0,18}")
_WINDOW_FIELDS = ("not-before", "not-after")  # optional, in this order, after the secret
MAX_KEY_TIME = 2**63 - 1


@dataclass(frozen=True, slots=True, eq=False)
class Key:
    """One key. Never printed with its secret; compared by identity only."""

    key_id: str  # 16 lowercase hex digits, unique in a ring
    secret: bytes = field(repr=False)
    state: KeyState
    created: int = 0  # unix seconds, informational
    not_before: int | None = None  # unix seconds: no token before this instant
    not_after: int | None = None  # unix seconds: no token from this instant on

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not _KEY_ID.fullmatch(self.key_id):
            raise ValueError("key_id must be 16 lowercase hex digits")
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_LEN:
            raise ValueError(f"secret must be {KEY_LEN} bytes")
        if self.state not in KEY_STATES:
            raise ValueError(f"state must be one of {', '.join(KEY_STATES)}")
        if type(self.created) is not int or self.created < 0:
            raise ValueError("created must be a non-negative integer")
        for name in ("not_before", "not_after"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 0 <= value <= MAX_KEY_TIME):
                raise ValueError(f"{name} must be None or an integer in 0..{MAX_KEY_TIME}")
        if (
            self.not_before is not None
            and self.not_after is not None
            and self.not_after <= self.not_before
        ):
            raise ValueError("not_after must be later than not_before")

    @property
    def key_id_bytes(self) -> bytes:
        """The key id as it appears in a token header."""
        return bytes.fromhex(self.key_id)

    def in_window(self, now: float, grace: float = 0) -> bool:
        """True if ``now`` is inside ``not_before - grace`` ≤ now < ``not_after + grace``."""
        if self.not_before is not None and now < self.not_before - grace:
            return False
        return self.not_after is None or now < self.not_after + grace

    def describe(self) -> KeyInfo:
        """Everything about the key except its secret (for `tokensvc keys list`)."""
        return {
            "key_id": self.key_id,
            "state": self.state,
            "created": self.created,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }


def new_key(state: KeyState = "active", *, now: float | None = None) -> Key:
    """A fresh random key with a fresh random id."""
    created = int(time.time() if now is None else now)
    return Key(secrets.token_hex(KEY_ID_LEN), secrets.token_bytes(KEY_LEN), state, created)


@dataclass(frozen=True, slots=True, eq=False)
class KeyRing:
    """An ordered set of keys with exactly one active key."""

    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.keys) <= MAX_KEYS:
            raise ValueError(f"a key ring holds 1..{MAX_KEYS} keys")
        if sum(k.state == "active" for k in self.keys) != 1:
            raise ValueError("a key ring needs exactly one active key")
        if len({k.key_id for k in self.keys}) != len(self.keys):
            raise ValueError("key ids in a ring must be unique")

    # --- lookup ---------------------------------------------------------------

    @property
    def active(self) -> Key:
        """The key that mints (when inside its window: see ``minting_key``)."""
        return next(k for k in self.keys if k.state == "active")

    def minting_key(self, now: float) -> Key | None:
        """The active key if ``now`` is inside its window, else None: nothing may mint."""
        key = self.active
        return key if key.in_window(now) else None

    def find(self, key_id: str) -> Key | None:
        """The key with this id, or None. Visits every key with a constant-time compare."""
        wanted = key_id.encode("ascii", "replace")
        found: Key | None = None
        for k in self.keys:
            if hmac.compare_digest(k.key_id.encode("ascii"), wanted):
                found = k
        return found

    def find_raw(self, key_id: bytes) -> Key | None:
        """Like ``find`` for the 8 raw bytes of a token header."""
        found: Key | None = None
        for k in self.keys:
            if hmac.compare_digest(k.key_id_bytes, key_id):
                found = k
        return found

    def _require(self, key_id: str) -> Key:
        key = self.find(key_id)
        if key is None:
            raise KeyFileError(f"no key with id {key_id!r} in the key ring")
        return key

    # --- state changes (pure: each returns a new ring) ------------------------

    def with_new_key(
        self,
        state: KeyState = "accepted",
        *,
        now: float | None = None,
        not_before: int | None = None,
        not_after: int | None = None,
    ) -> KeyRing:
        """Add a fresh key; ``state="active"`` makes it the active one (rotation).

        ``not_before`` / ``not_after`` give it a validity window (KeyFileError
        for an empty one).
        """
        if len(self.keys) >= MAX_KEYS:
            raise KeyFileError(f"key ring already holds {MAX_KEYS} keys; remove retired ones")
        key = _windowed(new_key(state, now=now), not_before, not_after)
        while self.find(key.key_id) is not None:  # 2**-64 per key; cheap to rule out
            key = _windowed(new_key(state, now=now), not_before, not_after)
        old = self.keys
        if state == "active":
            old = tuple(replace(k, state="accepted") if k.state == "active" else k for k in old)
        return KeyRing((*old, key))

    def with_active(self, key_id: str) -> KeyRing:
        """Make ``key_id`` the active key; the previously active key becomes accepted."""
        target = self._require(key_id)
        if target.state == "retired":
            raise KeyFileError(f"key {key_id} is retired and cannot be made active again")
        return KeyRing(
            tuple(
                replace(k, state="active")
                if k is target
                else replace(k, state="accepted")
                if k.state == "active"
                else k
                for k in self.keys
            )
        )

    def with_window(self, key_id: str, *, not_before: int | None, not_after: int | None) -> KeyRing:
        """Set (replace) the validity window of ``key_id``; None leaves that end open."""
        target = self._require(key_id)
        changed = _windowed(target, not_before, not_after)
        return KeyRing(tuple(changed if k is target else k for k in self.keys))

    def with_retired(self, key_id: str) -> KeyRing:
        """Retire ``key_id``: its tokens authenticate, then fail with KeyRetired."""
        target = self._require(key_id)
        if target.state == "active":
            raise KeyFileError(f"key {key_id} is the active key; rotate before retiring it")
        return KeyRing(tuple(replace(k, state="retired") if k is target else k for k in self.keys))

    def without(self, key_id: str) -> KeyRing:
        """Drop a retired key for good; its tokens become plain InvalidToken."""
        target = self._require(key_id)
        if target.state != "retired":
            raise KeyFileError(f"key {key_id} is {target.state}; retire it before removing it")
        return KeyRing(tuple(k for k in self.keys if k is not target))

    # --- file format ----------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The key ring file's content (contains secrets: write it 0600 only)."""
        lines = [
            RING_MAGIC,
            "# tokensvc key ring: SECRET, keep mode 0600 owned by root; copy to every node.",
            "# key_id state created secret",
        ]
        lines += [_key_line(k) for k in self.keys]
        return ("\n".join(lines) + "\n").encode("ascii")

    @classmethod
    def parse(cls, data: bytes, *, source: str = "<key ring>") -> KeyRing:
        """Parse a key ring file's content strictly. Errors name the line, never the secret."""
        if len(data) > MAX_RING_FILE_SIZE:
            raise KeyFileError(f"{source}: larger than {MAX_RING_FILE_SIZE} bytes")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFileError(f"{source}: not an ASCII text file") from None
        if not text.endswith("\n"):
            raise KeyFileError(f"{source}: truncated (no final newline)")
        lines = text[:-1].split("\n")
        if lines[0] != RING_MAGIC:
            raise KeyFileError(f"{source}: line 1: expected {RING_MAGIC!r}")
        keys: list[Key] = []
        for number, line in enumerate(lines[1:], start=2):
            if line == "" or line.startswith("#"):
                continue
            if len(keys) >= MAX_KEYS:
                raise KeyFileError(f"{source}: more than {MAX_KEYS} keys")
            keys.append(_parse_key_line(line, f"{source}: line {number}"))
        try:
            return cls(tuple(keys))
        except ValueError as err:
            raise KeyFileError(f"{source}: {err}") from None

    # --- I/O edge -------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        allow_insecure: bool = False,
        trusted_gid: int | None = None,
    ) -> KeyRing:
        """Read a key ring file after MUNGE-style checks of it and its parent directories.

        Raises InsecureKeyFile naming the path and the problem (unless
        ``allow_insecure``, which logs each problem as a loud WARNING) and
        KeyFileError when the file is missing or malformed. ``trusted_gid``
        (like munged's ``--trusted-group``) lets a file owned by that group be
        group-readable, never group-writable: how Kubernetes hands a non-root
        pod a Secret (``fsGroup`` makes the file 0440 root:fsGroup).
        """
        data, _ = keyfile.read_secure(
            os.fspath(path),
            max_size=MAX_RING_FILE_SIZE,
            allow_insecure=allow_insecure,
            trusted_gid=trusted_gid,
        )
        return cls.parse(data, source=os.fspath(path))


def _windowed(key: Key, not_before: int | None, not_after: int | None) -> Key:
    try:
        return replace(key, not_before=not_before, not_after=not_after)
    except ValueError as err:
        raise KeyFileError(f"key {key.key_id}: {err}") from None


def _key_line(key: Key) -> str:
    """One key's line; a key without a window is written exactly as before windows existed."""
    line = f"{key.key_id} {key.state} {key.created} {key.secret.hex()}"
    if key.not_before is not None:
        line += f" not-before={key.not_before}"
    if key.not_after is not None:
        line += f" not-after={key.not_after}"
    return line


def _parse_window(fields: list[str], where: str) -> dict[str, int]:
    """``not-before=T`` and/or ``not-after=T``, each at most once, in that order."""
    window: dict[str, int] = {}
    allowed = list(_WINDOW_FIELDS)
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or name not in allowed:
            raise KeyFileError(
                f"{where}: after the secret only 'not-before=T' then 'not-after=T' may follow"
            )
        if not _CREATED.fullmatch(value) or int(value) > MAX_KEY_TIME:
            raise KeyFileError(f"{where}: {name} must be a non-negative integer (unix seconds)")
        allowed = allowed[allowed.index(name) + 1 :]
        window[name.replace("-", "_")] = int(value)
    return window


def _parse_key_line(line: str, where: str) -> Key:
    fields = line.split(" ")
    if not 4 <= len(fields) <= 4 + len(_WINDOW_FIELDS) or "" in fields:
        raise KeyFileError(
            f"{where}: expected 'key_id state created secret [not-before=T] [not-after=T]'"
        )
    key_id, state, created, secret = fields[:4]
    if not _KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"{where}: key id must be 16 lowercase hex digits")
    if state not in KEY_STATES:
        raise KeyFileError(f"{where}: state must be one of {', '.join(KEY_STATES)}")
    if not _CREATED.fullmatch(created):
        raise KeyFileError(f"{where}: created must be a non-negative integer")
    if not _SECRET.fullmatch(secret):
        raise KeyFileError(f"{where}: secret must be 64 lowercase hex digits")
    window = _parse_window(fields[4:], where)
    try:
        return Key(key_id, bytes.fromhex(secret), state, int(created), **window)
    except ValueError as err:
        raise KeyFileError(f"{where}: {err}") from None


def generate_keyring(
    path: str | os.PathLike[str], *, now: float | None = None, allow_insecure: bool = False
) -> KeyRing:
    """Create a new key ring file with one fresh active key (`tokensvc keygen`).

    The file is created with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, so an
    existing file (or a planted symlink) is never overwritten; its directory
    must pass the same checks as when loading.
    """
    target = os.fspath(path)
    keyfile.refuse_or_warn(
        keyfile.parent_problems(target, os.geteuid()), allow_insecure=allow_insecure
    )
    ring = KeyRing((new_key("active", now=now),))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key ring {target} already exists; not overwriting it") from None
    except OSError as err:
        raise KeyFileError(f"cannot create key ring {target}: {err.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        durable.write_all(fd, ring.to_bytes())
    except OSError as err:
        os.close(fd)
        os.unlink(target)
        raise KeyFileError(f"cannot write key ring {target}: {err.strerror}") from None
    os.close(fd)
    durable.fsync_dir(os.path.dirname(os.path.abspath(target)))
    return ring


def update_keyring(
    path: str | os.PathLike[str],
    change: Callable[[KeyRing], KeyRing],
    *,
    allow_insecure: bool = False,
) -> KeyRing:
    """Load (with all checks), apply a pure ``change``, and replace the file atomically.

    The new content goes to a 0600 temporary file in the same directory,
    owned like the old file, fsync'ed, then renamed over it: readers see the
    old ring or the new one, never a mix. Writers on one node take turns (an
    flock on the directory). Admins change one node's ring and copy it to the
    others.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise KeyFileError(f"cannot open directory {directory}: {err.strerror}") from None
    try:
        # Serialise writers on this node: without the lock two concurrent
        # changes would both read the old ring and one would be lost.
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        return _update_locked(target, directory, change, allow_insecure=allow_insecure)
    finally:
        os.close(dir_fd)  # releases the lock


def _update_locked(
    target: str, directory: str, change: Callable[[KeyRing], KeyRing], *, allow_insecure: bool
) -> KeyRing:
    data, st = keyfile.read_secure(
        target, max_size=MAX_RING_FILE_SIZE, allow_insecure=allow_insecure
    )
    ring = change(KeyRing.parse(data, source=target))
    temp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, st.st_uid, st.st_gid)
            durable.write_all(fd, ring.to_bytes())
        finally:
            os.close(fd)
        os.rename(temp, target)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise KeyFileError(f"cannot replace key ring {target}: {err.strerror}") from None
    durable.fsync_dir(directory)
    return ring


def add_key(
    path: str | os.PathLike[str],
    *,
    now: float | None = None,
    not_before: int | None = None,
    not_after: int | None = None,
    allow_insecure: bool = False,
) -> Key:
    """Add a new *accepted* key (distribute it everywhere, then ``activate_key``),
    optionally with a validity window."""
    ring = update_keyring(
        path,
        lambda r: r.with_new_key("accepted", now=now, not_before=not_before, not_after=not_after),
        allow_insecure=allow_insecure,
    )
    return ring.keys[-1]


def set_key_window(
    path: str | os.PathLike[str],
    key_id: str,
    *,
    not_before: int | None,
    not_after: int | None,
    allow_insecure: bool = False,
) -> Key:
    """Replace the validity window of an existing key (None: that end open)."""
    ring = update_keyring(
        path,
        lambda r: r.with_window(key_id, not_before=not_before, not_after=not_after),
        allow_insecure=allow_insecure,
    )
    return ring._require(key_id)


def rotate_key(
    path: str | os.PathLike[str], *, now: float | None = None, allow_insecure: bool = False
) -> Key:
    """Add a new key and make it active at once; the old active key stays accepted."""
    ring = update_keyring(
        path, lambda r: r.with_new_key("active", now=now), allow_insecure=allow_insecure
    )
    return ring.active


def activate_key(path: str | os.PathLike[str], key_id: str, *, allow_insecure: bool = False) -> Key:
    """Make an existing accepted key the active one."""
    ring = update_keyring(path, lambda r: r.with_active(key_id), allow_insecure=allow_insecure)
    return ring.active


def retire_key(path: str | os.PathLike[str], key_id: str, *, allow_insecure: bool = False) -> Key:
    """Retire a non-active key; its tokens are then rejected with KeyRetired."""
    ring = update_keyring(path, lambda r: r.with_retired(key_id), allow_insecure=allow_insecure)
    return ring._require(key_id)


def remove_key(path: str | os.PathLike[str], key_id: str, *, allow_insecure: bool = False) -> Key:
    """Remove a retired key (and its secret) from the file for good."""
    removed: list[Key] = []

    def change(ring: KeyRing) -> KeyRing:
        removed.append(ring._require(key_id))
        return ring.without(key_id)

    update_keyring(path, change, allow_insecure=allow_insecure)
    return removed[0]


def list_keys(path: str | os.PathLike[str], *, allow_insecure: bool = False) -> list[KeyInfo]:
    """Id, state, creation time and window of every key in the file; never the secrets."""
    return [k.describe() for k in KeyRing.load(path, allow_insecure=allow_insecure).keys]


__all__ = [
    "KEY_ID_LEN",
    "KEY_LEN",
    "KEY_STATES",
    "MAX_KEYS",
    "MAX_RING_FILE_SIZE",
    "RING_MAGIC",
    "Key",
    "KeyInfo",
    "KeyRing",
    "KeyState",
    "activate_key",
    "add_key",
    "generate_keyring",
    "list_keys",
    "new_key",
    "remove_key",
    "retire_key",
    "rotate_key",
    "set_key_window",
    "update_keyring",
]
