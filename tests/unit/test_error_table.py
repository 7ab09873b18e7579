"""The one error table: codes unique and stable, and the docs print exactly the code's table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tokensvc.core import errors

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import error_table  # noqa: E402


def test_every_code_names_one_class() -> None:
    table = errors.error_table()
    codes = [cls.code for cls in table]
    assert len(codes) == len(set(codes))
    for cls in table:
        assert errors.error_for_code(cls.code) is cls


def test_codes_are_stable() -> None:
    # Clients and scripts match on these: changing one is a breaking change.
    assert {
        cls.__name__: (cls.code, cls.http_status, cls.exit_code) for cls in errors.error_table()
    } == {
        "TokenServiceError": ("internal", 500, 1),
        "BodyTooLarge": ("body_too_large", 413, 2),
        "HeadersTooLarge": ("headers_too_large", 431, 2),
        "InvalidRequest": ("invalid_request", 422, 2),
        "MalformedBody": ("malformed_body", 400, 2),
        "MethodNotAllowed": ("method_not_allowed", 405, 2),
        "UnsupportedMediaType": ("unsupported_media_type", 415, 2),
        "ConfigError": ("config", 500, 3),
        "KeyFileError": ("key_file", 500, 3),
        "InsecureKeyFile": ("insecure_key_file", 500, 4),
        "DaemonUnavailable": ("daemon_unavailable", 500, 5),
        "MintRefused": ("mint_refused", 500, 6),
        "PolicyDenied": ("denied", 403, 7),
        "PolicyUnavailable": ("policy_unavailable", 503, 8),
        "ServerBusy": ("busy", 503, 8),
        "ServerUnavailable": ("server_unavailable", 500, 8),
        "SubmitFailed": ("submit_failed", 503, 8),
        "NotFound": ("not_found", 404, 9),
        "InvalidToken": ("invalid_token", 401, 10),
        "TokenRejected": ("token_rejected", 401, 10),
        "Expired": ("expired", 401, 11),
        "NotYetValid": ("not_yet_valid", 401, 12),
        "WrongRealm": ("wrong_realm", 401, 13),
        "Replayed": ("replayed", 409, 14),
        "KeyRetired": ("key_retired", 401, 15),
        "WrongRequest": ("wrong_request", 401, 16),
        "KeyExpired": ("key_expired", 401, 17),
        "NoLogs": ("no_logs", 501, 18),
        "NotStarted": ("not_started", 409, 19),
    }


def test_unknown_codes_name_nothing() -> None:
    assert errors.error_for_code("no-such-code") is None
    assert errors.error_for_code(None) is None
    assert errors.error_for_code(7) is None


@pytest.mark.parametrize("doc", error_table.DOCS)
def test_the_docs_print_the_table_of_the_code(doc: str) -> None:
    assert error_table.render() in (ROOT / doc).read_text()
