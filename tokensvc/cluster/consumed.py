"""The durable record of consumed submit tokens: one submit token, at most one job, ever.

One record per submit token, named by its token id, kept in the store the
submitter already uses -- a ConfigMap beside the pods, or a file in the
spool directory -- until the token expires. Creating the record is the one
atomic step that consumes the token: whoever creates it owns the submit.
Every later request with that token, on any replica and after any restart,
finds it and either resumes the *same* request (same request digest: an
idempotent retry after a lost answer) or is refused as a replay.

A record moves from ``pending`` (the token is consumed, its job not yet
admitted) to ``admitted`` (the job was made runnable). From then on a
missing job means it was cancelled or deleted, and the token can never
create another.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import urllib3

from tokensvc.core.claims import is_token_id
from tokensvc.core.durable import fsync_dir, write_all
from tokensvc.core.errors import SubmitFailed

State = Literal["pending", "admitted"]
STATES: Final = ("pending", "admitted")
RECORD_PREFIX: Final = "wsc-token-"
LABEL_RECORD: Final = "tokensvc.io/record"
RECORD_KIND: Final = "consumed-submit-token"
ANNOTATION_DIGEST: Final = "tokensvc.io/request-digest"
ANNOTATION_EXPIRES: Final = "tokensvc.io/expires-at"
ANNOTATION_STATE: Final = "tokensvc.io/state"
MAX_RECORD_BYTES: Final = 4096
STALE_TMP_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A consumed submit token: which request it was used for, until when, how far it got."""

    token_id: str
    digest: str
    expires_at: int
    state: State = "pending"

    def __post_init__(self) -> None:
        if not is_token_id(self.token_id):
            raise ValueError("token_id must be 32 lowercase hex digits")
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}")

    def to_json(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "digest": self.digest,
            "expires_at": self.expires_at,
            "state": self.state,
        }

    @classmethod
    def from_json(cls, doc: object) -> TokenRecord:
        if not isinstance(doc, dict):
            raise ValueError("record is not an object")
        token_id, digest = doc.get("token_id"), doc.get("digest")
        expires, state = doc.get("expires_at"), doc.get("state")
        if not isinstance(token_id, str) or not isinstance(digest, str):
            raise ValueError("record token_id and digest must be strings")
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise ValueError("record expires_at must be an integer")
        if state not in STATES:
            raise ValueError("record state unknown")
        return cls(token_id, digest, expires, state)


class RecordStore(Protocol):
    """Where consumed-token records live. Blocking; called off the event loop."""

    def claim(self, record: TokenRecord) -> TokenRecord | None:
        """Create ``record`` atomically: None if this call created it, else the existing one."""

    def admit(self, token_id: str) -> None:
        """Mark the record admitted (its job was made runnable)."""

    def purge_expired(self, now: float) -> int:
        """Remove records whose token has expired; how many were removed."""


# --- spool directory ----------------------------------------------------------------------


class SpoolRecords:
    """Records as files ``<dir>/<token id>.json``: created by link(2), changed by rename(2).

    A record is written whole to a temporary file, fsynced, and linked to its
    name (link fails if the name exists: the atomic claim); a state change
    replaces it with rename. The directory is fsynced after each, so a
    record acknowledged before a crash is there after it.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self._fsync = fsync
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise SubmitFailed(f"cannot create record directory {self.directory}") from err
        self.remove_temporaries()

    def _path(self, token_id: str) -> Path:
        if not is_token_id(token_id):
            raise ValueError("token_id must be 32 lowercase hex digits")
        return self.directory / f"{token_id}.json"

    def _write_temp(self, record: TokenRecord) -> Path:
        temp = self.directory / f".{record.token_id}.{secrets.token_hex(8)}.tmp"
        data = json.dumps(record.to_json(), sort_keys=True).encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data, sync=self._fsync)
        finally:
            os.close(fd)
        return temp

    def _sync_dir(self) -> None:
        if self._fsync:
            fsync_dir(self.directory)

    def read(self, token_id: str) -> TokenRecord | None:
        try:
            with self._path(token_id).open("rb") as f:
                data = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise SubmitFailed("cannot read consumed-token record") from err
        try:
            if len(data) > MAX_RECORD_BYTES:
                raise ValueError("record too large")
            return TokenRecord.from_json(json.loads(data))
        except ValueError as err:
            # Unreadable means "consumed, state unknown": never a second job.
            raise SubmitFailed("consumed-token record unreadable") from err

    def claim(self, record: TokenRecord) -> TokenRecord | None:
        target = self._path(record.token_id)
        try:
            temp = self._write_temp(record)
            try:
                os.link(temp, target)
            except FileExistsError:
                existing = self.read(record.token_id)
                if existing is None:  # removed by a purge in between: expired anyway
                    raise SubmitFailed("consumed-token record vanished") from None
                return existing
            finally:
                temp.unlink(missing_ok=True)
            self._sync_dir()
        except OSError as err:
            raise SubmitFailed("cannot write consumed-token record; no job was created") from err
        return None

    def admit(self, token_id: str) -> None:
        current = self.read(token_id)
        if current is None:
            raise SubmitFailed("consumed-token record missing")
        try:
            temp = self._write_temp(
                TokenRecord(current.token_id, current.digest, current.expires_at, "admitted")
            )
            os.replace(temp, self._path(token_id))
            self._sync_dir()
        except OSError as err:
            raise SubmitFailed("cannot update consumed-token record") from err

    def purge_expired(self, now: float) -> int:
        removed = 0
        try:
            names = [entry.name for entry in os.scandir(self.directory)]
        except OSError as err:
            raise SubmitFailed("cannot list consumed-token records") from err
        for name in names:
            token_id, dot, ext = name.partition(".")
            if ext != "json" or not dot or not is_token_id(token_id):
                continue
            try:
                record = self.read(token_id)
            except SubmitFailed:
                continue  # kept: an unreadable record still refuses its token
            if record is not None and record.expires_at < now:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
                    removed += 1
        return removed

    def remove_temporaries(self, *, now: float | None = None) -> None:
        """Delete temporary files a crashed process left behind (never a record).

        Only those older than ``STALE_TMP_SECONDS``: another server sharing
        the directory may be between writing one and linking it.
        """
        now = time.time() if now is None else now
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                            os.unlink(entry.path)


# --- Kubernetes ---------------------------------------------------------------------------


def record_name(token_id: str) -> str:
    """The ConfigMap name of a token's record."""
    if not is_token_id(token_id):
        raise ValueError("token_id must be 32 lowercase hex digits")
    return RECORD_PREFIX + token_id


class KubernetesRecords:
    """Records as ConfigMaps ``wsc-token-<token id>`` in the jobs' namespace.

    ``create`` is the API server's atomic claim (AlreadyExists for the
    second); the state lives in an annotation and changes by a patch. Every
    call has the submitter's timeout and is made once: a create that may
    have been stored is never resent, it is read back instead.
    """

    def __init__(self, api: Any, k8s: Any, *, namespace: str, timeout: float) -> None:
        self._api = api  # kubernetes.client.CoreV1Api
        self._k8s = k8s  # the kubernetes.client module (ApiException, V1ObjectMeta)
        self.namespace = namespace
        self._timeout = timeout

    def _body(self, record: TokenRecord) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": record_name(record.token_id),
                "labels": {LABEL_RECORD: RECORD_KIND},
                "annotations": {
                    ANNOTATION_DIGEST: record.digest,
                    ANNOTATION_EXPIRES: str(record.expires_at),
                    ANNOTATION_STATE: record.state,
                },
            },
        }

    @staticmethod
    def _from_meta(token_id: str, meta: Any) -> TokenRecord:
        annotations = dict(getattr(meta, "annotations", None) or {})
        try:
            expires = int(annotations.get(ANNOTATION_EXPIRES, ""))
            return TokenRecord(
                token_id,
                str(annotations.get(ANNOTATION_DIGEST, "")),
                expires,
                annotations.get(ANNOTATION_STATE, ""),
            )
        except ValueError as err:
            raise SubmitFailed("consumed-token record unreadable") from err

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call with the timeout; every failure becomes SubmitFailed with its status."""
        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except (self._k8s.ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
            status = err.status if isinstance(err, self._k8s.ApiException) else None
            raise SubmitFailed(
                f"Kubernetes API {what} of a consumed-token record failed "
                f"({status or 'no response'})",
                status=status,
            ) from err

    def read(self, token_id: str) -> TokenRecord | None:
        try:
            cm = self._call(
                "read", self._api.read_namespaced_config_map, record_name(token_id), self.namespace
            )
        except SubmitFailed as err:
            if err.status == 404:
                return None
            raise
        return self._from_meta(token_id, cm.metadata)

    def claim(self, record: TokenRecord) -> TokenRecord | None:
        try:
            self._call(
                "create", self._api.create_namespaced_config_map, self.namespace, self._body(record)
            )
        except SubmitFailed as err:
            if err.status != 409:
                raise  # no pod was asked for yet: whatever happened, no job exists
            existing = self.read(record.token_id)
            if existing is None:
                raise SubmitFailed("consumed-token record vanished", status=409) from err
            return existing
        return None

    def admit(self, token_id: str) -> None:
        patch = {"metadata": {"annotations": {ANNOTATION_STATE: "admitted"}}}
        self._call(
            "patch",
            self._api.patch_namespaced_config_map,
            record_name(token_id),
            self.namespace,
            patch,
        )

    def purge_expired(self, now: float) -> int:
        items = self._call(
            "list",
            self._api.list_namespaced_config_map,
            self.namespace,
            label_selector=f"{LABEL_RECORD}={RECORD_KIND}",
        ).items
        removed = 0
        for cm in items:
            name = cm.metadata.name or ""
            token_id = name.removeprefix(RECORD_PREFIX)
            try:
                record = self._from_meta(token_id, cm.metadata)
            except (SubmitFailed, ValueError):
                continue  # kept: an unreadable record still refuses its token
            if record.expires_at >= now:
                continue
            # Another replica may purge it first (404), or the API may be down: next time.
            with contextlib.suppress(SubmitFailed):
                self._call("delete", self._api.delete_namespaced_config_map, name, self.namespace)
                removed += 1
        return removed


__all__ = [
    "KubernetesRecords",
    "RecordStore",
    "SpoolRecords",
    "TokenRecord",
    "record_name",
]
