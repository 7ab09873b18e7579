"""The HTTP app on a real uvicorn server on 127.0.0.1, in a thread of the test process.

No root and no subprocess: the server is what ``tokensvc server`` runs
(:func:`tokensvc.cluster.app.create_app` behind uvicorn with the guarded
protocol), with an in-memory key ring, a spool directory under the test's
tmp_path, and a real OPA (``support.opa``) or any other OPA-speaking peer::

    with AppServer(tmp_path, opa_url=opa.url) as server:
        token = server.token(USER_A)
        requests.post(server.url + "/v1/jobs", json=..., headers=server.bearer(token))

``submitter`` and ``audit`` replace the spool submitter and the audit writer
(to inject failures through their public interfaces); ``audit_lines`` holds
every audit event the server wrote.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from support.binding import forge_token
from tokensvc.cluster.app import create_app
from tokensvc.cluster.devstack import User
from tokensvc.cluster.http_limits import ServerLimits, guarded_protocol
from tokensvc.cluster.opa import OpaClient
from tokensvc.cluster.service import AdmissionService
from tokensvc.cluster.submitters import SpoolSubmitter, Submitter
from tokensvc.core.keys import KeyRing, new_key
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.validate import TokenValidator

REALM = "test"


class AppServer:
    """A started server (``with`` it, or call start() and stop())."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        opa_url: str,
        limits: ServerLimits | None = None,
        submitter: Submitter | None = None,
        audit: Callable[[Mapping[str, Any]], None] | None = None,
        max_body: int | None = None,
    ) -> None:
        self.spool = tmp_path / "spool"
        self.spool.mkdir(exist_ok=True)
        self.ring = KeyRing((new_key(),))
        self.opa_url = opa_url
        self.limits = limits or ServerLimits()
        self.submitter = submitter or SpoolSubmitter(self.spool, fsync=False)
        self.audit_lines: list[dict[str, Any]] = []
        self._audit = audit
        self._max_body = max_body
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="app-server", daemon=True)
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self.url = ""

    # --- tokens ---------------------------------------------------------------------

    def token(
        self,
        user: User,
        *,
        realm: str = REALM,
        issued_ago: int = 0,
        ttl: int = 300,
        body: Any = None,
    ) -> str:
        """A fresh token for ``user``, sealed with the server's key (bound to ``body`` if given)."""
        return forge_token(self.ring, user, realm=realm, issued_ago=issued_ago, ttl=ttl, body=body)

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def spooled(self) -> list[str]:
        return sorted(p.stem for p in self.spool.glob("wsc-job-*.yaml"))

    # --- lifecycle ------------------------------------------------------------------

    def _write_audit(self, event: Mapping[str, Any]) -> None:
        self.audit_lines.append(dict(event))
        if self._audit is not None:
            self._audit(event)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # noqa: BLE001 (handed to start() in the test thread)
            self._error = err
            self._started.set()

    async def _serve(self) -> None:
        validator = TokenValidator(self.ring, realm=REALM, replay=MemoryReplayCache())
        # Built on the server's own loop: the OPA client belongs to it.
        service = AdmissionService(
            validator=validator,
            opa=OpaClient(self.opa_url, timeout=2.0, pool_size=8),
            submitter=self.submitter,
            namespace="wsc-jobs",
            audit=self._write_audit,
            threads=8,
        )
        app = (
            create_app(service, limits=self.limits)
            if self._max_body is None
            else create_app(service, limits=self.limits, max_body=self._max_body)
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            http=guarded_protocol(self.limits),
            ws="none",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=self.limits.keep_alive_timeout,
            limit_concurrency=None,
        )
        server = uvicorn.Server(config)
        self._server = server
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()  # raises why it did not start
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        try:
            await serving
        finally:
            await service.close()

    def start(self) -> AppServer:
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            raise RuntimeError("the app server did not start") from self._error
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)

    def open_connections(self) -> int:
        """Connections the server holds open right now."""
        assert self._server is not None
        return len(self._server.server_state.connections)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
