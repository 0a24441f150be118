"""Bulkhead with tasks on asyncio and trio: cancellation while queued never leaks a slot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import pytest

from resilio._bulkhead import Bulkhead, BulkheadFullError

pytestmark = pytest.mark.anyio


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll the bulkhead's own counters: the state under test, with no event to await."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.001)


async def test_admits_at_most_max_concurrent_tasks() -> None:
    bulkhead = Bulkhead(max_concurrent=2, max_queue=10)
    running = 0
    peak = 0
    release = anyio.Event()

    @bulkhead
    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(work)
        await wait_until(lambda: bulkhead.in_use == 2 and bulkhead.queued == 4)
        release.set()
    assert peak == 2
    assert (bulkhead.in_use, bulkhead.queued) == (0, 0)


async def test_full_queue_rejects_at_once() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=1)
    release = anyio.Event()

    @bulkhead
    async def work() -> str:
        await release.wait()
        return "done"

    async with anyio.create_task_group() as group:
        group.start_soon(work)
        group.start_soon(work)
        await wait_until(lambda: bulkhead.queued == 1)
        with pytest.raises(BulkheadFullError):
            await work()
        release.set()
    assert bulkhead.in_use == 0


async def test_queue_is_first_in_first_out() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=5)
    release = anyio.Event()
    order: list[int] = []

    @bulkhead
    async def work(tag: int) -> None:
        order.append(tag)
        if tag == 0:
            await release.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(work, 0)
        await wait_until(lambda: bulkhead.in_use == 1)
        for tag in range(1, 6):
            group.start_soon(work, tag)
            await wait_until(lambda tag=tag: bulkhead.queued == tag)
        release.set()
    assert order == [0, 1, 2, 3, 4, 5]


async def test_cancelled_waiter_leaves_the_queue() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=3)
    release = anyio.Event()
    ran: list[str] = []

    @bulkhead
    async def work(tag: str) -> None:
        ran.append(tag)
        if tag == "holder":
            await release.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(work, "holder")
        await wait_until(lambda: bulkhead.in_use == 1)
        group.start_soon(work, "before")
        await wait_until(lambda: bulkhead.queued == 1)
        doomed = anyio.CancelScope()

        async def cancellable() -> None:
            with doomed:
                await work("cancelled")

        group.start_soon(cancellable)
        await wait_until(lambda: bulkhead.queued == 2)
        group.start_soon(work, "after")
        await wait_until(lambda: bulkhead.queued == 3)
        doomed.cancel()
        await wait_until(lambda: bulkhead.queued == 2)
        release.set()
    assert ran == ["holder", "before", "after"]
    assert (bulkhead.in_use, bulkhead.queued) == (0, 0)


async def test_timed_out_waiters_never_leak_slots() -> None:
    """Failsafe #393 with max_wait: capacity 8, 8 waiters time out, then 8 newcomers get in."""
    bulkhead = Bulkhead(max_concurrent=8, max_queue=8, max_wait=0.02)
    release = anyio.Event()
    rejected = 0

    @bulkhead
    async def hold() -> None:
        await release.wait()

    async def wait_in_line() -> None:
        nonlocal rejected
        try:
            await hold()
        except BulkheadFullError:
            rejected += 1

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(hold)
        await wait_until(lambda: bulkhead.in_use == 8)
        async with anyio.create_task_group() as waiters:
            for _ in range(8):
                waiters.start_soon(wait_in_line)
        assert rejected == 8
        assert bulkhead.queued == 0
        release.set()
    assert bulkhead.in_use == 0
    await _eight_get_in_together(bulkhead)


async def test_waiters_timed_out_from_outside_never_leak_slots() -> None:
    """Failsafe #393 the asyncio way: the caller's own timeout cancels it while queued."""
    bulkhead = Bulkhead(max_concurrent=8, max_queue=8)
    release = anyio.Event()

    @bulkhead
    async def hold() -> None:
        await release.wait()

    async def give_up_soon() -> None:
        with anyio.move_on_after(0.02):
            await hold()

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(hold)
        await wait_until(lambda: bulkhead.in_use == 8)
        async with anyio.create_task_group() as waiters:
            for _ in range(8):
                waiters.start_soon(give_up_soon)
        assert bulkhead.queued == 0
        release.set()
    assert bulkhead.in_use == 0
    await _eight_get_in_together(bulkhead)


async def _eight_get_in_together(bulkhead: Bulkhead) -> None:
    inside = 0
    all_in = anyio.Event()

    @bulkhead
    async def together() -> None:
        nonlocal inside
        inside += 1
        if inside == 8:
            all_in.set()
        await all_in.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(together)
    assert inside == 8
    assert bulkhead.in_use == 0


async def test_slot_granted_to_a_cancelled_waiter_is_passed_on() -> None:
    """The holder hands its slot to a waiter that is being cancelled at that moment."""
    bulkhead = Bulkhead(max_concurrent=1, max_queue=2)
    doomed = anyio.CancelScope()
    ran: list[str] = []

    @bulkhead
    async def work(tag: str) -> None:
        ran.append(tag)
        if tag == "holder":
            await wait_until(lambda: bulkhead.queued == 2)
            doomed.cancel()  # the waiter is cancelled, then handed the slot as we leave

    async def cancellable() -> None:
        with doomed:
            await work("doomed")

    with anyio.fail_after(5):  # a leaked slot would leave "next" waiting forever
        async with anyio.create_task_group() as group:
            group.start_soon(work, "holder")
            await wait_until(lambda: bulkhead.in_use == 1)
            group.start_soon(cancellable)
            await wait_until(lambda: bulkhead.queued == 1)
            group.start_soon(work, "next")
    assert ran == ["holder", "next"]
    assert (bulkhead.in_use, bulkhead.queued) == (0, 0)


async def test_cancelled_while_running_gives_the_slot_back() -> None:
    bulkhead = Bulkhead(max_concurrent=1)

    @bulkhead
    async def forever() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01):
        await forever()
    assert bulkhead.in_use == 0


async def test_exceptions_give_the_slot_back() -> None:
    bulkhead = Bulkhead(max_concurrent=1)

    @bulkhead
    async def fail() -> None:
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        await fail()
    assert bulkhead.in_use == 0


async def test_threads_and_tasks_share_one_bulkhead() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=1)
    inside = threading.Event()
    leave = threading.Event()

    @bulkhead
    def in_thread() -> None:
        inside.set()
        leave.wait(10)

    @bulkhead
    async def in_task() -> str:
        return "task ran"

    thread = threading.Thread(target=in_thread)
    thread.start()
    try:
        inside.wait(10)
        async with anyio.create_task_group() as group:
            results: list[str] = []

            async def queued() -> None:
                results.append(await in_task())

            group.start_soon(queued)
            await wait_until(lambda: bulkhead.queued == 1)
            started = time.monotonic()
            leave.set()  # the thread's release wakes the task through its event loop
        assert results == ["task ran"]
        assert time.monotonic() - started < 5
    finally:
        leave.set()
        thread.join(10)
    assert bulkhead.in_use == 0
