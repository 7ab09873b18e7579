"""Claims: what a token may say, and nothing else."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sample_claims import T0, claim_fields

from tokensvc.core.claims import (
    DEFAULT_TTL,
    MAX_GROUPS,
    MAX_ID,
    MAX_SKEW,
    MAX_TEXT_BYTES,
    MAX_TIME,
    MAX_TTL,
    Claims,
    check_ttl,
    new_claims,
)


def test_defaults_match_the_design() -> None:
    assert (DEFAULT_TTL, MAX_TTL, MAX_SKEW) == (300, 3600, 60)
    assert MAX_GROUPS == 65536
    assert MAX_ID == 2**32 - 2


def test_valid_claims_and_ttl() -> None:
    claims = Claims(**claim_fields())
    assert claims.ttl == 300
    assert Claims(**claim_fields(uid=0, gid=MAX_ID, groups=(), user="")).uid == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("uid", -1),
        ("uid", MAX_ID + 1),
        ("uid", True),
        ("uid", 1.0),
        ("uid", "1001"),
        ("gid", 2**32),
        ("groups", [100]),
        ("groups", (2001, 100)),
        ("groups", (100, 100)),
        ("groups", (-1,)),
        ("groups", (MAX_ID + 1,)),
        ("groups", tuple(range(MAX_GROUPS + 1))),
        ("user", "a" * (MAX_TEXT_BYTES + 1)),
        ("user", "é" * 128),  # 256 UTF-8 bytes
        ("user", "a\nb"),
        ("user", "a\x7f"),
        ("user", "a\x85"),
        ("user", "\ud800"),
        ("user", None),
        ("host", ""),
        ("realm", ""),
        ("realm", "r\x00"),
        ("issued_at", -1),
        ("issued_at", MAX_TIME + 1),
        ("issued_at", float(T0)),
        ("expires_at", T0),
        ("expires_at", T0 - 1),
        ("token_id", "00112233445566778899AABBCCDDEEFF"),
        ("token_id", "0011"),
        ("token_id", "g" * 32),
        ("token_id", b"0" * 32),
    ],
)
def test_invalid_fields_are_refused(name: str, value: object) -> None:
    with pytest.raises(ValueError):
        Claims(**claim_fields(**{name: value}))


def test_longest_texts_are_allowed() -> None:
    claims = Claims(**claim_fields(user="é" * 127 + "a", host="h" * 255, realm="r" * 255))
    assert len(claims.user.encode()) == MAX_TEXT_BYTES


def test_claims_are_frozen() -> None:
    claims = Claims(**claim_fields())
    with pytest.raises(AttributeError):
        claims.uid = 0  # type: ignore[misc]


def test_new_claims_sorts_groups_and_sets_times() -> None:
    claims = new_claims(
        uid=1001,
        gid=1001,
        groups=[2001, 100, 2001],
        user="alice",
        host="un1",
        realm="wsc",
        ttl=120,
        now=T0 + 0.9,
    )
    assert claims.groups == (100, 2001)
    assert claims.issued_at == T0
    assert claims.expires_at == T0 + 120
    assert re.fullmatch(r"[0-9a-f]{32}", claims.token_id)


def test_new_claims_token_ids_are_random() -> None:
    ids = {
        new_claims(uid=1, gid=1, groups=(), user="", host="h", realm="r", now=T0).token_id
        for _ in range(100)
    }
    assert len(ids) == 100


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL + 1, 1.5, True, "300"])
def test_new_claims_refuses_bad_ttl(ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        new_claims(uid=1, gid=1, groups=(), user="", host="h", realm="r", ttl=ttl, now=T0)


def test_configurable_max_ttl() -> None:
    assert check_ttl(7200, 7200) == 7200
    with pytest.raises(ValueError):
        check_ttl(61, 60)
    claims = new_claims(
        uid=1, gid=1, groups=(), user="", host="h", realm="r", ttl=7200, now=T0, max_ttl=7200
    )
    assert claims.ttl == 7200


def test_identity_for_opa_has_the_issue_time_but_not_the_expiry() -> None:
    identity = Claims(**claim_fields()).to_identity()
    assert identity == {
        "uid": 1001,
        "gid": 1001,
        "groups": [100, 2001],
        "user": "alice",
        "host": "un1",
        "realm": "wsc",
        "token_id": "00112233445566778899aabbccddeeff",
        "issued_at": claim_fields()["issued_at"],
    }


def test_dict_round_trip() -> None:
    claims = Claims(**claim_fields())
    assert Claims.from_dict(claims.to_dict()) == claims
