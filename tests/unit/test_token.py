"""Token wire format: round trips, layout, and every way to break a token."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from sample_claims import T0, make_claims

from tokensvc.core.claims import MAX_GROUPS, MAX_TEXT_BYTES, MAX_TTL
from tokensvc.core.errors import InvalidToken
from tokensvc.core.keys import Key, KeyRing, new_key
from tokensvc.core.token import (
    CIPHERTEXT_OFFSET,
    HEADER_LEN,
    MAX_CLAIMS_LEN,
    MAX_TOKEN_LEN,
    MIN_CLAIMS_LEN,
    NONCE_LEN,
    TAG_LEN,
    VERSION,
    VERSION_V1,
    Sealer,
    _seal_with_nonce,
    decode_claims,
    encode_claims,
    open_token,
    seal,
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing((new_key("active"), new_key("accepted"), new_key("retired")))


@pytest.fixture
def token(ring: KeyRing) -> str:
    return seal(make_claims(), ring.active)


def assert_invalid(token: str, ring: KeyRing) -> None:
    with pytest.raises(InvalidToken) as info:
        open_token(token, ring)
    assert str(info.value) == "invalid token"
    assert info.value.exit_code == 10
    assert info.value.__cause__ is None


def test_round_trip(ring: KeyRing, token: str) -> None:
    claims, key = open_token(token, ring)
    assert claims == make_claims()
    assert key is ring.active


def test_token_is_url_safe_text_with_fixed_header(ring: KeyRing, token: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    raw = unb64(token)
    assert raw[0] == VERSION == 2
    assert raw[1:HEADER_LEN] == ring.active.key_id_bytes
    assert len(raw) == CIPHERTEXT_OFFSET + len(encode_claims(make_claims())) + TAG_LEN


def test_fresh_nonce_per_seal(ring: KeyRing) -> None:
    tokens = {seal(make_claims(), ring.active) for _ in range(20)}
    assert len(tokens) == 20
    nonces = {unb64(t)[HEADER_LEN : HEADER_LEN + NONCE_LEN] for t in tokens}
    assert len(nonces) == 20


def test_accepted_and_retired_keys_open(ring: KeyRing) -> None:
    for key in ring.keys[1:]:
        token = _seal_with_nonce(make_claims(), key, bytes(12))
        assert open_token(token, ring)[1] is key


def test_only_the_active_key_seals(ring: KeyRing) -> None:
    for key in ring.keys[1:]:
        with pytest.raises(ValueError, match="only the active key"):
            seal(make_claims(), key)


def test_seal_enforces_max_ttl(ring: KeyRing) -> None:
    long_lived = make_claims(expires_at=T0 + MAX_TTL + 1)
    with pytest.raises(ValueError, match="exceeds the maximum"):
        seal(long_lived, ring.active)
    with pytest.raises(ValueError, match="exceeds the maximum"):
        seal(make_claims(), ring.active, max_ttl=299)
    assert seal(make_claims(expires_at=T0 + MAX_TTL), ring.active)


def test_nonce_length_checked(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="nonce"):
        _seal_with_nonce(make_claims(), ring.active, bytes(11))


def test_every_single_bit_flip_of_the_bytes_is_rejected(ring: KeyRing, token: str) -> None:
    raw = unb64(token)
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            assert_invalid(b64(bytes(flipped)), ring)


def test_every_single_bit_flip_of_the_text_is_rejected(ring: KeyRing, token: str) -> None:
    for i, char in enumerate(token):
        for bit in range(8):
            flipped = token[:i] + chr(ord(char) ^ (1 << bit)) + token[i + 1 :]
            assert_invalid(flipped, ring)


def test_every_truncation_is_rejected(ring: KeyRing, token: str) -> None:
    raw = unb64(token)
    for n in range(len(token)):
        assert_invalid(token[:n], ring)
    for n in range(len(raw)):
        assert_invalid(b64(raw[:n]), ring)


@pytest.mark.parametrize("suffix", [b"\x00", b"\xff", b"\x00" * 16, b"x" * 1000])
def test_extension_is_rejected(ring: KeyRing, token: str, suffix: bytes) -> None:
    assert_invalid(b64(unb64(token) + suffix), ring)


@pytest.mark.parametrize("suffix", ["A", "AA", "AAA", "AAAA", "=", "==", "\n", " ", "."])
def test_text_extension_is_rejected(ring: KeyRing, token: str, suffix: str) -> None:
    assert_invalid(token + suffix, ring)


def test_key_id_swap_is_rejected(ring: KeyRing, token: str) -> None:
    raw = unb64(token)
    for key in ring.keys[1:]:
        assert_invalid(b64(raw[:1] + key.key_id_bytes + raw[HEADER_LEN:]), ring)


def test_unknown_key_id_is_rejected(ring: KeyRing) -> None:
    stranger = new_key("active")
    assert_invalid(seal(make_claims(), stranger), ring)


def test_same_key_id_other_secret_is_rejected(ring: KeyRing) -> None:
    impostor = Key(ring.active.key_id, bytes(32), "active")
    assert_invalid(seal(make_claims(), impostor), ring)


@pytest.mark.parametrize("version", [0, 3, 255])
def test_other_versions_are_rejected(ring: KeyRing, token: str, version: int) -> None:
    raw = unb64(token)
    assert_invalid(b64(bytes((version,)) + raw[1:]), ring)


@pytest.mark.parametrize(
    "text",
    ["", "A", "AAAA", "é" * 200, "\x00" * 200, "A" * (MAX_TOKEN_LEN + 1), "A" * 10_000_000],
)
def test_garbage_is_rejected(ring: KeyRing, text: str) -> None:
    assert_invalid(text, ring)


def test_non_string_is_a_caller_error(ring: KeyRing, token: str) -> None:
    with pytest.raises(TypeError):
        open_token(token.encode(), ring)  # type: ignore[arg-type]


def test_authentic_but_malformed_plaintext_is_invalid(ring: KeyRing) -> None:
    key = ring.active
    good = encode_claims(make_claims())
    header = bytes((VERSION,)) + key.key_id_bytes
    for plaintext in (b"", good[:-1], good + b"\x00", good[:-8] + good[-4:] + good[-8:-4]):
        nonce = bytes(12)
        sealed = AESGCMSIV(key.secret).encrypt(nonce, plaintext, header)
        assert_invalid(b64(header + nonce + sealed), ring)


V1_FIELDS = (
    "00112233445566778899aabbccddeeff"  # token id
    "000000006955b900"  # issued_at
    "000000006955ba2c"  # expires_at
    "000003e9"  # uid 1001
    "000003e9"  # gid 1001
)
V1_TAIL = (
    "05616c696365"  # user "alice"
    "03756e31"  # host "un1"
    "03777363"  # realm "wsc"
    "00000002"  # 2 groups
    "00000064000007d1"  # 100, 2001
)
BINDING = "5e" * 32


def test_claims_encoding_v1_is_fixed() -> None:
    data = encode_claims(make_claims(), VERSION_V1)
    assert data.hex() == V1_FIELDS + V1_TAIL
    assert decode_claims(data, VERSION_V1) == make_claims()


def test_claims_encoding_v2_is_fixed() -> None:
    unbound = encode_claims(make_claims())
    assert unbound.hex() == V1_FIELDS + "00" + V1_TAIL
    assert decode_claims(unbound) == make_claims()
    bound = encode_claims(make_claims(binding=BINDING))
    assert bound.hex() == V1_FIELDS + "20" + BINDING + V1_TAIL
    assert decode_claims(bound) == make_claims(binding=BINDING)


def test_v1_cannot_carry_a_binding(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="version 1"):
        encode_claims(make_claims(binding=BINDING), VERSION_V1)
    with pytest.raises(ValueError, match="version"):
        encode_claims(make_claims(), 3)
    with pytest.raises(ValueError, match="version"):
        Sealer(ring.active, version=0)


@pytest.mark.parametrize("size", [1, 16, 31, 33, 64, 255])
def test_v2_binding_is_absent_or_exactly_32_bytes(size: int) -> None:
    data = bytes.fromhex(V1_FIELDS) + bytes((size,)) + b"\x5e" * size + bytes.fromhex(V1_TAIL)
    with pytest.raises(ValueError):
        decode_claims(data)


@pytest.mark.parametrize("version", [VERSION_V1, VERSION])
def test_decode_claims_rejects_every_truncation_and_extension(version: int) -> None:
    data = encode_claims(make_claims(user="", host="h", realm="r", groups=()), version)
    assert len(data) == MIN_CLAIMS_LEN + (version == VERSION)
    for n in range(len(data)):
        with pytest.raises(ValueError):
            decode_claims(data[:n], version)
    with pytest.raises(ValueError):
        decode_claims(data + b"\x00", version)


def test_v1_tokens_still_open_unbound(ring: KeyRing) -> None:
    token = _seal_with_nonce(make_claims(), ring.active, bytes(12), version=VERSION_V1)
    assert unb64(token)[0] == 1
    claims, _ = open_token(token, ring)
    assert claims == make_claims()
    assert claims.binding is None


def test_a_binding_round_trips_and_is_authenticated(ring: KeyRing) -> None:
    token = seal(make_claims(binding=BINDING), ring.active)
    assert open_token(token, ring)[0].binding == BINDING
    raw = bytearray(unb64(token))
    raw[CIPHERTEXT_OFFSET + 41] ^= 1  # a bit of the binding
    assert_invalid(b64(bytes(raw)), ring)


def test_a_version_swap_fails_the_tag(ring: KeyRing, token: str) -> None:
    raw = unb64(token)
    assert_invalid(b64(bytes((VERSION_V1,)) + raw[1:]), ring)


def test_decode_claims_rejects_invalid_utf8() -> None:
    data = encode_claims(make_claims(user="ab"))
    with pytest.raises(ValueError):
        decode_claims(data.replace(b"\x02ab", b"\x02\xff\xfe"))


def test_largest_claims_fit_max_token_len(ring: KeyRing) -> None:
    big = make_claims(
        user="u" * MAX_TEXT_BYTES,
        host="h" * MAX_TEXT_BYTES,
        realm="r" * MAX_TEXT_BYTES,
        groups=tuple(range(MAX_GROUPS)),
        binding=BINDING,
    )
    assert len(encode_claims(big)) == MAX_CLAIMS_LEN
    token = seal(big, ring.active)
    assert len(token) == MAX_TOKEN_LEN
    assert open_token(token, ring)[0] == big
