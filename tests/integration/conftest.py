"""Fixtures for user-node integration tests (mint daemon as root, clients as other uids).

Helpers live in ``usernode.py`` beside this file. These tests need root (to
run the daemon with a root-only key ring and to become other uids with
setpriv) and are skipped, with the reason, anywhere else; CI runs as root.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from support.opa import OpaHandle, start_opa
from usernode import (
    SETPRIV,
    Daemon,
    Tree,
    make_tree,
    other_user_python,
    remove_tree,
    start_daemon,
)


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaHandle]:
    """The real OPA, configured by deploy/opa, serving the signed bundle of policies/.

    One per test module (the server tests stop and restart it); test_opa_bundle
    defines its own per-test OPA under the same name.
    """
    handle = start_opa(tmp_path_factory.mktemp("opa"))
    yield handle
    handle.stop()


def _needs_root_reason() -> str:
    if sys.platform != "linux":
        return "SO_PEERCRED/SO_PEERGROUPS tests need Linux"
    if os.geteuid() != 0:
        return "needs root (daemon with a root-only key ring; other uids via setpriv)"
    if SETPRIV is None:
        return "needs setpriv (util-linux)"
    return ""


@pytest.fixture(scope="session")
def usernode_ready() -> None:
    reason = _needs_root_reason()
    if reason:
        pytest.skip(reason)
    if other_user_python() is None:
        pytest.fail("no Python interpreter is executable by uid 60001 (tried venv and system)")


@pytest.fixture(scope="module")
def tree(usernode_ready: None) -> Iterator[Tree]:
    t = make_tree()
    yield t
    remove_tree(t)


@pytest.fixture(scope="module")
def mintd(tree: Tree) -> Iterator[Daemon]:
    """One daemon shared by a module's tests (each test leaves it serving)."""
    daemon = start_daemon(tree)
    yield daemon
    assert daemon.stop() == 0, daemon.log.read_text()


@pytest.fixture
def fresh_tree(usernode_ready: None) -> Iterator[Tree]:
    t = make_tree()
    yield t
    remove_tree(t)
