"""Job requests and job records: strict, bounded parsing of what clients send.

A job request names only *what* to run and *where to charge it*: project
group, image, command, requested mounts, resources, priority. It never names
a uid, gid or group list -- those come from the token -- and any unknown field
is rejected rather than ignored, so a client cannot smuggle one in.

Job records are read back from stored pods (labels and annotations the
launcher wrote), never from a request.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

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

# Pod names we create: "wsc-job-" + 32 lowercase hex.
JOB_NAME_PREFIX: Final = "wsc-job-"
JOB_NAME_PATTERN: Final = "^wsc-job-[0-9a-f]{32}$"
_JOB_NAME_RE: Final = re.compile(r"wsc-job-[0-9a-f]{32}")

Mode = Literal["ro", "rw"]

# --- the request schema -------------------------------------------------------------
#
# One JSON Schema (2020-12) per request body, built from the limits above: the
# server validates bodies with it (parse_job_request) and the OpenAPI document
# publishes it (tokensvc.cluster.openapi). "x-reason" is the user-visible
# reason given when a value fails the (sub)schema that carries it; "{at}"
# names the value ("mounts[0].path"). Patterns are ECMA-262 regular
# expressions, as JSON Schema specifies: "$" matches only at the very end.

_PRIORITY_SCHEMA: Final[dict[str, Any]] = {
    "type": "integer",
    "minimum": MIN_PRIORITY,
    "maximum": MAX_PRIORITY,
    "x-reason": f"{{at}} must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}",
}
_COMMAND_REASON: Final = (
    f"command must be a list of 1 to {MAX_COMMAND_ARGS} strings"
    f" of at most {MAX_ARG_CHARS} characters"
)
_MOUNT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "x-reason": "{at} must be an object",
    "additionalProperties": False,
    "required": ["path"],
    "properties": {
        "path": {
            "type": "string",
            "minLength": 1,
            "x-reason": "{at} must be a non-empty string",
            "allOf": [
                {
                    "maxLength": MAX_PATH_CHARS,
                    "x-reason": f"{{at}} is longer than {MAX_PATH_CHARS} characters",
                },
                {"pattern": "^/", "x-reason": "{at} must be absolute"},
                {
                    "pattern": "^[^\\x00-\\x1f\\x7f]*$",
                    "x-reason": "{at} contains control characters",
                },
            ],
        },
        "mode": {"enum": ["ro", "rw"], "default": "ro", "x-reason": "{at} must be 'ro' or 'rw'"},
    },
}
JOB_REQUEST_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "x-reason": "body must be a JSON object",
    "additionalProperties": False,
    "required": ["project", "image", "command"],
    "properties": {
        "project": {
            "type": "string",
            # POSIX portable group names (what getent accepts), as label-safe values.
            "pattern": "^[a-z_][a-z0-9_-]{0,31}$",
            "description": "Group the job is charged to and runs with",
            "x-reason": "project must be a group name (lowercase, at most 32 characters)",
        },
        "image": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IMAGE_CHARS,
            "x-reason": f"image must be a string of 1 to {MAX_IMAGE_CHARS} characters",
            # An OCI reference without whitespace or control characters; the
            # registry and the kubelet judge the rest.
            "allOf": [
                {
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$",
                    "x-reason": "image is not a valid image reference",
                }
            ],
        },
        "command": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_COMMAND_ARGS,
            "x-reason": _COMMAND_REASON,
            "items": {
                "type": "string",
                "maxLength": MAX_ARG_CHARS,
                "x-reason": _COMMAND_REASON,
                "allOf": [
                    {"pattern": "^[^\\x00]*$", "x-reason": "command arguments must not contain NUL"}
                ],
            },
        },
        "mounts": {
            "type": "array",
            "x-reason": "mounts must be a list",
            "allOf": [
                {"maxItems": MAX_MOUNTS, "x-reason": f"mounts: at most {MAX_MOUNTS} entries"}
            ],
            "items": _MOUNT_SCHEMA,
        },
        "resources": {
            "type": "object",
            "x-reason": "resources must be an object",
            "additionalProperties": False,
            "properties": {
                "systems": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_SYSTEMS,
                    "default": 1,
                    "x-reason": f"resources.systems must be an integer from 1 to {MAX_SYSTEMS}",
                }
            },
        },
        "priority": _PRIORITY_SCHEMA,
    },
}
PRIORITY_BODY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "x-reason": "body must be a JSON object",
    "additionalProperties": False,
    "required": ["priority"],
    "properties": {"priority": _PRIORITY_SCHEMA},
}


def _is_unicode(text: str) -> bool:
    """False for a str that is not valid Unicode (a lone surrogate, which json.loads accepts)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@functools.cache
def _validator_class() -> Any:
    """Draft 2020-12 with JSON's types taken strictly, and ECMA-262's "$" in patterns.

    - a string is valid Unicode: a lone surrogate is refused, never stored;
    - an integer is an int, never 1.0 and never a JSON true;
    - "$" ends the string (Python's also matches before a final newline).

    Imported on first use: the library costs start-up time that only request
    validation needs.
    """
    import jsonschema  # noqa: PLC0415

    base = jsonschema.Draft202012Validator
    types = base.TYPE_CHECKER.redefine_many(
        {
            "string": lambda _, v: isinstance(v, str) and _is_unicode(v),
            "integer": lambda _, v: isinstance(v, int) and not isinstance(v, bool),
        }
    )

    def pattern(validator: Any, regex: str, instance: object, schema: object) -> Any:
        if isinstance(instance, str) and not _ecma_regex(regex).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {regex!r}")

    return jsonschema.validators.extend(base, {"pattern": pattern}, type_checker=types)  # type: ignore[no-untyped-call]


@functools.cache
def _ecma_regex(regex: str) -> re.Pattern[str]:
    # Our patterns use "$" only as their last character.
    return re.compile(regex[:-1] + r"\Z" if regex.endswith("$") else regex)


@functools.cache
def _validator(schema_name: str) -> Any:
    schema = {"job": JOB_REQUEST_SCHEMA, "priority": PRIORITY_BODY_SCHEMA}[schema_name]
    return _validator_class()(schema)


def _at(path: Sequence[object]) -> str:
    """A value's place in the body as a user reads it: ``mounts[0].path``; ``body`` for the root."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def schema_reasons(schema_name: str, body: object) -> list[str]:
    """Every problem with ``body`` against the named schema, one reason per value, in order."""
    seen: set[tuple[object, ...]] = set()
    reasons: list[str] = []

    def add(path: tuple[object, ...], reason: str) -> None:
        if path not in seen:
            seen.add(path)
            if reason not in reasons:
                reasons.append(reason)

    for error in _validator(schema_name).iter_errors(body):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            for key in sorted(set(error.instance) - set(known), key=str):
                add((*path, key), f"{_at(path)}: unknown field {key!r}")
        elif error.validator == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    reason = error.schema["properties"][key]["x-reason"]
                    add((*path, key), reason.format(at=_at((*path, key))))
        elif (
            error.validator == "type"
            and isinstance(error.instance, str)
            and not _is_unicode(error.instance)
        ):
            add(path, f"{_at(path)} is not valid Unicode (it holds a lone surrogate)")
        else:
            reason = error.schema.get("x-reason")
            add(path, reason.format(at=_at(path)) if reason else error.message)
    return reasons


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


def parse_job_request(body: object) -> JobRequest:
    """Validate a decoded JSON body against :data:`JOB_REQUEST_SCHEMA`.

    Raises :class:`InvalidRequest` listing every problem; nothing that fails
    the schema (an unknown field, a lone surrogate, ...) gets further.
    """
    reasons = schema_reasons("job", body)
    if reasons:
        raise InvalidRequest(reasons)
    body = cast(dict[str, Any], body)  # the schema's "type": "object"
    mounts = tuple(
        MountRequest(path=m["path"], mode=m.get("mode", "ro")) for m in body.get("mounts", [])
    )
    return JobRequest(
        project=body["project"],
        image=body["image"],
        command=tuple(body["command"]),
        mounts=mounts,
        systems=body.get("resources", {}).get("systems", 1),
        priority=body.get("priority"),
    )


def parse_priority_body(body: object) -> int:
    """``{"priority": P}`` for PUT /v1/jobs/{id}/priority, against :data:`PRIORITY_BODY_SCHEMA`."""
    reasons = schema_reasons("priority", body)
    if reasons:
        raise InvalidRequest(reasons)
    value: int = cast(dict[str, Any], body)["priority"]
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


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as recorded on its stored pod; the source of truth for owner and project.

    Owner, project, priority, token and decision come from the pod's labels
    and annotations (the launcher wrote them). The rest is what the job's
    store reports about its run, read from the pod's status as the kubelet
    wrote it (:mod:`tokensvc.cluster.jobstatus`): ``phase`` (Pending,
    Running, Succeeded, Failed, Unknown); for
    the job container, ``started`` and ``finished`` (RFC 3339 times),
    ``exit_code`` once it has terminated, and ``reason`` -- the container's
    (``ContainerCreating``, ``Completed``, ``Error``, ``OOMKilled``, ...) or,
    before it exists, the pod's (``SchedulingGated`` while the job is held
    for admission, ``Unschedulable``). A store that runs nothing (the
    spool) reports every job as Pending with none of these.
    """

    name: str
    owner_uid: int
    project: str
    priority: int | None
    token_id: str
    decision_id: str | None
    phase: str
    created: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    started: str | None = None
    finished: str | None = None

    @property
    def has_run(self) -> bool:
        """True once the job's container has started: from then on it has output."""
        return self.started is not None or self.exit_code is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "owner_uid": self.owner_uid,
            "project": self.project,
            "priority": self.priority,
            "token_id": self.token_id,
            "decision_id": self.decision_id,
            "phase": self.phase,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }

    def to_input(self) -> dict[str, Any]:
        """The ``request.job`` part of the OPA input for get/cancel/set_priority."""
        return {"owner_uid": self.owner_uid, "project": self.project}


__all__ = [
    "JOB_NAME_PATTERN",
    "JOB_NAME_PREFIX",
    "JOB_REQUEST_SCHEMA",
    "MAX_BODY_BYTES",
    "PRIORITY_BODY_SCHEMA",
    "InvalidRequest",
    "JobRecord",
    "JobRequest",
    "MountRequest",
    "is_job_name",
    "job_name",
    "parse_job_request",
    "parse_priority_body",
    "schema_reasons",
]
