"""The whole stack on one machine: mint daemon, OPA, server (``make demo``, ``make up``, tests).

Everything lives in one work directory (key ring, socket, spool, logs,
settings file) and every process is a child started here, in its own
session, stopped by its own pid (SIGTERM, then SIGKILL after a grace
period). Nothing is left running when :meth:`Stack.stop` returns.

OPA runs in one of two ways:

- *signed bundle* (``bundle`` given): a local bundle server (a thread here)
  serves the signed bundle and OPA, configured by deploy/opa/config.yaml,
  downloads it, verifies its signature with the public key, and activates
  it -- exactly the production path;
- *policy directories* (no bundle): ``opa run`` loads them directly (quick
  local iteration only);
- *external* (``external_opa``): someone else runs OPA (the tests' fixture).

The cast of users mirrors policies/data (see docs/api.md, "Demo users").
"""

from __future__ import annotations

import contextlib
import ctypes
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from tokensvc.core.errors import ConfigError

STOP_GRACE: Final = 5.0  # seconds between SIGTERM and SIGKILL
START_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class User:
    """A demo/test identity (numeric, as setpriv and the policy data use them)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    role: str


# uids/gids match policies/data/wsc: 2001 ml-team, 2002 vision, 2003 students, 2004 datasets.
USER_A: Final = User("ada", 1002, 2001, (2001,), "A: a member of ml-team")
USER_B: Final = User("ben", 1004, 2003, (2003,), "B: a student, not in ml-team")
USER_C: Final = User("cy", 1005, 2002, (2001, 2002, 2003), "C: in ml-team, vision and students")
ADMIN: Final = User("alice", 1001, 2001, (2001, 2004), "admin of ml-team")
CAST: Final = (USER_A, USER_B, USER_C, ADMIN)


def setpriv(user: User, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``user`` (uid, gid and exactly its supplementary groups)."""
    groups = ["--groups", ",".join(map(str, user.groups))] if user.groups else ["--clear-groups"]
    return [
        "setpriv",
        "--reuid",
        str(user.uid),
        "--regid",
        str(user.gid),
        *groups,
        "--",
        *argv,
    ]


_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies, even by SIGKILL (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, timeout: float = 1.0, cafile: str | None = None) -> int:
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310
            status: int = resp.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def wait_until(check: Any, what: str, timeout: float = START_TIMEOUT, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"{what}: process exited with code {proc.returncode}")
        time.sleep(0.05)
    raise ConfigError(f"{what}: not ready after {timeout:.0f} s")


BUNDLE_RESOURCE: Final = "/bundles/wsc.tar.gz"  # deploy/opa/config.yaml: bundles.wsc.resource
# The OPA sidecar's Go runtime settings, as deploy/k8s/server.yaml sets them
# (less garbage collection per decision, bounded by a soft memory limit).
OPA_ENV: Final = {"GOGC": "400", "GOMEMLIMIT": "400MiB"}


class BundleServer:
    """Serves one bundle (bytes, swappable) at BUNDLE_RESOURCE, in a thread; counts requests.

    What a bundle service does for OPA: the demo serves one file, the tests
    swap in tampered or unsigned bundles and wait for OPA's next poll.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        """Listen on ``host`` (a free port): loopback, or the address pods reach."""
        self.bundle: bytes | None = None
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                    body = server.bundle
                if self.path.split("?")[0] != BUNDLE_RESOURCE or body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # OPA's own log says what it fetched

        self._httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.1,), daemon=True).start()

    def publish(self, bundle: bytes) -> int:
        """Serve ``bundle`` from now on; returns the request count at the swap."""
        with self._lock:
            self.bundle = bundle
            return self.requests

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Stack:
    """Paths and processes of one local stack."""

    workdir: Path
    opa: str
    policy_paths: Sequence[str] = ()
    bundle: Path | None = None  # signed bundle .tar.gz
    verification_key: Path | None = None  # public key (PEM) the bundle is signed for
    opa_config: Path | None = None  # deploy/opa/config.yaml (bundle service, keys, logs)
    external_opa: str | None = None  # URL of an OPA someone else runs (tests' fixture)
    server_settings: Mapping[str, str | int | float] = field(default_factory=dict)  # [server]
    server_ca: Path | None = None  # CA clients trust when server_settings has tls_cert
    realm: str = "demo"
    python: str = sys.executable
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    opa_port: int = 0
    server_port: int = 0
    _bundle_server: BundleServer | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    # --- layout ----------------------------------------------------------------------

    @property
    def keyring(self) -> Path:
        return self.workdir / "keys" / "keyring"

    @property
    def socket(self) -> Path:
        return self.workdir / "run" / "mint.sock"

    @property
    def spool(self) -> Path:
        return self.workdir / "spool"

    @property
    def config(self) -> Path:
        return self.workdir / "tokensvc.conf"

    @property
    def server_url(self) -> str:
        scheme = "https" if self.server_settings.get("tls_cert") else "http"
        return f"{scheme}://127.0.0.1:{self.server_port}"

    def probe(self, url: str) -> int:
        """HTTP status of GET url (0 if unreachable), trusting server_ca for https."""
        return _get(url, cafile=str(self.server_ca) if self.server_ca else None)

    @property
    def opa_url(self) -> str:
        return self.external_opa or f"http://127.0.0.1:{self.opa_port}"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for any tokensvc process of this stack (settings come from the file)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")}
        env["TOKENSVC_CONFIG"] = str(self.config)
        return {**env, **(extra or {})}

    def tokensvc(self, *args: str) -> list[str]:
        return [self.python, "-m", "tokensvc", *args]

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # --- start -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Work directory, key ring and settings file (idempotent)."""
        from tokensvc.core.keys import generate_keyring  # noqa: PLC0415

        self.workdir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # noqa: S103 (users' clients read the settings file)
        for sub, mode in (("keys", 0o700), ("run", 0o755), ("logs", 0o700), ("spool", 0o750)):
            (self.workdir / sub).mkdir(mode=mode, exist_ok=True)
            os.chmod(self.workdir / sub, mode)
        if not self.keyring.exists():
            generate_keyring(self.keyring)
        self.opa_port = self.opa_port or free_port()
        self.server_port = self.server_port or free_port()
        self.config.write_text(
            "\n".join(
                [
                    f'realm = "{self.realm}"',
                    f'keyring = "{self.keyring}"',
                    f'socket = "{self.socket}"',
                    f'server_url = "{self.server_url}"',
                    f'server_ca = "{self.server_ca or ""}"',
                    "",
                    "[server]",
                    'bind = "127.0.0.1"',
                    f"port = {self.server_port}",
                    f'opa_url = "{self.opa_url}"',
                    f'spool_dir = "{self.spool}"',
                    *(f"{k} = {json.dumps(v)}" for k, v in self.server_settings.items()),
                    "",
                ]
            )
        )
        os.chmod(self.config, 0o644)

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        log = self.log(name).open("ab")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop them in order
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (async-signal-safe: one prctl call)
        )

    def start_opa(self) -> None:
        if self.external_opa is None:
            argv = [self.opa, "run", "--server", "--addr", f"127.0.0.1:{self.opa_port}"]
            # As deploy/k8s/server.yaml: data kept as AST values, no conversion per read.
            argv += ["--optimize-store-for-read-speed"]
            argv += ["--log-level", "error", "--skip-version-check"]
            env = {**os.environ, **OPA_ENV}
            if self.bundle is not None:
                if self.verification_key is None or self.opa_config is None:
                    raise ConfigError("a signed bundle needs its verification key and OPA config")
                if self._bundle_server is None:
                    self._bundle_server = BundleServer()
                    self._bundle_server.publish(self.bundle.read_bytes())
                env["WSC_BUNDLE_URL"] = self._bundle_server.url
                argv += [
                    "--config-file",
                    str(self.opa_config),
                    "--set-file",
                    f"keys.wsc_bundle.key={self.verification_key}",
                ]
            else:
                argv += ["--set", "decision_logs.console=true", *self.policy_paths]
            self._spawn("opa", argv, env)
        wait_until(
            lambda: _get(f"{self.opa_url}/health?bundles") == 200,
            "OPA (bundle activated)",
            proc=self.procs.get("opa"),
        )

    def start_mintd(self) -> None:
        self._spawn("mintd", self.tokensvc("mintd"), self.env())
        wait_until(self.socket.exists, "mint daemon", proc=self.procs["mintd"])

    def start_server(self, *, ready: bool = True) -> None:
        """Start the server; wait until it is ready (or only live, ``ready=False``)."""
        self._spawn("server", self.tokensvc("server"), self.env())
        probe = f"{self.server_url}/{'readyz' if ready else 'healthz'}"
        wait_until(lambda: self.probe(probe) == 200, "server", proc=self.procs["server"])

    def start_replica(self, name: str) -> str:
        """Another server process with the same settings on its own port; returns its URL.

        Replicas share the key ring, OPA and submitter but not the in-memory
        replay cache: what stops a replay between them is the pod name.
        """
        port = free_port()
        env = self.env({"TOKENSVC_SERVER_PORT": str(port)})
        self._spawn(name, self.tokensvc("server"), env)
        url = self.server_url.rsplit(":", 1)[0] + f":{port}"
        wait_until(lambda: self.probe(f"{url}/readyz") == 200, name, proc=self.procs[name])
        return url

    def start(self) -> None:
        self.prepare()
        self.start_opa()
        self.start_mintd()
        self.start_server()

    # --- stop ------------------------------------------------------------------------

    def stop_process(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop every process we started (server first, OPA last) and the bundle server."""
        for name in ("server", "mintd", "opa", *list(self.procs)):
            self.stop_process(name)
        if self._bundle_server is not None:
            self._bundle_server.stop()
            self._bundle_server = None
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def watch(self, stop: threading.Event, interval: float = 0.5) -> str | None:
        """Block until ``stop`` is set (None) or a process dies (its name)."""
        while not stop.wait(interval):
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    return name
        return None

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        return ""


__all__ = [
    "ADMIN",
    "CAST",
    "USER_A",
    "USER_B",
    "USER_C",
    "BundleServer",
    "Stack",
    "User",
    "setpriv",
]
