"""A cluster leaves nothing behind: no process, mount, bridge, cgroup, log link,
iptables rule, changed sysctl or file, even when torn down with a job running;
and what a killed run left, the next run sweeps.

Each test starts a cluster of its own (not the session one) so it can look
at the host after that cluster is gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_root_reason
from jobpods import launcher_pod
from realnode import Cluster, alive, leftovers, pids_mentioning, running_cluster, sweep_stale

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


# Started in a child interpreter that is then killed: no fixture teardown runs.
_KILLED_CHILD = """
import sys
sys.path[:0] = sys.argv[1:]
from realnode import running_cluster
with running_cluster() as c:
    print(c.root, flush=True)
    sys.stdin.read()
"""


def test_a_killed_run_is_swept_by_the_next(tmp_path: Path) -> None:
    reason = needs_root_reason()
    if reason:
        pytest.skip(reason)
    here = Path(__file__).resolve().parent
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(here.parent), str(here)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        root = Path(child.stdout.readline().strip())
        assert root.name.startswith("tokensvc-e2e-"), root
        record = json.loads((root / "cluster.json").read_text())
        components = pids_mentioning(str(root))
        child.kill()
    # Its components die with it (parent-death signal); wait for the last.
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in components):
        assert time.monotonic() < deadline, pids_mentioning(str(root))
        time.sleep(0.25)
    stale = Cluster(
        api=None,  # type: ignore[arg-type]
        root=root,
        bridge=record["bridge"],
        bridge_ip=record["bridge_ip"],
        cgroup_name=record["cgroup_name"],
        network=record["network"],
        containerd_socket=root / "containerd" / "containerd.sock",
    )
    assert leftovers(stale), "a killed cluster should leave traces to sweep"
    assert root in sweep_stale()
    assert leftovers(stale) == []
    for path, existed in record["host_dirs_existed"].items():
        assert existed or not Path(path).exists(), path
