"""Mint and open throughput of tokensvc beside MUNGE, in the same run.

MUNGE side: a private ``munged`` (its own key, socket and seed in a temp dir,
``--benchmark``) driven by ``remunge -e`` (encode) and ``remunge -d`` (encode
and decode) with 1 and 2 threads. tokensvc side: ``tokensvc mintd`` on a
private socket driven by ``mintload`` (our Go counterpart of remunge) with 1
and 2 clients, and in-process ``TokenValidator.validate`` (authenticate,
check, replay-remember) in 1 and 2 processes. The machine is shared and noisy,
so only the ratios within one run mean anything.

Usage: python bench/bench_mint.py [--duration S] [--mintload PATH] [--record FILE]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tokensvc.core.claims import new_claims
from tokensvc.core.keys import KeyRing, generate_keyring
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.token import seal
from tokensvc.core.validate import TokenValidator

REALM = "bench"
GROUPS = (1001, 2001, 2002, 2003)  # a user in a few groups, as on a real login node
TARGETS = {
    "mint": "tokensvc mint >= MUNGE encode at 2 clients",
    "open": "tokensvc open >= 2x MUNGE encode+decode",
    "rss": "mint daemon RSS <= 40 MB",
}


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start (exit {proc.poll()})")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def munged(workdir: Path) -> Iterator[Path]:
    key, sock = workdir / "munge.key", workdir / "munge.sock"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
    proc = subprocess.Popen(
        [
            "munged", "--foreground", "--force", "--benchmark", "--num-threads=2",
            f"--key-file={key}", f"--socket={sock}", f"--pid-file={workdir / 'munged.pid'}",
            f"--seed-file={workdir / 'munged.seed'}", f"--log-file={workdir / 'munged.log'}",
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_socket(sock, proc, "munged")
        yield sock
    finally:
        _stop(proc)


def remunge(sock: Path, mode: str, threads: int, duration: float) -> float:
    out = subprocess.run(
        ["remunge", "-q", f"-S{sock}", mode, f"-T{threads}", f"-D{int(duration)}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split()[-1])


@contextmanager
def mintd(workdir: Path, keyring: Path) -> Iterator[tuple[Path, int]]:
    sockdir = workdir / "run"
    sockdir.mkdir(mode=0o755)
    sock = sockdir / "mint.sock"
    # Two workers, as munged runs with --num-threads=2 here: both use both cores.
    env = dict(os.environ, TOKENSVC_REALM=REALM, TOKENSVC_MINTD_WORKERS="2")
    command = [sys.executable, "-m", "tokensvc", "mintd", "--socket", str(sock)]
    proc = subprocess.Popen(
        [*command, "--keyring", str(keyring)],
        env=env,
        stderr=subprocess.DEVNULL,  # one audit line per mint: not what we measure
    )
    try:
        _wait_for_socket(sock, proc, "tokensvc mintd")
        yield sock, proc.pid
    finally:
        _stop(proc)


def mintload(binary: str, sock: Path, threads: int, duration: float) -> float:
    out = subprocess.run(
        [binary, f"-socket={sock}", f"-threads={threads}", f"-duration={duration}s"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split()[-1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the mint daemon's supervisor and workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids += _tree(int(child))
    return pids


def memory_mb(pid: int) -> tuple[float, float]:
    """(PSS summed over the daemon's processes, largest single-process peak RSS) in MB.

    PSS shares the pages the forked workers have in common among them, so the
    sum is what the daemon as a whole costs; VmHWM is the kernel's peak RSS.
    """
    pss = peak = 0
    for member in _tree(pid):
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return pss / 1024, peak / 1024


def _open_worker(keyring_bytes: bytes, count: int, duration: float, result: object) -> None:
    ring = KeyRing.parse(keyring_bytes)
    now = time.time()
    tokens = [
        seal(
            new_claims(uid=1001, gid=1001, groups=GROUPS, user="alice", host="login1",
                       realm=REALM, ttl=300, now=now),
            ring.active,
        )
        for _ in range(count)
    ]  # fmt: skip
    validator = TokenValidator(ring, realm=REALM, replay=MemoryReplayCache(max_entries=count))
    opened = 0
    start = time.perf_counter()
    deadline = start + duration
    for token in tokens:
        validator.validate(token, now=now)
        opened += 1
        if opened % 1000 == 0 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    result.put(opened / elapsed)  # type: ignore[attr-defined]


def open_rate(keyring: Path, processes: int, duration: float) -> float:
    """Validations per second summed over ``processes`` workers, each with fresh tokens."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    data = keyring.read_bytes()
    workers = [
        ctx.Process(target=_open_worker, args=(data, 400_000, duration, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    rates = [results.get(timeout=duration * 10 + 60) for _ in workers]
    for worker in workers:
        worker.join()
    return float(sum(rates))


def run(duration: float, mintload_bin: str) -> list[tuple[str, int, float, float]]:
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="tokensvc-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o700)
        keyring = workdir / "keyring"
        generate_keyring(keyring)
        with munged(workdir) as msock, mintd(workdir, keyring) as (tsock, pid):
            for threads in (1, 2):
                mint = mintload(mintload_bin, tsock, threads, duration)
                enc = remunge(msock, "-e", threads, duration)
                rows.append(("mint (encode)", threads, mint, enc))
            for threads in (1, 2):
                opened = open_rate(keyring, threads, duration)
                dec = remunge(msock, "-d", threads, duration)
                rows.append(("open (vs encode+decode)", threads, opened, dec))
            pss, peak = memory_mb(pid)
    rows.append(("mint daemon memory MB", 0, pss, peak))
    return rows


def table(rows: list[tuple[str, int, float, float]], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| operation | clients | tokensvc /s | MUNGE /s | tokensvc / MUNGE |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, threads, ours, theirs in rows[:-1]:
        lines.append(f"| {name} | {threads} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |")
    _, _, pss, peak = rows[-1]
    mint2 = next(r for r in rows if r[0].startswith("mint") and r[1] == 2)
    open2 = next(r for r in rows if r[0].startswith("open") and r[1] == 2)
    verdicts = [
        (TARGETS["mint"], mint2[2] >= mint2[3]),
        (TARGETS["open"], open2[2] >= 2 * open2[3]),
        (TARGETS["rss"], pss <= 40),
    ]
    lines += [
        "",
        f"Mint daemon memory after the load: {pss:.1f} MB PSS over supervisor and workers"
        f" (largest single-process peak RSS {peak:.1f} MB).",
        "",
    ]
    lines += [f"- {'met' if ok else 'NOT met'}: {target}" for target, ok in verdicts]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--mintload", default=shutil.which("mintload") or "mintload")
    parser.add_argument("--record", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    for tool in ("munged", "remunge", "mungekey"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run `make bench` (it installs Debian's munge)")
    command = f"make bench-mint BENCH_DURATION={args.duration:g}"
    out = table(run(args.duration, args.mintload), command)
    print(out)
    if args.record:
        args.record.write_text(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
