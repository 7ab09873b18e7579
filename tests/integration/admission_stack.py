"""Shared helpers for the admission tests: a real stack, users via setpriv, raw HTTP.

The stack is the real thing: ``tokensvc mintd`` as root, OPA with the
repository's policies and data, ``tokensvc server`` with the spool
submitter. Users A, B, C and the ml-team admin act through
``setpriv … tokensvc submit|jobs|cancel|priority`` so their identity comes
from the kernel, as in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from support.binding import forge_token as support_forge_token
from support.toolpaths import tool

from tokensvc.cluster.devstack import Stack, User, setpriv
from tokensvc.core.keys import KeyRing

ROOT = Path(__file__).resolve().parents[2]
OPA = ROOT / ".tools" / "bin" / "opa"
POLICY_PATHS = [str(ROOT / "policies" / "wsc"), str(ROOT / "policies" / "data")]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv, mint daemon)")


def k8s_schema_version() -> str:
    """TOKENSVC_K8S_SCHEMA_VERSION (make exports it), else the Makefile's one pin."""
    import re  # noqa: PLC0415

    version = os.environ.get("TOKENSVC_K8S_SCHEMA_VERSION")
    if version:
        return version
    match = re.search(
        r"^K8S_SCHEMA_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE
    )
    assert match, "Makefile pins K8S_SCHEMA_VERSION"
    return match.group(1)


def conftest_binary() -> str:
    return tool("conftest")


def opa_binary() -> str:
    return tool("opa")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def stack_fixture(
    external_opa: str | None = None,
    tmp_root: str = "/tmp",
    server_settings: dict[str, str | int | float] | None = None,
) -> Iterator[Stack]:
    """A started stack (mint daemon, server; OPA too unless ``external_opa``), then cleanup.

    The work directory is a fresh directory under /tmp: the socket path must
    fit in sun_path, and setpriv'd users must be able to reach it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="tsvc-", dir=tmp_root))
    stack = Stack(
        workdir=workdir,
        opa=opa_binary(),
        policy_paths=POLICY_PATHS,
        external_opa=external_opa,
        server_settings=server_settings or {},
        realm="test",
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        stack.remove()


def run_as(stack: Stack, user: User, *args: str, timeout: float = 30) -> Run:
    """``tokensvc ARGS`` as ``user`` (real uid/gid/groups via setpriv), through the daemon."""
    proc = subprocess.run(
        setpriv(user, stack.tokensvc(*args)),
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def forge_token(
    stack: Stack,
    user: User,
    *,
    realm: str | None = None,
    issued_ago: int = 0,
    ttl: int = 300,
    body: Any = None,
    host: str = "test",
) -> str:
    """A token sealed with the stack's own key (the test runs as root and may read it).

    With ``body``, the token is bound to submitting that job request; ``host``
    is the user node it claims to be minted on.
    """
    return support_forge_token(
        KeyRing.load(stack.keyring),
        user,
        realm=realm or stack.realm,
        host=host,
        issued_ago=issued_ago,
        ttl=ttl,
        body=body,
    )


def http(
    stack: Stack,
    method: str,
    path: str,
    token: str | None = None,
    **kwargs: Any,
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, stack.server_url + path, headers=headers, timeout=10, **kwargs)


def spooled(stack: Stack) -> list[str]:
    return sorted(p.stem for p in stack.spool.glob("wsc-job-*.yaml"))


def job_body(project: str = "ml-team", *mounts: tuple[str, str]) -> dict[str, Any]:
    return {
        "project": project,
        "image": "busybox:1.36",
        "command": ["sleep", "60"],
        "mounts": [{"path": p, "mode": m} for p, m in mounts],
    }
