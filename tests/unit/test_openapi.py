"""The OpenAPI document publishes the schemas the request parser validates with."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tokensvc.cluster.jobs import (
    JOB_REQUEST_SCHEMA,
    PRIORITY_BODY_SCHEMA,
    InvalidRequest,
    parse_job_request,
    parse_priority_body,
)
from tokensvc.cluster.openapi import OPENAPI, published

SCHEMAS = OPENAPI["components"]["schemas"]
GOOD = {"project": "ml-team", "image": "busybox:1.36", "command": ["true"]}


def parser_accepts(body: Any) -> bool:
    try:
        parse_job_request(body)
    except InvalidRequest:
        return False
    return True


@pytest.mark.parametrize(
    "body",
    [
        GOOD,
        {**GOOD, "mounts": [{"path": "/nfs/a"}, {"path": "/nfs/b", "mode": "rw"}]},
        {**GOOD, "resources": {"systems": 64}, "priority": 1000},
        {**GOOD, "uid": 0},
        {**GOOD, "project": "Not A Group"},
        {**GOOD, "command": []},
        {**GOOD, "mounts": [{"path": "relative"}]},
        {**GOOD, "mounts": [{"path": "/a", "mode": "wo"}]},
        {**GOOD, "mounts": [{"path": "/a", "gid": 0}]},
        {**GOOD, "resources": {"systems": 0}},
        {**GOOD, "resources": {"systems": 65}},
        {**GOOD, "priority": -1},
        {**GOOD, "priority": 1001},
        {"image": "x", "command": ["y"]},
        {**GOOD, "image": "bad image"},
        {**GOOD, "mounts": [{"path": "/a\nb"}]},
    ],
)
def test_schema_and_parser_agree(body: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMAS["JobRequest"])
    assert validator.is_valid(body) == parser_accepts(body)


def test_priority_body_schema_agrees() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMAS["PriorityRequest"])
    for body, ok in (({"priority": 3}, True), ({"priority": -1}, False), ({}, False)):
        assert validator.is_valid(body) is ok
        if ok:
            assert parse_priority_body(body) == body["priority"]


def test_every_reference_resolves() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(OPENAPI):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in SCHEMAS


def test_every_schema_is_valid_json_schema() -> None:
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_request_schemas_are_the_ones_the_server_validates_with() -> None:
    job = dict(SCHEMAS["JobRequest"])
    job.pop("description")
    assert job == published(JOB_REQUEST_SCHEMA)
    assert SCHEMAS["PriorityRequest"] == published(PRIORITY_BODY_SCHEMA)
    assert "x-reason" not in str(OPENAPI)
