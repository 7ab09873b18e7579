"""Submit latency and throughput through the server, beside the raw OPA decision, same run.

Starts the real stack (tokensvc.cluster.devstack: OPA with the repository's policies,
the server with the spool submitter; the mint daemon is not on this path),
pre-seals one token per request for user A, then drives, from a separate
process (bench/httpload, Go, so the load generator costs little CPU on the
cores the stack shares), an open-loop steady load at RATE requests/s for
DURATION seconds:

1. ``raw-opa``: POST /v1/data/wsc/authz/decision with exactly the input the
   server builds for each submit (same identity, same request);
2. ``submit``: POST /v1/jobs through the server (token validation, OPA,
   build_pod, spool write with fsync).

Latency is measured from each request's *scheduled* send time (no
coordinated omission). Server RSS is the peak (VmHWM) after the run.

Usage: python bench/bench_submit.py [--rate 500] [--duration 10] [--httpload BIN] [--record FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tokensvc.cluster.devstack import USER_A, Stack
from tokensvc.cluster.jobs import parse_job_request
from tokensvc.cluster.opa import DECISION_PATH
from tokensvc.core.claims import new_claims
from tokensvc.core.keys import KeyRing
from tokensvc.core.token import seal

ROOT = Path(__file__).resolve().parents[1]
BODY = {
    "project": "ml-team",
    "image": "registry.example/ml/train:1.2",
    "command": ["python", "train.py"],
    "mounts": [
        {"path": "/nfs/projects/ml/data", "mode": "ro"},
        {"path": "/nfs/projects/ml/scratch", "mode": "rw"},
    ],
}
TARGETS = {
    "p50": "submit p50 <= 2 ms at 500/s",
    "p99": "submit p99 <= 5 ms at 500/s",
    "ratio": "submit median <= 1.5x raw OPA median",
    "rss": "server RSS <= 150 MB",
}


def drive(
    port: int,
    path: str,
    payloads: list[tuple[bytes, dict[str, str]]],
    *,
    rate: float,
    connections: int,
    httpload: str,
    workdir: Path,
) -> dict[str, Any]:
    """Open-loop load from bench/httpload (a separate Go process); latency stats."""
    requests = workdir / "requests.jsonl"
    with requests.open("w") as f:
        for body, headers in payloads:
            f.write(json.dumps({"body": body.decode(), "headers": headers}) + "\n")
    out = subprocess.run(
        [
            httpload,
            f"-addr=127.0.0.1:{port}",
            f"-path={path}",
            f"-requests={requests}",
            f"-rate={rate}",
            f"-connections={connections}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.splitlines()
    elapsed = float(out[-1].split()[1])
    samples = [(int(ns) / 1e9, int(status)) for ns, status in (line.split() for line in out[:-1])]
    lat = sorted(s[0] for s in samples)
    statuses: dict[int, int] = {}
    for _, status in samples:
        statuses[status] = statuses.get(status, 0) + 1
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "requests": len(lat),
        "throughput": len(lat) / elapsed,
        "p50_ms": statistics.median(lat) * 1000,
        "p90_ms": q[89] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": lat[-1] * 1000,
        "statuses": statuses,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (robust on a shared, noisy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def payloads_for(stack: Stack, n: int) -> tuple[list[Any], list[Any]]:
    ring = KeyRing.load(stack.keyring)
    request = parse_job_request(BODY)
    submits, raws = [], []
    now = time.time()
    for _ in range(n):
        claims = new_claims(
            uid=USER_A.uid,
            gid=USER_A.gid,
            groups=USER_A.groups,
            user=USER_A.name,
            host="bench",
            realm=stack.realm,
            ttl=3600,
            now=now,
        )
        token = seal(claims, ring.active)
        submits.append(
            (
                json.dumps(BODY).encode(),
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
        )
        doc = {"identity": claims.to_identity(), "action": "submit", "request": request.to_input()}
        raws.append((json.dumps({"input": doc}).encode(), {"Content-Type": "application/json"}))
    return submits, raws


def table(rows: dict[str, dict[str, Any]], rate: float, rss: tuple[float, float]) -> str:
    lines = [
        f"Offered load {rate:.0f} requests/s, open loop, latency from scheduled send time.",
        "",
        "| path | requests | throughput/s | p50 ms | p90 ms | p99 ms | max ms"
        " | server CPU ms/req | OPA CPU ms/req | statuses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['requests']} | {r['throughput']:.0f} | {r['p50_ms']:.2f} |"
            f" {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} |"
            f" {r['server_cpu_ms']:.2f} | {r['opa_cpu_ms']:.2f} | {r['statuses']} |"
        )
    sub, raw = rows["submit (server)"], rows["raw OPA decision"]
    ratio = sub["p50_ms"] / raw["p50_ms"]
    lines += [
        "",
        f"submit median / raw OPA median = {ratio:.2f}x; server RSS {rss[0]:.0f} MB"
        f" (peak {rss[1]:.0f} MB)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| {TARGETS['p50']} | {sub['p50_ms']:.2f} ms | {'yes' if sub['p50_ms'] <= 2 else 'no'} |",
        f"| {TARGETS['p99']} | {sub['p99_ms']:.2f} ms | {'yes' if sub['p99_ms'] <= 5 else 'no'} |",
        f"| {TARGETS['ratio']} | {ratio:.2f}x | {'yes' if ratio <= 1.5 else 'no'} |",
        f"| {TARGETS['rss']} | {rss[1]:.0f} MB | {'yes' if rss[1] <= 150 else 'no'} |",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8, help="load generator connections")
    parser.add_argument("--httpload", default=str(ROOT / ".tools" / "bin" / "httpload"))
    parser.add_argument("--opa", default=str(ROOT / ".tools" / "bin" / "opa"))
    parser.add_argument("--bundle", help="signed bundle (default: policy directories)")
    parser.add_argument("--verification-key", help="public key the bundle is signed for")
    parser.add_argument(
        "--no-fsync", action="store_true", help="spool_fsync = false (no power-loss durability)"
    )
    parser.add_argument("--record", help="write the markdown table here too")
    args = parser.parse_args()
    n = int(args.rate * args.duration)
    stack = Stack(
        workdir=Path(tempfile.mkdtemp(prefix="tokensvc-bench-")),
        opa=args.opa,
        policy_paths=[str(ROOT / "policies" / "wsc"), str(ROOT / "policies" / "data")],
        bundle=Path(args.bundle) if args.bundle and Path(args.bundle).exists() else None,
        verification_key=Path(args.verification_key) if args.verification_key else None,
        opa_config=ROOT / "deploy" / "opa" / "config.yaml",
        server_settings={"spool_fsync": False} if args.no_fsync else {},
        realm="bench",
    )
    try:
        stack.start()
        submits, raws = payloads_for(stack, n + 200)
        warm_sub, submits = submits[:200], submits[200:]
        warm_raw, raws = raws[:200], raws[200:]
        # Warm up both paths, then measure them one after the other.
        load = {"httpload": args.httpload, "workdir": stack.workdir}
        drive(stack.opa_port, DECISION_PATH, warm_raw, rate=200, connections=2, **load)
        drive(stack.server_port, "/v1/jobs", warm_sub, rate=200, connections=2, **load)
        server_pid, opa_pid = stack.procs["server"].pid, stack.procs["opa"].pid
        rows = {}
        for name, port, path, payloads in (
            ("raw OPA decision", stack.opa_port, DECISION_PATH, raws),
            ("submit (server)", stack.server_port, "/v1/jobs", submits),
        ):
            before = cpu_seconds(server_pid), cpu_seconds(opa_pid)
            rows[name] = drive(
                port, path, payloads, rate=args.rate, connections=args.connections, **load
            )
            count = rows[name]["requests"]
            rows[name]["server_cpu_ms"] = (cpu_seconds(server_pid) - before[0]) / count * 1000
            rows[name]["opa_cpu_ms"] = (cpu_seconds(opa_pid) - before[1]) / count * 1000
        rss = rss_mb(stack.procs["server"].pid)
    finally:
        stack.stop()
        stack.remove()
    text = table(rows, args.rate, rss)
    print(text)
    if args.record:
        Path(args.record).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
