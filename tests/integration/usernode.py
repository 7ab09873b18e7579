"""Helpers for user-node tests: a real mint daemon, real clients under other uids.

The daemon runs as root (the test process) in a private directory tree:

    BASE/          0755 root  (world-traversable: clients must reach the socket)
      keys/        0700 root  key ring 0600 root: only root can read it
      run/         0755 root  mint.sock (0666)
      client.py    0644       raw socket client run by other uids

Clients run as numeric uids with ``setpriv --reuid U --regid G --groups ...``
(no accounts needed). Two kinds:

* ``raw_exchange``: ``client.py`` (stdlib only, ``python -I``) sends exact
  bytes and reports exact replies, so a test controls every byte on the wire;
* ``cli_as``: the real ``tokensvc`` command line of the project venv
  (``sys.executable -m tokensvc``, cwd = BASE so nothing is imported from the
  checkout by accident). Other uids must be able to run the venv's
  interpreter and read the checkout: the Makefile makes the venv from
  Debian's Python for that, and ``cli_reachable`` probes it once as uid
  60001; the tests that need it fail with the probe's error (a checkout in
  a 0700 directory, say) rather than skip. The raw client
  needs only the stdlib and any interpreter ``other_user_python`` finds
  (the venv's, else /usr/bin/python3); that one is required, not optional.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokensvc.core.claims import Claims
from tokensvc.core.keys import KeyRing, generate_keyring
from tokensvc.core.token import open_token

REALM = "itest"
SETPRIV = shutil.which("setpriv")


@dataclass(frozen=True)
class User:
    """A numeric identity for setpriv (no passwd entry needed)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def setpriv(self, groups: Sequence[int] | None = None) -> list[str]:
        gs = self.groups if groups is None else tuple(groups)
        group_arg = f"--groups={','.join(map(str, gs))}" if gs else "--clear-groups"
        assert SETPRIV is not None
        return [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", group_arg, "--"]


A = User("A", 60001, 60001, (61001,))
B = User("B", 60002, 60002, (61002,))
C = User("C", 60003, 60003, (61001, 61002, 61003))

CLIENT_SCRIPT = r'''
"""Raw mint client: argv = socket, mode, hex requests; one JSON line per request."""
import json, socket, sys, time

path, mode = sys.argv[1], sys.argv[2]
for hexreq in sys.argv[3:]:
    req = bytes.fromhex(hexreq)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    out = {"reply": "", "error": None, "seconds": 0.0}
    t0 = time.monotonic()
    try:
        s.connect(path)
        try:
            s.sendall(req)
            if mode == "shutdown":
                s.shutdown(socket.SHUT_WR)
        except OSError as err:  # the daemon may answer and close before we finish
            out["error"] = type(err).__name__
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # excess bytes left unread by the daemon
                break
            if not chunk:
                break
            data += chunk
        out["reply"] = data.decode("latin-1")
    except OSError as err:
        out["error"] = type(err).__name__
    out["seconds"] = time.monotonic() - t0
    s.close()
    print(json.dumps(out), flush=True)
'''

STALL_SCRIPT = r'''
"""Slow-loris: argv = socket, count, hex prefix, hold seconds. Reports what each got."""
import json, socket, sys, time

path, count = sys.argv[1], int(sys.argv[2])
prefix, hold = bytes.fromhex(sys.argv[3]), float(sys.argv[4])
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if prefix:
        s.sendall(prefix)
    socks.append(s)
print("connected", flush=True)
time.sleep(hold)
seen = {}
for s in socks:
    s.setblocking(False)
    try:
        data = s.recv(4096)
        if data.startswith(b"ERR "):
            key = data.split(b" ")[1].decode()
        else:
            key = "eof" if not data else "other"
    except BlockingIOError:
        key = "open"
    except OSError as err:
        key = type(err).__name__
    seen[key] = seen.get(key, 0) + 1
    s.close()
print(json.dumps(seen), flush=True)
'''

PROBE_READ = r"""
import sys
try:
    open(sys.argv[1], "rb").read()
    print("READ")
except PermissionError as err:
    print("EACCES" if err.errno == 13 else f"errno {err.errno}")
"""


@dataclass
class Tree:
    base: Path
    keyring: Path
    socket: Path
    client: Path
    config: Path

    def ring(self) -> KeyRing:
        return KeyRing.load(self.keyring)


def make_tree() -> Tree:
    base = Path(tempfile.mkdtemp(prefix="tokensvc-mintd-", dir="/tmp"))
    base.chmod(0o755)
    keys = base / "keys"
    keys.mkdir(mode=0o700)
    run = base / "run"
    run.mkdir(mode=0o755)
    client = base / "client.py"
    client.write_text(CLIENT_SCRIPT)
    client.chmod(0o644)
    for name, text in (("probe_read.py", PROBE_READ), ("stall.py", STALL_SCRIPT)):
        (base / name).write_text(text)
        (base / name).chmod(0o644)
    config = base / "tokensvc.conf"
    config.write_text(f'realm = "{REALM}"\n')
    config.chmod(0o644)
    keyring = keys / "keyring"
    generate_keyring(keyring)
    return Tree(base, keyring, run / "mint.sock", client, config)


def remove_tree(tree: Tree) -> None:
    shutil.rmtree(tree.base, ignore_errors=True)


def daemon_env(tree: Tree, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")}
    env["TOKENSVC_CONFIG"] = str(tree.config)
    env.update(extra)
    return env


@dataclass
class Daemon:
    tree: Tree
    proc: subprocess.Popen[bytes]
    log: Path
    socket: Path
    extra_args: list[str] = field(default_factory=list)

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def start_daemon(
    tree: Tree,
    *args: str,
    socket_path: Path | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> Daemon:
    sock = socket_path or tree.socket
    log = tree.base / f"mintd-{time.monotonic_ns()}.log"
    argv = [
        sys.executable,
        "-m",
        "tokensvc",
        "mintd",
        "--socket",
        str(sock),
        "--keyring",
        str(tree.keyring),
        *args,
    ]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            argv, env=env or daemon_env(tree), stdout=subprocess.DEVNULL, stderr=err
        )
    daemon = Daemon(tree, proc, log, sock, list(args))
    if wait:
        wait_ready(daemon)
    return daemon


def wait_ready(daemon: Daemon, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise AssertionError(f"mintd exited {daemon.proc.returncode}: {daemon.log.read_text()}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(daemon.socket))
                probe.sendall(b"MINT1\n")
                probe.settimeout(5)
                if probe.recv(4096).startswith(b"OK "):
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError("mintd did not become ready")


def run_mintd_once(tree: Tree, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """Run a daemon that is expected to refuse to start; returns its exit and stderr."""
    argv = [sys.executable, "-m", "tokensvc", "mintd", *args]
    return subprocess.run(
        argv, env=daemon_env(tree), capture_output=True, text=True, timeout=timeout, check=False
    )


# --- other uids -------------------------------------------------------------------------


def run_as(
    user: User,
    argv: Sequence[str],
    *,
    groups: Sequence[int] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*user.setpriv(groups), *argv],
        env=env or {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        cwd=cwd or "/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
    )


@functools.cache
def other_user_python() -> str | None:
    """An interpreter that uid 60001 can run (stdlib only, for client.py)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not candidate:
            continue
        done = run_as(A, [candidate, "-I", "-c", "import json, socket; print('ok')"])
        if done.returncode == 0 and done.stdout.strip() == "ok":
            return candidate
    return None


@functools.cache
def cli_reachable() -> str:
    """'' if uid 60001 can run the venv's tokensvc CLI, else why not."""
    done = run_as(A, [sys.executable, "-m", "tokensvc", "token", "--help"])
    if done.returncode == 0:
        return ""
    return (
        f"uid 60001 cannot run {sys.executable} -m tokensvc: {done.stderr.strip()[-200:]}"
        " (other uids need to execute the venv's interpreter and read the checkout:"
        " every directory above it must be searchable by others, e.g. mode 0755)"
    )


def stall_as(
    tree: Tree,
    user: User,
    count: int,
    prefix: bytes,
    hold: float,
    *,
    socket_path: Path | None = None,
) -> subprocess.Popen[str]:
    """Start a slow-loris client as ``user``; read its first line ("connected") before use."""
    py = other_user_python()
    assert py is not None
    argv = [py, "-I", str(tree.base / "stall.py"), str(socket_path or tree.socket)]
    return subprocess.Popen(
        [*user.setpriv(), *argv, str(count), prefix.hex(), str(hold)],
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def raw_exchange(
    tree: Tree,
    user: User,
    requests: Sequence[bytes],
    *,
    groups: Sequence[int] | None = None,
    mode: str = "plain",
    socket_path: Path | None = None,
) -> list[dict[str, object]]:
    py = other_user_python()
    assert py is not None
    done = run_as(
        user,
        [
            py,
            "-I",
            str(tree.client),
            str(socket_path or tree.socket),
            mode,
            *(r.hex() for r in requests),
        ],
        groups=groups,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def token_of(reply: dict[str, object]) -> str:
    text = str(reply["reply"])
    assert text.startswith("OK ") and text.endswith("\n"), reply
    return text[3:-1]


def claims_of(tree: Tree, token: str) -> Claims:
    claims, _key = open_token(token, tree.ring())
    return claims


def cli_env(tree: Tree) -> dict[str, str]:
    """The environment the CLI runs in as another user: the tree's settings, nothing of ours."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TOKENSVC_CONFIG": str(tree.config)}


def cli_as(
    user: User,
    tree: Tree,
    *args: str,
    groups: Sequence[int] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return run_as(
        user,
        [sys.executable, "-m", "tokensvc", *args],
        groups=groups,
        env=cli_env(tree),
        cwd=tree.base,
        stdin=stdin,
    )


def cli(tree: Tree, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as root (the test process's identity)."""
    env = daemon_env(tree)
    return subprocess.run(
        [sys.executable, "-m", "tokensvc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
        cwd=tree.base,
    )
