"""Cluster management HTTP API: Starlette on uvicorn, thin over :mod:`tokensvc.service`.

Endpoints are ``async`` only to read the (bounded) body; every blocking step
(token validation, OPA, the submitter) runs in one hop to a bounded thread
pool (``loop.run_in_executor``; ~60 us less per request than
``anyio.to_thread`` with a limiter), so the event loop never blocks.

Status codes: 201/200 success; 400 unreadable body; 401 token (a generic body
for anything before authentication, the reason after it); 403 policy denial
with every reason; 404 no such job; 409 the submit token was used before;
413 body too large; 422 schema violations, each listed; 503 OPA or the
submitter could not give an answer (fail closed: nothing was created).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, TextIO, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokensvc.claims import Claims
from tokensvc.config import Settings
from tokensvc.errors import (
    InvalidToken,
    NotFound,
    PolicyUnavailable,
    TokenRejected,
    TokenServiceError,
)
from tokensvc.jobs import (
    MAX_BODY_BYTES,
    InvalidRequest,
    is_job_name,
    parse_job_request,
    parse_priority_body,
)
from tokensvc.keys import KeyRing
from tokensvc.opa import OpaClient
from tokensvc.openapi import OPENAPI
from tokensvc.replay import MemoryReplayCache
from tokensvc.service import AUDIT_LOGGER, AdmissionService, Denied, audit_line
from tokensvc.submitters import (
    JobExists,
    KubernetesSubmitter,
    SpoolSubmitter,
    SubmitFailed,
    Submitter,
)
from tokensvc.validate import TokenValidator

log = logging.getLogger("tokensvc.server")
_T = TypeVar("_T")

MAX_TOKEN_CHARS: Final = 8192  # a token is a few hundred characters
REQUEST_ID_HEADER: Final = "X-Request-Id"


class _BodyTooLarge(Exception):
    pass


class _BadBody(Exception):
    pass


def _json(status: int, body: dict[str, Any], request_id: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        body, status_code=status, headers={REQUEST_ID_HEADER: request_id, **headers}
    )


def _bearer(request: Request) -> str:
    """The token from ``Authorization: Bearer …``; InvalidToken for anything else."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken
    return token


async def _read_json(request: Request, limit: int) -> object:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as err:
        raise _BadBody from err


_BEARER: Final = {"WWW-Authenticate": "Bearer"}


def _error_body(err: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:  # noqa: PLR0911
    """Map the error tree to (status, body, headers); subclasses before their parents."""
    if isinstance(err, InvalidToken):
        return 401, {"error": "invalid token"}, _BEARER
    if isinstance(err, JobExists):
        return 409, {"error": str(err)}, {}
    if isinstance(err, TokenRejected):
        # Only reached after the token authenticated (invariant 3).
        return 401, {"error": str(err)}, _BEARER
    if isinstance(err, Denied):
        body = {"error": "denied by policy", "reasons": list(err.reasons)}
        return 403, {**body, "decision_id": err.decision_id}, {}
    if isinstance(err, NotFound):
        return 404, {"error": "no such job"}, {}
    if isinstance(err, InvalidRequest):
        return 422, {"error": "invalid request", "reasons": list(err.reasons)}, {}
    if isinstance(err, PolicyUnavailable | SubmitFailed):
        # created: false = this request left nothing behind; null = unknown.
        uncertain = isinstance(err, SubmitFailed) and err.uncertain
        return 503, {"error": str(err), "created": None if uncertain else False}, {}
    return 500, {"error": "internal error"}, {}


def _error_response(err: Exception, request_id: str) -> JSONResponse:
    status, body, headers = _error_body(err)
    if status == 500:
        log.error("request %s failed: %s", request_id, type(err).__name__)
    return _json(status, body, request_id, **headers)


Handler = Callable[[Request, str], Awaitable[JSONResponse]]


class App:
    """The Starlette application around one :class:`AdmissionService`."""

    def __init__(
        self,
        service: AdmissionService,
        *,
        max_body: int = MAX_BODY_BYTES,
        threads: int = 64,
    ) -> None:
        self.service = service
        self.max_body = max_body
        # Bounded: beyond `threads` concurrent calls, work queues for a free thread.
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="tokensvc")
        routes = [
            Route("/v1/jobs", self._endpoint("submit", self.submit), methods=["POST"]),
            Route("/v1/jobs", self._endpoint("list", self.list_jobs), methods=["GET"]),
            Route("/v1/jobs/{job_id}", self._endpoint("get", self.get_job), methods=["GET"]),
            Route(
                "/v1/jobs/{job_id}", self._endpoint("cancel", self.cancel_job), methods=["DELETE"]
            ),
            Route(
                "/v1/jobs/{job_id}/priority",
                self._endpoint("set_priority", self.set_priority),
                methods=["PUT"],
            ),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes)

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Let running calls finish, then stop the worker threads."""
        self._pool.shutdown(wait=True)

    def _endpoint(self, action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        histogram = self.service.metrics.request_seconds.labels(action)

        async def endpoint(request: Request) -> Response:
            request_id = secrets.token_hex(8)
            with histogram.time():
                try:
                    return await handler(request, request_id)
                except _BodyTooLarge:
                    return _json(413, {"error": "request body too large"}, request_id)
                except _BadBody:
                    return _json(400, {"error": "request body is not JSON"}, request_id)
                except TokenServiceError as err:
                    return _error_response(err, request_id)

        return endpoint

    async def _as_caller(
        self, request: Request, request_id: str, act: Callable[[Claims], _T]
    ) -> _T:
        """Authenticate the bearer token, then ``act`` as its claims: one worker-thread hop."""
        try:
            token = _bearer(request)
        except InvalidToken:
            self.service.metrics.auth_failures.labels("invalid").inc()
            raise

        def call() -> _T:
            return act(self.service.authenticate(token, request_id=request_id))

        result: _T = await self._run(call)
        return result

    @staticmethod
    def _job_id(request: Request) -> str:
        job_id = str(request.path_params["job_id"])
        if not is_job_name(job_id):
            raise NotFound(job_id)
        return job_id

    # --- job API ---------------------------------------------------------------------

    async def submit(self, request: Request, request_id: str) -> JSONResponse:
        body = await _read_json(request, self.max_body)
        done = await self._as_caller(
            request,
            request_id,
            # Schema checks after authentication: strangers learn nothing.
            lambda c: self.service.submit(c, parse_job_request(body), request_id=request_id),
        )
        payload = {"job": done.job.to_json(), "decision_id": done.decision_id, "pod": done.pod}
        return _json(201, payload, request_id, Location=f"/v1/jobs/{done.job.name}")

    async def list_jobs(self, request: Request, request_id: str) -> JSONResponse:
        done = await self._as_caller(
            request, request_id, lambda c: self.service.list(c, request_id=request_id)
        )
        jobs = [j.to_json() for j in done.jobs]
        return _json(200, {"jobs": jobs, "decision_id": done.decision_id}, request_id)

    async def get_job(self, request: Request, request_id: str) -> JSONResponse:
        job_id = self._job_id(request)
        done = await self._as_caller(
            request, request_id, lambda c: self.service.get(c, job_id, request_id=request_id)
        )
        return _json(200, {"job": done.job.to_json(), "decision_id": done.decision_id}, request_id)

    async def cancel_job(self, request: Request, request_id: str) -> JSONResponse:
        job_id = self._job_id(request)
        done = await self._as_caller(
            request, request_id, lambda c: self.service.cancel(c, job_id, request_id=request_id)
        )
        payload = {"job": done.job.to_json(), "cancelled": True, "decision_id": done.decision_id}
        return _json(200, payload, request_id)

    async def set_priority(self, request: Request, request_id: str) -> JSONResponse:
        job_id = self._job_id(request)
        body = await _read_json(request, self.max_body)
        done = await self._as_caller(
            request,
            request_id,
            lambda c: self.service.set_priority(
                c, job_id, parse_priority_body(body), request_id=request_id
            ),
        )
        return _json(200, {"job": done.job.to_json(), "decision_id": done.decision_id}, request_id)

    # --- operations ------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        # Ready only once OPA has activated its (signed) bundle: before that
        # every decision would be undefined, i.e. a 503.
        ready: bool = await self._run(self.service.opa.ready)
        if ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "opa": "bundle not activated"}, 503)

    async def metrics(self, request: Request) -> Response:
        return Response(
            generate_latest(self.service.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)


def create_app(
    service: AdmissionService, *, max_body: int = MAX_BODY_BYTES, threads: int = 64
) -> Starlette:
    """The ASGI application (uvicorn serves it; tests may too)."""
    return App(service, max_body=max_body, threads=threads).app


# --- process wiring ----------------------------------------------------------------------


def build_service(settings: Settings) -> AdmissionService:
    """Load the key ring, connect OPA and the submitter, as the settings say."""
    server = settings.server
    ring = KeyRing.load(settings.keyring, trusted_gid=_trusted_gid(settings))
    validator = TokenValidator(
        ring,
        realm=settings.realm,
        replay=MemoryReplayCache(max_entries=server.replay_max_entries),
        max_ttl=settings.max_ttl,
        skew=settings.max_skew,
    )
    submitter: Submitter
    if server.submitter == "kubernetes":
        submitter = KubernetesSubmitter(
            namespace=server.namespace,
            kubeconfig=server.kubeconfig or None,
            context=server.kube_context or None,
            timeout=server.kube_timeout,
        )
    else:
        submitter = SpoolSubmitter(server.spool_dir, fsync=server.spool_fsync)
    opa = OpaClient(server.opa_url, timeout=server.opa_timeout, pool_size=server.threads)
    return AdmissionService(
        validator=validator, opa=opa, submitter=submitter, namespace=server.namespace
    )


def _trusted_gid(settings: Settings) -> int | None:
    gid = settings.server.keyring_trusted_gid
    return None if gid < 0 else gid


def configure_audit_log(stream: TextIO | None = None) -> None:
    """Audit lines (one JSON object each) to stderr, unformatted."""
    audit = logging.getLogger(AUDIT_LOGGER)
    if not audit.handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit.addHandler(handler)
        audit.setLevel(logging.INFO)
        audit.propagate = False


def _reload_keys_on_sighup(service: AdmissionService, settings: Settings) -> None:
    """SIGHUP re-reads the key ring (after `tokensvc keys add/rotate/retire`).

    A ring that fails to load (or is insecure) is refused and the old one
    stays in use, so a bad edit never locks everyone out.
    """

    def reload(signum: int, frame: object) -> None:
        try:
            service.validator.ring = KeyRing.load(
                settings.keyring, trusted_gid=_trusted_gid(settings)
            )
        except TokenServiceError as err:
            audit_line({"event": "keyring_reload_failed", "error": str(err)})
        else:
            audit_line({"event": "keyring_reloaded", "keys": len(service.validator.ring.keys)})

    signal.signal(signal.SIGHUP, reload)


def serve(settings: Settings) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM (uvicorn handles both)."""
    import uvicorn  # noqa: PLC0415 (only the server process needs it)

    configure_audit_log()
    # urllib3 (under the Kubernetes client) warns in plain text when it
    # retries; the submitter already reports every failure (503 + metrics + audit).
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    service = build_service(settings)
    server = settings.server
    _reload_keys_on_sighup(service, settings)
    audit_line(
        {
            "event": "start",
            "bind": f"{server.bind}:{server.port}",
            "opa": server.opa_url,
            "submitter": server.submitter,
            "realm": settings.realm,
            "pid": os.getpid(),
        }
    )
    app = App(service, max_body=server.max_body, threads=server.threads)
    config = uvicorn.Config(
        app.app,
        host=server.bind,
        port=server.port,
        access_log=False,  # the audit log records every decision; no token is in a URL
        log_level="warning",
        lifespan="off",
        server_header=False,
        timeout_keep_alive=30,
        # Beyond this many open connections uvicorn answers 503 at once
        # instead of queueing without bound.
        limit_concurrency=server.threads * 8,
        ssl_certfile=server.tls_cert or None,
        ssl_keyfile=server.tls_key or None,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        app.close()
        service.opa.close()
        service.submitter.close()


__all__ = ["App", "build_service", "configure_audit_log", "create_app", "serve"]
