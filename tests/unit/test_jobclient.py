"""User-node job client: server answers map onto the error tree (and so exit codes)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tokensvc.cli.jobs import _mount
from tokensvc.cluster.client import JobClient, _raise_for
from tokensvc.core.errors import (
    BodyTooLarge,
    Expired,
    InvalidRequest,
    InvalidToken,
    KeyRetired,
    NoLogs,
    NotFound,
    NotStarted,
    NotYetValid,
    PolicyDenied,
    PolicyUnavailable,
    Replayed,
    ServerBusy,
    ServerUnavailable,
    SubmitFailed,
    TokenServiceError,
    WrongRealm,
)


@pytest.mark.parametrize(
    ("status", "body", "error", "exit_code"),
    [
        (401, {"code": "invalid_token", "error": "invalid token"}, InvalidToken, 10),
        (401, {"code": "expired", "error": "token expired"}, Expired, 11),
        (401, {"code": "not_yet_valid", "error": "not yet valid"}, NotYetValid, 12),
        (401, {"code": "wrong_realm", "error": "wrong realm"}, WrongRealm, 13),
        (409, {"code": "replayed", "error": "token already used"}, Replayed, 14),
        (401, {"code": "key_retired", "error": "key retired"}, KeyRetired, 15),
        (403, {"code": "denied", "reasons": ["a", "b"]}, PolicyDenied, 7),
        (404, {"code": "not_found", "error": "no such job"}, NotFound, 9),
        (422, {"code": "invalid_request", "reasons": ["x"]}, InvalidRequest, 2),
        (413, {"code": "body_too_large", "error": "too large"}, BodyTooLarge, 2),
        (503, {"code": "policy_unavailable", "error": "unreachable"}, PolicyUnavailable, 8),
        (503, {"code": "submit_failed", "error": "spool", "created": False}, SubmitFailed, 8),
        (409, {"code": "not_started", "error": "not started"}, NotStarted, 19),
        (501, {"code": "no_logs", "error": "spool"}, NoLogs, 18),
        (503, {"code": "busy", "error": "busy"}, ServerBusy, 8),
        (500, {"code": "internal", "error": "internal error"}, ServerUnavailable, 8),
        # No code, an unknown code, or a code that does not fit the status: not trusted.
        (401, {"error": "invalid token"}, ServerUnavailable, 8),
        (401, {"code": "no-such-code"}, ServerUnavailable, 8),
        (500, {"code": "denied"}, ServerUnavailable, 8),
    ],
)
def test_server_code_maps_to_error_and_exit_code(
    status: int, body: dict[str, Any], error: type[TokenServiceError], exit_code: int
) -> None:
    with pytest.raises(error) as err:
        _raise_for(status, body)
    assert type(err.value) is error
    assert err.value.exit_code == exit_code


def test_denial_keeps_every_reason_and_the_decision_id() -> None:
    with pytest.raises(PolicyDenied) as err:
        _raise_for(403, {"code": "denied", "reasons": ["first", "second"], "decision_id": "d1"})
    assert err.value.reasons == ("first", "second")
    assert err.value.decision_id == "d1"


def test_unknown_outcome_of_a_submit_is_kept() -> None:
    with pytest.raises(SubmitFailed) as err:
        _raise_for(503, {"code": "submit_failed", "error": "timeout", "created": None})
    assert err.value.created is None


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
