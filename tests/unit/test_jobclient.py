"""User-node job client: server answers map onto the error tree (and so exit codes)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tokensvc.cli.jobs import _mount
from tokensvc.cluster.client import JobClient, _raise_for
from tokensvc.cluster.jobs import InvalidRequest
from tokensvc.core.errors import (
    NotFound,
    PolicyDenied,
    PolicyUnavailable,
    Replayed,
    ServerUnavailable,
    TokenRejected,
    TokenServiceError,
)


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (401, {"error": "invalid token"}, TokenRejected, 10),
        (403, {"error": "denied by policy", "reasons": ["a", "b"]}, PolicyDenied, 7),
        (404, {"error": "no such job"}, NotFound, 9),
        (409, {"error": "job exists"}, Replayed, 14),
        (422, {"error": "invalid request", "reasons": ["x"]}, InvalidRequest, 2),
        (413, {"error": "too large"}, InvalidRequest, 2),
        (503, {"error": "policy engine unreachable"}, PolicyUnavailable, 8),
        (500, {"error": "internal error"}, ServerUnavailable, 8),
    ],
)
def test_status_maps_to_error(
    status: int, body: dict[str, Any], error: type[TokenServiceError], code: int
) -> None:
    with pytest.raises(error) as err:
        _raise_for(status, body)
    assert err.value.exit_code == code


def test_denial_keeps_every_reason() -> None:
    with pytest.raises(PolicyDenied) as err:
        _raise_for(403, {"reasons": ["first", "second"]})
    assert err.value.reasons == ("first", "second")


def test_success_passes() -> None:
    _raise_for(200, {})
    _raise_for(201, {})


def test_unreachable_server_is_server_unavailable() -> None:
    with (
        JobClient("http://127.0.0.1:1", lambda: "t", timeout=2) as client,
        pytest.raises(ServerUnavailable),
    ):
        client.list()


def test_job_ids_are_checked_before_minting() -> None:
    def no_token() -> str:
        raise AssertionError("must not mint for a malformed id")

    with JobClient("http://127.0.0.1:1", no_token) as client, pytest.raises(NotFound):
        client.get("../../etc/passwd")


def test_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        JobClient("file:///etc/passwd", lambda: "t")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/nfs/a", {"path": "/nfs/a", "mode": "ro"}),
        ("/nfs/a:ro", {"path": "/nfs/a", "mode": "ro"}),
        ("/nfs/a:rw", {"path": "/nfs/a", "mode": "rw"}),
        ("/nfs/a:b", {"path": "/nfs/a:b", "mode": "ro"}),
    ],
)
def test_mount_option(text: str, expected: dict[str, str]) -> None:
    assert _mount(text) == expected


def test_mount_option_must_be_absolute() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _mount("data:rw")
