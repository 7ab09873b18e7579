#!/usr/bin/env python3
"""Generate the token format v1 and v2 test vectors in tests/vectors/ (deterministic).

Usage: .venv/bin/python scripts/make_vectors.py [--check]

Every input is fixed (keys, nonces, token ids, times), so the output is the
same on every run; tests/unit/test_vectors.py fails if the committed files
differ from what this script produces. Format: docs/token-format.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from tokensvc.core.claims import MAX_SKEW, MAX_TTL, Claims
from tokensvc.core.digest import canonical_json, request_digest
from tokensvc.core.keys import Key, KeyRing, KeyState
from tokensvc.core.token import (
    CIPHERTEXT_OFFSET,
    HEADER_LEN,
    VERSION,
    VERSION_V1,
    _seal_with_nonce,
    encode_claims,
)

VECTOR_DIR = Path(__file__).resolve().parent.parent / "tests" / "vectors"
REALM = "wsc-test"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _digest(label: str, size: int) -> bytes:
    return hashlib.sha256(f"tokensvc test vector {label}".encode()).digest()[:size]


def _key(name: str, key_id: str, state: KeyState) -> Key:
    return Key(key_id, _digest(f"key {name}", 32), state, T0 - 86400)


ACTIVE = _key("active", "a1a1a1a1a1a1a1a1", "active")
ACCEPTED = _key("accepted", "b2b2b2b2b2b2b2b2", "accepted")
RETIRED = _key("retired", "c3c3c3c3c3c3c3c3", "retired")
FOREIGN = _key("foreign", "d4d4d4d4d4d4d4d4", "active")  # not in the ring
RING = KeyRing((ACTIVE, ACCEPTED, RETIRED))
# Version 2 files add a key with a validity window of one hour either side of T0.
WINDOWED = Key(
    "e5e5e5e5e5e5e5e5",
    _digest("key windowed", 32),
    "accepted",
    T0 - 86400,
    not_before=T0 - 3600,
    not_after=T0 + 3600,
)
RING_V2 = KeyRing((ACTIVE, ACCEPTED, RETIRED, WINDOWED))

# Two job requests as the server digests them (JobRequest.to_input()).
REQUEST = {
    "project": "ml-team",
    "image": "registry.invalid/train:1",
    "command": ["python", "train.py", "--name", "zoë"],
    "mounts": [{"path": "/nfs/ml-team/data", "mode": "ro"}],
    "resources": {"systems": 2},
    "priority": 5,
}
OTHER_REQUEST = {**REQUEST, "resources": {"systems": 16}}
ACTION = {"action": "cancel", "job": "wsc-job-00112233445566778899aabbccddeeff"}


def _claims(label: str, **overrides: Any) -> Claims:
    fields: dict[str, Any] = {
        "uid": 1001,
        "gid": 1001,
        "groups": (100, 2001, 2002),
        "user": "alice",
        "host": "usernode-1.example.org",
        "realm": REALM,
        "issued_at": T0,
        "expires_at": T0 + 300,
        "token_id": _digest(f"token id {label}", 16).hex(),
    }
    fields.update(overrides)
    return Claims(**fields)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _flip(token: str, byte: int, bit: int = 0) -> str:
    raw = bytearray(_unb64(token))
    raw[byte] ^= 1 << bit
    return _b64(bytes(raw))


def _error(name: str) -> dict[str, Any]:
    codes = {
        "InvalidToken": 10,
        "Expired": 11,
        "NotYetValid": 12,
        "WrongRealm": 13,
        "Replayed": 14,
        "KeyRetired": 15,
        "WrongRequest": 16,
        "KeyExpired": 17,
    }
    return {"error": name, "exit_code": codes[name]}


def _sealed_case(
    description: str,
    claims: Claims,
    *,
    key: Key = ACTIVE,
    now: int = T0 + 10,
    expect: dict[str, Any] | None = None,
    seal_max_ttl: int = MAX_TTL,
    repeat: int = 1,
    version: int = VERSION,
    request: Any = None,
    unbound_allowed: bool = False,
) -> dict[str, Any]:
    """A genuine token: the seal inputs must reproduce ``token`` exactly.

    With ``request``, validation also checks the binding against that
    document's digest (unbound tokens pass only if ``unbound_allowed``).
    """
    nonce = _digest(f"nonce {description}", 12)
    token = _seal_with_nonce(claims, key, nonce, max_ttl=seal_max_ttl, version=version)
    seal: dict[str, Any] = {
        "version": version,
        "key_id": key.key_id,
        "nonce": nonce.hex(),
        "claims": claims.to_dict(),
    }
    if seal_max_ttl != MAX_TTL:
        seal["max_ttl"] = seal_max_ttl
    case: dict[str, Any] = {"description": description, "seal": seal, "token": token, "now": now}
    if repeat != 1:
        case["repeat"] = repeat
    if request is not None:
        case["request"] = {
            "document": request,
            "canonical_json": canonical_json(request).decode("utf-8"),
            "digest": request_digest(request),
            "unbound_allowed": unbound_allowed,
        }
    case["expect"] = expect or {"claims": claims.to_dict(), "key_id": key.key_id}
    return case


def _raw_case(description: str, token: str, now: int = T0 + 10) -> dict[str, Any]:
    """A token that must not authenticate: InvalidToken, whatever is wrong with it."""
    return {
        "description": description,
        "token": token,
        "now": now,
        "expect": _error("InvalidToken"),
    }


def _seal_raw(key: Key, header: bytes, plaintext: bytes, label: str) -> str:
    """Seal arbitrary bytes under an arbitrary header (for malformed-but-keyed cases)."""
    nonce = _digest(f"nonce {label}", 12)
    return _b64(header + nonce + AESGCMSIV(key.secret).encrypt(nonce, plaintext, header))


def _key_doc(key: Key) -> dict[str, Any]:
    doc: dict[str, Any] = {"key_id": key.key_id, "state": key.state, "secret": key.secret.hex()}
    if key.not_before is not None:
        doc["not_before"] = key.not_before
    if key.not_after is not None:
        doc["not_after"] = key.not_after
    return doc


def _common(version: int = VERSION_V1) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": f"tokensvc token v{version}",
        "generated_by": "scripts/make_vectors.py (do not edit by hand)",
        "realm": REALM,
        "max_ttl": MAX_TTL,
        "skew": MAX_SKEW,
    }
    if version == VERSION_V1:
        doc["keys"] = [_key_doc(k) for k in RING.keys]
    else:
        doc["key_grace"] = MAX_SKEW
        doc["keys"] = [_key_doc(k) for k in RING_V2.keys]
    return doc


def _v1(description: str, claims: Claims, **options: Any) -> dict[str, Any]:
    return _sealed_case(description, claims, version=VERSION_V1, **options)


def valid_cases() -> list[dict[str, Any]]:
    base = _claims("typical")
    return [
        _v1("typical user with three supplementary groups", base),
        _v1(
            "no supplementary groups and an empty user name",
            _claims("minimal", groups=(), user=""),
        ),
        _v1(
            "UTF-8 user and host names",
            _claims("utf8", user="zoë", host="knoten-ü.example.org"),
        ),
        _v1(
            "largest ids (uid/gid 4294967294), lifetime exactly max_ttl",
            _claims(
                "large ids",
                uid=4294967294,
                gid=4294967294,
                groups=(0, 65534, 4294967294),
                expires_at=T0 + MAX_TTL,
            ),
        ),
        _v1(
            "sealed with an accepted (not active) key: opens normally",
            _claims("accepted key"),
            key=ACCEPTED,
        ),
        _v1(
            "earliest accepted instant: now = issued_at - skew",
            _claims("early edge"),
            now=T0 - MAX_SKEW,
        ),
        _v1(
            "latest accepted instant: now = expires_at + skew - 1",
            _claims("late edge"),
            now=T0 + 300 + MAX_SKEW - 1,
        ),
        _v1(
            "many supplementary groups (200)",
            _claims("many groups", groups=tuple(range(10_000, 10_200))),
        ),
    ]


def invalid_cases() -> list[dict[str, Any]]:
    good = _v1("reference token for the tampering cases", _claims("reference"))
    token = good["token"]
    raw = _unb64(token)
    header = raw[:HEADER_LEN]
    plaintext = encode_claims(_claims("reference"), VERSION_V1)
    # Unsorted groups: swap the last two 4-byte gids of an otherwise valid encoding.
    unsorted = plaintext[:-8] + plaintext[-4:] + plaintext[-8:-4]
    cases = [
        _raw_case("empty string", ""),
        _raw_case("one bit flipped in the version byte", _flip(token, 0)),
        _raw_case(
            "version 3 header, otherwise correctly sealed (version is checked before the tag)",
            _seal_raw(ACTIVE, bytes((3,)) + ACTIVE.key_id_bytes, plaintext, "version 3"),
        ),
        _raw_case("one bit flipped in the key id", _flip(token, 1)),
        _raw_case(
            "key id swapped for another key in the ring",
            _b64(bytes((1,)) + ACCEPTED.key_id_bytes + raw[HEADER_LEN:]),
        ),
        _raw_case(
            "unknown key id (sealed with a key that is not in the ring)",
            _seal_with_nonce(
                _claims("foreign"), FOREIGN, _digest("nonce foreign", 12), version=VERSION_V1
            ),
        ),
        _raw_case("one bit flipped in the nonce", _flip(token, HEADER_LEN + 3, 7)),
        _raw_case("one bit flipped in the ciphertext", _flip(token, CIPHERTEXT_OFFSET + 5, 2)),
        _raw_case("one bit flipped in the tag", _flip(token, len(raw) - 1, 7)),
        _raw_case("last byte removed", _b64(raw[:-1])),
        _raw_case("last character removed", token[:-1]),
        _raw_case("one zero byte appended", _b64(raw + b"\x00")),
        _raw_case(
            "header, nonce and tag only (no ciphertext)", _b64(raw[:CIPHERTEXT_OFFSET] + raw[-16:])
        ),
        _raw_case("padding added ('=' is not in the alphabet)", token + "=="),
        _raw_case(
            "standard base64 alphabet ('+' and '/')",
            token.replace("-", "+").replace("_", "/") + "+/",
        ),
        _raw_case("trailing newline", token + "\n"),
        _raw_case(
            "authentic but not canonical claims (groups out of order)",
            _seal_raw(ACTIVE, header, unsorted, "unsorted groups"),
        ),
        _raw_case(
            "authentic but trailing byte after the claims",
            _seal_raw(ACTIVE, header, plaintext + b"\x00", "trailing byte"),
        ),
    ]
    # A text whose unused low bits are not zero decodes to the same bytes in
    # lax decoders; it must be rejected (one text per token).
    if len(raw) % 3:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(token[-1])
        cases.append(
            _raw_case("non-zero unused bits in the last character", token[:-1] + alphabet[last | 1])
        )
    over = _claims("over max ttl", expires_at=T0 + MAX_TTL + 1)
    cases += [
        _v1(
            "sealed with a retired key: authenticates, then KeyRetired",
            _claims("retired key"),
            key=RETIRED,
            expect=_error("KeyRetired"),
        ),
        _v1(
            "retired key and expired: KeyRetired is reported first",
            _claims("retired and expired"),
            key=RETIRED,
            now=T0 + 100_000,
            expect=_error("KeyRetired"),
        ),
        _v1(
            "minted for another realm",
            _claims("other realm", realm="other-cluster"),
            expect=_error("WrongRealm"),
        ),
        _v1(
            "another realm and expired: WrongRealm is reported first",
            _claims("other realm expired", realm="other-cluster"),
            now=T0 + 100_000,
            expect=_error("WrongRealm"),
        ),
        _v1(
            "expired: now = expires_at + skew",
            _claims("expired"),
            now=T0 + 300 + MAX_SKEW,
            expect=_error("Expired"),
        ),
        _v1(
            "lifetime max_ttl + 1 (a minter with a larger max_ttl): rejected as Expired",
            over,
            seal_max_ttl=MAX_TTL + 1,
            expect=_error("Expired"),
        ),
        _v1(
            "not yet valid: now = issued_at - skew - 1",
            _claims("not yet valid"),
            now=T0 - MAX_SKEW - 1,
            expect=_error("NotYetValid"),
        ),
        _v1(
            "the same token validated twice with one replay cache: the second is Replayed",
            _claims("replayed"),
            repeat=2,
            expect=_error("Replayed"),
        ),
    ]
    return cases


def valid_cases_v2() -> list[dict[str, Any]]:
    bound = request_digest(REQUEST)
    return [
        _sealed_case(
            "bound to a job request; served for that request",
            _claims("v2 bound", binding=bound),
            request=REQUEST,
        ),
        _sealed_case(
            "bound to an action on a job ({action, job}); served for that action",
            _claims("v2 action", binding=request_digest(ACTION)),
            request=ACTION,
        ),
        _sealed_case(
            "bound, opened without a request to check (binding is then not judged)",
            _claims("v2 bound no check", binding=bound),
        ),
        _sealed_case("unbound version 2 token, no request to check", _claims("v2 unbound")),
        _sealed_case(
            "unbound version 2 token where unbound tokens are allowed",
            _claims("v2 unbound allowed"),
            request=REQUEST,
            unbound_allowed=True,
        ),
        _v1(
            "version 1 token (always unbound) where unbound tokens are allowed",
            _claims("v1 unbound allowed"),
            request=REQUEST,
            unbound_allowed=True,
        ),
        _sealed_case(
            "bound, sealed with an accepted key: opens normally",
            _claims("v2 accepted", binding=bound),
            key=ACCEPTED,
            request=REQUEST,
        ),
        _sealed_case(
            "key window: issued and opened at not_before - grace (earliest instant)",
            _claims("window early", issued_at=T0 - 3600 - MAX_SKEW, expires_at=T0 - 3600 + 240),
            key=WINDOWED,
            now=T0 - 3600 - MAX_SKEW,
        ),
        _sealed_case(
            "key window: opened at not_after + grace - 1 (latest instant)",
            _claims("window late", issued_at=T0 + 3600 - 100, expires_at=T0 + 3600 + 200),
            key=WINDOWED,
            now=T0 + 3600 + MAX_SKEW - 1,
        ),
    ]


def invalid_cases_v2() -> list[dict[str, Any]]:
    bound = request_digest(REQUEST)
    good = _sealed_case("v2 reference token", _claims("v2 reference", binding=bound))
    token = good["token"]
    raw = _unb64(token)
    header = raw[:HEADER_LEN]
    v1_header = bytes((VERSION_V1,)) + raw[1:HEADER_LEN]
    plaintext = encode_claims(_claims("v2 reference", binding=bound))
    v1_plaintext = encode_claims(_claims("v2 reference"), VERSION_V1)
    fixed = 40  # token id, issued_at, expires_at, uid, gid
    short_binding = (
        plaintext[:fixed]
        + bytes((31,))
        + plaintext[fixed + 1 : fixed + 32]
        + (plaintext[fixed + 33 :])
    )
    return [
        _raw_case("one bit flipped in the binding", _flip(token, CIPHERTEXT_OFFSET + 45, 3)),
        _raw_case(
            "version byte changed from 2 to 1 (the header is authenticated)",
            _b64(v1_header + raw[HEADER_LEN:]),
        ),
        _raw_case(
            "authentic version 1 claims under a version 2 header (no binding length byte)",
            _seal_raw(ACTIVE, header, v1_plaintext, "v1 claims v2 header"),
        ),
        _raw_case(
            "authentic version 2 claims under a version 1 header",
            _seal_raw(ACTIVE, v1_header, plaintext, "v2 claims v1 header"),
        ),
        _raw_case(
            "authentic but a 31-byte binding (must be 0 or 32)",
            _seal_raw(ACTIVE, header, short_binding, "short binding"),
        ),
        _raw_case(
            "authentic but a binding length of 32 with the bytes missing",
            _seal_raw(ACTIVE, header, plaintext[: fixed + 1] + plaintext[fixed + 33 :], "no bytes"),
        ),
        _sealed_case(
            "bound to one job request, presented with another",
            _claims("v2 other request", binding=bound),
            request=OTHER_REQUEST,
            expect=_error("WrongRequest"),
        ),
        _sealed_case(
            "bound to one job request, presented with another, where unbound are allowed",
            _claims("v2 other request unbound allowed", binding=bound),
            request=OTHER_REQUEST,
            unbound_allowed=True,
            expect=_error("WrongRequest"),
        ),
        _sealed_case(
            "bound to a job request, presented for an action on a job",
            _claims("v2 request for action", binding=bound),
            request=ACTION,
            expect=_error("WrongRequest"),
        ),
        _sealed_case(
            "unbound version 2 token where a bound token is required",
            _claims("v2 unbound refused"),
            request=REQUEST,
            expect=_error("WrongRequest"),
        ),
        _v1(
            "version 1 token where a bound token is required",
            _claims("v1 unbound refused"),
            request=REQUEST,
            expect=_error("WrongRequest"),
        ),
        _sealed_case(
            "bound and correct, but replayed: the second is Replayed",
            _claims("v2 bound replayed", binding=bound),
            request=REQUEST,
            repeat=2,
            expect=_error("Replayed"),
        ),
        _sealed_case(
            "bound, another request and expired: Expired is reported first",
            _claims("v2 expired wrong request", binding=bound),
            request=OTHER_REQUEST,
            now=T0 + 100_000,
            expect=_error("Expired"),
        ),
        _sealed_case(
            "key window over: opened at not_after + grace",
            _claims("window over", issued_at=T0 + 3600 - 100, expires_at=T0 + 3600 + 200),
            key=WINDOWED,
            now=T0 + 3600 + MAX_SKEW,
            expect=_error("KeyExpired"),
        ),
        _sealed_case(
            "key window not begun: opened at not_before - grace - 1",
            _claims("window early", issued_at=T0 - 3600 - MAX_SKEW - 1, expires_at=T0 - 3600 + 240),
            key=WINDOWED,
            now=T0 - 3600 - MAX_SKEW - 1,
            expect=_error("KeyExpired"),
        ),
        _sealed_case(
            "issued before the key's window, opened inside it",
            _claims(
                "window issued early",
                issued_at=T0 - 3600 - MAX_SKEW - 1,
                expires_at=T0 - 3600 + 1000,
            ),
            key=WINDOWED,
            now=T0 - 3000,
            expect=_error("KeyExpired"),
        ),
        _sealed_case(
            "key window over and another realm: KeyExpired is reported first",
            _claims(
                "window over other realm",
                realm="other-cluster",
                issued_at=T0 + 3600 - 100,
                expires_at=T0 + 3600 + 200,
            ),
            key=WINDOWED,
            now=T0 + 3600 + MAX_SKEW,
            expect=_error("KeyExpired"),
        ),
        _sealed_case(
            "retired key, bound to another request: KeyRetired is reported first",
            _claims("v2 retired wrong request", binding=bound),
            key=RETIRED,
            request=OTHER_REQUEST,
            expect=_error("KeyRetired"),
        ),
    ]


def keyring_document() -> dict[str, Any]:
    text = RING.to_bytes().decode("ascii")
    line = text.splitlines()[-1]
    bad = [
        ("no active key", text.replace(" active ", " accepted ")),
        ("two active keys", text.replace(" accepted ", " active ")),
        ("duplicate key id", text + line.replace(RETIRED.key_id, ACTIVE.key_id) + "\n"),
        ("unknown format version", text.replace("tokensvc-keyring 1", "tokensvc-keyring 2")),
        ("upper-case hex in a secret", text.replace(line[-64:], line[-64:].upper())),
        ("secret one byte short", text.replace(line[-64:], line[-62:])),
        ("two spaces between fields", text.replace(" retired ", "  retired ")),
        ("CRLF line endings", text.replace("\n", "\r\n")),
        ("no final newline", text[:-1]),
        ("not-after before not-before", text.replace(line, line + " not-before=9 not-after=8")),
        (
            "not-after before not-before (reversed)",
            text.replace(line, line + " not-after=9 not-before=8"),
        ),
        ("window field repeated", text.replace(line, line + " not-after=9 not-after=9")),
        ("unknown field after the secret", text.replace(line, line + " expires=9")),
        ("window time with a leading zero", text.replace(line, line + " not-after=09")),
    ]
    windowed = RING_V2
    return {
        "format": "tokensvc-keyring 1",
        "generated_by": "scripts/make_vectors.py (do not edit by hand)",
        "description": "Key ring file text and the keys it holds; then texts that must be refused.",
        "text": text,
        "keys": [
            {"key_id": k.key_id, "state": k.state, "created": k.created, "secret": k.secret.hex()}
            for k in RING.keys
        ],
        "windowed": {
            "description": "The same ring plus a key with a validity window (not-before, "
            "not-after): a key without a window is written exactly as before.",
            "text": windowed.to_bytes().decode("ascii"),
            "keys": [
                {
                    "key_id": k.key_id,
                    "state": k.state,
                    "created": k.created,
                    "not_before": k.not_before,
                    "not_after": k.not_after,
                    "secret": k.secret.hex(),
                }
                for k in windowed.keys
            ],
        },
        "invalid": [{"description": d, "text": t} for d, t in bad],
    }


def build() -> dict[str, dict[str, Any]]:
    """File name -> document, exactly as written to tests/vectors/."""
    return {
        "token_v1_valid.json": {
            **_common(),
            "description": "Genuine tokens that open and validate to the given claims.",
            "cases": valid_cases(),
        },
        "token_v1_invalid.json": {
            **_common(),
            "description": "Tokens that must be rejected, each with the exact error and exit code.",
            "cases": invalid_cases(),
        },
        "token_v2_valid.json": {
            **_common(VERSION),
            "description": "Genuine version 2 tokens that open, validate and pass the binding "
            "check (when a request is given) to the given claims.",
            "cases": valid_cases_v2(),
        },
        "token_v2_invalid.json": {
            **_common(VERSION),
            "description": "Version 2 cases that must be rejected, each with the exact error "
            "and exit code.",
            "cases": invalid_cases_v2(),
        },
        "keyring_v1.json": keyring_document(),
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, document in build().items():
        path = VECTOR_DIR / name
        text = render(document)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run scripts/make_vectors.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
