"""Cluster management HTTP API: a small ASGI application on uvicorn, thin over the service.

Everything runs on one event loop (uvloop): the body is read, the token
validated, OPA asked (asynchronous client) and the pod manifest built
there; only blocking steps (the spool write, the Kubernetes API, audit
lines) go to the service's bounded worker pool, one hop per request. The
routes are matched here directly rather than by a framework's router: a
handful of fixed paths, and every microsecond on this path is paid once per
submit (Starlette's routing, request and response objects cost ~75 us).

Status codes: 201/200 success; 400 unreadable body; 401 token (a generic body
for anything before authentication, the reason after it); 403 policy denial
with every reason; 404 no such job (or no such path); 405 method not allowed;
409 the submit token was used before; 413 body too large; 422 schema
violations, each listed; 503 OPA or the submitter could not give an answer
(fail closed: nothing was created).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, TextIO

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tokensvc.cluster.jobs import (
    MAX_BODY_BYTES,
    is_job_name,
    parse_job_request,
    parse_priority_body,
)
from tokensvc.cluster.opa import ACTIONS, OpaClient
from tokensvc.cluster.openapi import OPENAPI
from tokensvc.cluster.service import AUDIT_LOGGER, AdmissionService, audit_line
from tokensvc.cluster.submitters import (
    KubernetesSubmitter,
    SpoolSubmitter,
    Submitter,
)
from tokensvc.core.claims import Claims
from tokensvc.core.config import Settings
from tokensvc.core.errors import (
    BodyTooLarge,
    InvalidRequest,
    InvalidToken,
    MalformedBody,
    NotFound,
    PolicyDenied,
    PolicyUnavailable,
    SubmitFailed,
    TokenServiceError,
)
from tokensvc.core.keys import KeyRing
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.validate import TokenValidator

log = logging.getLogger("tokensvc.cluster.app")

# ASGI's three arguments (https://asgi.readthedocs.io/): plain dicts.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

MAX_TOKEN_CHARS: Final = 8192  # a token is a few hundred characters
REQUEST_ID_HEADER: Final = "X-Request-Id"

_JSON: Final = b"application/json"
_BEARER: Final = ((b"www-authenticate", b"Bearer"),)
# /v1/jobs, /v1/jobs/{job_id}, /v1/jobs/{job_id}/priority ({job_id}: one path segment).
_JOB_ROUTES: Final = re.compile(r"/v1/jobs(?:/(?P<job_id>[^/]+)(?P<priority>/priority)?)?")
# (route, method) -> action; the action names the handler, the metric and the policy query.
_JOB_ACTIONS: Final = {
    ("jobs", "POST"): "submit",
    ("jobs", "GET"): "list",
    ("job", "GET"): "get",
    ("job", "DELETE"): "cancel",
    ("priority", "PUT"): "set_priority",
}
_ALLOW: Final = {"jobs": b"GET, POST", "job": b"DELETE, GET", "priority": b"PUT"}


class _ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


def _render(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: Headers | tuple[tuple[bytes, bytes], ...] = (),
    content_type: bytes = _JSON,
) -> None:
    start = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header (uvicorn gives names in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _bearer(scope: Scope) -> str:
    """The token from ``Authorization: Bearer …``; InvalidToken for anything else."""
    header = (_header(scope, b"authorization") or b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken
    return token


async def _read_json(scope: Scope, receive: Receive, limit: int) -> object:
    """The request body as JSON, refused beyond ``limit`` bytes before it is all read."""
    declared = _header(scope, b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge([f"request body larger than {limit} bytes"])
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge([f"request body larger than {limit} bytes"])
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8; absurd nesting
        raise MalformedBody(["request body is not JSON"]) from err


# What a job handler returns: status, JSON body, extra headers.
_Answer = tuple[int, dict[str, Any], tuple[tuple[bytes, bytes], ...]]


def _error_body(err: TokenServiceError) -> _Answer:
    """The answer to an error: its status and ``code`` from the error table, and its details."""
    body: dict[str, Any] = {"code": err.code, "error": str(err)}
    if isinstance(err, PolicyDenied):
        body.update(error="denied by policy", reasons=list(err.reasons))
        body["decision_id"] = err.decision_id
    elif isinstance(err, InvalidRequest):
        body.update(error="invalid request", reasons=list(err.reasons))
    elif isinstance(err, SubmitFailed):
        body["created"] = err.created
    elif isinstance(err, PolicyUnavailable):
        body["created"] = False  # refused before anything was stored
    elif isinstance(err, NotFound):
        body["error"] = "no such job"
    headers = _BEARER if err.http_status == 401 else ()
    return err.http_status, body, headers


class App:
    """The ASGI application around one :class:`AdmissionService`."""

    def __init__(self, service: AdmissionService, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.service = service
        self.max_body = max_body
        metrics = service.metrics
        # Histogram children looked up once: ``labels()`` costs a lock and a dict walk.
        self._seconds = {action: metrics.request_seconds.labels(action) for action in ACTIONS}
        self._handlers: dict[str, Callable[[Scope, Receive, str, str], Awaitable[_Answer]]] = {
            "submit": self._submit,
            "list": self._list,
            "get": self._get,
            "cancel": self._cancel,
            "set_priority": self._set_priority,
        }
        self._operations: dict[str, Callable[[Send], Awaitable[None]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/openapi.json": self._openapi,
        }
        self._openapi_body = _render(OPENAPI)  # a constant: rendered once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off and websockets are not served (uvicorn ws="none")
        path: str = scope["path"]
        # HEAD is GET without a body (uvicorn drops the body of a HEAD answer).
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        match = _JOB_ROUTES.fullmatch(path)
        if match is not None:
            job_id = match["job_id"] or ""
            route = "jobs" if not job_id else "priority" if match["priority"] else "job"
            action = _JOB_ACTIONS.get((route, method))
            if action is None:
                await self._not_allowed(send, _ALLOW[route])
            else:
                await self._job_call(action, job_id, scope, receive, send)
            return
        operation = self._operations.get(path)
        if operation is None:
            await _respond(send, 404, b'{"error":"not found"}')
        elif method != "GET":
            await self._not_allowed(send, b"GET")
        else:
            await operation(send)

    @staticmethod
    async def _not_allowed(send: Send, allow: bytes) -> None:
        await _respond(send, 405, b'{"error":"method not allowed"}', ((b"allow", allow),))

    async def _job_call(
        self, action: str, job_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """One job API call: request id, latency metric, every error mapped to its status."""
        request_id = secrets.token_hex(8)
        started = time.perf_counter()
        try:
            status, body, headers = await self._handlers[action](scope, receive, request_id, job_id)
        except _ClientGone:
            return
        except TokenServiceError as err:
            status, body, headers = _error_body(err)
        except Exception as err:  # noqa: BLE001 (answered 500 and logged by type, see below)
            # The type only: a message could carry request data (invariant 7).
            log.error("request %s failed: %s", request_id, type(err).__name__)
            status, body, headers = 500, {"error": "internal error"}, ()
        request_header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())
        await _respond(send, status, _render(body), (*headers, request_header))
        self._seconds[action].observe(time.perf_counter() - started)

    async def _caller(self, scope: Scope, request_id: str) -> Claims:
        """The claims of the bearer token (validated on the loop: pure CPU)."""
        try:
            token = _bearer(scope)
        except InvalidToken:
            self.service.metrics.auth_failures.labels("invalid").inc()
            raise
        return await self.service.authenticate(token, request_id=request_id)

    @staticmethod
    def _job_name(job_id: str) -> str:
        # Checked before the token: a malformed id is 404 without a policy query.
        if not is_job_name(job_id):
            raise NotFound(job_id)
        return job_id

    # --- job API ---------------------------------------------------------------------

    async def _submit(self, scope: Scope, receive: Receive, request_id: str, _: str) -> _Answer:
        body = await _read_json(scope, receive, self.max_body)
        claims = await self._caller(scope, request_id)
        # Schema checks after authentication: strangers learn nothing.
        request = parse_job_request(body)
        done = await self.service.submit(claims, request, request_id=request_id)
        payload = {"job": done.job.to_json(), "decision_id": done.decision_id, "pod": done.pod}
        return 201, payload, ((b"location", f"/v1/jobs/{done.job.name}".encode()),)

    async def _list(self, scope: Scope, receive: Receive, request_id: str, _: str) -> _Answer:
        claims = await self._caller(scope, request_id)
        done = await self.service.list(claims, request_id=request_id)
        jobs = [j.to_json() for j in done.jobs]
        return 200, {"jobs": jobs, "decision_id": done.decision_id}, ()

    async def _get(self, scope: Scope, receive: Receive, request_id: str, job_id: str) -> _Answer:
        name = self._job_name(job_id)
        claims = await self._caller(scope, request_id)
        done = await self.service.get(claims, name, request_id=request_id)
        return 200, {"job": done.job.to_json(), "decision_id": done.decision_id}, ()

    async def _cancel(
        self, scope: Scope, receive: Receive, request_id: str, job_id: str
    ) -> _Answer:
        name = self._job_name(job_id)
        claims = await self._caller(scope, request_id)
        done = await self.service.cancel(claims, name, request_id=request_id)
        payload = {"job": done.job.to_json(), "cancelled": True, "decision_id": done.decision_id}
        return 200, payload, ()

    async def _set_priority(
        self, scope: Scope, receive: Receive, request_id: str, job_id: str
    ) -> _Answer:
        name = self._job_name(job_id)
        body = await _read_json(scope, receive, self.max_body)
        claims = await self._caller(scope, request_id)
        priority = parse_priority_body(body)
        done = await self.service.set_priority(claims, name, priority, request_id=request_id)
        return 200, {"job": done.job.to_json(), "decision_id": done.decision_id}, ()

    # --- operations ------------------------------------------------------------------

    async def _healthz(self, send: Send) -> None:
        await _respond(send, 200, b'{"status":"ok"}')

    async def _readyz(self, send: Send) -> None:
        # Ready only once OPA has activated its (signed) bundle: before that
        # every decision would be undefined, i.e. a 503.
        if await self.service.opa.ready():
            await _respond(send, 200, b'{"status":"ready"}')
        else:
            await _respond(send, 503, b'{"status":"not ready","opa":"bundle not activated"}')

    async def _metrics(self, send: Send) -> None:
        text = generate_latest(self.service.metrics.registry)
        await _respond(send, 200, text, content_type=CONTENT_TYPE_LATEST.encode())

    async def _openapi(self, send: Send) -> None:
        await _respond(send, 200, self._openapi_body)


def create_app(service: AdmissionService, *, max_body: int = MAX_BODY_BYTES) -> App:
    """The ASGI application (uvicorn serves it; tests may too)."""
    return App(service, max_body=max_body)


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
        validator=validator,
        opa=opa,
        submitter=submitter,
        namespace=server.namespace,
        threads=server.threads,
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


async def _serve(server: Any, service: AdmissionService, settings: Settings) -> None:
    reloads = _reload_keys_on_sighup(service, settings)
    # uvicorn handles SIGINT/SIGTERM (stop accepting, finish in-flight
    # requests) and, once stopped, raises the signal again with the handler
    # that was there before it. That handler is this no-op, so the cleanup
    # below runs and the process exits 0 (docs/api.md).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    try:
        await server.serve()
    finally:
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
            "submitter": server.submitter,
            "realm": settings.realm,
            "pid": os.getpid(),
        }
    )
    config = uvicorn.Config(
        App(service, max_body=server.max_body),
        host=server.bind,
        port=server.port,
        http="httptools",
        ws="none",
        interface="asgi3",
        lifespan="off",
        access_log=False,  # the audit log records every decision; no token is in a URL
        log_level="warning",
        server_header=False,
        # No proxy in front whose X-Forwarded-* we would trust (and the
        # middleware costs a few microseconds per request).
        proxy_headers=False,
        timeout_keep_alive=30,
        # Beyond this many open connections uvicorn answers 503 at once
        # instead of queueing without bound.
        limit_concurrency=server.threads * 8,
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


__all__ = ["App", "build_service", "configure_audit_log", "create_app", "serve"]
