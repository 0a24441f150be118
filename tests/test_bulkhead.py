"""Bulkhead with threads: limits, the FIFO queue, rejections and slots that never leak."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import resilio
from resilio import _bulkhead
from resilio._bulkhead import Bulkhead, BulkheadFullError
from resilio._core.adaptive import AIMD
from resilio.testing import capture_events


def hold_by_hand(bulkhead: Bulkhead) -> None:
    """Take a free slot without running anything."""
    assert bulkhead._enter(_bulkhead._ThreadSlot) is None


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


class Gate:
    """Calls through a bulkhead that block until released; tracks the peak concurrency."""

    def __init__(self, bulkhead: Bulkhead) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.entered: list[int] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

        @bulkhead
        def work(tag: int) -> int:
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
                self.entered.append(tag)
            try:
                self.release.wait(10)
            finally:
                with self.lock:
                    self.running -= 1
            return tag

        self.work = work

    def start(self, tag: int) -> threading.Thread:
        def run() -> None:
            try:
                self.work(tag)
            except BaseException as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)
        return thread

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


@pytest.fixture
def gate_factory() -> Iterator[Callable[[Bulkhead], Gate]]:
    gates: list[Gate] = []

    def make(bulkhead: Bulkhead) -> Gate:
        gate = Gate(bulkhead)
        gates.append(gate)
        return gate

    yield make
    for gate in gates:  # never leave threads blocked behind a failed assertion
        gate.release.set()
        gate.join()


def test_admits_at_most_max_concurrent(gate_factory: Callable[[Bulkhead], Gate]) -> None:
    bulkhead = Bulkhead(max_concurrent=3, max_queue=10)
    gate = gate_factory(bulkhead)
    for tag in range(8):
        gate.start(tag)
    wait_until(lambda: bulkhead.in_use == 3 and bulkhead.queued == 5)
    assert gate.running == 3
    gate.release.set()
    gate.join()
    assert gate.peak == 3
    assert sorted(gate.entered) == list(range(8))
    assert (bulkhead.in_use, bulkhead.queued) == (0, 0)


def test_full_queue_rejects_at_once_and_takes_nothing(
    gate_factory: Callable[[Bulkhead], Gate],
) -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=1, name="db")
    gate = gate_factory(bulkhead)
    gate.start(0)
    wait_until(lambda: bulkhead.in_use == 1)
    gate.start(1)
    wait_until(lambda: bulkhead.queued == 1)
    started = time.monotonic()
    with capture_events() as events, pytest.raises(BulkheadFullError) as caught:
        gate.work(2)
    assert time.monotonic() - started < 1.0
    assert isinstance(caught.value, resilio.RejectedError)
    assert caught.value.bulkhead == "db"
    assert caught.value.retry_after == 0.0
    assert "'db'" in str(caught.value)
    assert [e.kind for e in events] == [resilio.EventKind.BULKHEAD_REJECTED]
    assert (bulkhead.in_use, bulkhead.queued) == (1, 1)
    gate.release.set()
    gate.join()
    assert gate.entered == [0, 1]


def test_no_queue_by_default() -> None:
    bulkhead = Bulkhead(max_concurrent=1)
    inside = threading.Event()
    leave = threading.Event()

    @bulkhead
    def hold() -> None:
        inside.set()
        leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(10)
    with pytest.raises(BulkheadFullError):
        hold()
    leave.set()
    thread.join(10)
    assert bulkhead.in_use == 0


def test_queue_is_first_in_first_out(gate_factory: Callable[[Bulkhead], Gate]) -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=5)
    gate = gate_factory(bulkhead)
    gate.start(0)
    wait_until(lambda: bulkhead.in_use == 1)
    for tag in range(1, 6):
        gate.start(tag)
        wait_until(lambda tag=tag: bulkhead.queued == tag)  # type: ignore[misc]
    gate.release.set()
    gate.join()
    assert gate.entered == [0, 1, 2, 3, 4, 5]


def test_waiter_times_out_and_leaves_the_queue() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=1, max_wait=0.05)
    inside = threading.Event()
    leave = threading.Event()

    @bulkhead
    def call(hold: bool) -> str:
        if hold:
            inside.set()
            leave.wait(10)
        return "ran"

    holder = threading.Thread(target=call, args=(True,))
    holder.start()
    inside.wait(10)
    started = time.monotonic()
    with pytest.raises(BulkheadFullError, match=r"within 0\.05 s"):
        call(False)
    assert 0.04 <= time.monotonic() - started < 2.0
    assert bulkhead.queued == 0
    leave.set()
    holder.join(10)
    assert bulkhead.in_use == 0
    assert call(False) == "ran"


def test_timed_out_waiters_never_leak_slots() -> None:
    """Failsafe #393: capacity 8, 8 waiters time out, holders leave, 8 newcomers all get in."""
    bulkhead = Bulkhead(max_concurrent=8, max_queue=8, max_wait=0.05)
    release = threading.Event()
    rejected: list[BaseException] = []

    @bulkhead
    def hold() -> None:
        release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(8)]
    for thread in holders:
        thread.start()
    wait_until(lambda: bulkhead.in_use == 8)

    def wait_in_line() -> None:
        try:
            hold()
        except BulkheadFullError as exc:
            rejected.append(exc)

    waiters = [threading.Thread(target=wait_in_line) for _ in range(8)]
    for thread in waiters:
        thread.start()
    for thread in waiters:
        thread.join(10)
    assert len(rejected) == 8
    assert bulkhead.queued == 0

    release.set()
    for thread in holders:
        thread.join(10)
    assert bulkhead.in_use == 0

    barrier = threading.Barrier(9)

    @bulkhead
    def together() -> None:
        barrier.wait(5)  # breaks unless all 8 newcomers are inside at once

    newcomers = [threading.Thread(target=together) for _ in range(8)]
    for thread in newcomers:
        thread.start()
    barrier.wait(5)
    for thread in newcomers:
        thread.join(10)
    assert bulkhead.in_use == 0


@pytest.mark.parametrize(
    "error", [ValueError("boom"), KeyboardInterrupt(), SystemExit(3), GeneratorExit()]
)
def test_failures_and_interrupts_give_the_slot_back(error: BaseException) -> None:
    bulkhead = Bulkhead(max_concurrent=1, adaptive=AIMD(min_limit=1, max_limit=4))

    @bulkhead
    def fail() -> None:
        raise error

    with pytest.raises(type(error)) as caught:
        fail()
    assert caught.value is error  # propagates unchanged
    assert bulkhead.in_use == 0
    # A failure is a latency sample (the limit grows); an interrupt teaches nothing.
    assert bulkhead.limit == (2 if isinstance(error, Exception) else 1)


class _InterruptingEvent:
    """Stands in for a queued thread's event: interrupts the wait like Ctrl-C would."""

    def __init__(self, before: Callable[[], None]) -> None:
        self.before = before

    def wait(self, timeout: float | None = None) -> bool:
        self.before()
        raise KeyboardInterrupt

    def set(self) -> None:
        pass


def _interrupting_slot(monkeypatch: pytest.MonkeyPatch, before: Callable[[], None]) -> list[Any]:
    made: list[Any] = []

    class Slot(_bulkhead._ThreadSlot):
        __slots__ = ()

        def __init__(self) -> None:
            super().__init__()
            self.event = _InterruptingEvent(before)  # type: ignore[assignment]
            made.append(self)

    monkeypatch.setattr(_bulkhead, "_ThreadSlot", Slot)
    return made


def test_interrupted_waiter_leaves_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_queue=2)
    seen: list[int] = []
    _interrupting_slot(monkeypatch, lambda: seen.append(bulkhead.queued))
    hold_by_hand(bulkhead)
    assert bulkhead.in_use == 1

    @bulkhead
    def call() -> None:
        raise AssertionError("must not run")

    with pytest.raises(KeyboardInterrupt):
        call()
    assert seen == [1]
    assert (bulkhead.in_use, bulkhead.queued) == (1, 0)
    bulkhead._leave(None, False)
    assert bulkhead.in_use == 0


def test_slot_granted_to_an_interrupted_waiter_is_passed_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The slot arrives just before the interrupt: the waiter must hand it on, not keep it."""
    bulkhead = Bulkhead(max_concurrent=1, max_queue=2)
    hold_by_hand(bulkhead)
    _interrupting_slot(monkeypatch, lambda: bulkhead._leave(None, False))

    @bulkhead
    def call() -> None:
        raise AssertionError("must not run")

    with pytest.raises(KeyboardInterrupt):
        call()
    assert (bulkhead.in_use, bulkhead.queued) == (0, 0)
    monkeypatch.undo()

    @bulkhead
    def ok() -> str:
        return "in"

    assert ok() == "in"


def test_many_threads_never_over_admit() -> None:
    bulkhead = Bulkhead(max_concurrent=4, max_queue=100)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @bulkhead
    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.001)
        with lock:
            running[0] -= 1

    done: list[None] = []

    def run() -> None:
        done.append(work())

    threads = [threading.Thread(target=run) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(done) == 64  # every queued caller got through
    assert peak[0] == 4
    assert (bulkhead.in_use, bulkhead.queued) == (0, 0)


def test_keeps_the_signature_and_works_in_a_pipeline() -> None:
    bulkhead = Bulkhead(max_concurrent=2)

    def add(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    wrapped = resilio.Pipeline(resilio.timeout(1.0), bulkhead)(add)
    assert wrapped(1) == 3
    assert inspect.signature(wrapped) == inspect.signature(add)
    assert wrapped.__doc__ == "Add."
    assert bulkhead.call(add, 2, b=5) == 7


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrent": 0}, ValueError, "at least 1"),
        ({"max_concurrent": 1.5}, TypeError, "int"),
        ({"max_concurrent": True}, TypeError, "int"),
        ({"max_concurrent": 1, "max_queue": -1}, ValueError, "at least 0"),
        ({"max_concurrent": 1, "max_wait": 1.0}, ValueError, "max_queue"),
        ({"max_concurrent": 1, "max_queue": 1, "max_wait": 0}, ValueError, "above 0"),
        ({"max_concurrent": 1, "max_queue": 1, "max_wait": "1"}, TypeError, "seconds"),
        ({"max_concurrent": 1, "adaptive": "aimd"}, TypeError, "AIMD"),
        (
            {"max_concurrent": 500, "adaptive": AIMD(min_limit=1, max_limit=100)},
            ValueError,
            "max_limit",
        ),
        ({"max_concurrent": 1, "overload_on": KeyboardInterrupt}, ValueError, "never"),
        ({"max_concurrent": 1, "clock": object()}, TypeError, "clock"),
    ],
)
def test_rejects_bad_configuration(options: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Bulkhead(**options)


def test_configuration_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Bulkhead(3)  # type: ignore[misc]


def test_a_sync_wait_in_line_ends_with_an_enclosing_timeout() -> None:
    bulkhead = resilio.Bulkhead(max_concurrent=1, max_queue=10)  # no max_wait of its own
    release = threading.Event()
    holder = threading.Thread(target=bulkhead(lambda: release.wait(5)))
    holder.start()
    try:
        while bulkhead.in_use == 0:
            time.sleep(0.001)
        call = resilio.timeout(0.2)(bulkhead(lambda: "ok"))
        started = time.monotonic()
        with pytest.raises(resilio.TimeoutExceeded) as info:
            call()
        assert time.monotonic() - started < 1.0
        assert isinstance(info.value.__cause__, resilio.BulkheadFullError)
        assert bulkhead.queued == 0  # the waiter left the line
    finally:
        release.set()
        holder.join(5)
    assert bulkhead(lambda: "free again")() == "free again"
