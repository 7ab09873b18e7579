"""Key ring: file format, MUNGE-style permission checks (real files), rotation."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokensvc.core.errors import InsecureKeyFile, KeyFileError
from tokensvc.core.keys import (
    MAX_KEYS,
    MAX_RING_FILE_SIZE,
    RING_MAGIC,
    Key,
    KeyRing,
    activate_key,
    add_key,
    generate_keyring,
    list_keys,
    new_key,
    remove_key,
    retire_key,
    rotate_key,
    set_key_window,
    update_keyring,
)

OTHER_UID = 12345
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to other uids)")


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    path = tmp_path / "keyring"
    generate_keyring(path)
    return path


def insecure(path: Path, match: str) -> None:
    with pytest.raises(InsecureKeyFile, match=match) as info:
        KeyRing.load(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 4


# --- generating -------------------------------------------------------------------


def test_generate_writes_a_0600_ring_with_one_active_key(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    ring = generate_keyring(path, now=1000)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.geteuid()
    assert path.read_bytes().startswith(RING_MAGIC.encode() + b"\n")
    loaded = KeyRing.load(path)
    assert [k.describe() for k in loaded.keys] == [
        {
            "key_id": ring.active.key_id,
            "state": "active",
            "created": 1000,
            "not_before": None,
            "not_after": None,
        }
    ]
    assert loaded.active.secret == ring.active.secret
    assert len(loaded.active.secret) == 32


def test_generate_ignores_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        generate_keyring(tmp_path / "keyring")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "keyring").stat().st_mode) == 0o600


def test_generate_never_overwrites(ring_path: Path) -> None:
    before = ring_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keyring(ring_path)
    assert ring_path.read_bytes() == before


def test_generate_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (tmp_path / "keyring").symlink_to(victim)
    with pytest.raises(KeyFileError):
        generate_keyring(tmp_path / "keyring")
    assert not victim.exists()


def test_generate_refuses_an_insecure_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(InsecureKeyFile, match="writable by group"):
        generate_keyring(shared / "keyring")
    assert not (shared / "keyring").exists()


def test_keys_are_random(tmp_path: Path) -> None:
    a = generate_keyring(tmp_path / "a").active
    b = generate_keyring(tmp_path / "b").active
    assert a.key_id != b.key_id
    assert a.secret != b.secret


# --- loading: one test per insecure-file check ------------------------------------


def test_secure_ring_loads(ring_path: Path) -> None:
    assert KeyRing.load(ring_path).active.state == "active"
    assert KeyRing.load(str(ring_path)).active.state == "active"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as info:
        KeyRing.load(tmp_path / "nope")
    assert type(info.value) is KeyFileError
    assert info.value.exit_code == 3


def test_file_is_a_symlink(ring_path: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(ring_path)
    insecure(link, "is a symlink")


def test_file_is_not_regular(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    insecure(tmp_path / "dir", "not a regular file")


def test_file_is_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    insecure(fifo, "not a regular file")  # and does not hang waiting for a writer


@needs_root
def test_file_owned_by_another_user(ring_path: Path) -> None:
    os.chown(ring_path, OTHER_UID, -1)
    insecure(ring_path, f"insecure: owned by uid {OTHER_UID}, must be owned by root")


@pytest.mark.parametrize(
    ("mode", "who"),
    [(0o640, "group"), (0o620, "group"), (0o604, "others"), (0o602, "others")],
)
def test_file_readable_or_writable_by_group_or_others(ring_path: Path, mode: int, who: str) -> None:
    ring_path.chmod(mode)
    insecure(ring_path, rf"readable or writable by {who} \(perms={mode:04o}\)")


@needs_root
def test_trusted_group_may_read_but_not_write(ring_path: Path) -> None:
    # Kubernetes hands a non-root pod its Secret as 0440 root:fsGroup.
    os.chown(ring_path, 0, OTHER_UID)
    ring_path.chmod(0o440)
    assert KeyRing.load(ring_path, trusted_gid=OTHER_UID).active.state == "active"
    insecure(ring_path, r"readable or writable by group \(perms=0440\)")  # not trusted: refused
    with pytest.raises(InsecureKeyFile, match="by group"):
        KeyRing.load(ring_path, trusted_gid=OTHER_UID + 1)  # another group is not trusted
    ring_path.chmod(0o460)
    with pytest.raises(InsecureKeyFile, match=r"by group \(perms=0460\)"):
        KeyRing.load(ring_path, trusted_gid=OTHER_UID)  # never group-writable


def test_parent_is_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    generate_keyring(real / "keyring")
    (tmp_path / "link").symlink_to(real)
    insecure(tmp_path / "link" / "keyring", f"directory {tmp_path / 'link'} .* is a symlink")


@needs_root
def test_parent_owned_by_another_user(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    generate_keyring(directory / "keyring")
    os.chown(directory, OTHER_UID, -1)
    insecure(directory / "keyring", f"directory {directory} .* owned by uid {OTHER_UID}")


@pytest.mark.parametrize(("mode", "who"), [(0o770, "group"), (0o707, "others")])
def test_parent_writable_without_sticky_bit(tmp_path: Path, mode: int, who: str) -> None:
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    generate_keyring(directory / "keyring")
    directory.chmod(mode)
    insecure(
        directory / "keyring",
        rf"directory {directory} .* writable by {who} without the sticky bit \(perms={mode:04o}\)",
    )


def test_grandparent_is_checked_too(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True, mode=0o700)
    generate_keyring(deep / "keyring")
    (tmp_path / "a").chmod(0o777)
    insecure(deep / "keyring", f"directory {tmp_path / 'a'} ")


def test_sticky_world_writable_parent_is_fine(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    generate_keyring(directory / "keyring")
    directory.chmod(0o1777)  # like /tmp
    assert KeyRing.load(directory / "keyring")


def test_override_loads_and_warns_loudly(
    ring_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ring_path.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(ring_path)
    with caplog.at_level(logging.WARNING, logger="tokensvc.core.keys"):
        ring = KeyRing.load(link, allow_insecure=True)
    assert ring.active
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("INSECURE" in m and "symlink" in m for m in messages)
    assert any("INSECURE" in m and "perms=0644" in m for m in messages)
    assert not any(ring.active.secret.hex() in m for m in messages)


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory other uids can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tokensvc-keys-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _load_as(uid: int, path: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from tokensvc.core.keys import KeyRing; KeyRing.load(sys.argv[1]); print('ok')"
    )
    return subprocess.run(
        [
            *("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"),
            *(sys.executable, "-c", code, str(path)),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )


@needs_root
def test_ring_owned_by_the_loading_user_is_accepted(public_tmp: Path) -> None:
    """A daemon running as its own user may own its ring and directory."""
    home = public_tmp / "svc"
    home.mkdir(mode=0o700)
    generate_keyring(home / "keyring")
    os.chown(home, OTHER_UID, OTHER_UID)
    os.chown(home / "keyring", OTHER_UID, OTHER_UID)
    result = _load_as(OTHER_UID, home / "keyring")
    assert result.stdout.strip() == "ok", result.stderr


@needs_root
def test_ring_of_another_non_root_user_is_refused(public_tmp: Path) -> None:
    home = public_tmp / "svc"
    home.mkdir(mode=0o755)
    generate_keyring(home / "keyring")
    (home / "keyring").chmod(0o644)  # readable, so the owner check is what refuses it
    os.chown(home / "keyring", OTHER_UID + 1, OTHER_UID + 1)
    result = _load_as(OTHER_UID, home / "keyring")
    assert result.returncode != 0
    assert f"owned by uid {OTHER_UID + 1}, must be owned by root or uid {OTHER_UID}" in (
        result.stderr
    )


# --- parsing -------------------------------------------------------------------------

GOOD = RING_MAGIC + "\n" + "a1a1a1a1a1a1a1a1 active 1 " + "11" * 32 + "\n"


def test_parse_good_and_round_trip() -> None:
    ring = KeyRing.parse(GOOD.encode())
    assert ring.active.key_id == "a1a1a1a1a1a1a1a1"
    assert ring.active.secret == b"\x11" * 32
    assert KeyRing.parse(ring.to_bytes()).active.secret == ring.active.secret


def test_comments_and_blank_lines_are_allowed() -> None:
    text = GOOD.replace("\n", "\n# note\n\n", 1)
    assert KeyRing.parse(text.encode()).active


SECRET_LINE = "a1a1a1a1a1a1a1a1 active 1 " + "11" * 32


def _line(tail: str) -> str:
    """A one-key ring whose key line ends with ``tail``."""
    return RING_MAGIC + "\n" + SECRET_LINE + tail + "\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no final newline"),
        (GOOD[:-1], "no final newline"),
        ("tokensvc-keyring 2\n" + SECRET_LINE + "\n", "line 1"),
        (RING_MAGIC + "\n", "1..64 keys"),
        (GOOD.replace(" active ", " primary "), "line 2: state"),
        (GOOD.replace(" active ", "  active "), "line 2: expected"),
        (GOOD.replace("a1a1a1a1a1a1a1a1", "A1A1A1A1A1A1A1A1"), "line 2: key id"),
        (GOOD.replace("a1a1a1a1a1a1a1a1", "a1a1"), "line 2: key id"),
        (GOOD.replace(" 1 ", " -1 "), "line 2: created"),
        (GOOD.replace(" 1 ", " 01 "), "line 2: created"),
        (GOOD.replace("11" * 32, "11" * 31), "line 2: secret"),
        (GOOD.replace("11" * 32, "1G" * 32), "line 2: secret"),
        (GOOD.replace("\n", "\r\n"), "line 1"),
        (GOOD + SECRET_LINE.replace(" active ", " accepted ") + "\n", "unique"),
        (GOOD + SECRET_LINE.replace("a1a1", "b2b2") + "\n", "exactly one active"),
        (GOOD.replace("active", "accepted"), "exactly one active"),
        (GOOD + "é\n", "ASCII"),
        (_line(" "), "line 2: expected"),
        (_line(" not-after="), "line 2: not-after must be"),
        (_line(" not-after=01"), "line 2: not-after must be"),
        (_line(" not-after=-5"), "line 2: not-after must be"),
        (_line(f" not-after={2**63}"), "line 2: not-after must be"),
        (_line(" not-after=9 not-before=1"), "line 2: after the secret"),
        (_line(" not-after=9 not-after=10"), "line 2: after the secret"),
        (_line(" not-before=9 not-before=9"), "line 2: after the secret"),
        (_line(" expires=9"), "line 2: after the secret"),
        (_line(" not-after 9"), "line 2: after the secret"),
        (_line(" not-before=9 not-after=9"), "line 2: not_after must be later"),
        (_line(" not-before=1 not-after=2 x"), "line 2: expected"),
    ],
)
def test_parse_errors_name_the_problem_not_the_secret(text: str, match: str) -> None:
    with pytest.raises(KeyFileError, match=match) as info:
        KeyRing.parse(text.encode("utf-8"), source="/etc/tokensvc/keyring")
    assert "/etc/tokensvc/keyring" in str(info.value)
    assert "1111" not in str(info.value)
    assert type(info.value) is KeyFileError


def test_parse_is_bounded() -> None:
    lines = [f"{i:016x} {'active' if i == 0 else 'accepted'} 0 {'22' * 32}" for i in range(65)]
    with pytest.raises(KeyFileError, match=f"more than {MAX_KEYS} keys"):
        KeyRing.parse((RING_MAGIC + "\n" + "\n".join(lines) + "\n").encode())
    with pytest.raises(KeyFileError, match="larger than"):
        KeyRing.parse(GOOD.encode() + b"#" * MAX_RING_FILE_SIZE + b"\n")


def test_oversized_file_is_refused(ring_path: Path) -> None:
    with ring_path.open("ab") as f:
        f.write(b"#" * MAX_RING_FILE_SIZE + b"\n")
    with pytest.raises(KeyFileError, match="larger than"):
        KeyRing.load(ring_path)


def test_secrets_never_in_repr_or_listing(ring_path: Path) -> None:
    ring = KeyRing.load(ring_path)
    secret = ring.active.secret.hex()
    assert secret not in repr(ring)
    assert secret not in repr(ring.active)
    assert secret not in str(list_keys(ring_path))
    assert list_keys(ring_path) == [ring.active.describe()]


def test_key_validation() -> None:
    with pytest.raises(ValueError):
        Key("a1a1", b"\x00" * 32, "active")
    with pytest.raises(ValueError):
        Key("a1a1a1a1a1a1a1a1", b"\x00" * 16, "active")
    with pytest.raises(ValueError):
        Key("a1a1a1a1a1a1a1a1", b"\x00" * 32, "primary")  # type: ignore[arg-type]
    assert Key("a1a1a1a1a1a1a1a1", b"\x00" * 32, "active").key_id_bytes == b"\xa1" * 8


def test_find() -> None:
    ring = KeyRing((new_key("active"), new_key("accepted")))
    for key in ring.keys:
        assert ring.find(key.key_id) is key
        assert ring.find_raw(key.key_id_bytes) is key
    assert ring.find("0" * 16) is None
    assert ring.find("é") is None
    assert ring.find_raw(b"\x00" * 8) is None
    assert ring.find_raw(b"") is None


# --- changing a ring ---------------------------------------------------------------


def test_rotate(ring_path: Path) -> None:
    first = KeyRing.load(ring_path).active
    second = rotate_key(ring_path)
    ring = KeyRing.load(ring_path)
    assert ring.active.key_id == second.key_id != first.key_id
    old = ring.find(first.key_id)
    assert old is not None and old.state == "accepted" and old.secret == first.secret
    assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600


def test_add_then_activate(ring_path: Path) -> None:
    first = KeyRing.load(ring_path).active
    added = add_key(ring_path)
    assert added.state == "accepted"
    assert KeyRing.load(ring_path).active.key_id == first.key_id  # not yet
    assert activate_key(ring_path, added.key_id).key_id == added.key_id
    states = {k.key_id: k.state for k in KeyRing.load(ring_path).keys}
    assert states == {first.key_id: "accepted", added.key_id: "active"}


def test_retire_and_remove(ring_path: Path) -> None:
    first = KeyRing.load(ring_path).active
    with pytest.raises(KeyFileError, match="active key; rotate"):
        retire_key(ring_path, first.key_id)
    with pytest.raises(KeyFileError, match="retire it before removing"):
        remove_key(ring_path, first.key_id)
    rotate_key(ring_path)
    assert retire_key(ring_path, first.key_id).state == "retired"
    with pytest.raises(KeyFileError, match="retired and cannot be made active"):
        activate_key(ring_path, first.key_id)
    assert remove_key(ring_path, first.key_id).key_id == first.key_id
    assert KeyRing.load(ring_path).find(first.key_id) is None


def test_unknown_key_id_is_a_key_file_error(ring_path: Path) -> None:
    for action in (activate_key, retire_key, remove_key):
        with pytest.raises(KeyFileError, match="no key with id"):
            action(ring_path, "0" * 16)


def test_ring_size_is_bounded() -> None:
    ring = KeyRing((new_key("active"),))
    for _ in range(MAX_KEYS - 1):
        ring = ring.with_new_key()
    with pytest.raises(KeyFileError, match="already holds"):
        ring.with_new_key()


@needs_root
def test_update_keeps_owner_group_and_mode(ring_path: Path) -> None:
    os.chown(ring_path, 0, OTHER_UID)
    rotate_key(ring_path)
    st = ring_path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, OTHER_UID, 0o600)


def test_update_is_atomic_and_leaves_no_temp_files(ring_path: Path) -> None:
    inode = ring_path.stat().st_ino
    rotate_key(ring_path)
    assert ring_path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in ring_path.parent.iterdir()) == ["keyring"]


def test_failed_change_leaves_the_ring_untouched(ring_path: Path) -> None:
    before = ring_path.read_bytes()

    def broken(ring: KeyRing) -> KeyRing:
        raise KeyFileError("nope")

    with pytest.raises(KeyFileError, match="nope"):
        update_keyring(ring_path, broken)
    assert ring_path.read_bytes() == before
    assert sorted(p.name for p in ring_path.parent.iterdir()) == ["keyring"]


def test_update_rechecks_permissions(ring_path: Path) -> None:
    ring_path.chmod(0o644)
    before = ring_path.read_bytes()
    with pytest.raises(InsecureKeyFile, match="perms=0644"):
        rotate_key(ring_path)
    assert ring_path.read_bytes() == before


def test_concurrent_changes_are_not_lost(ring_path: Path) -> None:
    added: list[str] = []
    lock = threading.Lock()

    def add() -> None:
        key = add_key(ring_path)
        with lock:
            added.append(key.key_id)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {k.key_id for k in KeyRing.load(ring_path).keys}
    assert len(ids) == 9
    assert set(added) <= ids


# --- validity windows ---------------------------------------------------------------


def test_window_round_trips_and_a_key_without_one_is_written_as_before() -> None:
    windowed = _line(" not-before=100 not-after=200")
    ring = KeyRing.parse(windowed.encode())
    assert (ring.active.not_before, ring.active.not_after) == (100, 200)
    assert ring.to_bytes().decode().endswith(SECRET_LINE + " not-before=100 not-after=200\n")
    for tail, window in ((" not-before=100", (100, None)), (" not-after=200", (None, 200))):
        key = KeyRing.parse(_line(tail).encode()).active
        assert (key.not_before, key.not_after) == window
        assert KeyRing((key,)).to_bytes().decode().endswith(SECRET_LINE + tail + "\n")
    plain = KeyRing.parse(GOOD.encode())
    assert plain.to_bytes().decode().endswith(SECRET_LINE + "\n")


def test_in_window_is_half_open_and_widened_by_the_grace() -> None:
    key = Key("a1a1a1a1a1a1a1a1", bytes(32), "active", 0, not_before=100, not_after=200)
    assert [key.in_window(t) for t in (99, 100, 199, 200)] == [False, True, True, False]
    assert key.in_window(90, grace=10) and not key.in_window(89, grace=10)
    assert key.in_window(209, grace=10) and not key.in_window(210, grace=10)
    assert Key("a1a1a1a1a1a1a1a1", bytes(32), "active").in_window(0)


def test_only_an_active_key_inside_its_window_mints() -> None:
    active = Key("a1a1a1a1a1a1a1a1", bytes(32), "active", 0, not_before=100, not_after=200)
    accepted = Key("b2b2b2b2b2b2b2b2", bytes(32), "accepted", 0)  # no window: never mints
    ring = KeyRing((active, accepted))
    assert ring.minting_key(150) is active
    assert ring.minting_key(99) is None
    assert ring.minting_key(200) is None


@pytest.mark.parametrize(
    ("not_before", "not_after"), [(200, 100), (100, 100), (-1, None), (None, True)]
)
def test_invalid_windows_are_refused(not_before: object, not_after: object) -> None:
    with pytest.raises(ValueError):
        Key("a1a1a1a1a1a1a1a1", bytes(32), "active", 0, not_before, not_after)  # type: ignore[arg-type]


def test_add_and_set_a_window(ring_path: Path) -> None:
    key = add_key(ring_path, not_before=1000, not_after=2000)
    assert (key.not_before, key.not_after) == (1000, 2000)
    listed = {k["key_id"]: k for k in list_keys(ring_path)}
    assert (listed[key.key_id]["not_before"], listed[key.key_id]["not_after"]) == (1000, 2000)
    active = KeyRing.load(ring_path).active.key_id
    changed = set_key_window(ring_path, active, not_before=None, not_after=5000)
    assert (changed.not_before, changed.not_after) == (None, 5000)
    assert KeyRing.load(ring_path).active.not_after == 5000
    with pytest.raises(KeyFileError, match="later than"):
        add_key(ring_path, not_before=2000, not_after=1000)
    assert len(KeyRing.load(ring_path).keys) == 2  # the refused change wrote nothing
