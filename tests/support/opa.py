"""A real OPA with a signed policy bundle, for integration tests.

``start_opa(tmp_path)`` builds the bundle from policies/ (scripts/build_bundle.py)
signed with a fresh RS256 key, serves it from a local HTTP bundle server, and
starts ``opa run --server`` on a free 127.0.0.1 port with the deployment's own
configuration (deploy/opa/config.yaml: signature verification, masked decision
logs) plus test-only polling delays. It returns once ``/health?bundles`` is 200.

    from support.opa import start_opa

    @pytest.fixture
    def opa(tmp_path):
        handle = start_opa(tmp_path)          # or start_opa(tmp_path, data=...)
        yield handle
        handle.stop()

    result = opa.decide({"identity": {...}, "action": "list", "request": {}})
    requests.post(f"{opa.url}/v1/data/wsc/authz/decision", json={"input": ...})

``data`` replaces policies/data with test-owned admin data
({"groups": ..., "levels": ..., "exports": ...}, each a data.wsc.<key> document),
so a test's meaning never depends on the site's data. ``handle.publish(bytes)``
swaps the served bundle (``handle.build_bundle(...)`` makes signed, unsigned or
differently-revisioned ones); ``handle.log()`` is OPA's output so far.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

from tokensvc.cluster.devstack import BundleServer

from .toolpaths import tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "opa" / "config.yaml"
DECISION_PATH = "/v1/data/wsc/authz/decision"


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_bundle", ROOT / "scripts" / "build_bundle.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


def opa_binary() -> str:
    """The pinned OPA (installed by make when missing)."""
    return tool("opa")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_data_dir(dest: Path, data: Mapping[str, Any]) -> Path:
    """Lay out admin data as policies/data does: <dest>/wsc/<key>/data.json."""
    for key, value in data.items():
        path = dest / "wsc" / key / "data.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    return dest


@dataclass
class OpaHandle:
    """A running OPA and its bundle server. Call stop() (tests: in a fixture)."""

    url: str
    workdir: Path
    signing_key: Path
    public_key: Path
    data_dir: Path
    bundles: BundleServer
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: Any = field(repr=False)

    def build_bundle(
        self,
        name: str,
        *,
        signed: bool = True,
        revision: str = "test",
        data_dir: Path | None = None,
        signing_key: Path | None = None,
    ) -> bytes:
        """A bundle of policies/ + this handle's data (or data_dir).

        Signed with this handle's key (the one OPA trusts) unless signed=False
        or another signing_key is given.
        """
        out = self.workdir / "bundles" / f"{name}.tar.gz"
        builder.build_bundle(
            out,
            signing_key=(signing_key or self.signing_key) if signed else None,
            data_dir=data_dir or self.data_dir,
            revision=revision,
            opa=opa_binary(),
        )
        return out.read_bytes()

    def publish(self, bundle: bytes) -> int:
        """Serve bundle from now on; returns the bundle server's request count at the swap."""
        return self.bundles.publish(bundle)

    def health(self, *, bundles: bool = True) -> int:
        url = f"{self.url}/health" + ("?bundles" if bundles else "")
        return requests.get(url, timeout=5).status_code

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /health?bundles is 200 (a verified bundle is active)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"OPA exited ({self.process.returncode}):\n{self.log()}")
            try:
                if self.health() == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"OPA not ready after {timeout}s:\n{self.log()}")

    def wait_polled(self, since: int, polls: int = 2, timeout: float = 20.0) -> None:
        """Until OPA fetched the bundle `polls` more times after request count `since`.

        Two fetches after a swap mean the first fetch of the new bundle has been
        fully processed (OPA polls one download at a time).
        """
        deadline = time.monotonic() + timeout
        while self.bundles.requests < since + polls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"OPA did not poll the bundle server:\n{self.log()}")
            time.sleep(0.05)

    def query(self, path: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET (or POST payload to) an OPA REST path; the response body."""
        if payload is None:
            resp = requests.get(f"{self.url}{path}", timeout=10)
        else:
            resp = requests.post(f"{self.url}{path}", json=payload, timeout=10)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def decide(self, input: Mapping[str, Any]) -> dict[str, Any] | None:
        """data.wsc.authz.decision for input; None when OPA has no such document."""
        body = self.query(DECISION_PATH, {"input": input})
        result: dict[str, Any] | None = body.get("result")
        return result

    def revision(self) -> str | None:
        """The revision of the active bundle (None before any is active)."""
        body = self.query("/v1/data/system/bundles/wsc/manifest/revision")
        value: str | None = body.get("result")
        return value

    def log(self) -> str:
        self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """OPA's JSON log lines, parsed."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.bundles.stop()
        self._log_file.close()

    def __enter__(self) -> OpaHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_opa(
    tmp_path: Path,
    *,
    data: Mapping[str, Any] | None = None,
    signed: bool = True,
    revision: str = "test",
    wait: bool = True,
    timeout: float = 30.0,
    extra_args: tuple[str, ...] = (),
    transform: Callable[[bytes], bytes] | None = None,
) -> OpaHandle:
    """Start OPA serving a bundle built from policies/ (see the module docstring).

    data: test-owned admin data replacing policies/data. signed=False serves an
    unsigned bundle (OPA must refuse it; use wait=False). transform rewrites the
    first bundle before it is served (e.g. to tamper with it). extra_args go to
    `opa run` after the configuration.
    """
    workdir = Path(tempfile.mkdtemp(prefix="opa-", dir=tmp_path))  # several per test are fine
    signing_key = builder.generate_signing_key(workdir / "signing-key.pem")
    public_key = builder.public_key_path(signing_key)
    data_dir = builder.DEFAULT_DATA_DIR if data is None else write_data_dir(workdir / "data", data)
    first = workdir / "bundles" / "initial.tar.gz"
    builder.build_bundle(
        first,
        signing_key=signing_key if signed else None,
        data_dir=data_dir,
        revision=revision,
        opa=opa_binary(),
    )
    initial = first.read_bytes()
    bundles = BundleServer()
    bundles.publish(initial if transform is None else transform(initial))  # before OPA asks
    log_path = workdir / "opa.log"
    log_file = log_path.open("wb")
    port = free_port()
    cmd = [
        opa_binary(), "run", "--server",
        "--addr", f"127.0.0.1:{port}",
        "--optimize-store-for-read-speed",  # as deploy/k8s/server.yaml runs it
        "--config-file", str(CONFIG),
        "--set-file", f"keys.wsc_bundle.key={public_key}",
        "--set", "bundles.wsc.polling.min_delay_seconds=1",
        "--set", "bundles.wsc.polling.max_delay_seconds=1",
        "--log-format", "json",
        *extra_args,
    ]  # fmt: skip
    env = {**os.environ, "WSC_BUNDLE_URL": bundles.url}
    try:
        process = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    except BaseException:
        bundles.stop()
        log_file.close()
        raise
    handle = OpaHandle(
        url=f"http://127.0.0.1:{port}",
        workdir=workdir,
        signing_key=signing_key,
        public_key=public_key,
        data_dir=data_dir,
        bundles=bundles,
        process=process,
        log_path=log_path,
        _log_file=log_file,
    )
    if wait:
        try:
            handle.wait_ready(timeout)
        except BaseException:
            handle.stop()
            raise
    return handle
