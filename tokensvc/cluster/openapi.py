"""The server's OpenAPI 3.1 document, served at ``/openapi.json`` (prose in docs/api.md).

The request bodies' schemas are not written here: they are the very schemas
the server validates requests with (:data:`~tokensvc.cluster.jobs.JOB_REQUEST_SCHEMA`,
:data:`~tokensvc.cluster.jobs.PRIORITY_BODY_SCHEMA`), published without their
``x-reason`` annotations (the reasons the server gives, not part of the
contract). Paths, responses and answer shapes are the contract's prose.
"""

from __future__ import annotations

from typing import Any, Final

from tokensvc.cluster.joblogs import MAX_LOG_BYTES
from tokensvc.cluster.jobs import JOB_NAME_PATTERN, JOB_REQUEST_SCHEMA, PRIORITY_BODY_SCHEMA


def published(schema: object) -> Any:
    """A validation schema as published: a deep copy without ``x-reason`` keys."""
    if isinstance(schema, dict):
        return {k: published(v) for k, v in schema.items() if k != "x-reason"}
    if isinstance(schema, list):
        return [published(v) for v in schema]
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS: Final = {
    "401": _response(
        "No token, or a token that is not authentic (generic body), expired, not yet valid, "
        "for another realm, replayed, or sealed with a retired key",
        "Error",
    ),
    "403": _response("Denied by policy; `reasons` lists every denial", "Denied"),
    "503": _response(
        "Policy engine or job backend could not answer; nothing was created", "Unavailable"
    ),
}
_JOB_ID: Final = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": JOB_NAME_PATTERN},
}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "tokensvc cluster management API",
        "version": "1",
        "description": "Submit and manage jobs with a tokensvc identity token. See docs/api.md.",
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/jobs": {
            "post": {
                "summary": "Submit a job (one token, one job)",
                "operationId": "submitJob",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("JobRequest")}},
                },
                "responses": {
                    "201": _response("Job created", "Submitted"),
                    "400": _response("Body is not JSON", "Error"),
                    "409": _response("This submit token was already used", "Error"),
                    "413": _response("Body too large", "Error"),
                    "422": _response("Body does not match the schema", "Invalid"),
                    **_ERRORS,
                },
            },
            "get": {
                "summary": "List the jobs the caller may see",
                "operationId": "listJobs",
                "responses": {"200": _response("Jobs", "JobList"), **_ERRORS},
            },
        },
        "/v1/jobs/{job_id}": {
            "parameters": [_JOB_ID],
            "get": {
                "summary": "Get one job",
                "operationId": "getJob",
                "responses": {
                    "200": _response("The job", "JobResult"),
                    "404": _response("No such job", "Error"),
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "Cancel a job",
                "operationId": "cancelJob",
                "responses": {
                    "200": _response("Cancelled", "JobResult"),
                    "404": _response("No such job", "Error"),
                    **_ERRORS,
                },
            },
        },
        "/v1/jobs/{job_id}/priority": {
            "parameters": [_JOB_ID],
            "put": {
                "summary": "Set a job's priority",
                "operationId": "setJobPriority",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PriorityRequest")}},
                },
                "responses": {
                    "200": _response("Priority recorded (the policy may adjust it)", "JobResult"),
                    "404": _response("No such job", "Error"),
                    "422": _response("Body does not match the schema", "Invalid"),
                    **_ERRORS,
                },
            },
        },
        "/v1/jobs/{job_id}/logs": {
            "parameters": [_JOB_ID],
            "get": {
                "summary": "Read a job's output (what its command wrote), streamed as it is read",
                "description": "Allowed by the policy's `logs` action: the job's owner, or a "
                "member of its project whose level may see other members' jobs. At most "
                f"{MAX_LOG_BYTES} bytes. With `follow=true` the answer goes on as the job "
                "writes and ends when its container ends. An answer that breaks off "
                "(the job store failed mid-stream) ends without its final chunk. The "
                "decision's id is in the `X-Decision-Id` header.",
                "operationId": "getJobLogs",
                "parameters": [
                    {
                        "name": "follow",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The job's output, as bytes the job wrote",
                        "headers": {
                            "X-Decision-Id": {
                                "description": "The decision that allowed it",
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _response("No such job", "Error"),
                    "409": _response(
                        "The job's container has not started yet (`not_started`)", "Error"
                    ),
                    "422": _response("A query parameter other than follow=true|false", "Invalid"),
                    "501": _response(
                        "The job store keeps no output (the spool; `no_logs`)", "Error"
                    ),
                    **_ERRORS,
                },
            },
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": {"description": "The process serves requests"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: OPA is up and has activated its signed bundle",
                "security": [],
                "responses": {
                    "200": {"description": "Ready"},
                    "503": {"description": "OPA unreachable or bundle not activated"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "text/plain exposition format"}},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from the user node's mint daemon (`tokensvc token`)",
            }
        },
        "schemas": {
            "JobRequest": {
                **published(JOB_REQUEST_SCHEMA),
                "description": "Strings must be valid Unicode (no lone surrogates); integers "
                "are written without a fraction. Unknown fields are refused.",
            },
            "PriorityRequest": published(PRIORITY_BODY_SCHEMA),
            "Job": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "owner_uid": {"type": "integer"},
                    "project": {"type": "string"},
                    "priority": {"type": ["integer", "null"]},
                    "token_id": {"type": "string"},
                    "decision_id": {"type": ["string", "null"]},
                    "phase": {
                        "type": "string",
                        "description": "The pod's phase: Pending (also while held for "
                        "admission), Running, Succeeded, Failed, Unknown; once the job "
                        "container has terminated, Succeeded or Failed by its exit code. The "
                        "spool store runs nothing: its jobs are always Pending",
                    },
                    "exit_code": {
                        "type": ["integer", "null"],
                        "description": "The job container's exit code once it has terminated",
                    },
                    "reason": {
                        "type": ["string", "null"],
                        "description": "The job container's state reason (ContainerCreating, "
                        "Completed, Error, OOMKilled, ...) or, before it exists, why the pod is "
                        "not scheduled (SchedulingGated while held for admission)",
                    },
                    "created": {"type": ["string", "null"]},
                    "started": {"type": ["string", "null"], "description": "RFC 3339"},
                    "finished": {"type": ["string", "null"], "description": "RFC 3339"},
                },
            },
            "Submitted": {
                "type": "object",
                "properties": {
                    "job": _ref("Job"),
                    "decision_id": {"type": ["string", "null"]},
                    "pod": {"type": "object", "description": "The pod manifest as submitted"},
                },
            },
            "JobResult": {
                "type": "object",
                "properties": {
                    "job": _ref("Job"),
                    "decision_id": {"type": ["string", "null"]},
                    "cancelled": {"type": "boolean"},
                },
            },
            "JobList": {
                "type": "object",
                "properties": {
                    "jobs": {"type": "array", "items": _ref("Job")},
                    "decision_id": {"type": ["string", "null"]},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Denied": {
                "type": "object",
                "required": ["error", "reasons"],
                "properties": {
                    "error": {"type": "string"},
                    "reasons": {"type": "array", "items": {"type": "string"}},
                    "decision_id": {"type": ["string", "null"]},
                },
            },
            "Invalid": {
                "type": "object",
                "required": ["error", "reasons"],
                "properties": {
                    "error": {"type": "string"},
                    "reasons": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Unavailable": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "created": {"type": ["boolean", "null"]},
                },
            },
        },
    },
}

__all__ = ["OPENAPI"]
