"""Time ``tokensvc policy diff`` over N recorded decisions (default 10,000), the whole CLI.

The recorded decisions (tests/data/recorded-decisions.jsonl, produced by the
running server) are repeated, each copy under a decision id of its own, to
N lines; both policy versions are the repository's policies/ (a replay of a
day of decisions before a merge). Prints the wall time of each run and the
median; the figure goes in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "tests/data/recorded-decisions.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="decisions to replay")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--opa", default=str(ROOT / ".tools/bin/opa"))
    args = ap.parse_args()
    recorded = [json.loads(line) for line in RECORDED.read_text().splitlines() if line]
    policy = f"{ROOT / 'policies/wsc'},{ROOT / 'policies/data'}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "decisions.jsonl"
        with log.open("w") as out:
            for i, event in zip(range(args.n), itertools.cycle(recorded), strict=False):
                out.write(json.dumps({**event, "decision_id": f"bench-{i}"}) + "\n")
        cmd = [sys.executable, "-m", "tokensvc", "policy", "diff", policy, policy]
        cmd += ["--decisions", str(log), "--opa", args.opa, "-o", "json"]
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
            times.append(time.perf_counter() - started)
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
                return 1
            assert json.loads(run.stdout)["decisions"] == args.n
            print(f"  {args.n} decisions: {times[-1]:.2f} s")
    print(f"tokensvc policy diff, {args.n} decisions: median {statistics.median(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
