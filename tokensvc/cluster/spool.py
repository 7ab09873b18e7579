"""The spool submitter: one YAML manifest per job in a directory, the default with no cluster.

Layout of a spool directory::

    wsc-job-<token id>.yaml     the pod manifest: the job's record
    index/<entry>               one empty file per job, its name the job's record
    .tmp-<random>               a manifest being written (renamed or linked into place)

The manifest is the truth; the index is derived from it so that listing
reads one directory instead of parsing every manifest. An index entry's name
encodes what a listing returns (see :func:`entry_name`)::

    <job name>,<owner uid>,<project>,<priority>,<decision id>

with the project percent-encoded, the decision id percent-encoded after a
``~`` (an empty field: none), and an empty priority field for none.

Every change to a job touches its manifest first and its index entry second,
and an entry only ever names the current manifest: a create links the
manifest, then creates the entry; a cancel removes the manifest, then the
entry; a priority change removes the old entry, replaces the manifest and
creates the new entry. A crash between the two steps leaves a manifest
without an entry or an entry without a manifest; :meth:`SpoolSubmitter.repair`
(run at start) puts both right, parsing only the manifests that lack an
entry. Between the two steps another process's listing may miss the job for
that moment; it never shows a record the manifest does not hold.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, unquote

import yaml

from tokensvc.cluster.consumed import SpoolRecords
from tokensvc.cluster.joblogs import LogStream
from tokensvc.cluster.jobs import JOB_NAME_PREFIX, JobRecord, is_job_name
from tokensvc.cluster.jobstore import IdentityViolation, JobExists, record_from_manifest
from tokensvc.cluster.launcher import ANNOTATION_PRIORITY
from tokensvc.core.durable import fsync_dir, write_all
from tokensvc.core.errors import NoLogs, NotFound, SubmitFailed

MAX_MANIFEST_BYTES: Final = 256 * 1024
INDEX_DIR: Final = "index"
CONSUMED_DIR: Final = "consumed"  # consumed submit-token records (cluster.consumed)
_TMP_PREFIX: Final = ".tmp-"
# A temporary file lives for the few milliseconds of one write; one older
# than this belongs to a process that died (another live server's are younger).
STALE_TMP_SECONDS: Final = 60.0
_NAME_MAX: Final = 255  # bytes in one file name (Linux and most file systems)


def to_yaml(doc: dict[str, Any]) -> str:
    """A manifest as block-style YAML, by libyaml's emitter (PyYAML's ``CSafeDumper``).

    Non-ASCII characters are written as escapes (``allow_unicode=False``),
    so every valid Unicode string -- astral-plane characters, NEL, LS, PS, a
    BOM, text that looks like YAML -- reads back as itself.
    """
    text: str = yaml.dump(
        doc,
        Dumper=yaml.CSafeDumper,
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=False,
        width=1 << 30,  # never fold long strings
    )
    return text


def from_yaml(data: bytes) -> object:
    """Parse a manifest by libyaml's loader (PyYAML's ``CSafeLoader``: plain data only)."""
    return yaml.load(data, Loader=yaml.CSafeLoader)


def entry_name(record: JobRecord) -> str:
    """The index entry for a job record: a file name that :func:`record_from_entry` reads back."""
    fields = (
        record.name,
        str(record.owner_uid),
        quote(record.project, safe=""),
        "" if record.priority is None else str(record.priority),
        "" if record.decision_id is None else "~" + quote(record.decision_id, safe=""),
    )
    return ",".join(fields)


def record_from_entry(entry: str) -> JobRecord:
    """The job record an index entry names; ValueError if it is not an entry."""
    return _record_from_fields(entry.split(","))


def _record_from_fields(fields: list[str]) -> JobRecord:
    name, owner, project, priority, decision_id = fields  # ValueError if not five
    if not (
        is_job_name(name)
        and owner.isdigit()
        and (priority == "" or priority.isdigit())
        and (decision_id == "" or decision_id[0] == "~")
    ):
        raise ValueError("not an index entry")
    return JobRecord(
        name,
        int(owner),
        unquote(project) if "%" in project else project,
        int(priority) if priority else None,
        name[len(JOB_NAME_PREFIX) :],  # the token id
        unquote(decision_id[1:]) if decision_id else None,
        "Pending",  # the phase: a spooled pod never runs here, nothing else sets one
    )


def _by_name(record: JobRecord) -> str:
    return record.name


class SpoolSubmitter:
    """One YAML manifest per job in a directory, listed through an index of file names.

    A job is created with ``link(2)`` from a fully written, fsynced temporary
    file: it appears whole or not at all, and an existing name fails with
    EEXIST atomically, across processes (several servers may share one
    spool). The manifest's directory entry is fsynced before a create
    returns, so an acknowledged job survives a crash or power loss.

    Costs: :meth:`list` reads one directory and parses no manifest (with
    a filter, only the matching entries become records);
    :meth:`get`, :meth:`delete` and :meth:`set_priority` parse one.

    Nothing runs a spooled job but its consumer, which sees it only once it
    is linked into place: a spooled job is never held, so :meth:`release`
    only checks that it exists. Nor does anything report back: every
    spooled job's record says phase ``Pending``, with no exit code, reason
    or times, for as long as its manifest is there, and :meth:`logs` answers
    :class:`NoLogs`. Consumed submit tokens are recorded in
    ``consumed/`` beside the manifests (:class:`SpoolRecords`).
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.index = self.directory / INDEX_DIR
        # fsync makes an acknowledged job survive power loss (not just a crash
        # of this process); it is most of a spooled submit's cost on slow disks.
        self._fsync = fsync
        self._lock = threading.Lock()  # serialises read-modify-write within a process
        # An entry's name is its record, so records are memoised by entry name:
        # a listing parses only the entries that appeared since the last one.
        self._records: dict[str, JobRecord] = {}
        try:
            self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            self.index.mkdir(mode=0o750, exist_ok=True)
        except OSError as err:
            raise SubmitFailed(f"cannot create spool directory {self.directory}") from err
        self.records = SpoolRecords(self.directory / CONSUMED_DIR, fsync=fsync)
        self.repair()

    # --- files ------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if not is_job_name(name):  # also keeps names from walking out of the directory
            raise NotFound(f"no job {name!r}")
        return self.directory / f"{name}.yaml"

    @contextlib.contextmanager
    def _tempfile(self, data: bytes) -> Iterator[Path]:
        tmp = self.directory / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                write_all(fd, data, sync=self._fsync)
            finally:
                os.close(fd)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _add_entry(self, record: JobRecord) -> None:
        # An empty file; O_EXCL so two repairs racing on one job both succeed.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.index / entry_name(record), os.O_CREAT | os.O_EXCL, 0o640))

    def _remove_entry(self, record: JobRecord) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.index / entry_name(record)).unlink()

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
            doc = from_yaml(data)
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

    @staticmethod
    def _encode(manifest: dict[str, Any], record: JobRecord) -> bytes:
        """The manifest's file content; SubmitFailed (nothing created) if it cannot be stored."""
        try:
            data = to_yaml(manifest).encode()
        except (yaml.YAMLError, UnicodeError) as err:
            raise SubmitFailed("job cannot be written to the spool", created=False) from err
        if len(data) > MAX_MANIFEST_BYTES:
            raise SubmitFailed("job manifest too large for the spool", created=False)
        entry = entry_name(record)
        if len(entry.encode()) > _NAME_MAX or record_from_entry(entry) != record:
            raise SubmitFailed("job record cannot be indexed in the spool", created=False)
        return data

    # --- start-up ---------------------------------------------------------------------

    def repair(self) -> None:
        """Remove stale temporary files; make the index name exactly the stored manifests.

        Safe while other servers use the spool: only temporary files older
        than ``STALE_TMP_SECONDS`` are removed, an entry only once its manifest
        is gone, and only manifests without an entry are parsed.
        """
        try:
            self._repair()
        except OSError as err:
            raise SubmitFailed(f"cannot repair spool directory {self.directory}") from err

    def _repair(self) -> None:
        now = time.time()
        manifests: set[str] = set()
        with os.scandir(self.directory) as it:
            for entry in it:
                if entry.name.startswith(_TMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                            os.unlink(entry.path)
                elif entry.name.endswith(".yaml") and is_job_name(entry.name[:-5]):
                    manifests.add(entry.name[:-5])
        indexed: set[str] = set()
        for entry_file in os.listdir(self.index):
            try:
                record = record_from_entry(entry_file)
            except ValueError:
                continue  # not ours: left alone
            if record.name in manifests:
                indexed.add(record.name)
                self._records[entry_file] = record
            elif not self._path(record.name).exists():  # cancelled (or being created: no)
                self._remove_entry(record)
        for name in sorted(manifests - indexed):
            with contextlib.suppress(NotFound, SubmitFailed):  # cancelled meanwhile, or foreign
                self._add_entry(self._record(self._path(name)))

    # --- the Submitter interface -----------------------------------------------------

    def create(self, manifest: dict[str, Any]) -> JobRecord:
        record = record_from_manifest(manifest)
        path = self._path(record.name)
        data = self._encode(manifest, record)
        try:
            with self._tempfile(data) as tmp:
                os.link(tmp, path)
        except FileExistsError as err:
            raise JobExists(record.name) from err
        except OSError as err:
            raise SubmitFailed("spool directory not writable; no job was created") from err
        try:
            if self._fsync:
                fsync_dir(self.directory)
            self._add_entry(record)
        except OSError as err:
            # Not confirmed: roll the manifest back, so the failure is the truth.
            try:
                path.unlink()
            except OSError:
                raise SubmitFailed(
                    f"job {record.name} stored but not confirmed", created=None
                ) from err
            raise SubmitFailed("spool directory not writable; no job was created") from err
        return record

    def release(self, name: str) -> None:
        self.get(name)

    def held(self, older_than: float) -> list[str]:
        return []

    def identity_violations(self) -> list[IdentityViolation]:
        return []  # nothing here runs a job; its consumer has its own node

    def get(self, name: str) -> JobRecord:
        return self._record(self._path(name))

    def logs(self, job: JobRecord, *, follow: bool, limit_bytes: int) -> LogStream:
        """Always :class:`NoLogs`: the spool keeps manifests, and nothing here runs them."""
        raise NoLogs(f"job {job.name}: the spool job store keeps no job output")

    def manifest(self, name: str) -> dict[str, Any]:
        """The stored pod manifest (for the demo and tests)."""
        return self._read(self._path(name))

    def list(
        self, *, owner_uid: int | None = None, projects: Collection[str] | None = None
    ) -> list[JobRecord]:
        try:
            entries = os.listdir(self.index)
        except OSError as err:
            raise SubmitFailed("cannot list spool directory") from err
        known, current = self._records, {}
        for entry in entries:
            record = known.get(entry)
            if record is None:
                try:
                    record = record_from_entry(entry)
                except ValueError:
                    continue  # not an entry: never ours
            current[entry] = record
        self._records = current  # entries gone since are forgotten
        if owner_uid is None and projects is None:
            return sorted(current.values(), key=_by_name)
        visible = set(projects or ())
        return sorted(
            (r for r in current.values() if r.owner_uid == owner_uid or r.project in visible),
            key=_by_name,
        )

    def delete(self, name: str) -> None:
        path = self._path(name)
        with self._lock:
            record = self._record(path)
            try:
                path.unlink()
            except FileNotFoundError as err:
                raise NotFound(f"no job {name}") from err
            except OSError as err:
                raise SubmitFailed(f"cannot cancel job {name}") from err
            with contextlib.suppress(OSError):  # a left-over entry is removed at start
                self._remove_entry(record)

    def set_priority(self, name: str, priority: int) -> JobRecord:
        path = self._path(name)
        with self._lock:
            manifest = self._read(path)
            try:
                old = record_from_manifest(manifest)
            except ValueError as err:
                raise NotFound(f"no job {name}") from err
            meta = manifest["metadata"]
            meta.setdefault("annotations", {})[ANNOTATION_PRIORITY] = str(priority)
            record = record_from_manifest(manifest)
            data = self._encode(manifest, record)
            try:
                self._remove_entry(old)
                with self._tempfile(data) as tmp:
                    os.replace(tmp, path)
                self._add_entry(record)
            except OSError as err:
                raise SubmitFailed(f"cannot update job {name}") from err
        return record

    def close(self) -> None:
        pass


__all__ = [
    "INDEX_DIR",
    "MAX_MANIFEST_BYTES",
    "SpoolSubmitter",
    "entry_name",
    "from_yaml",
    "record_from_entry",
    "to_yaml",
]
