"""Token validation for the cluster side: authenticate, then judge, then remember.

Order (docs/token-format.md, section 6): ``InvalidToken`` (anything before or
during authentication) → ``KeyRetired`` → ``KeyExpired`` (key outside its
window plus the grace) → ``WrongRealm`` → ``Expired`` (lifetime above the
maximum, or past expiry) → ``NotYetValid`` → ``WrongRequest`` (only when the
caller names the request it is serving) → ``Replayed``. The replay check
runs last so only tokens that are otherwise acceptable use up their id.
"""

from __future__ import annotations

import hmac

from tokensvc.core.claims import MAX_SKEW, MAX_TTL, Claims, is_binding
from tokensvc.core.errors import (
    Expired,
    KeyExpired,
    KeyRetired,
    NotYetValid,
    WrongRealm,
    WrongRequest,
)
from tokensvc.core.keys import Key, KeyRing
from tokensvc.core.replay import ReplayCache
from tokensvc.core.token import open_token


def check_key_window(claims: Claims, key: Key, *, now: float, grace: float) -> None:
    """KeyExpired unless ``key`` is inside its window at ``now`` and was at ``issued_at``.

    Both ends are widened by ``grace`` seconds (clock difference between the
    minting node and this one). A key without a window always passes.
    """
    if not key.in_window(now, grace):
        if key.not_after is not None and now >= key.not_after + grace:
            raise KeyExpired(f"token sealed with key {key.key_id}, which expired")
        raise KeyExpired(f"token sealed with key {key.key_id}, which is not valid yet")
    if not key.in_window(claims.issued_at, grace):
        raise KeyExpired(f"token was issued outside the window of key {key.key_id}")


def check_claims(
    claims: Claims,
    key: Key,
    *,
    realm: str,
    now: float,
    max_ttl: int = MAX_TTL,
    skew: int = MAX_SKEW,
    key_grace: float | None = None,
) -> None:
    """Post-authentication checks, without replay (also used by `tokensvc decode`).

    A token is valid for ``issued_at - skew <= now < expires_at + skew``, and
    only if its lifetime is at most ``max_ttl`` and its key is inside its
    window widened by ``key_grace`` (default: ``skew``).
    """
    # Messages name no claim value (they reach logs, which carry no decrypted claims
    # beyond uid/gid/groups); the key id is public, it is in the header.
    if key.state == "retired":
        raise KeyRetired(f"token sealed with retired key {key.key_id}")
    check_key_window(claims, key, now=now, grace=skew if key_grace is None else key_grace)
    if not hmac.compare_digest(claims.realm.encode(), realm.encode()):
        raise WrongRealm("token was minted for another realm")
    if claims.ttl > max_ttl:
        raise Expired(f"token lifetime exceeds the maximum of {max_ttl} s")
    if now >= claims.expires_at + skew:
        raise Expired("token has expired")
    if now < claims.issued_at - skew:
        raise NotYetValid("token is not valid yet (issued in the future)")


def check_binding(claims: Claims, expected_digest: str, *, unbound_allowed: bool) -> None:
    """WrongRequest unless the token may be used for the request whose digest is given.

    ``expected_digest`` is what the server computed from the request it is
    serving (``core.digest.request_digest`` of the submit's
    ``JobRequest.to_input()``, or ``core.digest.action_digest`` for an
    action on a job). A bound token passes only for that digest; an unbound
    token (every v1 token, or a v2 token minted without a binding) passes
    only if ``unbound_allowed``. Call it after authentication (after
    ``check_claims``), before the token's use is recorded.
    """
    if not is_binding(expected_digest):
        raise ValueError("expected_digest must be 64 lowercase hex digits")
    if claims.binding is None:
        if not unbound_allowed:
            raise WrongRequest("token is not bound to a request; a bound token is required")
        return
    if not hmac.compare_digest(claims.binding.encode(), expected_digest.encode()):
        raise WrongRequest("token is bound to another request")


class TokenValidator:
    """Everything the server needs to turn a token into trusted claims."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        realm: str,
        replay: ReplayCache,
        max_ttl: int = MAX_TTL,
        skew: int = MAX_SKEW,
        key_grace: float | None = None,
    ) -> None:
        if max_ttl < 1 or skew < 0 or (key_grace is not None and key_grace < 0):
            raise ValueError("max_ttl must be positive, skew and key_grace non-negative")
        self.ring = ring  # replaceable (key ring reload)
        self.realm = realm
        self.replay = replay
        self.max_ttl = max_ttl
        self.skew = skew
        self.key_grace = skew if key_grace is None else key_grace

    def validate(
        self,
        token: str,
        *,
        now: float,
        request_digest: str | None = None,
        unbound_allowed: bool = False,
    ) -> Claims:
        """Claims of a genuine, current, unused token for this realm; else a TokenServiceError.

        With ``request_digest`` the token must also pass ``check_binding`` for
        it (before its id is remembered, so a token shown with the wrong body
        is not used up); without it, binding is not judged here.
        """
        claims, key = open_token(token, self.ring)
        check_claims(
            claims,
            key,
            realm=self.realm,
            now=now,
            max_ttl=self.max_ttl,
            skew=self.skew,
            key_grace=self.key_grace,
        )
        if request_digest is not None:
            check_binding(claims, request_digest, unbound_allowed=unbound_allowed)
        # Remember until the last instant check_claims would accept it.
        self.replay.remember(claims.token_id, claims.expires_at + self.skew, now)
        return claims


__all__ = ["TokenValidator", "check_binding", "check_claims", "check_key_window"]
