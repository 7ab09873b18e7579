"""`make demo` and `make up` end to end: signed bundle, the scenarios, nothing left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from admission_stack import ROOT, needs_root
from support.opa import builder, opa_binary

from tokensvc.cluster.devstack import USER_A, setpriv

pytestmark = [needs_root, pytest.mark.root]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # Children name the work directory in their environment (TOKENSVC_CONFIG).
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in seen:
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
    return found


@pytest.fixture
def work() -> Iterator[Path]:
    # Under /tmp, not pytest's 0700 tmp_path: users A, B, C must reach the socket.
    path = Path(tempfile.mkdtemp(prefix="tsvc-demo-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def signed_bundle(tmp_path: Path) -> tuple[Path, Path]:
    key = builder.generate_signing_key(tmp_path / "signing-key.pem")
    bundle = builder.build_bundle(
        tmp_path / "wsc.tar.gz",
        signing_key=key,
        data_dir=builder.DEFAULT_DATA_DIR,
        opa=opa_binary(),
    )
    return Path(bundle), builder.public_key_path(key)


def demo_argv(bundle: tuple[Path, Path], tmp: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "scripts" / "demo.py"),
        "--opa",
        opa_binary(),
        "--bundle",
        str(bundle[0]),
        "--verification-key",
        str(bundle[1]),
        "--tmp",
        str(tmp),
        *extra,
    ]


def test_demo_runs_the_scenarios_and_stops_cleanly(
    signed_bundle: tuple[Path, Path], work: Path
) -> None:
    run = subprocess.run(
        demo_argv(signed_bundle, work),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    expected = [
        f"OPA (signed bundle {signed_bundle[0]})",
        "runAsUser: 1002",
        "supplementalGroupsPolicy: Strict",
        "job of another user in a project you are not a member of",  # B on A's job
        "uid 0 (root) is never allowed",
        "first use: HTTP 201",
        "same request again: HTTP 200 wsc-job-",
        "another job: HTTP 401 token is bound to another request",
        "stopped: every process ended",
    ]
    missing = [text for text in expected if text not in out]
    assert not missing, f"{missing} not in:\n{out}\n{run.stderr}"
    assert out.count("ALLOWED") == 4, out  # A once, C in each of its three groups
    assert processes_mentioning(str(work)) == []
    assert list(work.iterdir()) == []  # the work directory is gone too


def test_up_runs_until_sigint_then_leaves_nothing(
    signed_bundle: tuple[Path, Path], work: Path
) -> None:
    proc = subprocess.Popen(
        demo_argv(signed_bundle, work, "--up"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        assert any("tokensvc stack is up" in line for line in lines), "".join(lines)
        assert len(processes_mentioning(str(work))) >= 2  # mint daemon, server (and OPA)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, "".join(lines) + rest
    assert processes_mentioning(str(work)) == []
    assert os.listdir(work) == []


def test_tokensvc_up_serves_the_cli_until_sigterm(
    signed_bundle: tuple[Path, Path], work: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")},
        "TMPDIR": str(work),
        "PATH": f"{Path(opa_binary()).parent}:{os.environ.get('PATH', '')}",
    }
    argv = [sys.executable, "-m", "tokensvc", "up", "--bundle", str(signed_bundle[0])]
    argv += ["--verification-key", str(signed_bundle[1])]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("server http://"), first + proc.stdout.read()
        config = proc.stdout.readline().split("TOKENSVC_CONFIG=", 1)[1].split(";", 1)[0]
        ada = USER_A
        run = subprocess.run(
            setpriv(ada, [sys.executable, "-m", "tokensvc", "submit", "--project", "ml-team",
                          "--image", "busybox", "--", "true"]),
            env={**env, "TOKENSVC_CONFIG": config},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("submitted wsc-job-")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
    assert processes_mentioning(str(work)) == []
    assert os.listdir(work) == []


def test_children_die_with_a_killed_parent(signed_bundle: tuple[Path, Path], work: Path) -> None:
    proc = subprocess.Popen(
        demo_argv(signed_bundle, work, "--up"), stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        while "Ctrl-C stops everything" not in (line := proc.stdout.readline()):
            assert line, "demo --up ended early"
        assert len(processes_mentioning(str(work))) >= 3
        proc.kill()  # no chance to clean up: the children must still go
        proc.wait()
        deadline = time.monotonic() + 30
        while processes_mentioning(str(work)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(str(work)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
