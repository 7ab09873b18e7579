"""The token claims the launcher reads, for tests that build pods without a token."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Ident:
    """uid, token id, gid and groups: what ``build_pod`` takes from a token's claims."""

    uid: int
    token_id: str
    gid: int = 2001
    groups: tuple[int, ...] = (2001,)
