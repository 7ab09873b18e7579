"""Submitters: where built pods go. Kubernetes, or a spool directory of YAML manifests.

Both keep the pod as the single record of a job: owner uid, project and
priority are read back from its labels and annotations, never from a client.
Both refuse a second pod with the same name (:class:`JobExists`): the name is
derived from the submit token's id, so a replayed submit collides here even
if it slipped past one replica's replay cache.

Library errors are wrapped at this edge: callers see :class:`JobExists`,
:class:`~tokensvc.core.errors.NotFound` or :class:`SubmitFailed` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import urllib3
import yaml

from tokensvc.cluster.jobs import JobRecord, is_job_name
from tokensvc.cluster.launcher import (
    ANNOTATION_DECISION_ID,
    ANNOTATION_PRIORITY,
    DEFAULT_NAMESPACE,
    LABEL_MANAGED_BY,
    LABEL_OWNER_UID,
    LABEL_PROJECT,
    LABEL_TOKEN_ID,
    MANAGED_BY,
)
from tokensvc.core.errors import NotFound, Replayed, SubmitFailed, TokenServiceError

MAX_MANIFEST_BYTES: Final = 256 * 1024
# libyaml when PyYAML was built with it (the wheels are): ~8x faster to read.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Strings YAML reads back as the same string when written bare; anything else
# (numbers, "on"/"yes"/"null"..., ":" or "#" inside) is written as JSON.
_BARE = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
# YAML 1.1 booleans and null (compared lower-cased).
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


_quote = json.encoder.encode_basestring_ascii  # what json.dumps does to a str, without its setup
# Rendered short strings (a manifest repeats the same few dozen keys and words);
# bounded, so unique values (token ids, paths) cannot grow it without limit.
_SCALARS: dict[object, str] = {}
_MAX_CACHED: Final = 4096


def _scalar(value: object) -> str:
    if isinstance(value, str):
        bare = _BARE.fullmatch(value) is not None and value.lower() not in _YAML_WORDS
        text = value if bare else _quote(value)
        if len(_SCALARS) < _MAX_CACHED and len(value) <= 32:
            _SCALARS[value] = text
        return text
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    return json.dumps(value)


def _emit(node: object, indent: str, out: list[str]) -> None:
    """Block-style YAML for a JSON tree; scalars in JSON syntax (valid YAML, never re-typed)."""
    cached = _SCALARS.get
    if isinstance(node, dict) and node:
        inner = indent + "  "
        for key, value in node.items():
            head = indent + (cached(key) or _scalar(str(key))) + ":"
            if value and isinstance(value, dict | list):
                out.append(head)
                _emit(value, inner, out)
            elif type(value) is str:
                out.append(head + " " + (cached(value) or _scalar(value)))
            else:
                out.append(head + " " + _scalar(value))
    elif isinstance(node, list) and node:
        for item in node:
            if item and isinstance(item, dict | list):
                sub: list[str] = []
                _emit(item, indent + "  ", sub)
                # The first line of the item moves up beside its "- ".
                out.append(indent + "- " + sub[0][len(indent) + 2 :])
                out.extend(sub[1:])
            elif type(item) is str:
                out.append(indent + "- " + (cached(item) or _scalar(item)))
            else:
                out.append(indent + "- " + _scalar(item))
    else:
        out.append(indent + _scalar(node))


def to_yaml(doc: dict[str, Any]) -> str:
    """A manifest as YAML, ~20x faster than PyYAML's (pure Python) representer.

    Plain words are written bare; every other scalar is written as JSON (a
    double-quoted string, a number, true, false, null), which YAML reads back
    unchanged: "0755" and "on" stay strings. tests/unit/test_submitters.py
    checks the round trip.
    """
    out: list[str] = []
    _emit(doc, "", out)
    return "\n".join(out) + "\n"


class JobExists(Replayed):
    """A job with this token's name already exists: the submit token was used before."""

    def __init__(self, name: str) -> None:
        self.name = name
        TokenServiceError.__init__(self, f"job {name} already exists (token already used)")


class Submitter(Protocol):
    """Where pods go. Every method is blocking; the server calls them off the event loop."""

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        """Create the pod; :class:`JobExists` if the name is taken."""

    def get(self, name: str) -> JobRecord:
        """The job's record; :class:`NotFound` if there is no such job."""

    def list(self) -> list[JobRecord]:
        """Every job this service created (callers filter by what the policy lets them see)."""

    def delete(self, name: str) -> None:
        """Cancel the job; :class:`NotFound` if there is no such job."""

    def set_priority(self, name: str, priority: int) -> JobRecord:
        """Record a new priority on the job; :class:`NotFound` if there is no such job."""

    def close(self) -> None:
        """Release connections."""


def record_from_manifest(manifest: dict[str, Any]) -> JobRecord:
    """Read a job record from a pod dict; ValueError if it is not one of ours."""
    meta = manifest.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not is_job_name(name):
        raise ValueError("not a tokensvc job name")
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        raise ValueError("pod not managed by tokensvc")
    owner = labels.get(LABEL_OWNER_UID, "")
    project = labels.get(LABEL_PROJECT)
    token_id = labels.get(LABEL_TOKEN_ID)
    if not (isinstance(owner, str) and owner.isascii() and owner.isdigit()):
        raise ValueError("owner label missing or not a uid")
    if not isinstance(project, str) or not isinstance(token_id, str):
        raise ValueError("project or token-id label missing")
    raw_priority = annotations.get(ANNOTATION_PRIORITY)
    priority = (
        int(raw_priority)
        if isinstance(raw_priority, str) and raw_priority.isascii() and raw_priority.isdigit()
        else None
    )
    decision_id = annotations.get(ANNOTATION_DECISION_ID)
    status = manifest.get("status") or {}
    created = meta.get("creationTimestamp")
    return JobRecord(
        name=name,
        owner_uid=int(owner),
        project=project,
        priority=priority,
        token_id=token_id,
        decision_id=decision_id if isinstance(decision_id, str) else None,
        phase=str(status.get("phase") or "Pending"),
        created=str(created) if created is not None else None,
    )


# --- spool directory ------------------------------------------------------------------


class SpoolSubmitter:
    """One YAML manifest per job in a directory: the embedded default with no cluster.

    A job is created with ``link(2)`` from a fully written, fsynced temporary
    file: it appears whole or not at all, and an existing name fails with
    EEXIST atomically, across processes. Priority changes rewrite the file
    and ``rename(2)`` it into place.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        # fsync makes an acknowledged job survive power loss (not just a crash
        # of this process); it is most of a spooled submit's cost on slow disks.
        self._fsync = fsync
        self._lock = threading.Lock()  # serialises read-modify-write within a process
        try:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as err:
            raise SubmitFailed(f"cannot create spool directory {self.directory}") from err

    def _path(self, name: str) -> Path:
        if not is_job_name(name):  # also keeps names from walking out of the directory
            raise NotFound(f"no job {name!r}")
        return self.directory / f"{name}.yaml"

    @contextlib.contextmanager
    def _tempfile(self, text: str) -> Iterator[Path]:
        tmp = self.directory / f".tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                # os.write on bytes: no text-file object, no extra flush per job.
                data = memoryview(text.encode())
                while data:
                    data = data[os.write(fd, data) :]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _fsync_dir(self) -> None:
        if not self._fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError as err:
            raise NotFound(f"no job {path.stem}") from err
        except OSError as err:
            raise SubmitFailed(f"cannot read job {path.stem}") from err
        if len(data) > MAX_MANIFEST_BYTES:
            raise SubmitFailed(f"job {path.stem}: manifest too large")
        try:
            doc = yaml.load(data, Loader=_Loader)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as err:
            raise SubmitFailed(f"job {path.stem}: manifest unreadable") from err
        if not isinstance(doc, dict):
            raise SubmitFailed(f"job {path.stem}: manifest unreadable")
        return doc

    def _record(self, path: Path) -> JobRecord:
        try:
            return record_from_manifest(self._read(path))
        except ValueError as err:
            raise NotFound(f"no job {path.stem}") from err

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        record = record_from_manifest(manifest)
        path = self._path(record.name)
        text = to_yaml(manifest)
        try:
            with self._tempfile(text) as tmp:
                os.link(tmp, path)
            self._fsync_dir()
        except FileExistsError as err:
            raise JobExists(record.name) from err
        except OSError as err:
            raise SubmitFailed("spool directory not writable; no job was created") from err
        return record

    def get(self, name: str) -> JobRecord:
        return self._record(self._path(name))

    def manifest(self, name: str) -> dict[str, Any]:
        """The stored pod manifest (for the demo and tests)."""
        return self._read(self._path(name))

    def list(self) -> list[JobRecord]:
        records = []
        try:
            paths = sorted(self.directory.glob("wsc-job-*.yaml"))
        except OSError as err:
            raise SubmitFailed("cannot list spool directory") from err
        for path in paths:
            # Deleted meanwhile, not ours, or unreadable: one bad file must not
            # hide everyone else's jobs.
            with contextlib.suppress(NotFound, SubmitFailed):
                records.append(self._record(path))
        return records

    def delete(self, name: str) -> None:
        path = self._path(name)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError as err:
                raise NotFound(f"no job {name}") from err
            except OSError as err:
                raise SubmitFailed(f"cannot cancel job {name}") from err

    def set_priority(self, name: str, priority: int) -> JobRecord:
        path = self._path(name)
        with self._lock:
            manifest = self._read(path)
            meta = manifest.setdefault("metadata", {})
            meta.setdefault("annotations", {})[ANNOTATION_PRIORITY] = str(priority)
            try:
                record = record_from_manifest(manifest)
            except ValueError as err:
                raise NotFound(f"no job {name}") from err
            try:
                with self._tempfile(to_yaml(manifest)) as tmp:
                    os.replace(tmp, path)
            except OSError as err:
                raise SubmitFailed(f"cannot update job {name}") from err
        return record

    def close(self) -> None:
        pass


# --- Kubernetes -----------------------------------------------------------------------


class KubernetesSubmitter:
    """Pods through the official client (kubeconfig, or in-cluster service account).

    Every call has a timeout. A create whose outcome is unknown (connection
    lost after sending) is resolved by looking the pod up and deleting it, so
    the client's error never hides a pod that went on to run.
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        # Imported here: the spool-only server never pays for the API machinery.
        from kubernetes import client as k8s  # noqa: PLC0415
        from kubernetes import config as k8s_config  # noqa: PLC0415

        self._k8s = k8s
        cfg = k8s.Configuration()
        try:
            if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig,
                    context=context,
                    client_configuration=cfg,
                    persist_config=False,
                )
        except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError) as err:
            raise SubmitFailed("cannot load Kubernetes client configuration") from err
        self.namespace = namespace
        self._timeout = timeout
        self._api_client = k8s.ApiClient(cfg)
        self._api = k8s.CoreV1Api(self._api_client)

    def _status(self, err: Exception) -> int | None:
        if isinstance(err, self._k8s.ApiException):
            status: int | None = err.status
            return status
        return None

    def _call(self, what: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except (self._k8s.ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
            # ApiException for HTTP errors, urllib3/OSError for transport,
            # ValueError (pydantic) for undecodable answers: all wrapped here.
            status = self._status(err)
            if status == 404:
                raise NotFound(f"no job {name}") from err
            if status == 409 and what == "create":
                raise JobExists(name) from err
            raise SubmitFailed(
                f"Kubernetes API {what} failed ({status or 'no response'})", status=status
            ) from err

    def _to_record(self, pod: Any, name: str) -> JobRecord:
        manifest = self._api_client.sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
        try:
            return record_from_manifest(manifest)
        except ValueError as err:
            raise NotFound(f"no job {name}") from err

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        record = record_from_manifest(manifest)
        try:
            self._call(
                "create", record.name, self._api.create_namespaced_pod, self.namespace, manifest
            )
        except SubmitFailed as err:
            # A 4xx answer means nothing was stored. No answer, or a 5xx (an
            # etcd write may have landed behind a timeout), is ambiguous:
            # remove whatever may exist so the client's error is the truth.
            ambiguous = err.status is None or err.status >= 500
            if ambiguous and not self._status_known(record.name):
                raise SubmitFailed(
                    f"Kubernetes API create failed and job {record.name} may exist",
                    created=None,
                ) from err
            raise
        return record

    def _status_known(self, name: str) -> bool:
        """After a failed create: make sure no pod of that name is left. True if none is."""
        try:
            self._call("delete", name, self._api.delete_namespaced_pod, name, self.namespace)
        except NotFound:
            return True
        except SubmitFailed:
            return False
        return True

    def get(self, name: str) -> JobRecord:
        if not is_job_name(name):
            raise NotFound(f"no job {name!r}")
        pod = self._call("get", name, self._api.read_namespaced_pod, name, self.namespace)
        return self._to_record(pod, name)

    def list(self) -> list[JobRecord]:
        pods = self._call(
            "list",
            "",
            self._api.list_namespaced_pod,
            self.namespace,
            label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
        )
        records = []
        for pod in pods.items:
            with contextlib.suppress(NotFound):
                records.append(self._to_record(pod, ""))
        return records

    def delete(self, name: str) -> None:
        self.get(name)  # only ever delete pods that are ours
        self._call("delete", name, self._api.delete_namespaced_pod, name, self.namespace)

    def set_priority(self, name: str, priority: int) -> JobRecord:
        self.get(name)
        patch = {"metadata": {"annotations": {ANNOTATION_PRIORITY: str(priority)}}}
        pod = self._call("patch", name, self._api.patch_namespaced_pod, name, self.namespace, patch)
        return self._to_record(pod, name)

    def close(self) -> None:
        self._api_client.close()  # type: ignore[no-untyped-call]


__all__ = [
    "JobExists",
    "KubernetesSubmitter",
    "SpoolSubmitter",
    "SubmitFailed",
    "Submitter",
    "record_from_manifest",
    "to_yaml",
]
