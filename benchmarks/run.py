"""Measure what resilio adds to a successful call, next to tenacity, stamina, backoff,
pybreaker and circuitbreaker, and write docs/benchmarks.md and docs/benchmarks.json.

Run it with ``nox -s bench`` or ``python benchmarks/run.py`` (with ``.[bench]``
installed). It uses pyperf: every benchmark runs in fresh worker processes
(``--processes``, default 10), each calibrating its loop count and reporting
``--values`` timings after a warm-up, so one lucky or unlucky process cannot
decide a figure. Other pyperf options work too (``--fast``, ``--rigorous``,
``--affinity``, ``-o results.json``); ``--no-write`` leaves docs/ alone.

Each timing is one tight loop of calls to a decorated function that returns
its argument at once; the same loop over the undecorated function is the
"plain" baseline, so "added" is the decorator's own cost per call.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import ASYNC_CASES, SYNC_CASES, Case  # the sibling module, found via sys.path

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("resilio", "tenacity", "stamina", "backoff", "pybreaker", "circuitbreaker", "pyperf")

# Success-path budgets from the design: the most a strategy may add to a call (ns).
TARGETS_NS = {
    ("sync", "retry"): 500.0,
    ("sync", "breaker"): 500.0,
    ("async", "retry"): 1000.0,
    ("async", "breaker"): 1000.0,
}
# What the anchors were seen to add in the research (research/retry.md), in µs.
ANCHORS_US = {"tenacity": 30.0, "stamina": 25.0, "backoff": 4.0}


def sync_timer(case: Case) -> Callable[[int], float]:
    """Return a pyperf time function: seconds for ``loops`` calls of the case."""
    built: list[Callable[[int], Any]] = []

    def time_calls(loops: int) -> float:
        if not built:
            built.append(case.build())
        fn = built[0]
        repeat = itertools.repeat(None, loops)
        started = time.perf_counter()
        for _ in repeat:
            fn(1)
        return time.perf_counter() - started

    return time_calls


def async_timer(case: Case) -> Callable[[int], float]:
    """Return a pyperf time function: seconds for ``loops`` awaited calls, inside one event loop."""
    built: list[Callable[[int], Any]] = []

    async def timed(loops: int) -> float:
        fn = built[0]
        repeat = itertools.repeat(None, loops)
        started = time.perf_counter()
        for _ in repeat:
            await fn(1)
        return time.perf_counter() - started

    def time_calls(loops: int) -> float:
        if not built:
            built.append(case.build())
        loop = asyncio.new_event_loop()
        try:
            seconds: float = loop.run_until_complete(timed(loops))
            return seconds
        finally:
            loop.close()

    return time_calls


# -- the report -------------------------------------------------------------------------


def summarize(bench: pyperf.Benchmark) -> dict[str, Any]:
    """Return a benchmark's statistics in nanoseconds per call."""
    values: list[float] = [v * 1e9 for v in bench.get_values()]
    ordered = sorted(values)

    def percentile(p: float) -> float:
        return ordered[round(p / 100 * (len(ordered) - 1))]

    return {
        "median_ns": bench.median() * 1e9,
        "stdev_ns": bench.stdev() * 1e9 if len(values) > 1 else 0.0,
        "mad_ns": bench.median_abs_dev() * 1e9 if len(values) > 1 else 0.0,
        "min_ns": ordered[0],
        "p25_ns": percentile(25),
        "p75_ns": percentile(75),
        "max_ns": ordered[-1],
        "values": len(values),
        "processes": _processes(bench),
        "loops": bench.get_loops(),
    }


def compare(cases: list[Case], benches: dict[str, pyperf.Benchmark]) -> list[dict[str, Any]]:
    """Return one row per case with the figures relative to the plain call."""
    rows = []
    plain: dict[str, dict[str, Any]] = {}
    for case in cases:
        if case.name not in benches:
            continue
        mode = case.name.split("/", 1)[0]
        stats = summarize(benches[case.name])
        if case.library == "plain":
            plain[mode] = stats
        base = plain[mode]
        added = stats["median_ns"] - base["median_ns"]
        target = TARGETS_NS.get((mode, case.strategy)) if case.library == "resilio" else None
        rows.append(
            {
                "name": case.name,
                "mode": mode,
                "library": case.library,
                "strategy": case.strategy,
                "setup": case.setup,
                **stats,
                "added_ns": added,
                # The spread of a difference of two independent medians.
                "added_spread_ns": math.hypot(stats["stdev_ns"], base["stdev_ns"]),
                "ratio": stats["median_ns"] / base["median_ns"],
                "target_added_ns": target,
                "meets_target": None if target is None else added <= target,
            }
        )
    return rows


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    versions = {name: _version(name) for name in LIBRARIES}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f}" if abs(ns) >= 1000 else f"{ns / 1000:.3f}"


def _target(row: dict[str, Any]) -> str:
    if row["target_added_ns"] is not None:
        mark = "met" if row["meets_target"] else "**missed**"
        return f"≤ {row['target_added_ns'] / 1000:g} µs added: {mark}"
    if row["library"] in ANCHORS_US and row["mode"] == "sync":
        return f"anchor, ~{ANCHORS_US[row['library']]:g} µs in research"
    return ""


def table(rows: list[dict[str, Any]], mode: str) -> str:
    lines = [
        "| benchmark | ns per call (median ± std) | added over plain (ns) | ratio to plain"
        " | target |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        if row["mode"] != mode:
            continue
        added = (
            "—"
            if row["library"] == "plain"
            else f"{row['added_ns']:,.0f} ± {row['added_spread_ns']:,.0f}"
        )
        lines.append(
            f"| `{row['name'].split('/', 1)[1]}` | {row['median_ns']:,.0f} ± {row['stdev_ns']:,.0f}"
            f" | {added} | {row['ratio']:.1f} | {_target(row)} |"
        )
    return "\n".join(lines)


def _processes(bench: pyperf.Benchmark) -> int:
    """Return how many worker processes produced timings (the calibration run has none)."""
    return sum(1 for run in bench.get_runs() if run.values)


def highlights(rows: list[dict[str, Any]]) -> str:
    """Return the findings of this run as a short bullet list."""
    by_name = {row["name"]: row for row in rows}

    def added(name: str) -> str:
        row = by_name.get(name)
        return "n/a" if row is None else f"{row['added_ns'] / 1000:.2f} µs"

    def times(slow: str, fast: str) -> str:
        a, b = by_name.get(slow), by_name.get(fast)
        if a is None or b is None or b["added_ns"] <= 0:
            return "n/a"
        return f"{a['added_ns'] / b['added_ns']:.0f} times"

    lines = [
        f"- Sync, resilio adds {added('sync/resilio.retry')} (retry),"
        f" {added('sync/resilio.CircuitBreaker')} (breaker),"
        f" {added('sync/resilio.timeout')} (timeout) and {added('sync/resilio.Pipeline')}"
        " for the three in a pipeline.",
        f"- Sync anchors: tenacity adds {added('sync/tenacity')}, stamina"
        f" {added('sync/stamina')}, backoff {added('sync/backoff')}; pybreaker"
        f" {added('sync/pybreaker')}, circuitbreaker {added('sync/circuitbreaker')}."
        f" Per call, tenacity's retry costs {times('sync/tenacity', 'sync/resilio.retry')}"
        f" as much as resilio's and backoff's {times('sync/backoff', 'sync/resilio.retry')};"
        f" pybreaker's breaker {times('sync/pybreaker', 'sync/resilio.CircuitBreaker')}"
        " as much as resilio's.",
        f"- Async, resilio adds {added('async/resilio.retry')} (retry),"
        f" {added('async/resilio.CircuitBreaker')} (breaker),"
        f" {added('async/resilio.timeout')} (timeout) and"
        f" {added('async/resilio.Pipeline')} (pipeline); tenacity"
        f" {added('async/tenacity')}, stamina {added('async/stamina')}, backoff"
        f" {added('async/backoff')}, circuitbreaker {added('async/circuitbreaker')}.",
    ]
    targeted = [row for row in rows if row["target_added_ns"] is not None]
    missed = [row["name"] for row in targeted if not row["meets_target"]]
    if targeted and not missed:
        lines.append("- Every target below is met.")
    elif missed:
        lines.append(f"- Targets missed: {', '.join(missed)}.")
    slow_timeout = by_name.get("async/resilio.timeout")
    if slow_timeout is not None and slow_timeout["added_ns"] > 1000:
        lines.append(
            "- The async timeout is the expensive part of an async pipeline: it opens an"
            " anyio cancel scope per call (what makes it a real, cancelling timeout on"
            ' asyncio and trio), well over the design\'s "well under a microsecond" per'
            " decorator. The sync timeout is cooperative (a deadline in a context"
            " variable, checked when the call returns) and far cheaper."
        )
    return "\n".join(lines)


def render(rows: list[dict[str, Any]], env: dict[str, Any], argv: list[str], processes: int) -> str:
    versions = ", ".join(
        f"{name} {version}" for name, version in env["versions"].items() if version
    )
    setups = "\n".join(
        f"| `{row['name']}` | `{row['setup']}` |" for row in rows if row["library"] != "plain"
    )
    values = rows[0]["values"] if rows else 0
    return f"""# Benchmarks

What a resilience strategy adds to a call that succeeds: the price every call
pays, failure or not. Each figure is the median time of one call through a
decorated function that returns its argument at once, measured with
[pyperf](https://pyperf.readthedocs.io/) in {processes} fresh worker processes
per benchmark ({values} timings in all, each a calibrated tight loop, after a
warm-up). "Added over plain" subtracts the same loop over the undecorated
function; its spread combines both standard deviations.

Generated by `benchmarks/run.py` on {env["date"]}: {env["python"]},
{env["platform"]}, {env["cpu"]} ({env["cpus"]} CPUs); {versions}.

## Findings

{highlights(rows)}

## Sync

{table(rows, "sync")}

## Async (asyncio)

{table(rows, "async")}

pybreaker has no async row: its decorator does not handle coroutines (its
`call_async` needs Tornado).

## Targets

From the design ("hot path first"): on the success path, with no listener
registered, retry and the circuit breaker add at most **0.5 µs** to a sync
call and **1 µs** to an async one. For scale, when the design was researched
(CPython 3.11, a similar machine) tenacity added about 30 µs per sync call,
stamina about 25 µs and backoff about 4 µs; the anchor rows above are this
run's figures for the same libraries.

## What is measured

| benchmark | built as |
|---|---|
{setups}

The plain call is `def work(x): return x` (or `async def`). The anchors are
configured as close to resilio as their APIs allow: three attempts, retry on
`OSError`, exponential backoff where the library needs one; breakers that open
after five failures. Nothing fails, so no backoff, sleep or state change runs,
and no listener or hook is registered.

## Reproduce

```console
$ python -m pip install nox
$ nox -s bench                # installs .[bench], runs benchmarks/run.py, rewrites these files
$ nox -s bench -- --fast      # fewer processes: quicker, noisier
$ python benchmarks/run.py --no-write -o /tmp/bench.json   # docs/ untouched; pyperf's file
$ python -m pyperf stats /tmp/bench.json                    # pyperf's tools read that file
```

A run takes about three minutes. For stable numbers use an idle machine; on
Linux, `python -m pyperf system tune` and `--affinity` (pin the workers to
isolated CPUs) reduce the noise further. Nanosecond figures move by 10-30 %
between machines and runs (more on a busy one); ratios to the plain call and
between libraries move less. The raw figures, percentiles and environment are
in [`benchmarks.json`](benchmarks.json).

This run: `python benchmarks/run.py {" ".join(argv)}`.
"""


def main() -> None:
    runner = pyperf.Runner(processes=10, values=3, warmups=1)
    runner.argparser.add_argument(
        "--no-write", action="store_true", help="do not rewrite docs/benchmarks.md and .json"
    )
    runner.argparser.add_argument(
        "--only", default="", help="run only benchmarks whose name contains this text"
    )
    args = runner.parse_args()
    cases = [case for case in SYNC_CASES + ASYNC_CASES if args.only in case.name]
    benches: dict[str, pyperf.Benchmark] = {}
    for case in cases:
        timer = sync_timer(case) if case.name.startswith("sync/") else async_timer(case)
        bench = runner.bench_time_func(case.name, timer)
        if bench is not None:
            benches[case.name] = bench
    if args.worker or args.no_write or not benches:
        return
    rows = compare(cases, benches)
    env = environment()
    argv = sys.argv[1:]
    processes = min(_processes(bench) for bench in benches.values())
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "benchmarks.md").write_text(render(rows, env, argv, processes), encoding="utf-8")
    (docs / "benchmarks.json").write_text(
        json.dumps(
            {"environment": env, "argv": argv, "processes": processes, "benchmarks": rows},
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\nwrote {docs / 'benchmarks.md'} and {docs / 'benchmarks.json'}")


if __name__ == "__main__":
    main()
