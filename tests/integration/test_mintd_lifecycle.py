"""Start-up refusals, privilege drop, reload, audit lines and clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import stat
import time

import pytest
from usernode import (
    A,
    B,
    C,
    Tree,
    User,
    claims_of,
    daemon_env,
    other_user_python,
    raw_exchange,
    run_as,
    run_mintd_once,
    start_daemon,
    token_of,
    wait_ready,
)

from tokensvc.core.errors import DaemonUnavailable
from tokensvc.core.keys import rotate_key
from tokensvc.usernode.client import mint

pytestmark = pytest.mark.root

DAEMON_USER = User("mintd", 60010, 60010)


def _refusal(tree: Tree, *args: str) -> tuple[int, str]:
    done = run_mintd_once(tree, "--keyring", str(tree.keyring), *args)
    return done.returncode, done.stderr


# --- clean shutdown -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_removes_the_socket(fresh_tree: Tree, sig: int) -> None:
    daemon = start_daemon(fresh_tree)
    st = os.lstat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    # A parked, half-finished client must not hold up shutdown.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(daemon.socket))
        idle.sendall(b"MIN")
        started = time.monotonic()
        assert daemon.stop(sig) == 0, daemon.log.read_text()
        assert time.monotonic() - started < 5  # not held up by the 1 s client deadline
    assert not os.path.lexists(daemon.socket)
    events = [e["event"] for e in daemon.log_lines()]
    assert events[0] == "start" and events[-1] == "stop"
    with pytest.raises(DaemonUnavailable):
        mint(socket_path=str(daemon.socket))


# --- refusing to start ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (0o640, "is insecure: readable or writable by group (perms=0640)"),
        (0o604, "is insecure: readable or writable by others (perms=0604)"),
        (0o620, "is insecure: readable or writable by group (perms=0620)"),
    ],
)
def test_refuses_insecure_key_ring_mode(fresh_tree: Tree, mode: int, message: str) -> None:
    fresh_tree.keyring.chmod(mode)
    code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
    assert code == 4
    assert err == f"tokensvc: key ring {fresh_tree.keyring} {message}\n"
    assert not os.path.lexists(fresh_tree.socket)


def test_refuses_key_ring_owned_by_someone_else(fresh_tree: Tree) -> None:
    os.chown(fresh_tree.keyring, 60001, 60001)
    code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
    assert code == 4
    assert "owned by uid 60001" in err and err.startswith("tokensvc: key ring ")


def test_refuses_key_ring_in_writable_directory(fresh_tree: Tree) -> None:
    fresh_tree.keyring.parent.chmod(0o703)
    code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
    assert code == 4
    assert "writable by others without the sticky bit" in err


def test_refuses_symlinked_key_ring(fresh_tree: Tree) -> None:
    link = fresh_tree.keyring.parent / "link"
    link.symlink_to(fresh_tree.keyring)
    done = run_mintd_once(fresh_tree, "--keyring", str(link), "--socket", str(fresh_tree.socket))
    assert done.returncode == 4
    assert "is a symlink" in done.stderr


def test_missing_key_ring(fresh_tree: Tree) -> None:
    fresh_tree.keyring.unlink()
    code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
    assert code == 3
    assert err == f"tokensvc: key ring {fresh_tree.keyring} does not exist\n"


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
def test_refuses_writable_socket_directory(fresh_tree: Tree, mode: int) -> None:
    run = fresh_tree.socket.parent
    run.chmod(mode)
    code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
    assert code == 3
    assert err == (
        f"tokensvc: socket directory {run} is insecure: writable by group or others "
        f"(perms={mode:04o})\n"
    )
    assert not os.path.lexists(fresh_tree.socket)


def test_refuses_socket_directory_owned_by_someone_else(fresh_tree: Tree) -> None:
    run = fresh_tree.socket.parent
    os.chown(run, 60001, 60001)
    code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
    assert code == 3
    assert err == (
        f"tokensvc: socket directory {run} is insecure: owned by uid 60001, must be owned by root\n"
    )


def test_refuses_symlinked_socket_directory(fresh_tree: Tree) -> None:
    link = fresh_tree.base / "runlink"
    link.symlink_to(fresh_tree.socket.parent)
    code, err = _refusal(fresh_tree, "--socket", str(link / "mint.sock"))
    assert code == 3
    assert "is insecure: it is a symlink" in err


def test_refuses_parent_writable_without_sticky_bit(fresh_tree: Tree) -> None:
    outer = fresh_tree.base / "outer"
    outer.mkdir(mode=0o755)
    outer.chmod(0o777)
    inner = outer / "run"
    inner.mkdir(mode=0o755)
    code, err = _refusal(fresh_tree, "--socket", str(inner / "mint.sock"))
    assert code == 3
    assert f"directory {outer} (holding the socket) is insecure" in err


def test_creates_a_missing_socket_directory_safely(fresh_tree: Tree) -> None:
    run = fresh_tree.base / "newrun"
    daemon = start_daemon(fresh_tree, socket_path=run / "mint.sock")
    try:
        st = os.lstat(run)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755
    finally:
        assert daemon.stop() == 0


def test_refuses_to_replace_a_non_socket(fresh_tree: Tree) -> None:
    fresh_tree.socket.write_text("precious")
    code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
    assert code == 3
    assert err == f"tokensvc: {fresh_tree.socket} exists and is not a socket; not replacing it\n"
    assert fresh_tree.socket.read_text() == "precious"


def test_refuses_a_second_daemon_but_replaces_a_stale_socket(fresh_tree: Tree) -> None:
    first = start_daemon(fresh_tree)
    try:
        code, err = _refusal(fresh_tree, "--socket", str(fresh_tree.socket))
        assert code == 3
        assert err == f"tokensvc: another mint daemon is already listening on {fresh_tree.socket}\n"
        assert first.alive()
        mint(socket_path=str(fresh_tree.socket))
    finally:
        first.stop(signal.SIGKILL)  # leaves a stale socket behind
    assert os.path.lexists(fresh_tree.socket)
    second = start_daemon(fresh_tree)
    assert second.stop() == 0


def test_invalid_settings_refuse_to_start(fresh_tree: Tree) -> None:
    env = daemon_env(fresh_tree, TOKENSVC_MINTD_TIMEOUT="soon")
    proc = start_daemon(fresh_tree, env=env, wait=False)
    assert proc.proc.wait(timeout=15) == 3
    assert proc.log.read_text() == (
        "tokensvc: environment TOKENSVC_MINTD_TIMEOUT: expected a number, got 'soon'\n"
    )


# --- privileges -------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def test_drops_privileges_after_loading_the_key(fresh_tree: Tree) -> None:
    daemon = start_daemon(fresh_tree, "--user", str(DAEMON_USER.uid))
    try:
        status = _status(daemon.proc.pid)
        assert status["Uid"].split() == ["60010"] * 4
        assert status["Gid"].split() == ["60010"] * 4
        assert status["Groups"].strip() == ""
        assert status["CapEff"] == "0000000000000000"
        # Still mints correct tokens with the key it loaded as root...
        (reply,) = raw_exchange(fresh_tree, C, [b"MINT1\n"])
        claims = claims_of(fresh_tree, token_of(reply))
        assert (claims.uid, claims.gid, claims.groups) == (C.uid, C.gid, C.groups)
        # ...but its own uid can read neither the key file nor the daemon's memory
        # (the kernel made the process non-dumpable when it changed uid).
        py = other_user_python()
        assert py is not None
        probe = str(fresh_tree.base / "probe_read.py")
        for path in (str(fresh_tree.keyring), f"/proc/{daemon.proc.pid}/environ"):
            done = run_as(DAEMON_USER, [py, "-I", probe, path])
            assert done.stdout.strip() == "EACCES", (path, done.stdout, done.stderr)
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()
    # The socket's root-owned directory is not writable by 60010, so the socket
    # stays (systemd's RuntimeDirectory removes it); a new start replaces it.
    assert os.path.lexists(daemon.socket)
    again = start_daemon(fresh_tree)
    assert again.stop() == 0
    assert not os.path.lexists(daemon.socket)


def test_unknown_user_refuses_to_start(fresh_tree: Tree) -> None:
    code, err = _refusal(
        fresh_tree, "--socket", str(fresh_tree.socket), "--user", "no-such-user-xyz"
    )
    assert code == 3
    assert err == "tokensvc: unknown user 'no-such-user-xyz' (mintd --user)\n"


# --- reload and audit ---------------------------------------------------------------------------


def test_sighup_reloads_the_key_ring(fresh_tree: Tree) -> None:
    daemon = start_daemon(fresh_tree)
    try:
        old = fresh_tree.ring().active.key_id
        before = mint(socket_path=str(daemon.socket))
        new = rotate_key(fresh_tree.keyring).key_id
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any(e["event"] == "reloaded" for e in daemon.log_lines()):
            assert time.monotonic() < deadline, daemon.log.read_text()
            time.sleep(0.02)
        after = mint(socket_path=str(daemon.socket))
        ring = fresh_tree.ring()
        from tokensvc.core.token import open_token  # noqa: PLC0415

        assert open_token(before, ring)[1].key_id == old
        assert open_token(after, ring)[1].key_id == new
    finally:
        assert daemon.stop() == 0


def test_one_audit_line_per_mint_without_secrets(fresh_tree: Tree) -> None:
    daemon = start_daemon(fresh_tree)
    try:
        replies = raw_exchange(fresh_tree, C, [b"MINT1 77\n", b"MINT1 abc\n"])
        token = token_of(replies[0])
        claims = claims_of(fresh_tree, token)
        wait_ready(daemon)  # one more mint (root) so the log is flushed past C's
    finally:
        assert daemon.stop() == 0
    text = daemon.log.read_text()
    assert token not in text
    assert fresh_tree.ring().active.secret.hex() not in text
    mints = [e for e in daemon.log_lines() if e["event"] == "mint" and e["uid"] == C.uid]
    assert mints == [
        {
            "ts": mints[0]["ts"],
            "event": "mint",
            "uid": C.uid,
            "gid": C.gid,
            "groups": list(C.groups),
            "user": "",
            "token_id": claims.token_id,
            "ttl": 77,
            "expires_at": claims.expires_at,
            "bound": False,
            "key_id": fresh_tree.ring().active.key_id,
        }
    ]
    refused = [e for e in daemon.log_lines() if e["event"] == "refused"]
    assert [(e["uid"], e["reason"]) for e in refused] == [(C.uid, "malformed")]


# --- several worker processes ---------------------------------------------------------------


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return {int(p) for p in fh.read().split()}


def _wait_for(predicate: object, timeout: float = 10) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_workers_share_the_socket_and_stop_together(fresh_tree: Tree) -> None:
    env = daemon_env(fresh_tree, TOKENSVC_MINTD_WORKERS="3")
    daemon = start_daemon(fresh_tree, env=env)
    try:
        workers = _children(daemon.proc.pid)
        assert len(workers) == 3
        for user in (A, B, C):
            for reply in raw_exchange(fresh_tree, user, [b"MINT1\n"] * 20):
                claims = claims_of(fresh_tree, token_of(reply))
                assert (claims.uid, claims.gid, claims.groups) == (user.uid, user.gid, user.groups)
        # A crashed worker is replaced; the others keep serving meanwhile.
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(_children(daemon.proc.pid) - {victim}) == 3)
        mint(socket_path=str(daemon.socket))
        # SIGHUP reaches every worker.
        daemon.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: sum(e["event"] == "reloaded" for e in daemon.log_lines()) == 3)
        current = _children(daemon.proc.pid)
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()
    assert not os.path.lexists(daemon.socket)
    for pid in current:
        assert not os.path.exists(f"/proc/{pid}"), "worker left behind"
    events = daemon.log_lines()
    stops = [e for e in events if e["event"] == "stop"]
    assert {e["pid"] for e in stops} == current
    errors = [(e["where"], e["pid"], e["exit"]) for e in events if e["event"] == "error"]
    assert errors == [("worker", victim, -9)]
    mints = [e for e in events if e["event"] == "mint"]
    assert len(mints) >= 60
