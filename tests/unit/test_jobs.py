"""Job request parsing: strict, bounded, every problem reported."""

from __future__ import annotations

from typing import Any

import pytest

from tokensvc.cluster.jobs import (
    InvalidRequest,
    JobRequest,
    MountRequest,
    is_job_name,
    job_name,
    parse_job_request,
    parse_priority_body,
)

GOOD: dict[str, Any] = {
    "project": "ml-team",
    "image": "busybox:1.36",
    "command": ["sleep", "1"],
    "mounts": [{"path": "/nfs/projects/ml/data", "mode": "ro"}, {"path": "/nfs/home/a"}],
    "resources": {"systems": 2},
    "priority": 5,
}


def test_good_request() -> None:
    req = parse_job_request(GOOD)
    assert req == JobRequest(
        project="ml-team",
        image="busybox:1.36",
        command=("sleep", "1"),
        mounts=(MountRequest("/nfs/projects/ml/data", "ro"), MountRequest("/nfs/home/a", "ro")),
        systems=2,
        priority=5,
    )
    assert req.to_input() == {
        "project": "ml-team",
        "image": "busybox:1.36",
        "command": ["sleep", "1"],
        "mounts": [
            {"path": "/nfs/projects/ml/data", "mode": "ro"},
            {"path": "/nfs/home/a", "mode": "ro"},
        ],
        "resources": {"systems": 2},
        "priority": 5,
    }
    assert parse_job_request(req.to_body()) == req


def test_defaults() -> None:
    req = parse_job_request({"project": "p", "image": "i", "command": ["x"]})
    assert (req.mounts, req.systems, req.priority) == ((), 1, None)
    assert "priority" not in req.to_input()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"uid": 0}, "unknown field 'uid'"),
        ({"groups": [0]}, "unknown field 'groups'"),
        ({"project": "ML Team"}, "project must be a group name"),
        ({"project": 5}, "project must be a group name"),
        ({"image": ""}, "image must be"),
        ({"image": "bad image"}, "not a valid image"),
        ({"command": []}, "command must be"),
        ({"command": "sleep 1"}, "command must be"),
        ({"command": ["a\x00b"]}, "NUL"),
        ({"mounts": [{"path": "relative"}]}, "must be absolute"),
        ({"mounts": [{"path": "/a", "mode": "wo"}]}, "mode must be"),
        ({"mounts": [{"path": "/a", "uid": 1}]}, "unknown field 'uid'"),
        ({"mounts": [{"path": "/a\nb"}]}, "control characters"),
        ({"mounts": [{"path": "/x"}] * 17}, "at most 16"),
        ({"mounts": "/a"}, "mounts must be a list"),
        ({"resources": {"systems": 0}}, "resources.systems"),
        ({"resources": {"systems": True}}, "resources.systems"),
        ({"resources": {"systems": 1, "cpu": 4}}, "unknown field 'cpu'"),
        ({"priority": -1}, "priority must be"),
        ({"priority": True}, "priority must be"),
        ({"priority": 1.5}, "priority must be"),
    ],
)
def test_bad_requests(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_job_request({**GOOD, **change})
    assert any(reason in r for r in err.value.reasons), err.value.reasons


def test_every_problem_is_reported() -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_job_request({"project": "X", "image": "", "command": [], "extra": 1})
    assert len(err.value.reasons) == 4


def test_body_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest):
        parse_job_request([GOOD])


def test_priority_body() -> None:
    assert parse_priority_body({"priority": 7}) == 7
    for bad in ({}, {"priority": "7"}, {"priority": 7, "owner": 1}, [7]):
        with pytest.raises(InvalidRequest):
            parse_priority_body(bad)


def test_job_names() -> None:
    tid = "ab" * 16
    assert job_name(tid) == f"wsc-job-{tid}"
    assert is_job_name(f"wsc-job-{tid}")
    assert not is_job_name(f"wsc-job-{tid}/../x")
    with pytest.raises(ValueError, match="token id"):
        job_name("AB" * 16)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"command": ["ok", "\ud800"]}, "command[1]"),
        ({"project": "\udfff"}, "project"),
        ({"image": "busybox\ud83d"}, "image"),
        ({"mounts": [{"path": "/nfs/\udc80"}]}, "mounts[0].path"),
        ({"mounts": [{"path": "/a", "mode": "\ud800"}]}, "mounts[0].mode"),
    ],
)
def test_lone_surrogates_are_refused_by_the_schema(change: dict[str, Any], where: str) -> None:
    # json.loads accepts "\ud800"; no such string may reach the store.
    with pytest.raises(InvalidRequest) as err:
        parse_job_request({**GOOD, **change})
    if where != "mounts[0].mode":
        assert f"{where} is not valid Unicode (it holds a lone surrogate)" in err.value.reasons
    else:  # not one of the two allowed values either way
        assert err.value.reasons == ("mounts[0].mode must be 'ro' or 'rw'",)


def test_astral_plane_and_yaml_significant_text_is_accepted() -> None:
    command = ["echo", "😀", "- a: b", "#", "&x", "!!python", "null", "'", "\n", "\x85", "\ufeff"]
    assert parse_job_request({**GOOD, "command": command}).command == tuple(command)


@pytest.mark.parametrize(
    "change",
    [
        {"project": "ml-team\n"},  # Python's "$" would match before a final newline
        {"image": "busybox\n"},
        {"mounts": [{"path": "/a\n"}]},
        {"priority": 5.0},  # JSON Schema calls 5.0 an integer; a priority is an int
        {"resources": {"systems": 2.0}},
    ],
)
def test_types_and_patterns_are_strict(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse_job_request({**GOOD, **change})


def test_reasons_are_the_documented_sentences() -> None:
    body = {
        "project": "X",
        "image": "bad image",
        "command": ["a\x00b"],
        "mounts": [{"path": "rel", "uid": 0}, "x"],
        "resources": {"systems": 0},
        "priority": 1001,
        "uid": 0,
    }
    with pytest.raises(InvalidRequest) as err:
        parse_job_request(body)
    assert err.value.reasons == (
        "body: unknown field 'uid'",
        "project must be a group name (lowercase, at most 32 characters)",
        "image is not a valid image reference",
        "command arguments must not contain NUL",
        "mounts[0]: unknown field 'uid'",
        "mounts[0].path must be absolute",
        "mounts[1] must be an object",
        "resources.systems must be an integer from 1 to 64",
        "priority must be an integer from 0 to 1000",
    )
    with pytest.raises(InvalidRequest) as err:
        parse_job_request({})
    assert len(err.value.reasons) == 3  # project, image and command are required
