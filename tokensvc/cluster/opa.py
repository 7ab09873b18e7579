"""OPA REST client: ask ``data.wsc.authz.decision``, fail closed on anything odd.

The server asks OPA (a sidecar holding the signed policy bundle) one question
per job call. Every way that question can go wrong -- refused connection,
timeout, non-200, a body that is not JSON, an undefined decision (no
``result``), a result without a boolean ``allow`` or with fields of the wrong
type -- raises :class:`OpaUnavailable` (a :class:`PolicyUnavailable`, HTTP 503)
so the caller can only ever act on a well-formed decision. Nothing is judged by
truthiness: ``allow`` must be the JSON literal ``true``.

Asynchronous, on aiohttp: the server asks on its event loop, so a decision
costs no thread hop, and aiohttp parses answers in C. docs/api.md records
why this is aiohttp rather than opa-python-client.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import aiohttp

from tokensvc.core.errors import PolicyUnavailable

DECISION_PATH: Final = "/v1/data/wsc/authz/decision"
# The decision's answer names the revision of each bundle that made it.
DECISION_QUERY_STRING: Final = "?provenance"
BUNDLE_NAME: Final = "wsc"  # deploy/opa/config.yaml: bundles.wsc
HEALTH_PATH: Final = "/health"
DEFAULT_URL: Final = "http://127.0.0.1:8181"
DEFAULT_TIMEOUT: Final = 1.0  # seconds, for one query as a whole
# A decision document is a few hundred bytes; anything near this is not ours.
MAX_RESPONSE_BYTES: Final = 1 << 20
MAX_SUPPLEMENTAL_GROUPS: Final = 16  # NFS AUTH_SYS carries at most 16
# OPA names decisions with UUIDs; an id is stored on the pod and in file names.
_DECISION_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A bundle revision is the committer's choice (a git commit here); it is logged, so bounded.
_REVISION_MAX: Final = 256

Action = Literal["submit", "get", "list", "cancel", "set_priority", "logs"]
ACTIONS: Final[frozenset[str]] = frozenset(get_args(Action))
Privilege = Literal["viewer", "member", "admin"]
_PRIVILEGES: Final[frozenset[str]] = frozenset(get_args(Privilege))

OpaFailure = Literal["unreachable", "timeout", "http_status", "malformed", "undefined"]


class OpaUnavailable(PolicyUnavailable):
    """OPA gave no usable decision; ``failure`` names the kind (for metrics)."""

    def __init__(self, failure: OpaFailure, message: str) -> None:
        self.failure: OpaFailure = failure
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class RunAs:
    """The uid and primary gid a job's processes run as."""

    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class GrantedMount:
    """One NFS mount the policy granted: an admin-provisioned PVC and a path inside it."""

    export: str
    pvc: str
    sub_path: str
    read_only: bool
    path: str | None = None  # the normalised path the user asked for, when the policy echoes it


@dataclass(frozen=True, slots=True)
class Decision:
    """A well-formed ``data.wsc.authz.decision`` document."""

    allow: bool
    reasons: tuple[str, ...] = ()
    run_as: RunAs | None = None
    supplemental_groups: tuple[int, ...] = ()
    privileges: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[GrantedMount, ...] = ()
    visible_projects: tuple[str, ...] = ()
    priority: int | None = None


def _malformed(what: str) -> OpaUnavailable:
    return OpaUnavailable("malformed", f"policy decision malformed: {what}")


def _int(value: object, what: str) -> int:
    # bool is an int in Python; a JSON true is never a uid.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(f"{what} is not an integer")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _malformed(f"{what} is not a string")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _malformed(f"{what} is not a list")
    return value


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{what} is not an object")
    return value


def _mount(raw: object, i: int) -> GrantedMount:
    m = _dict(raw, f"mounts[{i}]")
    read_only = m.get("read_only")
    if not isinstance(read_only, bool):
        raise _malformed(f"mounts[{i}].read_only is not a boolean")
    path = m.get("path")
    return GrantedMount(
        export=_str(m.get("export"), f"mounts[{i}].export"),
        pvc=_str(m.get("pvc"), f"mounts[{i}].pvc"),
        sub_path=_str(m.get("sub_path"), f"mounts[{i}].sub_path"),
        read_only=read_only,
        path=None if path is None else _str(path, f"mounts[{i}].path"),
    )


def parse_decision(result: object) -> Decision:
    """Turn OPA's ``result`` into a :class:`Decision`, or raise :class:`OpaUnavailable`.

    Optional fields may be absent; present fields must have the documented type.
    An allowed decision is checked as strictly as a denied one: a policy bug
    must surface as 503, never as a pod with guessed values.
    """
    doc = _dict(result, "result")
    allow = doc.get("allow")
    if not isinstance(allow, bool):
        raise _malformed("allow is not a boolean")
    reasons = tuple(_str(r, "reasons[]") for r in _list(doc.get("reasons", []), "reasons"))
    run_as = None
    if "run_as" in doc:
        ra = _dict(doc["run_as"], "run_as")
        run_as = RunAs(uid=_int(ra.get("uid"), "run_as.uid"), gid=_int(ra.get("gid"), "run_as.gid"))
    groups = tuple(
        _int(g, "supplemental_groups[]")
        for g in _list(doc.get("supplemental_groups", []), "supplemental_groups")
    )
    if len(groups) > MAX_SUPPLEMENTAL_GROUPS:
        raise _malformed(f"more than {MAX_SUPPLEMENTAL_GROUPS} supplemental groups")
    privileges: dict[str, str] = {}
    for name, level in _dict(doc.get("privileges", {}), "privileges").items():
        if level not in _PRIVILEGES:
            raise _malformed(f"privileges[{name!r}] is not viewer, member or admin")
        privileges[name] = level
    mounts = tuple(_mount(m, i) for i, m in enumerate(_list(doc.get("mounts", []), "mounts")))
    visible = tuple(
        _str(p, "visible_projects[]")
        for p in _list(doc.get("visible_projects", []), "visible_projects")
    )
    priority = None if doc.get("priority") is None else _int(doc["priority"], "priority")
    return Decision(
        allow=allow,
        reasons=reasons,
        run_as=run_as,
        supplemental_groups=groups,
        privileges=privileges,
        mounts=mounts,
        visible_projects=visible,
        priority=priority,
    )


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """A decision, the id OPA logged it under and the revision of the bundle that made it.

    ``decision_id`` is ``None`` when OPA's decision logging is off;
    ``revision`` is ``None`` when OPA serves no bundle named ``wsc`` (policy
    loaded from directories) or the bundle's manifest names no revision.
    """

    decision: Decision
    decision_id: str | None
    revision: str | None = None


def _revision(provenance: object) -> str | None:
    """``provenance.bundles.wsc.revision`` of OPA's answer, checked like the decision."""
    if provenance is None:
        return None
    bundles = _dict(provenance, "provenance").get("bundles")
    if bundles is None:
        return None
    bundle = _dict(bundles, "provenance.bundles").get(BUNDLE_NAME)
    if bundle is None:
        return None
    revision = _dict(bundle, f"provenance.bundles.{BUNDLE_NAME}").get("revision")
    if revision is None or revision == "":
        return None
    revision = _str(revision, "bundle revision")
    if len(revision) > _REVISION_MAX or not revision.isprintable():
        raise _malformed("bundle revision is not a printable string of at most 256 characters")
    return revision


def decision_result(status: int, data: bytes) -> DecisionResult:
    """Judge OPA's answer to a decision query: a :class:`DecisionResult` or :class:`OpaUnavailable`.

    Anything but a 200 whose JSON body holds a well-formed ``result`` fails
    closed. An absent ``result`` means the rule is undefined (bundle missing
    or not yet activated): never allow.
    """
    if status != 200:
        raise OpaUnavailable("http_status", f"policy engine answered HTTP {status}")
    try:
        body = json.loads(data)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise OpaUnavailable("malformed", "policy engine sent malformed JSON") from err
    if not isinstance(body, dict):
        raise _malformed("response is not an object")
    if "result" not in body:
        raise OpaUnavailable("undefined", "policy decision undefined (bundle not loaded?)")
    decision = parse_decision(body["result"])
    decision_id = body.get("decision_id")
    if decision_id is not None and not (
        isinstance(decision_id, str) and _DECISION_ID_RE.fullmatch(decision_id)
    ):
        raise _malformed("decision_id is not an identifier")
    revision = _revision(body.get("provenance"))
    return DecisionResult(decision=decision, decision_id=decision_id, revision=revision)


class OpaClient:
    """Asynchronous client for one OPA sidecar, used on the server's event loop (aiohttp).

    Contract, each point fail closed:

    - at most ``pool_size`` connections; beyond that a query waits for one;
    - one ``timeout`` bounds each query as a whole: waiting for a pooled
      connection, connecting, sending, and reading the whole answer;
    - a request that may have reached OPA is never sent twice (aiohttp
      retries nothing but an idempotent GET on a reused connection that
      turned out closed; a decision is a POST);
    - an answer larger than ``MAX_RESPONSE_BYTES`` is refused unread;
    - anything but a well-formed decision raises :class:`OpaUnavailable`.

    The session is created on first use and bound to that event loop;
    :meth:`close` on that loop.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = 16,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("OPA url must start with http:// or https://")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("OPA timeout must be a positive number of seconds")
        if pool_size < 1:
            raise ValueError("OPA pool size must be at least 1")
        self.url = url.rstrip("/")
        self.timeout = timeout
        parts = urlsplit(self.url)
        # No path, query or user:password@ (which would travel in the Host header).
        if not parts.hostname or parts.path or parts.query or "@" in parts.netloc:
            raise ValueError("OPA url must be scheme://host[:port]")
        self._decision_url = self.url + DECISION_PATH + DECISION_QUERY_STRING
        self._health_url = self.url + HEALTH_PATH + "?bundles"
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise OpaUnavailable("unreachable", "policy engine client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # Uncompressed answers only: the size cap counts what is parsed.
                headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                auto_decompress=False,
                trust_env=False,  # no proxy settings from the environment
            )
        return self._session

    async def close(self) -> None:
        """Close every connection; queries after this fail closed."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> OpaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- queries ----------------------------------------------------------------------

    async def decide(self, input_doc: Mapping[str, Any]) -> DecisionResult:
        """POST ``{"input": input_doc}`` to the decision path (with provenance); fail closed."""
        payload = json.dumps({"input": input_doc}, separators=(",", ":")).encode()
        return decision_result(*await self._exchange("POST", self._decision_url, payload))

    async def ready(self) -> bool:
        """True once OPA is up and every configured bundle has been activated."""
        try:
            status, _ = await self._exchange("GET", self._health_url, None)
        except OpaUnavailable:
            return False
        return status == 200

    # --- transport --------------------------------------------------------------------

    async def _exchange(self, method: str, url: str, payload: bytes | None) -> tuple[int, bytes]:
        """One request, its status and whole body; every transport failure as OpaUnavailable."""
        session = self._client()
        headers = {"Content-Type": "application/json"} if payload is not None else None
        try:
            async with session.request(method, url, data=payload, headers=headers) as response:
                if (response.content_length or 0) > MAX_RESPONSE_BYTES:
                    raise _malformed("response too large")
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise _malformed("response too large")
                return response.status, bytes(body)
        except TimeoutError as err:  # aiohttp's timeouts are TimeoutErrors too
            raise OpaUnavailable("timeout", "policy engine timed out") from err
        except aiohttp.ClientResponseError as err:  # an answer that is not HTTP
            raise OpaUnavailable("malformed", "policy engine sent a malformed HTTP answer") from err
        except (aiohttp.ClientError, OSError) as err:
            # Refused, reset, hung up before the whole answer: the request may
            # have been evaluated, so it is not resent; the caller gets a 503.
            raise OpaUnavailable("unreachable", "policy engine unreachable") from err


__all__ = [
    "ACTIONS",
    "DECISION_PATH",
    "DEFAULT_URL",
    "Action",
    "Decision",
    "DecisionResult",
    "GrantedMount",
    "OpaClient",
    "OpaUnavailable",
    "RunAs",
    "decision_result",
    "parse_decision",
]
