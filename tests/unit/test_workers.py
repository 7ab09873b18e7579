"""The service's worker pool: blocking calls off the event loop, bounded, outcomes delivered."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from tokensvc.cluster.service import WorkerPool

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def test_results_and_errors_reach_the_caller_and_the_loop_stays_free() -> None:
    pool = WorkerPool(2)
    loop_thread: list[threading.Thread] = []

    def blocking(x: int) -> tuple[int, str]:
        time.sleep(0.05)  # the kind of call the pool is for
        return x * 2, threading.current_thread().name

    def fails() -> None:
        raise OSError("disk gone")

    async def main() -> tuple[tuple[int, str], int]:
        loop_thread.append(threading.current_thread())
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.get_running_loop().create_task(tick())
        result = await pool.run(blocking, 21)
        with pytest.raises(OSError, match="disk gone"):
            await pool.run(fails)
        ticker.cancel()
        return result, ticks

    try:
        (value, thread_name), ticks = run(main())
    finally:
        pool.close()
    assert value == 42
    assert thread_name.startswith("tokensvc-")
    assert thread_name != loop_thread[0].name
    assert ticks >= 3  # the loop kept running while the call blocked


def test_never_more_threads_than_its_size() -> None:
    pool = WorkerPool(3)
    running = 0
    peak = 0
    lock = threading.Lock()

    def blocking() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(pool.run(blocking) for _ in range(20)))

    try:
        run(main())
    finally:
        pool.close()
    assert peak == 3  # all three used, never a fourth: the rest waited in the queue


def test_a_cancelled_caller_does_not_break_the_pool() -> None:
    pool = WorkerPool(1)
    release = threading.Event()

    async def main() -> int:
        slow = asyncio.ensure_future(pool.run(release.wait, 5))
        await asyncio.sleep(0.01)
        slow.cancel()  # the call runs on; its outcome is dropped
        release.set()
        return await pool.run(lambda: 7)

    try:
        assert run(main()) == 7
    finally:
        pool.close()


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one"):
        WorkerPool(0)
