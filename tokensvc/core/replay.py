"""Replay cache: remembers each accepted token id until the token can no longer be valid.

``ReplayCache`` is the interface a shared store (Redis, a database, the
Kubernetes API) implements so that replicas agree; ``MemoryReplayCache`` is
the bounded in-process store. Both fail closed: when a cache cannot vouch
that a token id is new (full, clock went backwards, store unreachable) it
raises ``Replayed`` instead of letting the token through.
"""

from __future__ import annotations

import heapq
import threading
from typing import Protocol

from tokensvc.core.errors import Replayed


class ReplayCache(Protocol):
    """Where token ids are remembered."""

    def remember(self, token_id: str, expires_at: int, now: float) -> None:
        """Record ``token_id`` until ``expires_at`` (unix seconds).

        Raises ``Replayed`` if it was already recorded and has not been
        forgotten, or if the cache cannot vouch for it. Must be atomic: of two
        concurrent calls with one id, exactly one returns.
        """
        ...


class MemoryReplayCache:
    """Bounded, thread-safe, in-process replay cache.

    Entries sit in a dict (lookup) and a min-heap ordered by expiry (each call
    evicts what has expired in O(log n) per entry). A full cache refuses new
    ids rather than forgetting live ones. Size it for the peak number of
    tokens accepted within one maximum TTL (plus skew).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._horizon = float("-inf")  # latest `now` seen: eviction never runs backwards
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _evict(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, token_id = heapq.heappop(heap)
            del self._expiry[token_id]

    def remember(self, token_id: str, expires_at: int, now: float) -> None:
        with self._lock:
            self._horizon = max(self._horizon, now)
            self._evict(self._horizon)
            if token_id in self._expiry:
                raise Replayed("token already used")
            if expires_at <= self._horizon:
                # Only after the clock stepped back: an entry for this id may
                # already have been evicted, so the cache cannot vouch for it.
                raise Replayed("token expired by the replay cache's clock; cannot vouch for it")
            if len(self._expiry) >= self.max_entries:
                raise Replayed(
                    f"replay cache full ({self.max_entries} live tokens); refusing rather than "
                    "forgetting a live token"
                )
            self._expiry[token_id] = expires_at
            heapq.heappush(self._heap, (expires_at, token_id))


__all__ = ["MemoryReplayCache", "ReplayCache"]
