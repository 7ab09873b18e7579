"""Fixtures for the end-to-end tests: one real node for the whole session (realnode.py).

These tests need root (cgroups, mounts, a bridge, other uids' files); they
are skipped, with the reason, anywhere else. CI runs as root.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from realnode import Cluster, leftovers, running_cluster


def needs_root_reason() -> str:
    if sys.platform != "linux":
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "needs root (a real node: cgroups, mounts, a bridge, other uids' files)"
    return ""


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A Ready single-node cluster (node untainted, jobs namespace with its
    default ServiceAccount, job images imported); removed at the end, and
    the removal checked."""
    reason = needs_root_reason()
    if reason:
        pytest.skip(reason)
    with running_cluster() as c:
        yield c
    # The teardown is checked here too, after every test has used the node.
    left = leftovers(c)
    assert not left, left
