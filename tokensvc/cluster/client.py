"""User-node client for the cluster management API (``tokensvc submit/jobs/cancel/priority``).

Every call mints a fresh token from the local daemon (one token, one request:
the server remembers token ids) and maps the server's answer back onto the
error table: the ``code`` of every error body names the class (and so the
exit code: expired 11, replayed 14, denied 7 with every reason, ...). An
answer whose code this version does not know, or whose status does not match
its code, and an unreachable server are ServerUnavailable (8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import requests

from tokensvc.cluster.jobs import JobRequest, is_job_name
from tokensvc.core.errors import (
    InvalidRequest,
    InvalidToken,
    NotFound,
    PolicyDenied,
    ServerUnavailable,
    SubmitFailed,
    TokenServiceError,
    error_for_code,
)

DEFAULT_TIMEOUT: Final = 30.0
MAX_REPLY_BYTES: Final = 4 << 20


class JobClient:
    """Talks to one server; ``token`` is called once per request (normally ``client.mint``)."""

    def __init__(
        self,
        server_url: str,
        token: Callable[[], str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: str | None = None,
    ) -> None:
        if not server_url.startswith(("http://", "https://")):
            raise ValueError("server URL must start with http:// or https://")
        self.url = server_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or CA bundle from the environment
        if ca_file:
            self._session.verify = ca_file

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        token = self._token()  # before connecting: a daemon error is reported as such
        try:
            resp = self._session.request(
                method,
                self.url + path,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as err:
            raise ServerUnavailable(f"cannot reach the server at {self.url}") from err
        with resp:
            try:
                doc = resp.json() if len(resp.content) <= MAX_REPLY_BYTES else None
            except ValueError:
                doc = None
        if not isinstance(doc, dict):
            raise ServerUnavailable(f"server answered HTTP {resp.status_code} without JSON")
        _raise_for(resp.status_code, doc)
        return doc

    def submit(self, request: JobRequest) -> dict[str, Any]:
        """``{"job", "decision_id", "pod"}`` for a created job."""
        return self._call("POST", "/v1/jobs", request.to_body())

    def list(self) -> list[dict[str, Any]]:
        jobs = self._call("GET", "/v1/jobs").get("jobs", [])
        return [j for j in jobs if isinstance(j, dict)]

    def get(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{_checked(job_id)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{_checked(job_id)}")

    def set_priority(self, job_id: str, priority: int) -> dict[str, Any]:
        return self._call("PUT", f"/v1/jobs/{_checked(job_id)}/priority", {"priority": priority})


def _checked(job_id: str) -> str:
    if not is_job_name(job_id):
        raise NotFound(f"{job_id!r} is not a job id (wsc-job-<32 hex digits>)")
    return job_id


def _raise_for(status: int, doc: dict[str, Any]) -> None:
    """Raise the error the server's ``code`` names, so the CLI exits with its documented code."""
    if status in (200, 201):
        return
    message = str(doc.get("error", f"HTTP {status}"))
    reasons = [r for r in doc.get("reasons", []) if isinstance(r, str)] or [message]
    cls = error_for_code(doc.get("code"))
    if cls is None or cls is TokenServiceError or cls.http_status != status:
        raise ServerUnavailable(f"server error (HTTP {status}): {message}")
    if issubclass(cls, PolicyDenied):
        decision_id = doc.get("decision_id")
        raise cls(reasons, decision_id if isinstance(decision_id, str) else None)
    if issubclass(cls, InvalidRequest):
        raise cls(reasons)
    if issubclass(cls, InvalidToken):
        raise cls
    if issubclass(cls, SubmitFailed):
        created = doc.get("created")
        raise cls(message, created=created if isinstance(created, bool) else None)
    raise cls(message)


__all__ = ["JobClient"]
