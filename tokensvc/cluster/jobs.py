"""Job requests and job records: strict, bounded parsing of what clients send.

A job request names only *what* to run and *where to charge it*: project
group, image, command, requested mounts, resources, priority. It never names
a uid, gid or group list -- those come from the token -- and any unknown field
is rejected rather than ignored, so a client cannot smuggle one in.

Job records are read back from stored pods (labels and annotations the
launcher wrote), never from a request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from tokensvc.core.errors import InvalidRequest

MAX_BODY_BYTES: Final = 64 * 1024
MAX_COMMAND_ARGS: Final = 256
MAX_ARG_CHARS: Final = 4096
MAX_MOUNTS: Final = 16
MAX_PATH_CHARS: Final = 1024
MAX_IMAGE_CHARS: Final = 512
MAX_SYSTEMS: Final = 64
MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 1000

# POSIX portable group names (what getent would accept), as label-safe values.
_PROJECT_RE: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# An OCI reference without whitespace or control characters; the registry and
# the kubelet judge the rest.
_IMAGE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
# Pod names we create: "wsc-job-" + 32 lowercase hex.
JOB_NAME_PREFIX: Final = "wsc-job-"
_JOB_NAME_RE: Final = re.compile(r"wsc-job-[0-9a-f]{32}")

Mode = Literal["ro", "rw"]
_JOB_FIELDS: Final = {"project", "image", "command", "mounts", "resources", "priority"}


@dataclass(frozen=True, slots=True)
class MountRequest:
    """A path the job asks to see, read-only or read-write."""

    path: str
    mode: Mode

    def to_input(self) -> dict[str, str]:
        return {"path": self.path, "mode": self.mode}


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a client may ask for when submitting a job."""

    project: str
    image: str
    command: tuple[str, ...]
    mounts: tuple[MountRequest, ...] = ()
    systems: int = 1
    priority: int | None = None

    def to_input(self) -> dict[str, Any]:
        """The ``request`` part of the OPA input for ``submit``."""
        doc: dict[str, Any] = {
            "project": self.project,
            "image": self.image,
            "command": list(self.command),
            "mounts": [m.to_input() for m in self.mounts],
            "resources": {"systems": self.systems},
        }
        if self.priority is not None:
            doc["priority"] = self.priority
        return doc

    def to_body(self) -> dict[str, Any]:
        """The JSON body a client sends (same shape as :meth:`to_input`)."""
        return self.to_input()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(doc: Mapping[str, Any], allowed: set[str], where: str, out: list[str]) -> None:
    for key in sorted(set(doc) - allowed):
        out.append(f"{where}: unknown field {key!r}")


def check_priority(value: object, where: str = "priority") -> list[str]:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not (MIN_PRIORITY <= value <= MAX_PRIORITY)
    ):
        return [f"{where} must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"]
    return []


def _check_path(path: object, where: str) -> list[str]:
    if not isinstance(path, str) or not path:
        return [f"{where}.path must be a non-empty string"]
    if len(path) > MAX_PATH_CHARS:
        return [f"{where}.path is longer than {MAX_PATH_CHARS} characters"]
    if not path.startswith("/"):
        return [f"{where}.path must be absolute"]
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        return [f"{where}.path contains control characters"]
    return []


def _parse_mounts(raw: object, out: list[str]) -> tuple[MountRequest, ...]:
    if not isinstance(raw, list):
        out.append("mounts must be a list")
        return ()
    if len(raw) > MAX_MOUNTS:
        out.append(f"mounts: at most {MAX_MOUNTS} entries")
        return ()
    mounts = []
    for i, item in enumerate(raw):
        where = f"mounts[{i}]"
        if not isinstance(item, dict):
            out.append(f"{where} must be an object")
            continue
        _check_keys(item, {"path", "mode"}, where, out)
        problems = _check_path(item.get("path"), where)
        mode = item.get("mode", "ro")
        if mode not in ("ro", "rw"):
            problems.append(f"{where}.mode must be 'ro' or 'rw'")
        out.extend(problems)
        if not problems:
            mounts.append(MountRequest(path=item["path"], mode=mode))
    return tuple(mounts)


def _parse_command(command: object, out: list[str]) -> tuple[str, ...]:
    if (
        not isinstance(command, list)
        or not 0 < len(command) <= MAX_COMMAND_ARGS
        or not all(isinstance(a, str) and len(a) <= MAX_ARG_CHARS for a in command)
    ):
        out.append(
            f"command must be a list of 1 to {MAX_COMMAND_ARGS} strings"
            f" of at most {MAX_ARG_CHARS} characters"
        )
        return ()
    if any("\x00" in a for a in command):
        out.append("command arguments must not contain NUL")
        return ()
    return tuple(command)


def _parse_systems(resources: object, out: list[str]) -> int:
    if not isinstance(resources, dict):
        out.append("resources must be an object")
        return 1
    _check_keys(resources, {"systems"}, "resources", out)
    systems = resources.get("systems", 1)
    if not _is_int(systems) or not 1 <= systems <= MAX_SYSTEMS:
        out.append(f"resources.systems must be an integer from 1 to {MAX_SYSTEMS}")
        return 1
    value: int = systems
    return value


def parse_job_request(body: object) -> JobRequest:
    """Validate a decoded JSON body; raise :class:`InvalidRequest` listing every problem."""
    if not isinstance(body, dict):
        raise InvalidRequest(["body must be a JSON object"])
    out: list[str] = []
    _check_keys(body, _JOB_FIELDS, "body", out)

    project = body.get("project")
    if not isinstance(project, str) or not _PROJECT_RE.fullmatch(project):
        out.append("project must be a group name (lowercase, at most 32 characters)")

    image = body.get("image")
    if not isinstance(image, str) or not 0 < len(image) <= MAX_IMAGE_CHARS:
        out.append(f"image must be a string of 1 to {MAX_IMAGE_CHARS} characters")
    elif not _IMAGE_RE.fullmatch(image):
        out.append("image is not a valid image reference")

    args = _parse_command(body.get("command"), out)

    mounts = _parse_mounts(body.get("mounts", []), out)

    systems = _parse_systems(body.get("resources", {"systems": 1}), out)

    priority = body.get("priority")
    if priority is not None:
        out.extend(check_priority(priority))

    if out:
        raise InvalidRequest(out)
    return JobRequest(
        project=str(project),
        image=str(image),
        command=args,
        mounts=mounts,
        systems=systems,
        priority=priority,
    )


def parse_priority_body(body: object) -> int:
    """``{"priority": P}`` for PUT /v1/jobs/{id}/priority."""
    if not isinstance(body, dict):
        raise InvalidRequest(["body must be a JSON object"])
    out: list[str] = []
    _check_keys(body, {"priority"}, "body", out)
    if "priority" not in body:
        out.append("priority is required")
    else:
        out.extend(check_priority(body["priority"]))
    if out:
        raise InvalidRequest(out)
    value: int = body["priority"]
    return value


def is_job_name(name: str) -> bool:
    """True for names the launcher could have produced (bounds path and label lookups)."""
    return _JOB_NAME_RE.fullmatch(name) is not None


def job_name(token_id: str) -> str:
    """Pod name for a submit token: one token, one name, so a replay collides."""
    name = JOB_NAME_PREFIX + token_id
    if not is_job_name(name):
        raise ValueError("token id must be 32 lowercase hex characters")
    return name


class JobRecord(NamedTuple):
    """A job as recorded on its stored pod; the source of truth for owner and project.

    Immutable. A named tuple rather than a frozen dataclass: a listing builds
    one per stored job, and a tuple is built several times faster.
    """

    name: str
    owner_uid: int
    project: str
    priority: int | None
    token_id: str
    decision_id: str | None
    phase: str
    created: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "owner_uid": self.owner_uid,
            "project": self.project,
            "priority": self.priority,
            "token_id": self.token_id,
            "decision_id": self.decision_id,
            "phase": self.phase,
            "created": self.created,
        }

    def to_input(self) -> dict[str, Any]:
        """The ``request.job`` part of the OPA input for get/cancel/set_priority."""
        return {"owner_uid": self.owner_uid, "project": self.project}


__all__ = [
    "JOB_NAME_PREFIX",
    "MAX_BODY_BYTES",
    "InvalidRequest",
    "JobRecord",
    "JobRequest",
    "MountRequest",
    "is_job_name",
    "job_name",
    "parse_job_request",
    "parse_priority_body",
]
