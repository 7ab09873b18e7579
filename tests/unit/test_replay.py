"""Replay cache: one use per token id, bounded, and never lets a replay through."""

from __future__ import annotations

import threading

import pytest

from tokensvc.core.errors import Replayed
from tokensvc.core.replay import MemoryReplayCache, ReplayCache

T0 = 1_767_225_600


def test_memory_cache_satisfies_the_protocol() -> None:
    cache: ReplayCache = MemoryReplayCache()
    cache.remember("a" * 32, T0 + 10, T0)


def test_second_use_is_replayed() -> None:
    cache = MemoryReplayCache()
    cache.remember("a", T0 + 300, T0)
    with pytest.raises(Replayed, match="already used") as info:
        cache.remember("a", T0 + 300, T0 + 1)
    assert info.value.exit_code == 14
    cache.remember("b", T0 + 300, T0 + 1)
    assert len(cache) == 2


def test_entries_live_until_their_expiry() -> None:
    cache = MemoryReplayCache()
    cache.remember("a", T0 + 300, T0)
    with pytest.raises(Replayed):
        cache.remember("a", T0 + 300, T0 + 299.999)
    cache.remember("b", T0 + 1000, T0 + 300)  # evicts "a"
    assert len(cache) == 1


def test_eviction_is_by_expiry_not_insertion_order() -> None:
    cache = MemoryReplayCache()
    cache.remember("late", T0 + 900, T0)
    cache.remember("early", T0 + 100, T0)
    cache.remember("mid", T0 + 500, T0)
    cache.remember("x", T0 + 1000, T0 + 600)
    assert len(cache) == 2  # early and mid gone
    with pytest.raises(Replayed):
        cache.remember("late", T0 + 900, T0 + 600)


def test_full_cache_refuses_instead_of_forgetting() -> None:
    cache = MemoryReplayCache(max_entries=3)
    for i in range(3):
        cache.remember(f"t{i}", T0 + 300, T0)
    with pytest.raises(Replayed, match="full"):
        cache.remember("new", T0 + 300, T0 + 1)
    for i in range(3):  # the live ones are still remembered
        with pytest.raises(Replayed, match="already used"):
            cache.remember(f"t{i}", T0 + 300, T0 + 1)
    cache.remember("new", T0 + 600, T0 + 300)  # room again once they expire
    assert len(cache) == 1


def test_clock_stepping_back_cannot_resurrect_a_token() -> None:
    cache = MemoryReplayCache()
    cache.remember("a", T0 + 300, T0)
    cache.remember("b", T0 + 2000, T0 + 1000)  # "a" evicted at T0 + 1000
    with pytest.raises(Replayed, match="cannot vouch"):
        cache.remember("a", T0 + 300, T0 + 10)  # the clock went back


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryReplayCache(max_entries=0)


def test_concurrent_use_of_one_id_succeeds_once() -> None:
    cache = MemoryReplayCache()
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def use() -> None:
        barrier.wait()
        try:
            cache.remember("same", T0 + 300, T0)
        except Replayed:
            results.append(False)
        else:
            results.append(True)

    threads = [threading.Thread(target=use) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


def test_concurrent_fill_respects_the_bound() -> None:
    cache = MemoryReplayCache(max_entries=100)
    refused = []

    def fill(n: int) -> None:
        for i in range(50):
            try:
                cache.remember(f"{n}-{i}", T0 + 300, T0)
            except Replayed:
                refused.append(1)

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 100
    assert len(refused) == 8 * 50 - 100
