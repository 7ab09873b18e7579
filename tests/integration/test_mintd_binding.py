"""The real daemon as root: request-bound tokens, and keys that mint only inside their window."""

from __future__ import annotations

import signal
import socket
import time

import pytest
from usernode import (
    REALM,
    A,
    C,
    Daemon,
    Tree,
    claims_of,
    raw_exchange,
    start_daemon,
    token_of,
)

from tokensvc.core.digest import request_digest
from tokensvc.core.errors import KeyExpired, MintRefused, WrongRequest
from tokensvc.core.keys import rotate_key, set_key_window
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.validate import TokenValidator, check_binding

pytestmark = pytest.mark.root

REQUEST = {"project": "p", "image": "i", "command": ["run"], "mounts": [], "resources": {}}
OTHER = {**REQUEST, "command": ["other"]}


def _answering(daemon: Daemon, timeout: float = 15) -> None:
    """Wait until the daemon answers at all (an expired key makes it answer ERR)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert daemon.alive(), daemon.log.read_text()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(daemon.socket))
                probe.sendall(b"MINT1\n")
                probe.settimeout(5)
                if probe.recv(4096):
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError("mintd did not answer")


def _refusals(daemon: Daemon, timeout: float = 10) -> list[str]:
    """Reasons of the daemon's ``refused`` lines, once at least one is flushed."""
    deadline = time.monotonic() + timeout
    while True:
        reasons = [str(e["reason"]) for e in daemon.log_lines() if e["event"] == "refused"]
        if reasons or time.monotonic() > deadline:
            return reasons
        time.sleep(0.02)


def test_a_bound_token_carries_the_digest_and_serves_only_that_request(
    mintd: Daemon, tree: Tree
) -> None:
    digest = request_digest(REQUEST)
    bound, unbound = raw_exchange(tree, C, [f"MINT2 120 {digest}\n".encode(), b"MINT1 120\n"])
    claims = claims_of(tree, token_of(bound))
    assert (claims.uid, claims.gid, claims.groups) == (C.uid, C.gid, C.groups)
    assert claims.binding == digest and claims.ttl == 120
    check_binding(claims, digest, unbound_allowed=False)
    with pytest.raises(WrongRequest):
        check_binding(claims, request_digest(OTHER), unbound_allowed=True)
    plain = claims_of(tree, token_of(unbound))
    assert plain.binding is None
    with pytest.raises(WrongRequest):
        check_binding(plain, digest, unbound_allowed=False)


def test_the_daemon_refuses_a_malformed_binding(mintd: Daemon, tree: Tree) -> None:
    digest = request_digest(REQUEST)
    replies = raw_exchange(
        tree, A, [f"MINT2 {digest.upper()}\n".encode(), f"MINT2 {digest} 30\n".encode()]
    )
    assert [r["reply"] for r in replies] == [
        "ERR malformed expected 'MINT1 [ttl]' or 'MINT2 [ttl] digest' and a newline\n"
    ] * 2
    assert mintd.alive()


def test_an_expired_key_neither_mints_nor_opens(fresh_tree: Tree) -> None:
    from tokensvc.usernode.client import mint  # noqa: PLC0415

    key_id = fresh_tree.ring().active.key_id
    not_after = int(time.time()) + 3
    set_key_window(fresh_tree.keyring, key_id, not_before=None, not_after=not_after)
    daemon = start_daemon(fresh_tree)
    try:
        token = mint(60, str(daemon.socket))  # inside the window
        while time.time() < not_after + 0.2:
            time.sleep(0.1)
        replies = raw_exchange(fresh_tree, A, [b"MINT1\n", b"MINT2 60 " + b"a" * 64 + b"\n"])
        assert [r["reply"] for r in replies] == [
            "ERR key no key may mint now; ask an administrator\n"
        ] * 2
        with pytest.raises(MintRefused, match=r"\(key\)") as info:
            mint(60, str(daemon.socket))
        assert info.value.exit_code == 6
        assert _refusals(daemon)[:1] == ["key-expired"]
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0
    # The token minted in time no longer opens once the key's window (and grace) is over.
    validator = TokenValidator(
        fresh_tree.ring(), realm=REALM, replay=MemoryReplayCache(), key_grace=0
    )
    with pytest.raises(KeyExpired) as rejected:
        validator.validate(token, now=time.time())
    assert rejected.value.exit_code == 17
    assert not any(e["event"] == "mint" and e["uid"] == A.uid for e in daemon.log_lines())


def test_sighup_moves_from_a_key_not_yet_valid_to_a_fresh_one(fresh_tree: Tree) -> None:
    from tokensvc.usernode.client import mint  # noqa: PLC0415

    old = fresh_tree.ring().active.key_id
    set_key_window(fresh_tree.keyring, old, not_before=int(time.time()) + 3600, not_after=None)
    daemon = start_daemon(fresh_tree, wait=False)
    try:
        _answering(daemon)
        with pytest.raises(MintRefused, match=r"\(key\)"):
            mint(60, str(daemon.socket))
        assert "key-not-yet-valid" in _refusals(daemon)
        new = rotate_key(fresh_tree.keyring).key_id
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any(e["event"] == "reloaded" for e in daemon.log_lines()):
            assert time.monotonic() < deadline, daemon.log.read_text()
            time.sleep(0.02)
        digest = request_digest(REQUEST)
        token = mint(60, str(daemon.socket), bind=digest)
        claims = claims_of(fresh_tree, token)
        assert claims.binding == digest
        validator = TokenValidator(fresh_tree.ring(), realm=REALM, replay=MemoryReplayCache())
        assert validator.validate(token, now=time.time(), request_digest=digest) == claims
        from tokensvc.core.token import open_token  # noqa: PLC0415

        assert open_token(token, fresh_tree.ring())[1].key_id == new
    finally:
        assert daemon.stop() == 0
