"""One sample identity for the token-core unit tests (claims, token, validate)."""

from __future__ import annotations

from typing import Any

from tokensvc.core.claims import Claims

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed clock; these tests never read time


def claim_fields(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a valid ``Claims``, with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "uid": 1001,
        "gid": 1001,
        "groups": (100, 2001),
        "user": "alice",
        "host": "un1",
        "realm": "wsc",
        "issued_at": T0,
        "expires_at": T0 + 300,
        "token_id": "00112233445566778899aabbccddeeff",
    }
    fields.update(overrides)
    return fields


def make_claims(**overrides: Any) -> Claims:
    return Claims(**claim_fields(**overrides))
