"""Token validation for the cluster side: authenticate, then judge, then remember.

Order (docs/token-format.md, section 6): ``InvalidToken`` (anything before or
during authentication) → ``KeyRetired`` → ``WrongRealm`` → ``Expired``
(lifetime above the maximum, or past expiry) → ``NotYetValid`` → ``Replayed``.
The replay check runs last so only tokens that are otherwise acceptable use
up their id.
"""

from __future__ import annotations

import hmac

from tokensvc.core.claims import MAX_SKEW, MAX_TTL, Claims
from tokensvc.core.errors import Expired, KeyRetired, NotYetValid, WrongRealm
from tokensvc.core.keys import Key, KeyRing
from tokensvc.core.replay import ReplayCache
from tokensvc.core.token import open_token


def check_claims(
    claims: Claims,
    key: Key,
    *,
    realm: str,
    now: float,
    max_ttl: int = MAX_TTL,
    skew: int = MAX_SKEW,
) -> None:
    """Post-authentication checks, without replay (also used by `tokensvc decode`).

    A token is valid for ``issued_at - skew <= now < expires_at + skew``, and
    only if its lifetime is at most ``max_ttl``.
    """
    # Messages name no claim value (they reach logs, which carry no decrypted claims
    # beyond uid/gid/groups); the key id is public, it is in the header.
    if key.state == "retired":
        raise KeyRetired(f"token sealed with retired key {key.key_id}")
    if not hmac.compare_digest(claims.realm.encode(), realm.encode()):
        raise WrongRealm("token was minted for another realm")
    if claims.ttl > max_ttl:
        raise Expired(f"token lifetime exceeds the maximum of {max_ttl} s")
    if now >= claims.expires_at + skew:
        raise Expired("token has expired")
    if now < claims.issued_at - skew:
        raise NotYetValid("token is not valid yet (issued in the future)")


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
    ) -> None:
        if max_ttl < 1 or skew < 0:
            raise ValueError("max_ttl must be positive and skew non-negative")
        self.ring = ring  # replaceable (key ring reload)
        self.realm = realm
        self.replay = replay
        self.max_ttl = max_ttl
        self.skew = skew

    def validate(self, token: str, *, now: float) -> Claims:
        """Claims of a genuine, current, unused token for this realm; else a TokenServiceError."""
        claims, key = open_token(token, self.ring)
        check_claims(claims, key, realm=self.realm, now=now, max_ttl=self.max_ttl, skew=self.skew)
        # Remember until the last instant check_claims would accept it.
        self.replay.remember(claims.token_id, claims.expires_at + self.skew, now)
        return claims


__all__ = ["TokenValidator", "check_claims"]
