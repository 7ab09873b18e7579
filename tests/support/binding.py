"""Tokens as tests forge them: sealed with a ring's key, bound to a submit body or not."""

from __future__ import annotations

import time
from typing import Any

from tokensvc.cluster.devstack import User
from tokensvc.cluster.jobs import parse_job_request
from tokensvc.core.claims import new_claims
from tokensvc.core.digest import request_digest
from tokensvc.core.keys import KeyRing
from tokensvc.core.token import seal


def submit_binding(body: Any) -> str | None:
    """The binding of a token for submitting ``body`` (None if the body is not a job request)."""
    try:
        return request_digest(parse_job_request(body).to_input())
    except ValueError:
        return None  # a test of a malformed body: its token is refused before binding matters


def forge_token(
    ring: KeyRing,
    user: User,
    *,
    realm: str,
    host: str = "test",
    issued_ago: int = 0,
    ttl: int = 300,
    body: Any = None,
    binding: str | None = None,
) -> str:
    """A token for ``user`` sealed with ``ring``'s active key, as a mint daemon would seal it.

    With ``body``, the token is bound to submitting that job request; with
    ``binding``, to that digest (``core.digest.action_digest`` for the other
    actions); ``host`` is the user node it claims to come from;
    ``issued_ago`` moves its issue time into the past.
    """
    claims = new_claims(
        uid=user.uid,
        gid=user.gid,
        groups=user.groups,
        user=user.name,
        host=host,
        realm=realm,
        ttl=ttl,
        now=time.time() - issued_ago,
        binding=binding if body is None else submit_binding(body),
    )
    return seal(claims, ring.active)
