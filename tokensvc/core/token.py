"""Token wire format (versions 1 and 2): seal claims with AES-256-GCM-SIV, open them back.

No I/O. Layout (docs/token-format.md has the full table)::

    token = base64url_nopad(raw)
    raw   = version(1) || key_id(8) || nonce(12) || ciphertext(len(claims)) || tag(16)
    aad   = version || key_id

Version 2 (what is minted) adds the request binding to the claims: a length
byte (0 or 32) after the fixed fields, then that many bytes of SHA-256
digest. Version 1 tokens still open; their claims are unbound.

``open_token`` raises the bare ``InvalidToken`` for every failure before and
during authentication (text, length, version, unknown key id, tag) and for a
plaintext that does not decode to valid claims. It does not judge time,
realm, key state or replay: that is ``validate.TokenValidator``'s job, after
authentication.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from tokensvc.core.claims import MAX_GROUPS, MAX_TEXT_BYTES, MAX_TTL, Claims
from tokensvc.core.errors import InvalidToken
from tokensvc.core.keys import KEY_ID_LEN, Key, KeyRing

VERSION = 2  # what seal() produces
VERSION_V1 = 1  # still opened: claims without a binding
VERSIONS = (VERSION_V1, VERSION)
BINDING_LEN = 32  # bytes of SHA-256 request digest in a bound v2 token
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = 1 + KEY_ID_LEN  # version, key id: the associated data
NONCE_OFFSET = HEADER_LEN  # 9
CIPHERTEXT_OFFSET = NONCE_OFFSET + NONCE_LEN  # 21

# Claims plaintext: fixed part, then user, host, realm (length-prefixed), then groups.
_FIXED = struct.Struct(">16sQQII")  # token_id, issued_at, expires_at, uid, gid
_COUNT = struct.Struct(">I")
MIN_CLAIMS_LEN_V1 = _FIXED.size + 3 + 2 + _COUNT.size  # 3 length bytes; host, realm >= 1 byte
MAX_CLAIMS_LEN_V1 = _FIXED.size + 3 * (1 + MAX_TEXT_BYTES) + _COUNT.size + 4 * MAX_GROUPS
MIN_CLAIMS_LEN = MIN_CLAIMS_LEN_V1  # over both versions (v2 adds 1 or 33 bytes)
MAX_CLAIMS_LEN = MAX_CLAIMS_LEN_V1 + 1 + BINDING_LEN
_CLAIMS_LEN = {
    VERSION_V1: (MIN_CLAIMS_LEN_V1, MAX_CLAIMS_LEN_V1),
    VERSION: (MIN_CLAIMS_LEN_V1 + 1, MAX_CLAIMS_LEN),
}
MIN_RAW_LEN = CIPHERTEXT_OFFSET + MIN_CLAIMS_LEN + TAG_LEN
MAX_RAW_LEN = CIPHERTEXT_OFFSET + MAX_CLAIMS_LEN + TAG_LEN
MAX_TOKEN_LEN = (MAX_RAW_LEN * 4 + 2) // 3  # base64url characters, no padding

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


# --- claims encoding ------------------------------------------------------------


def encode_claims(claims: Claims, version: int = VERSION) -> bytes:
    """Canonical byte encoding of claims (the AEAD plaintext) in format ``version``.

    ValueError for an unknown version, or a binding in version 1 (which has no room).
    """
    if version not in VERSIONS:
        raise ValueError(f"token format version must be one of {VERSIONS}")
    parts = [
        _FIXED.pack(
            bytes.fromhex(claims.token_id),
            claims.issued_at,
            claims.expires_at,
            claims.uid,
            claims.gid,
        )
    ]
    if version == VERSION:
        binding = b"" if claims.binding is None else bytes.fromhex(claims.binding)
        parts += [bytes((len(binding),)), binding]
    elif claims.binding is not None:
        raise ValueError("a version 1 token cannot carry a request binding")
    for text in (claims.user, claims.host, claims.realm):
        raw = text.encode("utf-8")
        parts += [bytes((len(raw),)), raw]
    parts.append(_COUNT.pack(len(claims.groups)))
    parts.append(struct.pack(f">{len(claims.groups)}I", *claims.groups))
    return b"".join(parts)


def decode_claims(data: bytes, version: int = VERSION) -> Claims:
    """Inverse of ``encode_claims``; ValueError for anything it would not produce."""
    if version not in VERSIONS:
        raise ValueError(f"token format version must be one of {VERSIONS}")
    low, high = _CLAIMS_LEN[version]
    if not low <= len(data) <= high:
        raise ValueError("claims length out of range")
    token_id, issued_at, expires_at, uid, gid = _FIXED.unpack_from(data)
    offset = _FIXED.size
    binding: str | None = None
    if version == VERSION:
        size = data[offset]  # in range: the length check leaves room for it
        if size not in (0, BINDING_LEN) or offset + 1 + size > len(data):
            raise ValueError("binding must be absent or 32 bytes")
        if size:
            binding = data[offset + 1 : offset + 1 + size].hex()
        offset += 1 + size
    texts = []
    for _ in range(3):
        if offset >= len(data):
            raise ValueError("truncated text field")
        size = data[offset]
        end = offset + 1 + size
        if end > len(data):
            raise ValueError("truncated text field")
        texts.append(data[offset + 1 : end].decode("utf-8"))  # strict: UnicodeDecodeError
        offset = end
    if offset + _COUNT.size > len(data):
        raise ValueError("truncated group count")
    (count,) = _COUNT.unpack_from(data, offset)
    offset += _COUNT.size
    if count > MAX_GROUPS or len(data) != offset + 4 * count:
        raise ValueError("group list length does not match")
    groups = struct.unpack_from(f">{count}I", data, offset)
    user, host, realm = texts
    # Claims() rejects unsorted/duplicate groups, control characters, bad times.
    return Claims(
        uid=uid,
        gid=gid,
        groups=groups,
        user=user,
        host=host,
        realm=realm,
        issued_at=issued_at,
        expires_at=expires_at,
        token_id=token_id.hex(),
        binding=binding,
    )


# --- sealing and opening ----------------------------------------------------------


def _encode_text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Sealer:
    """Seals claims with one key, keeping its AEAD context and header.

    The mint daemon holds one per active key: building the AES-GCM-SIV
    context costs as much as an encryption, so it is done once, not per token.
    """

    __slots__ = ("_aead", "_header", "_max_ttl", "_version", "key")

    def __init__(self, key: Key, *, max_ttl: int = MAX_TTL, version: int = VERSION) -> None:
        if version not in VERSIONS:
            raise ValueError(f"token format version must be one of {VERSIONS}")
        self.key = key
        self._aead = AESGCMSIV(key.secret)
        self._header = bytes((version,)) + key.key_id_bytes
        self._max_ttl = max_ttl
        self._version = version

    def seal_with_nonce(self, claims: Claims, nonce: bytes) -> str:
        """Seal with a given nonce. Test vectors only: production calls ``seal``."""
        if claims.ttl > self._max_ttl:
            raise ValueError(f"token lifetime {claims.ttl} s exceeds the maximum {self._max_ttl} s")
        if len(nonce) != NONCE_LEN:
            raise ValueError(f"nonce must be {NONCE_LEN} bytes")
        sealed = self._aead.encrypt(nonce, encode_claims(claims, self._version), self._header)
        return _encode_text(self._header + nonce + sealed)

    def seal(self, claims: Claims) -> str:
        """Encrypt and authenticate ``claims`` under a fresh random nonce."""
        return self.seal_with_nonce(claims, os.urandom(NONCE_LEN))


def _seal_with_nonce(
    claims: Claims, key: Key, nonce: bytes, *, max_ttl: int = MAX_TTL, version: int = VERSION
) -> str:
    """Seal with a given nonce. Test vectors only: production calls ``seal``."""
    return Sealer(key, max_ttl=max_ttl, version=version).seal_with_nonce(claims, nonce)


def seal(claims: Claims, key: Key, *, max_ttl: int = MAX_TTL) -> str:
    """Encrypt and authenticate ``claims`` with the active ``key``; returns the token text.

    Raises ValueError for a non-active key or a lifetime above ``max_ttl``.
    """
    if key.state != "active":
        raise ValueError(f"key {key.key_id} is {key.state}; only the active key mints")
    return Sealer(key, max_ttl=max_ttl).seal(claims)


def _decode_text(token: str) -> bytes:
    # Strict and canonical: one token text per byte string, so no bit of the
    # text can change without changing the bytes (and failing the tag).
    if len(token) > MAX_TOKEN_LEN or len(token) % 4 == 1 or not _B64URL.fullmatch(token):
        raise InvalidToken()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken() from None
    if _encode_text(raw) != token:
        raise InvalidToken()
    return raw


def open_token(token: str, ring: KeyRing) -> tuple[Claims, Key]:
    """Authenticate and decrypt a token; returns its claims and the key that opened it.

    Every failure raises the bare ``InvalidToken``. The returned key may be
    retired and the claims may be expired or foreign: callers must use
    ``validate.TokenValidator`` (or ``validate.check_claims``) before trusting them.
    """
    if not isinstance(token, str):
        raise TypeError("token must be a str")
    raw = _decode_text(token)
    if not MIN_RAW_LEN <= len(raw) <= MAX_RAW_LEN or raw[0] not in VERSIONS:
        raise InvalidToken()
    key = ring.find_raw(raw[1:HEADER_LEN])
    if key is None:
        raise InvalidToken()
    try:
        plaintext = AESGCMSIV(key.secret).decrypt(
            raw[NONCE_OFFSET:CIPHERTEXT_OFFSET], raw[CIPHERTEXT_OFFSET:], raw[:HEADER_LEN]
        )
    except InvalidTag:
        raise InvalidToken() from None
    try:
        claims = decode_claims(plaintext, raw[0])
    except ValueError:  # includes UnicodeDecodeError
        # Authentic but undecodable: only a holder of the key can make one.
        raise InvalidToken() from None
    return claims, key


__all__ = [
    "BINDING_LEN",
    "CIPHERTEXT_OFFSET",
    "HEADER_LEN",
    "MAX_CLAIMS_LEN",
    "MAX_RAW_LEN",
    "MAX_TOKEN_LEN",
    "MIN_CLAIMS_LEN",
    "MIN_RAW_LEN",
    "NONCE_LEN",
    "NONCE_OFFSET",
    "TAG_LEN",
    "VERSION",
    "VERSIONS",
    "VERSION_V1",
    "Sealer",
    "decode_claims",
    "encode_claims",
    "open_token",
    "seal",
]
