"""`make bench-policy`: opa bench of data.wsc.authz.decision at 100, 10k, 100k.

For each size, generates admin data (bench/gen_policy_data.py) and runs
`opa bench` in-process on three typical decisions it writes (a submit with
three mounts, one with a single mount, an admin cancelling another member's
job), then prints a table: time per decision as opa bench measures it, OPA's
median evaluation time, allocations. Also `x := 1` as a calibration of the
machine, in the same run. The policy's lookups are keyed (group by gid,
export by path prefix), so the largest/smallest ratio should stay near 1; the
target is <= 2.

OPA runs with --optimize-store-for-read-speed, as the sidecar does (data kept
as AST values: the policy reads data.wsc.groups and data.wsc.exports whole
and probes them by key, which is then free of conversions); --plain-store
benches OPA's default store instead.

--baseline DIR benches a second copy of the policy (e.g. the landed one,
extracted with `git archive`) in the same run, on the same data and inputs,
and prints both side by side with their ratio; the budget is <= 2x the
baseline's time per decision.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from gen_policy_data import write  # noqa: E402

SIZES = (100, 10_000, 100_000)
CASES = ("submit-3-mounts", "submit-1-mount", "cancel-other")
QUERY = "data.wsc.authz.decision"
TARGET_RATIO = 2.0
BUDGET_RATIO = 2.0


POLICIES = ROOT / "policies" / "wsc"


READ_SPEED = "--optimize-store-for-read-speed"


def bench(
    opa: str,
    data_dir: Path,
    input_file: Path,
    count: int,
    *,
    query: str = QUERY,
    policies: Path = POLICIES,
    store_flags: tuple[str, ...] = (READ_SPEED,),
) -> dict[str, float]:
    out = subprocess.run(
        [
            opa, "bench", "--format", "json", "--benchmem", "--count", str(count),
            *store_flags,
            "--ignore", "*_test.rego",
            "--data", str(policies),
            "--data", str(data_dir / "data"),
            "--input", str(input_file),
            query,
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    # --count > 1 prints one result per run; keep the fastest.
    results = [json.loads(doc) for doc in _documents(out.stdout)]
    best = min(results, key=lambda r: float(r["T"]) / float(r["N"]))
    n = float(best["N"])
    return {
        "ns_per_op": float(best["T"]) / n,
        "eval_median_ns": float(best["Extra"]["histogram_timer_rego_query_eval_ns_median"]),
        "allocs": float(best["MemAllocs"]) / n,
    }


def _documents(text: str) -> list[str]:
    """Split concatenated JSON documents."""
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        _, end = decoder.raw_decode(text, i)
        docs.append(text[i:end])
        i = end
    return docs


def check_allowed(opa: str, data_dir: Path, input_file: Path, policies: Path = POLICIES) -> None:
    out = subprocess.run(
        [
            opa, "eval", "--format", "json", "--ignore", "*_test.rego",
            "--data", str(policies), "--data", str(data_dir / "data"),
            "--input", str(input_file), QUERY,
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    decision = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    if not decision["allow"]:
        raise SystemExit(f"{input_file.name} is denied: {decision['reasons']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opa", default=str(ROOT / ".tools" / "bin" / "opa"))
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-policy")
    parser.add_argument("--count", type=int, default=3, help="opa bench --count (fastest kept)")
    parser.add_argument(
        "--policies",
        type=Path,
        default=POLICIES,
        help="policy directory to bench (default policies/wsc; e.g. an older copy to compare)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a second policy directory benched in the same run (e.g. the landed policies/wsc)",
    )
    parser.add_argument(
        "--plain-store",
        action="store_true",
        help=f"OPA's default store instead of {READ_SPEED} (the sidecar's setting)",
    )
    args = parser.parse_args()
    store_flags: tuple[str, ...] = () if args.plain_store else (READ_SPEED,)
    policies = {"policy": args.policies}
    if args.baseline:
        policies["baseline"] = args.baseline
    results: dict[tuple[str, int, str], dict[str, float]] = {}
    for n in SIZES:
        data_dir = args.workdir / str(n)
        write(data_dir, n)
        for case in CASES:
            for label, directory in policies.items():
                check_allowed(args.opa, data_dir, data_dir / f"{case}.json", directory)
                results[label, n, case] = bench(
                    args.opa,
                    data_dir,
                    data_dir / f"{case}.json",
                    args.count,
                    policies=directory,
                    store_flags=store_flags,
                )
    calib = bench(
        args.opa, args.workdir / str(SIZES[0]), data_dir / "input.json", args.count, query="x := 1"
    )

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"store: {'default (--plain-store)' if args.plain_store else READ_SPEED}")
    print(f"policy: {args.policies}" + (f"; baseline: {args.baseline}" if args.baseline else ""))
    print(
        f"calibration `x := 1`: {calib['ns_per_op'] / 1000:.1f} us/op, "
        f"eval median {calib['eval_median_ns'] / 1000:.1f} us"
    )
    print()
    if args.baseline:
        print("| decision | groups = exports | us/decision | baseline us | ratio | allocs | baseline allocs |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    else:
        print("| decision | groups = exports | us/decision | eval median (us) | allocs |")
        print("|---|---:|---:|---:|---:|")
    for case in CASES:
        for n in SIZES:
            r = results["policy", n, case]
            if args.baseline:
                b = results["baseline", n, case]
                print(
                    f"| {case} | {n:,} | {r['ns_per_op'] / 1000:.1f} | {b['ns_per_op'] / 1000:.1f} | "
                    f"{r['ns_per_op'] / b['ns_per_op']:.2f}x | {r['allocs']:,.0f} | {b['allocs']:,.0f} |"
                )
            else:
                print(
                    f"| {case} | {n:,} | {r['ns_per_op'] / 1000:.1f} | "
                    f"{r['eval_median_ns'] / 1000:.1f} | {r['allocs']:,.0f} |"
                )
    print()
    for label in policies:
        for case in CASES:
            ratio = results[label, SIZES[-1], case]["ns_per_op"] / results[label, SIZES[0], case]["ns_per_op"]
            verdict = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
            print(f"{label} {case}: largest/smallest {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x): {verdict}")
    if args.baseline:
        for case in CASES:
            worst = max(
                results["policy", n, case]["ns_per_op"] / results["baseline", n, case]["ns_per_op"] for n in SIZES
            )
            verdict = "ok" if worst <= BUDGET_RATIO else "OVER BUDGET"
            print(f"{case}: policy/baseline at most {worst:.2f}x (budget <= {BUDGET_RATIO:.0f}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
