"""From submit to a running container: `tokensvc submit` beside creating the same pod directly.

Starts the real single-node cluster of the end-to-end tests
(tests/e2e/realnode.py), deploys tokensvc on it as an operator would
(tests/e2e/deployed.py: two replicas, OPA sidecars, the signed bundle), and
then takes turns, ``--rounds`` times each, so every side sees the same noise:

- **tokensvc**: user A (a real uid, through setpriv) runs `tokensvc submit`
  as a whole process: CLI start-up, a token bound to the request from the
  mint daemon, the server's token check, OPA decision, consumed-token record,
  held pod, admission, gate removal.
- **warm client**: the same command line through the CLI's own entry point
  in one long-lived process of user A's: what tokensvc itself adds, without
  the interpreter's start and the imports.
- **direct**: a pod tokensvc created, under a new name and without the
  scheduling gate, created by the admin through the API server.

Each time runs from just before the command (or the create) to the moment the
job's command began, as the job itself prints it from /proc/uptime (the host
reads the same clock, CLOCK_BOOTTIME); the pod's "running" status would
round every time up to the kubelet's next look at the runtime, about a
second. The sides take turns going first, and every pod is deleted, and
gone, before the next one starts. Memory: resident set of every process of
the cluster (components, shims) and the pods' cgroup, after the rounds. Must
run as root (the node; other uids).

    .venv/bin/python bench/bench_e2e.py --rounds 20 --record build/bench-e2e.md
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

import kubernetes.watch  # noqa: E402
from deployed import Deployed, deployed  # noqa: E402
from integration.usernode import User, cli_as, cli_env  # noqa: E402
from jobpods import delete_pod  # noqa: E402
from realnode import IMAGE_USER_UID, IMAGES, Cluster, cgroup_hierarchies, running_cluster  # noqa: E402

from tokensvc.cluster.launcher import LABEL_MANAGED_BY  # noqa: E402

A = User("A", IMAGE_USER_UID, 2001, (2001,))  # ml-team in policies/data
START_TIMEOUT = 120.0
CLI = "`tokensvc submit`, a whole process"
WARM = "`tokensvc submit` in a warm client process"
DIRECT = "the same pod created directly"
# The job prints when its command began (seconds since boot), then waits.
JOB_SCRIPT = "cat /proc/uptime; exec sleep 3600"


class RunningWatch:
    """Which pods of the jobs namespace have been seen with a container running."""

    def __init__(self, cluster: Cluster) -> None:
        self._core = cluster.core()
        self._ns = cluster.api.jobs_namespace
        self._seen: set[str] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            watch = kubernetes.watch.Watch()
            for event in watch.stream(self._core.list_namespaced_pod, self._ns, timeout_seconds=30):
                pod = event["object"]
                running = any(
                    cs.state is not None and cs.state.running is not None
                    for cs in (pod.status.container_statuses or [])
                )
                if running:
                    with self._cond:
                        self._seen.add(pod.metadata.name)
                        self._cond.notify_all()
                if self._stop:
                    watch.stop()

    def wait(self, name: str) -> None:
        """Return once ``name`` has been seen running (its output can be read)."""
        deadline = time.monotonic() + START_TIMEOUT
        with self._cond:
            while name not in self._seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{name} not running within {START_TIMEOUT}s")
                self._cond.wait(left)

    def stop(self) -> None:
        self._stop = True


def boot_clock() -> float:
    """Seconds since boot: the clock /proc/uptime reads, the same in every container."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def job_started(cluster: Cluster, watch: RunningWatch, name: str) -> float:
    """When the job's command began, on :func:`boot_clock`, as the job itself printed it.

    The pod's status says "running" only at the kubelet's next look at the
    runtime (about once a second), which would round every time up to that
    tick; the job's own first line is exact to /proc/uptime's 10 ms.
    """
    watch.wait(name)
    core = cluster.core()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        first = core.read_namespaced_pod_log(name, cluster.api.jobs_namespace, container="job")
        if first.strip():
            return float(first.split()[0])
        time.sleep(0.05)
    raise TimeoutError(f"{name} printed nothing within {START_TIMEOUT}s")


def submit_args(d: Deployed, replica: int) -> list[str]:
    """The `tokensvc submit` command line every tokensvc round runs (as user A)."""
    return [
        "submit",
        "--server",
        d.server_urls[replica],
        "--project",
        "ml-team",
        "--image",
        IMAGES["job"],
        "-o",
        "json",
        "--",
        "sh",
        "-c",
        JOB_SCRIPT,
    ]


def submit_once(d: Deployed, watch: RunningWatch, replica: int) -> tuple[float, dict[str, Any]]:
    """`tokensvc submit` as a whole process: interpreter, imports, mint, request."""
    started = boot_clock()
    done = cli_as(A, d.tree, *submit_args(d, replica))
    if done.returncode != 0:
        raise RuntimeError(f"submit failed: {done.stderr}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return job_started(d.cluster, watch, answer["job"]["id"]) - started, answer


# Runs as user A and calls the CLI's own entry point once per line on stdin,
# so a round pays for the mint, the request and the server, not for the
# interpreter and the imports.
WARM_CLIENT = """
import contextlib, io, json, sys
from tokensvc.cli import main
for line in sys.stdin:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(json.loads(line))
    print(json.dumps({"code": code, "stdout": out.getvalue()}), flush=True)
"""


class WarmClient:
    """One long-lived process of user A's that submits on request (see WARM_CLIENT)."""

    def __init__(self, d: Deployed) -> None:
        self._proc = subprocess.Popen(
            [*A.setpriv(), sys.executable, "-c", WARM_CLIENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=cli_env(d.tree),
            cwd=d.tree.base,
            text=True,
        )

    def submit(self, args: list[str]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(args) + "\n")
        self._proc.stdin.flush()
        done = json.loads(self._proc.stdout.readline())
        if done["code"] != 0:
            raise RuntimeError(f"warm submit failed with exit {done['code']}")
        answer: dict[str, Any] = json.loads(done["stdout"])
        return answer

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


def warm_once(
    d: Deployed, watch: RunningWatch, client: WarmClient, replica: int
) -> tuple[float, str]:
    started = boot_clock()
    answer = client.submit(submit_args(d, replica))
    name = answer["job"]["id"]
    return job_started(d.cluster, watch, name) - started, name


def direct_once(cluster: Cluster, watch: RunningWatch, pod: dict[str, Any]) -> tuple[float, str]:
    manifest = copy.deepcopy(pod)
    name = f"bench-direct-{secrets.token_hex(8)}"
    meta = manifest["metadata"]
    meta["name"] = name
    # Not tokensvc's: its reconciler must not judge (or delete) this pod.
    meta["labels"] = {k: v for k, v in meta.get("labels", {}).items() if k != LABEL_MANAGED_BY}
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    manifest.pop("status", None)
    manifest["spec"].pop("schedulingGates", None)
    manifest["spec"].pop("nodeName", None)
    core = cluster.core()
    started = boot_clock()
    core.create_namespaced_pod(cluster.api.jobs_namespace, manifest)
    return job_started(cluster, watch, name) - started, name


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory(cluster: Cluster) -> list[tuple[str, float]]:
    """MiB per component, the shims together, and the pods' cgroup."""
    from realnode import pids_mentioning  # noqa: PLC0415

    rows = []
    component_pids = set()
    for name, proc in cluster.procs.items():
        component_pids.add(proc.popen.pid)
        rows.append((name, _rss_kib(proc.popen.pid) / 1024))
    shims = [p for p in pids_mentioning(str(cluster.root)) if p not in component_pids]
    rows.append((f"containerd shims ({len(shims)})", sum(_rss_kib(p) for p in shims) / 1024))
    for hierarchy in cgroup_hierarchies():
        usage = hierarchy / cluster.cgroup_name / "memory.usage_in_bytes"
        if usage.exists():
            mib = int(usage.read_text()) / 2**20
            rows.append(("pods (memory cgroup, page cache included)", mib))
    return rows


def stats(values: list[float]) -> tuple[float, float, float]:
    ms = [v * 1000 for v in values]
    return statistics.median(ms), min(ms), max(ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--record", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()

    sides = (CLI, WARM, DIRECT)
    times: dict[str, list[float]] = {side: [] for side in sides}
    with running_cluster() as cluster, deployed(cluster) as d:
        watch = RunningWatch(cluster)
        warm = WarmClient(d)
        ns = cluster.api.jobs_namespace
        try:
            # Round 0 is not counted: images paged in, caches warm. The sides
            # take turns going first, each starts on an empty node, and the
            # replicas take turns, as a Service would spread the users.
            template: dict[str, Any] = {}
            for round_ in range(args.rounds + 1):
                for side in sides[round_ % 3 :] + sides[: round_ % 3]:
                    if side == CLI:
                        took, answer = submit_once(d, watch, round_ % 2)
                        template, name = answer["pod"], answer["job"]["id"]
                    elif side == WARM:
                        took, name = warm_once(d, watch, warm, round_ % 2)
                    else:
                        if not template:  # round 0 starts with the CLI's pod
                            continue
                        took, name = direct_once(cluster, watch, template)
                    delete_pod(cluster, name, ns)
                    if round_:
                        times[side].append(took)
            rows = memory(cluster)
        finally:
            warm.close()
            watch.stop()

    medians = {side: stats(times[side]) for side in sides}
    direct = medians[DIRECT][0]
    budget = max(0.10 * direct, 150.0)

    def row(side: str) -> str:
        med, low, high = medians[side]
        return f"| {side} | {med:.0f} | {low:.0f} | {high:.0f} |"

    def verdict(side: str) -> str:
        added = medians[side][0] - direct
        ok = "met" if added <= budget else "MISSED"
        return f"- {side}: adds {added:.0f} ms ({medians[side][0] / direct:.2f}x), {ok}"

    lines = [
        f"rounds: {args.rounds} of each, in turns; kernel {os.uname().release}",
        "",
        "| from start to the job's command | median ms | min ms | max ms |",
        "|---|---|---|---|",
        *(row(side) for side in sides),
        "",
        f"Budget: max(10%, 150 ms) = {budget:.0f} ms over the direct create, at the median.",
        verdict(CLI),
        verdict(WARM),
        "",
        "| memory after the rounds | MiB |",
        "|---|---|",
        *(f"| {name} | {mib:.0f} |" for name, mib in rows),
        f"| **whole cluster** | **{sum(m for _, m in rows):.0f}** |",
    ]
    print("\n".join(lines))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
