"""From submit to a running container: `tokensvc submit` beside creating the same pod directly.

Starts the real single-node cluster of the end-to-end tests
(tests/e2e/realnode.py), deploys tokensvc on it as an operator would
(tests/e2e/deployed.py: two replicas, OPA sidecars, the signed bundle), and
then alternates, ``--rounds`` times each, so both sides see the same noise:

- **tokensvc**: user A (a real uid, through setpriv) runs `tokensvc submit`
  as a whole process: CLI start-up, a token bound to the request from the
  mint daemon, the server's token check, OPA decision, consumed-token record,
  held pod, admission, gate removal.
- **direct**: a pod tokensvc created, under a new name and without the
  scheduling gate, created by the admin through the API server.

Each time runs from just before the command (or the create) to the moment a
watch on the jobs namespace sees the job's container running. The sides take
turns going first, and every pod is deleted, and gone, before the next one
starts. Memory: resident set of every
process of the cluster (components, shims) and the pods' cgroup, after the
rounds. Must run as root (the node; other uids).

    .venv/bin/python bench/bench_e2e.py --rounds 20 --record build/bench-e2e.md
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

import kubernetes.watch  # noqa: E402
from deployed import Deployed, deployed  # noqa: E402
from integration.usernode import User, cli_as  # noqa: E402
from jobpods import delete_pod  # noqa: E402
from realnode import IMAGE_USER_UID, IMAGES, Cluster, cgroup_hierarchies, running_cluster  # noqa: E402

from tokensvc.cluster.launcher import LABEL_MANAGED_BY  # noqa: E402

A = User("A", IMAGE_USER_UID, 2001, (2001,))  # ml-team in policies/data
START_TIMEOUT = 120.0


class RunningWatch:
    """When each pod of the jobs namespace was first seen with its job container running."""

    def __init__(self, cluster: Cluster) -> None:
        self._core = cluster.core()
        self._ns = cluster.api.jobs_namespace
        self._seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            watch = kubernetes.watch.Watch()
            for event in watch.stream(self._core.list_namespaced_pod, self._ns, timeout_seconds=30):
                now = time.perf_counter()
                pod = event["object"]
                running = any(
                    cs.state is not None and cs.state.running is not None
                    for cs in (pod.status.container_statuses or [])
                )
                if running:
                    with self._cond:
                        self._seen.setdefault(pod.metadata.name, now)
                        self._cond.notify_all()
                if self._stop:
                    watch.stop()

    def wait(self, name: str) -> float:
        deadline = time.monotonic() + START_TIMEOUT
        with self._cond:
            while name not in self._seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{name} not running within {START_TIMEOUT}s")
                self._cond.wait(left)
            return self._seen[name]

    def stop(self) -> None:
        self._stop = True


def submit_once(d: Deployed, watch: RunningWatch, replica: int) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = cli_as(
        A,
        d.tree,
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
        "sleep",
        "3600",
    )
    if done.returncode != 0:
        raise RuntimeError(f"submit failed: {done.stderr}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return watch.wait(answer["job"]["id"]) - started, answer


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
    started = time.perf_counter()
    core.create_namespaced_pod(cluster.api.jobs_namespace, manifest)
    return watch.wait(name) - started, name


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

    times: dict[str, list[float]] = {"tokensvc submit": [], "direct create": []}
    with running_cluster() as cluster, deployed(cluster) as d:
        watch = RunningWatch(cluster)
        ns = cluster.api.jobs_namespace
        try:
            # Round 0 is not counted: images paged in, caches warm. The two
            # sides take turns going first, each starts on an empty node, and
            # the replicas take turns, as a Service would spread the users.
            template: dict[str, Any] = {}
            for round_ in range(args.rounds + 1):
                sides = ("tokensvc submit", "direct create")
                for side in sides if round_ % 2 == 0 else reversed(sides):
                    if side == "tokensvc submit":
                        took, answer = submit_once(d, watch, round_ % 2)
                        template, name = answer["pod"], answer["job"]["id"]
                    else:
                        took, name = direct_once(cluster, watch, template)
                    delete_pod(cluster, name, ns)
                    if round_:
                        times[side].append(took)
            rows = memory(cluster)
        finally:
            watch.stop()

    (sub_med, sub_min, sub_max) = stats(times["tokensvc submit"])
    (dir_med, dir_min, dir_max) = stats(times["direct create"])
    added = sub_med - dir_med
    budget = max(0.10 * dir_med, 150.0)
    kernel = os.uname().release
    lines = [
        f"rounds: {len(times['direct create'])} each, alternating; kernel {kernel}",
        "",
        "| path | median ms | min ms | max ms |",
        "|---|---|---|---|",
        f"| `tokensvc submit` (whole CLI process) to running | {sub_med:.0f} | {sub_min:.0f}"
        f" | {sub_max:.0f} |",
        f"| the same pod created directly to running | {dir_med:.0f} | {dir_min:.0f}"
        f" | {dir_max:.0f} |",
        "",
        f"tokensvc adds {added:.0f} ms ({sub_med / dir_med:.2f}x) at the median;"
        f" budget max(10%, 150 ms) = {budget:.0f} ms: {'met' if added <= budget else 'MISSED'}",
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
