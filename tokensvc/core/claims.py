"""Identity claims carried inside a token: a frozen, validated value object.

A ``Claims`` object can only exist in a state the wire format can encode, so
``token.seal`` never meets a value it cannot represent and ``token.open_token``
rejects (as ``InvalidToken``) any plaintext that would not build one. Limits
are documented in docs/token-format.md.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL = 300  # seconds
MAX_TTL = 3600  # seconds; configurable lower or higher by the deployment
MAX_SKEW = 60  # seconds of clock difference tolerated between nodes

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no id" to the kernel, so it is never a claim
MAX_TIME = 2**63 - 1  # times are unsigned 64-bit on the wire, kept in int64 range
MAX_GROUPS = 65536  # Linux NGROUPS_MAX: every kernel identity fits
MAX_TEXT_BYTES = 255  # user, host, realm: UTF-8 bytes, one length byte on the wire

BINDING_HEX_LEN = 64  # a request digest: SHA-256, as lowercase hex

_TOKEN_ID = re.compile(r"[0-9a-f]{32}")
_BINDING = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1


def _check_id(name: str, value: object) -> None:
    # bool is an int subclass; True is not a uid.
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise ValueError(f"{name} must be an integer in 0..{MAX_ID}")


def _check_text(name: str, value: object, *, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        raise ValueError(f"{name} must be valid Unicode") from None
    lowest = 0 if allow_empty else 1
    if not lowest <= size <= MAX_TEXT_BYTES:
        raise ValueError(f"{name} must be {lowest}..{MAX_TEXT_BYTES} UTF-8 bytes")
    if _CONTROL.search(value):
        raise ValueError(f"{name} must not contain control characters")


def is_token_id(value: object) -> bool:
    """True for a token id as claims carry it: 32 lowercase hex digits (128 bits)."""
    return isinstance(value, str) and _TOKEN_ID.fullmatch(value) is not None


def is_binding(value: object) -> bool:
    """True for a request digest as claims carry it: 64 lowercase hex digits (SHA-256)."""
    return isinstance(value, str) and _BINDING.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Claims:
    """Who a token speaks for, where it was minted, and when it is valid."""

    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary gids, strictly ascending (sorted, unique)
    user: str  # informational; resolved by the daemon from the uid, may be empty
    host: str
    realm: str
    issued_at: int  # unix seconds
    expires_at: int  # unix seconds, > issued_at
    token_id: str  # 32 lowercase hex digits (128 random bits)
    # The digest of the one request this token may be used for (core.digest),
    # 64 lowercase hex digits; None for an unbound token (and every v1 token).
    binding: str | None = None

    def __post_init__(self) -> None:
        _check_id("uid", self.uid)
        _check_id("gid", self.gid)
        if not isinstance(self.groups, tuple) or len(self.groups) > MAX_GROUPS:
            raise ValueError(f"groups must be a tuple of at most {MAX_GROUPS} gids")
        previous = -1
        for g in self.groups:
            _check_id("group", g)
            if g <= previous:
                raise ValueError("groups must be sorted and unique")
            previous = g
        _check_text("user", self.user, allow_empty=True)
        _check_text("host", self.host, allow_empty=False)
        _check_text("realm", self.realm, allow_empty=False)
        for name in ("issued_at", "expires_at"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_TIME:
                raise ValueError(f"{name} must be an integer in 0..{MAX_TIME}")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        if not isinstance(self.token_id, str) or not _TOKEN_ID.fullmatch(self.token_id):
            raise ValueError("token_id must be 32 lowercase hex digits")
        if self.binding is not None and not is_binding(self.binding):
            raise ValueError("binding must be None or 64 lowercase hex digits")

    @property
    def ttl(self) -> int:
        """Lifetime the minter granted, in seconds."""
        return self.expires_at - self.issued_at

    def to_identity(self) -> dict[str, Any]:
        """The identity part of an OPA input document (no times: policy needs none)."""
        return {
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "user": self.user,
            "host": self.host,
            "realm": self.realm,
            "token_id": self.token_id,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every claim as JSON-ready values (for `tokensvc decode` and test vectors).

        ``binding`` is present only for a bound token.
        """
        doc = {
            **self.to_identity(),
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }
        if self.binding is not None:
            doc["binding"] = self.binding
        return doc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Claims:
        """Inverse of ``to_dict`` (groups may be any sequence of ints)."""
        return cls(
            uid=data["uid"],
            gid=data["gid"],
            groups=tuple(data["groups"]),
            user=data["user"],
            host=data["host"],
            realm=data["realm"],
            issued_at=data["issued_at"],
            expires_at=data["expires_at"],
            token_id=data["token_id"],
            binding=data.get("binding"),
        )


def check_ttl(ttl: object, max_ttl: int = MAX_TTL) -> int:
    """Return ``ttl`` if it is a whole number of seconds in 1..max_ttl, else ValueError."""
    if type(ttl) is not int or not 1 <= ttl <= max_ttl:
        raise ValueError(f"ttl must be an integer in 1..{max_ttl} seconds")
    return ttl


def new_claims(
    *,
    uid: int,
    gid: int,
    groups: list[int] | tuple[int, ...] | set[int] | frozenset[int],
    user: str,
    host: str,
    realm: str,
    ttl: int = DEFAULT_TTL,
    now: float,
    max_ttl: int = MAX_TTL,
    binding: str | None = None,
) -> Claims:
    """Fresh claims issued at ``now`` (floored to a second) with a random token id.

    ``groups`` is the kernel's list as given (order and duplicates do not
    matter; it is stored sorted and unique). ``binding`` is the digest of
    the one request the token is for (None: unbound). Raises ValueError for
    a ttl outside 1..max_ttl or any value the token cannot carry.
    """
    check_ttl(ttl, max_ttl)
    issued_at = int(now)
    return Claims(
        uid=uid,
        gid=gid,
        groups=tuple(sorted(set(groups))),
        user=user,
        host=host,
        realm=realm,
        issued_at=issued_at,
        expires_at=issued_at + ttl,
        token_id=secrets.token_hex(16),
        binding=binding,
    )


__all__ = [
    "BINDING_HEX_LEN",
    "DEFAULT_TTL",
    "MAX_GROUPS",
    "MAX_ID",
    "MAX_SKEW",
    "MAX_TEXT_BYTES",
    "MAX_TIME",
    "MAX_TTL",
    "Claims",
    "check_ttl",
    "is_binding",
    "is_token_id",
    "new_claims",
]
