"""Cluster management HTTP API: Starlette routes on uvicorn, thin over the service.

Everything runs on one event loop (uvloop): the body is read, the token
validated, OPA asked (asynchronous client) and the pod manifest built there;
only blocking steps (the spool write, the Kubernetes API, audit lines) go to
the service's bounded thread pool.

Status codes: 201/200 success; 400 unreadable body; 401 token (a generic body
for anything before authentication, the reason after it); 403 policy denial
with every reason; 404 no such job (or no such path); 405 method not allowed;
409 the submit token was used before, or (logs) the job has not started yet;
413 body too large; 415 a body that is not ``application/json``; 422 schema
violations, each listed; 431 request head too large; 501 (logs) the job
store keeps no output; 503 OPA or the submitter could not give an answer, or
the server is at its limit of requests in flight (fail closed: nothing was
created). Every error body carries ``code`` and ``error`` from
:mod:`tokensvc.core.errors`. A job's output (``GET /v1/jobs/{id}/logs``) is
the one answer that is not JSON: ``text/plain``, streamed as it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tokensvc.cluster.audit import audit_line, configure_audit_log
from tokensvc.cluster.http_limits import InFlightLimit, ServerLimits, guarded_protocol
from tokensvc.cluster.jobs import (
    MAX_BODY_BYTES,
    is_job_name,
    parse_job_request,
    parse_priority_body,
)
from tokensvc.cluster.opa import ACTIONS, OpaClient
from tokensvc.cluster.openapi import OPENAPI
from tokensvc.cluster.service import Acted, AdmissionService, Caller, JobOutput, Submitted
from tokensvc.cluster.submitters import submitter_from_settings
from tokensvc.core.config import Settings
from tokensvc.core.errors import (
    BodyTooLarge,
    InvalidRequest,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    PolicyDenied,
    PolicyUnavailable,
    SubmitFailed,
    TokenServiceError,
    UnsupportedMediaType,
)
from tokensvc.core.keys import KeyRing
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.validate import TokenValidator

log = logging.getLogger("tokensvc.cluster.app")

MAX_TOKEN_CHARS: Final = 8192  # a token is a few hundred characters
REQUEST_ID_HEADER: Final = "X-Request-Id"
DECISION_ID_HEADER: Final = "X-Decision-Id"  # a streamed answer's decision (no JSON body)

Endpoint = Callable[[Request], Awaitable[Response]]
# A job API handler: the request and its request id in, the answer out.
JobHandler = Callable[[Request, str], Awaitable[Response]]


# --- answers --------------------------------------------------------------------------


def _error_body(err: TokenServiceError) -> dict[str, Any]:
    """The body of an error's answer: its ``code`` from the error table, and its details."""
    body: dict[str, Any] = {"code": err.code, "error": str(err)}
    if isinstance(err, PolicyDenied):
        body.update(error="denied by policy", reasons=list(err.reasons))
        body["decision_id"] = err.decision_id
    elif isinstance(err, MethodNotAllowed):
        body["error"] = "method not allowed"
    elif isinstance(err, InvalidRequest):
        body.update(error="invalid request", reasons=list(err.reasons))
    elif isinstance(err, SubmitFailed):
        body["created"] = err.created
    elif isinstance(err, PolicyUnavailable):
        body["created"] = False  # refused before anything was stored
    elif isinstance(err, NotFound):
        body["error"] = "no such job"
    return body


def _error(err: TokenServiceError, headers: dict[str, str] | None = None) -> Response:
    """The answer to an error: status from the error table; 401 names the Bearer scheme."""
    extra = dict(headers or {})
    if err.http_status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    return JSONResponse(_error_body(err), err.http_status, headers=extra)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route for the path, or not for the method) in our format."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return JSONResponse({"code": NotFound.code, "error": "not found"}, 404)
    if status == 405 and isinstance(exc, HTTPException):
        # Starlette lists a route's methods in set order and with HEAD; ours
        # are the documented ones, sorted (HEAD works wherever GET does).
        offered = (exc.headers or {}).get("Allow", "").split(", ")
        allow = ", ".join(sorted(m for m in offered if m and m != "HEAD"))
        return _error(MethodNotAllowed(["method not allowed"]), {"Allow": allow})
    return JSONResponse({"code": "internal", "error": "internal error"}, status)


def _route(path: str, **handlers: Endpoint) -> Route:
    """A route whose methods are ``handlers``' keys (HEAD answers as GET); others get 405."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


# --- request parts ----------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    """The token from ``Authorization: Bearer …``; None when there is no usable one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return token


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


async def _read_json(request: Request, limit: int, timeout: float) -> object:
    """The request body as JSON: ``application/json``, at most ``limit`` bytes, within ``timeout``.

    A body beyond the limit is refused before it is all read.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(["request body must be application/json"])
    too_large = BodyTooLarge([f"request body larger than {limit} bytes"])
    declared = request.headers.get("content-length")
    # ASCII digits only: str.isdigit() is also true for "³" and other digits int() refuses.
    if declared is not None and (not _is_decimal(declared) or int(declared) > limit):
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError as err:
        raise MalformedBody([f"request body not received within {timeout:g} s"]) from err
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8; absurd nesting
        raise MalformedBody(["request body is not JSON"]) from err


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_text(doc: object, where: str) -> Iterator[str]:
    """Where ``doc`` holds a string that is not Unicode text (a lone surrogate)."""
    if isinstance(doc, str):
        if not _is_text(doc):
            yield where or "body"
    elif isinstance(doc, dict):
        for key, value in doc.items():
            if not _is_text(key):
                yield f"a key in {where or 'body'}"
            else:
                yield from _not_text(value, f"{where}.{key}" if where else key)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _not_text(value, f"{where}[{i}]")


def require_text(doc: object) -> None:
    """Refuse (422) a decoded body with strings that are not Unicode text.

    JSON's ``\\ud800`` escapes decode to lone surrogates, which no UTF-8
    store, YAML file or API server can hold: they are refused before the
    request reaches the policy or the store.
    """
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")  # one pass in C for the usual case
    except UnicodeEncodeError:
        reasons = [f"{where}: not valid Unicode (lone surrogate)" for where in _not_text(doc, "")]
        raise InvalidRequest(reasons) from None


def _job_name(job_id: str) -> str:
    # Checked before the token: a malformed id is 404 without a policy query.
    if not is_job_name(job_id):
        raise NotFound(job_id)
    return job_id


# --- the job API ------------------------------------------------------------------------


class JobApi:
    """The ``/v1/jobs`` handlers around one :class:`AdmissionService`."""

    def __init__(self, service: AdmissionService, *, max_body: int, body_timeout: float) -> None:
        self.service = service
        self.max_body = max_body
        self.body_timeout = body_timeout
        # Histogram children looked up once: ``labels()`` takes a lock and walks a dict.
        self._seconds = {
            action: service.metrics.request_seconds.labels(action) for action in ACTIONS
        }

    def endpoint(self, action: str, handler: JobHandler) -> Endpoint:
        """``handler`` with a request id, its latency metric, and every error as its answer."""
        seconds = self._seconds[action]

        async def call(request: Request) -> Response:
            request_id = secrets.token_hex(8)
            started = time.perf_counter()
            try:
                response = await handler(request, request_id)
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is left to read it
            except TokenServiceError as err:
                response = _error(err)
            except Exception as err:  # noqa: BLE001 (answered 500 and logged by type, see below)
                # The type only: a message could carry request data, which never goes to a log.
                log.error("request %s failed: %s", request_id, type(err).__name__)
                response = JSONResponse({"code": "internal", "error": "internal error"}, 500)
            response.headers[REQUEST_ID_HEADER] = request_id
            seconds.observe(time.perf_counter() - started)
            return response

        return call

    async def _caller(self, request: Request, request_id: str) -> Caller:
        return await self.service.authenticate(_bearer(request), request_id=request_id)

    async def _body(self, request: Request) -> object:
        return await _read_json(request, self.max_body, self.body_timeout)

    async def submit(self, request: Request, request_id: str) -> Response:
        body = await self._body(request)
        claims = await self._caller(request, request_id)
        # Schema checks after authentication: strangers learn nothing.
        require_text(body)
        job = parse_job_request(body)
        return await self.service.submit(claims, job, request_id=request_id, answer=_created)

    async def list(self, request: Request, request_id: str) -> Response:
        claims = await self._caller(request, request_id)
        done = await self.service.list(claims, request_id=request_id)
        jobs = [j.to_json() for j in done.jobs]
        return JSONResponse({"jobs": jobs, "decision_id": done.decision_id})

    async def get(self, request: Request, request_id: str) -> Response:
        name = _job_name(request.path_params["job_id"])
        claims = await self._caller(request, request_id)
        done = await self.service.get(claims, name, request_id=request_id)
        return _job_answer(done)

    async def cancel(self, request: Request, request_id: str) -> Response:
        name = _job_name(request.path_params["job_id"])
        claims = await self._caller(request, request_id)
        return await self.service.cancel(claims, name, request_id=request_id, answer=_cancelled)

    async def logs(self, request: Request, request_id: str) -> Response:
        name = _job_name(request.path_params["job_id"])
        claims = await self._caller(request, request_id)
        follow = _follow(request)  # after authentication, as body checks are
        output = await self.service.logs(claims, name, follow=follow, request_id=request_id)
        return _OutputResponse(output)

    async def set_priority(self, request: Request, request_id: str) -> Response:
        name = _job_name(request.path_params["job_id"])
        body = await self._body(request)
        claims = await self._caller(request, request_id)
        priority = parse_priority_body(body)
        return await self.service.set_priority(
            claims, name, priority, request_id=request_id, answer=_job_answer
        )


def _created(done: Submitted) -> Response:
    """201 for a job this request created; 200 for the same request's earlier job (a retry)."""
    payload = {"job": done.job.to_json(), "decision_id": done.decision_id, "pod": done.pod}
    status = 200 if done.existing else 201
    return JSONResponse(payload, status, headers={"Location": f"/v1/jobs/{done.job.name}"})


def _follow(request: Request) -> bool:
    """The ``follow`` query parameter: ``true`` or ``false`` (the default); no other parameter."""
    params = request.query_params
    unknown = sorted(set(params) - {"follow"})
    if unknown:
        raise InvalidRequest([f"unknown query parameter {unknown[0]!r}"])
    value = params.getlist("follow")
    if value not in ([], ["true"], ["false"]):
        raise InvalidRequest(["follow must be true or false"])
    return value == ["true"]


class _OutputResponse(StreamingResponse):
    """A job's output, sent chunk by chunk as it is read; the stream is closed whatever happens.

    Starlette ends the sending when the client disconnects; :meth:`__call__`
    then closes the output, which frees the worker thread reading it. When
    the output breaks off (the store's stream fails), the error ends the
    response without its final chunk, so the client sees it incomplete.
    """

    def __init__(self, output: JobOutput) -> None:
        headers = {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            DECISION_ID_HEADER: output.decision_id or "",
        }
        super().__init__(output.chunks(), media_type="text/plain", headers=headers)
        self.output = output

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.output.close()


def _job_answer(done: Acted) -> Response:
    return JSONResponse({"job": done.job.to_json(), "decision_id": done.decision_id})


def _cancelled(done: Acted) -> Response:
    payload = {"job": done.job.to_json(), "cancelled": True, "decision_id": done.decision_id}
    return JSONResponse(payload)


# --- operations -------------------------------------------------------------------------


def _operations(service: AdmissionService) -> list[Route]:
    openapi = JSONResponse(OPENAPI).body  # a constant: rendered once

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # Ready only once OPA has activated its (signed) bundle: before that
        # every decision would be undefined, i.e. a 503.
        if await service.opa.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "opa": "bundle not activated"}, 503)

    async def metrics(request: Request) -> Response:
        text = generate_latest(service.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    return [
        _route("/healthz", GET=healthz),
        _route("/readyz", GET=readyz),
        _route("/metrics", GET=metrics),
        _route("/openapi.json", GET=openapi_json),
    ]


def create_app(
    service: AdmissionService,
    *,
    max_body: int = MAX_BODY_BYTES,
    limits: ServerLimits | None = None,
) -> InFlightLimit:
    """The ASGI application: the job API and the operations endpoints, at most
    ``limits.max_in_flight`` requests at once (uvicorn serves it; so do the tests)."""
    limits = limits or ServerLimits()
    api = JobApi(service, max_body=max_body, body_timeout=limits.body_timeout)
    routes = [
        _route(
            "/v1/jobs",
            GET=api.endpoint("list", api.list),
            POST=api.endpoint("submit", api.submit),
        ),
        _route(
            "/v1/jobs/{job_id}",
            GET=api.endpoint("get", api.get),
            DELETE=api.endpoint("cancel", api.cancel),
        ),
        _route("/v1/jobs/{job_id}/priority", PUT=api.endpoint("set_priority", api.set_priority)),
        _route("/v1/jobs/{job_id}/logs", GET=api.endpoint("logs", api.logs)),
        *_operations(service),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    app.router.redirect_slashes = False  # /v1/jobs/ is no path of ours, not a redirect
    return InFlightLimit(app, limits.max_in_flight)


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
    submitter = submitter_from_settings(server)
    opa = OpaClient(server.opa_url, timeout=server.opa_timeout, pool_size=server.threads)
    shadow_opa = (
        OpaClient(
            server.shadow_opa_url,
            timeout=server.shadow_opa_timeout,
            pool_size=server.shadow_max_in_flight,
        )
        if server.shadow_opa_url
        else None
    )
    return AdmissionService(
        validator=validator,
        opa=opa,
        submitter=submitter,
        namespace=server.namespace,
        threads=server.threads,
        allow_unbound_submit=server.allow_unbound_submit,
        allow_unbound_actions=server.allow_unbound_actions,
        shadow_opa=shadow_opa,
        shadow_max_in_flight=server.shadow_max_in_flight,
    )


def _trusted_gid(settings: Settings) -> int | None:
    gid = settings.server.keyring_trusted_gid
    return None if gid < 0 else gid


def _reload_keys_on_sighup(
    service: AdmissionService, settings: Settings
) -> set[asyncio.Task[None]]:
    """SIGHUP re-reads the key ring (after `tokensvc keys add/rotate/retire`).

    A ring that fails to load (or is insecure) is refused and the old one
    stays in use, so a bad edit never locks everyone out. The file is read in
    a worker thread; the new ring replaces the old one on the loop.
    """
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def reload() -> None:
        try:
            ring = await service.blocking(
                lambda: KeyRing.load(settings.keyring, trusted_gid=_trusted_gid(settings))
            )
        except TokenServiceError as err:
            await service.blocking(
                audit_line, {"event": "keyring_reload_failed", "error": str(err)}
            )
        else:
            service.validator.ring = ring
            await service.blocking(
                audit_line, {"event": "keyring_reloaded", "keys": len(ring.keys)}
            )

    def on_sighup() -> None:
        task = loop.create_task(reload())
        running.add(task)
        task.add_done_callback(running.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    return running


def _stopped(signum: int, frame: object) -> None:
    """Installed before uvicorn's handlers; see :func:`_serve`."""


async def _reconcile_forever(service: AdmissionService, settings: Settings) -> None:
    """Every ``reconcile_interval`` seconds, :meth:`AdmissionService.reconcile` (errors audited)."""
    server = settings.server
    while True:
        await asyncio.sleep(server.reconcile_interval)
        try:
            await service.reconcile(hold_deadline=server.hold_deadline)
        except TokenServiceError as err:  # the store is down: try again next time
            await service.blocking(audit_line, {"event": "reconcile_failed", "error": str(err)})
        except Exception as err:  # noqa: BLE001 - the loop outlives a bug in one pass
            # The type only: a message could carry request data, which never goes to a log.
            failed = {"event": "reconcile_failed", "error": type(err).__name__}
            await service.blocking(audit_line, failed)


async def _serve(server: Any, service: AdmissionService, settings: Settings) -> None:
    reloads = _reload_keys_on_sighup(service, settings)
    reconciler = asyncio.get_running_loop().create_task(_reconcile_forever(service, settings))
    # uvicorn handles SIGINT/SIGTERM (stop accepting, finish in-flight
    # requests) and, once stopped, raises the signal again with the handler
    # that was there before it. That handler is this no-op, so the cleanup
    # below runs and the process exits 0 (docs/api.md).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    try:
        await server.serve()
    finally:
        reconciler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciler
        for task in list(reloads):
            await task
        await service.close()


def serve(settings: Settings) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM (then exit cleanly)."""
    import uvicorn  # noqa: PLC0415 (only the server process needs it)
    import uvloop  # noqa: PLC0415

    configure_audit_log()
    # urllib3 (under the Kubernetes client) warns in plain text when it
    # retries; the submitter already reports every failure (503 + metrics + audit).
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    service = build_service(settings)
    server = settings.server
    audit_line(
        {
            "event": "start",
            "bind": f"{server.bind}:{server.port}",
            "opa": server.opa_url,
            "shadow_opa": server.shadow_opa_url or None,
            "submitter": server.submitter,
            "realm": settings.realm,
            "pid": os.getpid(),
        }
    )
    limits = ServerLimits(max_in_flight=server.threads * 8)
    config = uvicorn.Config(
        create_app(service, max_body=server.max_body, limits=limits),
        host=server.bind,
        port=server.port,
        # uvicorn's httptools protocol with a head deadline, a head size cap
        # and idle-connection shedding (tokensvc.cluster.http_limits).
        http=guarded_protocol(limits),
        ws="none",
        interface="asgi3",
        lifespan="off",
        access_log=False,  # the audit log records every decision; no token is in a URL
        log_level="warning",
        server_header=False,
        # No proxy in front whose X-Forwarded-* we would trust.
        proxy_headers=False,
        timeout_keep_alive=limits.keep_alive_timeout,
        # Not uvicorn's limit_concurrency: it counts idle sockets as work, so
        # idle connections would lock out real requests. Requests in flight
        # are bounded by create_app, sockets by the protocol.
        limit_concurrency=None,
        ssl_certfile=server.tls_cert or None,
        ssl_keyfile=server.tls_key or None,
    )
    app_server = uvicorn.Server(config)
    # What start-up built (modules, the Kubernetes client's models: ~50k
    # objects) lives as long as the process: keep it out of every later
    # garbage collection, whose full passes otherwise walk all of it (10-25 ms
    # each on the development VM, a latency spike for every request waiting).
    gc.collect()
    gc.freeze()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(app_server, service, settings))


__all__ = ["JobApi", "build_service", "configure_audit_log", "create_app", "require_text", "serve"]
