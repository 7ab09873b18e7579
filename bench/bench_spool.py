"""Spool listing with many jobs stored: CPU per ``list()``, and per ``get()`` beside it.

Fills a spool directory with ``--jobs`` jobs (fsync off: the fill is not
what is measured), then times ``SpoolSubmitter.list()`` by process CPU
(``time.process_time``) over ``--rounds`` calls and prints median and
best. A fresh submitter is opened first, so its start-up repair (one
directory scan) is timed too. Listings with a visibility filter (what the
policy lets one caller see) are timed beside the unfiltered one.

    .venv/bin/python bench/bench_spool.py --jobs 10000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tokensvc.cluster.jobs import JobRequest
from tokensvc.cluster.launcher import build_manifest
from tokensvc.cluster.opa import Decision, RunAs
from tokensvc.cluster.spool import SpoolSubmitter


@dataclass(frozen=True)
class Identity:
    uid: int
    token_id: str
    gid: int = 2001
    groups: tuple[int, ...] = (2001,)


def fill(directory: Path, jobs: int) -> None:
    spool = SpoolSubmitter(directory, fsync=False)
    decision = Decision(allow=True, run_as=RunAs(1001, 2001), supplemental_groups=(2001,))
    for i in range(jobs):
        project = ("ml-team", "vision", "speech")[i % 3]
        request = JobRequest(project=project, image="busybox:1.36", command=("sleep", "60"))
        identity = Identity(1001 + i % 50, f"{i:032x}")
        decision = Decision(allow=True, run_as=RunAs(identity.uid, 2001), supplemental_groups=())
        spool.create(
            build_manifest(identity, decision, request, decision_id=f"{i:08x}-0000-4000-8000-0")
        )


def cpu_ms(fn: object, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.process_time()
        fn()  # type: ignore[operator]
        out.append((time.process_time() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "spool"
        fill(directory, args.jobs)
        started = time.process_time()
        spool = SpoolSubmitter(directory)
        opened = (time.process_time() - started) * 1000
        assert len(spool.list()) == args.jobs
        runs = {
            "list(): every job": spool.list,
            "list(): one user's own (1/50)": lambda: spool.list(owner_uid=1001, projects=()),
            "list(): own + one project (~1/3)": lambda: spool.list(
                owner_uid=1001, projects=("vision",)
            ),
        }
        times = {label: cpu_ms(fn, args.rounds) for label, fn in runs.items()}
        name = spool.list()[args.jobs // 2].name
        times["get(): one job"] = cpu_ms(lambda: spool.get(name), args.rounds)
    print(f"spool with {args.jobs} jobs ({args.rounds} rounds, process CPU, ms):")
    print(f"  {'open (start-up repair)':36s} {opened:7.1f}")
    for label, ms in times.items():
        print(f"  {label:36s} {statistics.median(ms):7.1f} median  {min(ms):7.1f} best")


if __name__ == "__main__":
    main()
