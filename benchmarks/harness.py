"""Timing machinery shared by every benchmark group.

A *case* is one callable to time, built fresh in a worker process. A worker
builds all cases of a group, calibrates a loop count per case (which also warms
it up), then runs rounds: in each round every case is timed once, in a shuffled
order, so that a burst of noise from other work on the machine hits all cases
of that round alike. Ratios are taken between cases of the same round of the
same process; medians and quartiles are taken over all rounds of all worker
processes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

__all__ = ["Case", "Unavailable", "spawn", "summary", "time_rounds"]

HERE = Path(__file__).resolve().parent


class Unavailable(Exception):
    """A case cannot be built here: its library is missing or lacks the feature."""


@dataclass(frozen=True)
class Case:
    """One thing to time.

    Attributes:
        name: Unique within its group, such as ``retry/sync/tenacity``.
        library: ``resilio``, ``plain`` or an anchor library's distribution name.
        mode: ``sync`` or ``async``.
        build: Returns the callable to time, ready (a breaker already open, ...), or
            an awaitable of it when the set-up itself must await.
        args: The arguments of every call.
        setup: How the callable is built, for the docs.
        raises: The exception every call raises (a reject path), caught by the loop.
        tags: Free-form labels for the report (algorithm, API, ...).
    """

    name: str
    library: str
    mode: str
    build: Callable[[], Callable[..., Any]]
    args: tuple[Any, ...] = (1,)
    setup: str = ""
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None
    tags: dict[str, str] = field(default_factory=dict)


# -- loops: one per (mode, raises); the call itself is the only work in them -----------


def _sync_loop(fn: Callable[..., Any], args: tuple[Any, ...], n: int) -> float:
    started = time.perf_counter()
    for _ in repeat(None, n):
        fn(*args)
    return time.perf_counter() - started


def _sync_loop_raising(fn: Callable[..., Any], args: tuple[Any, ...], n: int, raises: Any) -> float:
    started = time.perf_counter()
    for _ in repeat(None, n):
        try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every call
            fn(*args)
        except raises:  # noqa: PERF203
            pass
    return time.perf_counter() - started


async def _async_loop(fn: Callable[..., Any], args: tuple[Any, ...], n: int) -> float:
    started = time.perf_counter()
    for _ in repeat(None, n):
        await fn(*args)
    return time.perf_counter() - started


async def _async_loop_raising(
    fn: Callable[..., Any], args: tuple[Any, ...], n: int, raises: Any
) -> float:
    started = time.perf_counter()
    for _ in repeat(None, n):
        try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every call
            await fn(*args)
        except raises:  # noqa: PERF203
            pass
    return time.perf_counter() - started


class _Timer:
    """Times ``n`` calls of one built case, on the worker's event loop if async."""

    def __init__(self, case: Case, fn: Callable[..., Any], loop: asyncio.AbstractEventLoop):
        self.case = case
        self.fn = fn
        self.loop = loop
        self.n = 1

    def __call__(self, n: int) -> float:
        case, fn = self.case, self.fn
        if case.mode == "sync":
            if case.raises is None:
                return _sync_loop(fn, case.args, n)
            return _sync_loop_raising(fn, case.args, n, case.raises)
        if case.raises is None:
            return self.loop.run_until_complete(_async_loop(fn, case.args, n))
        return self.loop.run_until_complete(_async_loop_raising(fn, case.args, n, case.raises))

    def calibrate(self, sample_time: float) -> None:
        """Pick ``n`` so that one sample takes about ``sample_time`` seconds."""
        n = 1
        while True:
            elapsed = self(n)
            if elapsed >= sample_time / 5 or n >= 10**7:
                break
            n *= 4 if elapsed < sample_time / 50 else 2
        self.n = max(1, round(n * sample_time / max(elapsed, 1e-9)))


def time_rounds(
    cases: Sequence[Case], *, rounds: int, sample_time: float, seed: int
) -> dict[str, Any]:
    """Time every case once per round; return ns per call, per round, per case.

    Cases that cannot be built are reported under ``unavailable`` with the reason.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    timers: list[_Timer] = []
    unavailable: dict[str, str] = {}
    for case in cases:
        try:
            fn = case.build()
        except (ImportError, Unavailable) as exc:
            unavailable[case.name] = f"{type(exc).__name__}: {exc}"
            continue
        if inspect.isawaitable(fn):  # async set-up, such as opening a breaker
            fn = loop.run_until_complete(fn)
        timer = _Timer(case, fn, loop)
        timer.calibrate(sample_time)
        timers.append(timer)
    shuffler = random.Random(seed)
    samples: list[dict[str, float]] = []
    for _ in range(rounds):
        order = list(timers)
        shuffler.shuffle(order)
        samples.append({timer.case.name: timer(timer.n) / timer.n * 1e9 for timer in order})
    loop.close()
    return {"rounds": samples, "unavailable": unavailable}


# -- statistics ------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    """Return median, quartiles, extremes and count of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return {"median": float("nan"), "p25": float("nan"), "p75": float("nan"), "n": 0}
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return {
        "median": statistics.median(ordered),
        "p25": q1,
        "p75": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


# -- worker processes --------------------------------------------------------------------


def spawn(job: str, options: dict[str, Any], *, timeout: float = 300.0) -> Any:
    """Run ``run.py --worker JOB`` in a fresh interpreter; return the JSON it prints."""
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--worker",
        job,
        "--worker-options",
        json.dumps(options),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {job!r} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
