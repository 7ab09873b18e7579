"""TokenValidator: each rejection its own error and exit code, in the documented order."""

from __future__ import annotations

from typing import Any

import pytest
import sample_claims
from sample_claims import T0

from tokensvc.core.claims import MAX_SKEW, MAX_TTL, Claims
from tokensvc.core.digest import action_digest, request_digest
from tokensvc.core.errors import (
    Expired,
    InvalidToken,
    KeyExpired,
    KeyRetired,
    NotYetValid,
    Replayed,
    TokenRejected,
    TokenServiceError,
    WrongRealm,
    WrongRequest,
)
from tokensvc.core.keys import Key, KeyRing, new_key
from tokensvc.core.replay import MemoryReplayCache
from tokensvc.core.token import VERSION_V1, _seal_with_nonce, seal
from tokensvc.core.validate import TokenValidator, check_binding, check_claims

REALM = "wsc"


def make_claims(n: int = 0, **overrides: Any) -> Claims:
    """The sample identity in this realm, with token id ``n``."""
    return sample_claims.make_claims(
        **{"realm": REALM, "groups": (100,), "token_id": f"{n:032x}", **overrides}
    )


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing((new_key("active"), new_key("accepted"), new_key("retired")))


@pytest.fixture
def cache() -> MemoryReplayCache:
    return MemoryReplayCache()


@pytest.fixture
def validator(ring: KeyRing, cache: MemoryReplayCache) -> TokenValidator:
    return TokenValidator(ring, realm=REALM, replay=cache)


def sealed(ring: KeyRing, claims: Claims, key_index: int = 0) -> str:
    return _seal_with_nonce(claims, ring.keys[key_index], bytes(12), max_ttl=10**9)


def expect(
    error: type[TokenServiceError], code: int, validator: TokenValidator, token: str, now: float
) -> None:
    with pytest.raises(TokenServiceError) as info:
        validator.validate(token, now=now)
    assert type(info.value) is error
    assert info.value.exit_code == code


def test_valid_token(validator: TokenValidator, ring: KeyRing) -> None:
    claims = make_claims()
    assert validator.validate(seal(claims, ring.active), now=T0 + 1) == claims


def test_accepted_key_validates(validator: TokenValidator, ring: KeyRing) -> None:
    assert validator.validate(sealed(ring, make_claims(), 1), now=T0) == make_claims()


def test_invalid(validator: TokenValidator) -> None:
    expect(InvalidToken, 10, validator, "not-a-token", T0)


def test_unknown_key_id(validator: TokenValidator) -> None:
    token = seal(make_claims(), new_key("active"))
    expect(InvalidToken, 10, validator, token, T0)


def test_retired_key(validator: TokenValidator, ring: KeyRing) -> None:
    expect(KeyRetired, 15, validator, sealed(ring, make_claims(), 2), T0)


def test_wrong_realm(validator: TokenValidator, ring: KeyRing) -> None:
    expect(WrongRealm, 13, validator, sealed(ring, make_claims(realm="other")), T0)


def test_realm_comparison_is_exact(ring: KeyRing, cache: MemoryReplayCache) -> None:
    token = sealed(ring, make_claims())
    for realm in ("WSC", "wsc ", "ws", "wscc"):
        expect(WrongRealm, 13, TokenValidator(ring, realm=realm, replay=cache), token, T0)


def test_expired_at_expiry_plus_skew(validator: TokenValidator, ring: KeyRing) -> None:
    token = sealed(ring, make_claims())
    expect(Expired, 11, validator, token, T0 + 300 + MAX_SKEW)
    assert validator.validate(token, now=T0 + 300 + MAX_SKEW - 0.001)


def test_not_yet_valid_before_issue_minus_skew(validator: TokenValidator, ring: KeyRing) -> None:
    token = sealed(ring, make_claims())
    expect(NotYetValid, 12, validator, token, T0 - MAX_SKEW - 0.001)
    assert validator.validate(token, now=T0 - MAX_SKEW)


def test_lifetime_above_max_ttl_is_expired(validator: TokenValidator, ring: KeyRing) -> None:
    token = sealed(ring, make_claims(expires_at=T0 + MAX_TTL + 1))
    expect(Expired, 11, validator, token, T0)
    assert validator.validate(sealed(ring, make_claims(1, expires_at=T0 + MAX_TTL)), now=T0)


def test_replayed(validator: TokenValidator, ring: KeyRing) -> None:
    token = seal(make_claims(), ring.active)
    validator.validate(token, now=T0)
    expect(Replayed, 14, validator, token, T0 + 1)


def test_replay_shares_token_id_not_token_text(validator: TokenValidator, ring: KeyRing) -> None:
    # Two seals of the same claims differ (fresh nonce) but are one token id.
    validator.validate(seal(make_claims(), ring.active), now=T0)
    expect(Replayed, 14, validator, seal(make_claims(), ring.active), T0)


def test_errors_are_distinct_types() -> None:
    kinds: set[type[TokenServiceError]] = {
        InvalidToken,
        KeyRetired,
        WrongRealm,
        Expired,
        NotYetValid,
        Replayed,
        WrongRequest,
        KeyExpired,
    }
    codes = {k.exit_code for k in kinds}
    assert len(codes) == len(kinds)
    assert not issubclass(InvalidToken, TokenRejected)
    assert all(issubclass(k, TokenRejected) for k in kinds - {InvalidToken})


ORDER_CASES: list[tuple[dict[str, Any], int, float, type[TokenServiceError]]] = [
    ({"realm": "other"}, 2, T0 + 10_000, KeyRetired),
    ({"realm": "other"}, 0, T0 + 10_000, WrongRealm),
    ({"realm": "other"}, 0, T0 - 10_000, WrongRealm),
    ({"expires_at": T0 + 10_000}, 0, T0 - 10_000, Expired),
    ({}, 0, T0 + 10_000, Expired),
]


@pytest.mark.parametrize("case", ORDER_CASES)
def test_order_of_checks(
    validator: TokenValidator,
    ring: KeyRing,
    case: tuple[dict[str, Any], int, float, type[TokenServiceError]],
) -> None:
    overrides, key_index, now, error = case
    token = sealed(ring, make_claims(**overrides), key_index)
    with pytest.raises(error):
        validator.validate(token, now=now)


def test_only_acceptable_tokens_are_remembered(
    validator: TokenValidator, ring: KeyRing, cache: MemoryReplayCache
) -> None:
    claims = make_claims()
    for token, now in [
        (sealed(ring, claims, 2), T0),  # retired
        (sealed(ring, make_claims(realm="other")), T0),
        (sealed(ring, claims), T0 + 10_000),  # expired
        (sealed(ring, claims), T0 - 10_000),  # not yet valid
    ]:
        with pytest.raises(TokenRejected):
            validator.validate(token, now=now)
    assert len(cache) == 0
    assert validator.validate(sealed(ring, claims), now=T0) == claims  # id not used up
    assert len(cache) == 1


def test_replay_entry_lives_until_the_token_cannot_validate(
    validator: TokenValidator, ring: KeyRing
) -> None:
    token = sealed(ring, make_claims())
    validator.validate(token, now=T0)
    # Right up to the last accepted instant, a second use is a replay...
    expect(Replayed, 14, validator, token, T0 + 300 + MAX_SKEW - 0.001)
    # ...and after it, the token is expired anyway.
    expect(Expired, 11, validator, token, T0 + 300 + MAX_SKEW)


def test_full_cache_refuses_valid_tokens(ring: KeyRing) -> None:
    validator = TokenValidator(ring, realm=REALM, replay=MemoryReplayCache(max_entries=1))
    validator.validate(sealed(ring, make_claims(1)), now=T0)
    expect(Replayed, 14, validator, sealed(ring, make_claims(2)), T0)


def test_configured_max_ttl_and_skew(ring: KeyRing, cache: MemoryReplayCache) -> None:
    validator = TokenValidator(ring, realm=REALM, replay=cache, max_ttl=100, skew=0)
    expect(Expired, 11, validator, sealed(ring, make_claims()), T0)  # 300 s > 100 s
    short = sealed(ring, make_claims(1, expires_at=T0 + 100))
    expect(Expired, 11, validator, short, T0 + 100)
    expect(NotYetValid, 12, validator, short, T0 - 0.5)
    assert validator.validate(short, now=T0)


def test_bad_configuration_refused(ring: KeyRing, cache: MemoryReplayCache) -> None:
    with pytest.raises(ValueError):
        TokenValidator(ring, realm=REALM, replay=cache, max_ttl=0)
    with pytest.raises(ValueError):
        TokenValidator(ring, realm=REALM, replay=cache, skew=-1)


def test_check_claims_without_replay(ring: KeyRing) -> None:
    claims = make_claims()
    check_claims(claims, ring.active, realm=REALM, now=T0)
    check_claims(claims, ring.active, realm=REALM, now=T0)  # no state
    with pytest.raises(KeyRetired):
        check_claims(claims, ring.keys[2], realm=REALM, now=T0)


def test_ring_can_be_replaced(validator: TokenValidator, ring: KeyRing) -> None:
    old, new = ring.keys[0].key_id, ring.keys[1].key_id
    old_token = sealed(ring, make_claims(1), 0)
    assert validator.validate(old_token, now=T0)
    validator.ring = ring.with_active(new).with_retired(old)  # rotate, then retire
    expect(KeyRetired, 15, validator, sealed(ring, make_claims(2), 0), T0)
    assert validator.validate(sealed(ring, make_claims(3), 1), now=T0).token_id == f"{3:032x}"


# --- request binding ------------------------------------------------------------------

REQUEST_A = {"project": "proj", "image": "img", "command": ["a"], "mounts": [], "resources": {}}
REQUEST_B = {**REQUEST_A, "command": ["b"]}
DIGEST_A = request_digest(REQUEST_A)
DIGEST_B = request_digest(REQUEST_B)


def test_a_token_bound_to_one_request_fails_for_another(ring: KeyRing) -> None:
    claims = make_claims(binding=DIGEST_A)
    check_binding(claims, DIGEST_A, unbound_allowed=False)
    for allowed in (False, True):
        with pytest.raises(WrongRequest, match="another request") as info:
            check_binding(claims, DIGEST_B, unbound_allowed=allowed)
        assert info.value.exit_code == 16
        assert info.value.http_status == 401
        assert DIGEST_A not in str(info.value) and DIGEST_B not in str(info.value)


def test_unbound_tokens_pass_only_where_allowed(ring: KeyRing) -> None:
    v1 = _seal_with_nonce(make_claims(), ring.active, bytes(12), version=VERSION_V1)
    v2 = seal(make_claims(1), ring.active)
    for token in (v1, v2):
        claims = TokenValidator(ring, realm=REALM, replay=MemoryReplayCache()).validate(
            token, now=T0
        )
        assert claims.binding is None
        check_binding(claims, DIGEST_A, unbound_allowed=True)
        with pytest.raises(WrongRequest, match="not bound"):
            check_binding(claims, DIGEST_A, unbound_allowed=False)


def test_check_binding_refuses_a_malformed_expected_digest() -> None:
    for bad in ("", DIGEST_A.upper(), DIGEST_A[:-1], None):
        with pytest.raises(ValueError):
            check_binding(make_claims(), bad, unbound_allowed=True)  # type: ignore[arg-type]


def test_validate_judges_the_binding_before_remembering(
    validator: TokenValidator, ring: KeyRing, cache: MemoryReplayCache
) -> None:
    token = seal(make_claims(binding=DIGEST_A), ring.active)
    with pytest.raises(WrongRequest):
        validator.validate(token, now=T0, request_digest=DIGEST_B)
    # Shown with the wrong body, the token was not used up; with its own it passes once.
    assert validator.validate(token, now=T0, request_digest=DIGEST_A).binding == DIGEST_A
    expect(Replayed, 14, validator, token, T0)
    unbound = seal(make_claims(2), ring.active)
    with pytest.raises(WrongRequest):
        validator.validate(unbound, now=T0, request_digest=DIGEST_A)
    assert validator.validate(unbound, now=T0, request_digest=DIGEST_A, unbound_allowed=True)


def test_action_digest_is_the_documented_document() -> None:
    job = "wsc-job-" + "0" * 32
    assert action_digest("cancel", job) == request_digest({"action": "cancel", "job": job})
    assert action_digest("set_priority", job, priority=5) == request_digest(
        {"action": "set_priority", "job": job, "priority": 5}
    )
    assert action_digest("cancel", job) != action_digest("get", job)
    with pytest.raises(ValueError):
        action_digest("cancel", job, job="other")


# --- key windows ----------------------------------------------------------------------


def windowed_ring(not_before: int | None, not_after: int | None) -> KeyRing:
    key = new_key("active")
    return KeyRing((Key(key.key_id, key.secret, "active", 0, not_before, not_after),))


@pytest.mark.parametrize(
    ("not_before", "not_after", "now", "ok"),
    [
        (T0 - 100, T0 + 1000, T0, True),
        (T0 - 100, T0 + 10, T0 + 10 + MAX_SKEW - 1, True),  # inside the grace
        (T0 - 100, T0 + 10, T0 + 10 + MAX_SKEW, False),  # past it
        (T0 + MAX_SKEW, None, T0, True),  # issued and opened within the grace
        (T0 + MAX_SKEW + 1, None, T0, False),  # not valid yet
        (None, None, T0, True),
    ],
)
def test_a_key_opens_only_inside_its_window_plus_grace(
    not_before: int | None, not_after: int | None, now: int, ok: bool
) -> None:
    ring = windowed_ring(not_before, not_after)
    validator = TokenValidator(ring, realm=REALM, replay=MemoryReplayCache())
    token = sealed(ring, make_claims())
    if ok:
        assert validator.validate(token, now=now) == make_claims()
    else:
        expect(KeyExpired, 17, validator, token, now)


def test_a_token_issued_before_the_key_was_valid_is_refused() -> None:
    ring = windowed_ring(T0 + 1000, None)
    token = sealed(ring, make_claims())  # issued at T0: long before not_before
    expect(
        KeyExpired,
        17,
        TokenValidator(ring, realm=REALM, replay=MemoryReplayCache()),
        token,
        T0 + 1000,
    )


def test_key_grace_is_configurable_and_checked_after_retired() -> None:
    ring = windowed_ring(None, T0 + 10)
    token = sealed(ring, make_claims())
    strict = TokenValidator(ring, realm=REALM, replay=MemoryReplayCache(), key_grace=0)
    expect(KeyExpired, 17, strict, token, T0 + 10)
    lenient = TokenValidator(ring, realm=REALM, replay=MemoryReplayCache(), key_grace=200)
    assert lenient.validate(token, now=T0 + 200)
    with pytest.raises(ValueError):
        TokenValidator(ring, realm=REALM, replay=MemoryReplayCache(), key_grace=-1)
    # Retired wins over the window; the window wins over realm and time.
    key = ring.active
    retired = Key("c3c3c3c3c3c3c3c3", key.secret, "retired", 0, None, T0 + 10)
    with pytest.raises(KeyRetired):
        check_claims(make_claims(), retired, realm=REALM, now=T0 + 10_000)
    with pytest.raises(KeyExpired):
        check_claims(make_claims(realm="other"), ring.active, realm=REALM, now=T0 + 10_000)
