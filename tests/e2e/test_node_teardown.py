"""A cluster leaves nothing behind: no process, mount, bridge, cgroup, log link,
iptables rule, changed sysctl or file, even when torn down with a job running.

Starts a cluster of its own (not the session one) so it can look at the host
after that cluster is gone.
"""

from __future__ import annotations

import time

import pytest
from conftest import needs_root_reason
from jobpods import launcher_pod
from realnode import leftovers, running_cluster

pytestmark = pytest.mark.root


def test_teardown_with_a_running_job_leaves_nothing() -> None:
    reason = needs_root_reason()
    if reason:
        pytest.skip(reason)
    with running_cluster() as c:
        core = c.core()
        pod = launcher_pod(20001, 20001, (30001,), "echo started; sleep 3600")
        core.create_namespaced_pod(c.api.jobs_namespace, pod)
        name = pod["metadata"]["name"]
        deadline = time.monotonic() + 120
        while core.read_namespaced_pod(name, c.api.jobs_namespace).status.phase != "Running":
            assert time.monotonic() < deadline, "job never ran"
            time.sleep(0.25)
        during = leftovers(c)
        # The check sees a live cluster's traces, so an empty list after means something.
        assert any(x.startswith("mount ") for x in during), during
        assert any(x.startswith("process ") for x in during), during
    assert leftovers(c) == []
