"""Revocations data: what `tokensvc revoke` writes for the policy, checked before it is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tokensvc.cli import main
from tokensvc.cluster import revocations
from tokensvc.cluster.revocations import Revocation
from tokensvc.core.errors import ConfigError

TOKEN = "0123456789abcdef0123456789abcdef"


def test_entries_are_added_sorted_and_replace_their_subject(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    revocations.add(path, Revocation("hosts", "login9", "compromised", 100, issued_before=90))
    revocations.add(path, Revocation("hosts", "login1", "compromised", 100, issued_before=90))
    revocations.add(path, Revocation("hosts", "login9", "again", 200, issued_before=190))
    hosts = yaml.safe_load(path.read_text())["hosts"]
    assert hosts == [
        {"host": "login1", "issued_before": 90, "reason": "compromised", "revoked_at": 100},
        {"host": "login9", "issued_before": 190, "reason": "again", "revoked_at": 200},
    ]
    assert revocations.load(path)["token_ids"] == []


@pytest.mark.parametrize(
    ("rev", "problem"),
    [
        (Revocation("token_ids", "abc", "r", 1), "32 lowercase hex"),
        (Revocation("key_ids", "XYZ", "r", 1), "16 lowercase hex"),
        (Revocation("hosts", "bad host", "r", 1, issued_before=1), "not a host name"),
        (Revocation("uids", 1004, "r", 1), "issued_before"),
        (Revocation("token_ids", TOKEN, "r", 1, issued_before=1), "issued_before"),
        (Revocation("token_ids", TOKEN, "  ", 1), "reason"),
        (Revocation("token_ids", TOKEN, "line\nbreak", 1), "reason"),
    ],
)
def test_bad_entries_are_refused_and_nothing_is_written(
    tmp_path: Path, rev: Revocation, problem: str
) -> None:
    path = tmp_path / "data.yaml"
    with pytest.raises(ConfigError, match=problem):
        revocations.add(path, rev)
    assert not path.exists()


def test_a_file_that_is_not_revocations_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        revocations.load(path)


def test_cli_revokes_a_host_before_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.yaml"
    code = main(
        [
            "revoke",
            "--file",
            str(path),
            "host",
            "login3",
            "--before",
            "2026-12-01T00:00:00Z",
            "--reason",
            "node compromised",
        ]
    )
    assert code == 0
    entry = revocations.load(path)["hosts"][0]
    assert (entry["host"], entry["issued_before"]) == ("login3", 1796083200)
    assert "revoked host login3" in capsys.readouterr().out


def test_cli_bad_key_id_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["revoke", "--file", str(tmp_path / "d.yaml"), "key", "zz", "--reason", "x"])
    assert code == 3
    assert "16 lowercase hex" in capsys.readouterr().err
