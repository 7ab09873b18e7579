"""User-node client for the cluster management API (``tokensvc submit, jobs, job, logs, ...``).

Every call mints a fresh token from the local daemon (one token, one request:
the server remembers token ids) and maps the server's answer back onto the
error table: the ``code`` of every error body names the class (and so the
exit code: expired 11, replayed 14, denied 7 with every reason, ...). An
answer whose code this version does not know, or whose status does not match
its code, and an unreachable server are ServerUnavailable (8).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Final

import requests
import urllib3

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

    def logs(self, job_id: str, *, follow: bool = False) -> Iterator[bytes]:
        """The job's output, chunk by chunk as the server sends it.

        Followed, the stream waits for the job's next output without a read
        deadline and ends when the job's container ends. An answer that
        breaks off before its end is :class:`ServerUnavailable`.
        """
        path = f"/v1/jobs/{_checked(job_id)}/logs?follow={'true' if follow else 'false'}"
        token = self._token()
        try:
            resp = self._session.get(
                self.url + path,
                headers={"Authorization": f"Bearer {token}"},
                timeout=(self.timeout, None) if follow else self.timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as err:
            raise ServerUnavailable(f"cannot reach the server at {self.url}") from err
        with resp:
            if resp.status_code != 200:
                _raise_for(resp.status_code, _error_doc(resp))
            try:
                yield from resp.iter_content(chunk_size=None)
            except requests.RequestException as err:
                raise ServerUnavailable("the job's output broke off before its end") from err


def _error_doc(resp: requests.Response) -> dict[str, Any]:
    """A streamed error answer's JSON body (at most MAX_REPLY_BYTES); ServerUnavailable if none."""
    try:
        raw = resp.raw.read(MAX_REPLY_BYTES + 1, decode_content=True)
        doc = json.loads(raw) if len(raw) <= MAX_REPLY_BYTES else None
    except (requests.RequestException, OSError, ValueError, urllib3.exceptions.HTTPError):
        doc = None
    if not isinstance(doc, dict):
        raise ServerUnavailable(f"server answered HTTP {resp.status_code} without JSON")
    return doc


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
