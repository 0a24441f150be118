"""Run every benchmark group and write docs/benchmarks.{json,md,png}.

``nox -s bench`` runs this with the anchor libraries installed (the ``bench``
extra). Groups:

- ``overhead``: the success path of retry, timeout, breaker and a pipeline,
  sync and async, against tenacity, stamina, backoff, pybreaker,
  circuitbreaker, aiobreaker and purgatory;
- ``reject``: a call to an open breaker, and a rejected limiter decision;
- ``limiters``: one in-memory limiter decision (allow path) against limits,
  throttled-py, pyrate-limiter and token-bucket;
- ``accuracy``: the rate admitted by blocking waits against the configured rate
  (resilio, aiolimiter, pyrate-limiter, throttled-py);
- ``memory``: bytes per key at 100 000 keys;
- ``redis``: Redis decisions against the raw EVALSHA round trip of the same
  client, and async throughput with 100 concurrent tasks.

Every timing group runs in several fresh worker processes, one after the
other; each worker times all cases of its group once per round, in a shuffled
order, for several rounds. Figures are medians over all rounds of all workers,
with the quartiles as the spread; ratios are taken within one round of one
process, so a slow moment on a shared machine affects both sides of a ratio.

Options: ``--quick`` (fewer processes and rounds), ``--smoke`` (a tiny run that
only checks the harness works), ``--no-anchors``, ``--groups a,b``,
``--out DIR`` (default docs/), ``--no-write``, ``--render-only`` (rewrite the
markdown and chart from an existing benchmarks.json, after editing
``benchmarks/analysis.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases as breaker_cases  # the sibling modules, found via sys.path
import harness
import limiters
import report

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("overhead", "reject", "limiters", "accuracy", "memory", "redis")

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "processes": 5,
        "rounds": 10,
        "sample_time": 0.02,
        "wait_rate": 50.0,
        "wait_seconds": 1.0,
        "wait_repeats": 3,
        "memory_keys": 100_000,
        "redis_calls": 1000,
        "redis_rounds": 12,
    },
    "quick": {
        "processes": 2,
        "rounds": 5,
        "sample_time": 0.01,
        "wait_rate": 50.0,
        "wait_seconds": 0.5,
        "wait_repeats": 1,
        "memory_keys": 100_000,
        "redis_calls": 500,
        "redis_rounds": 5,
    },
    "smoke": {
        "processes": 1,
        "rounds": 2,
        "sample_time": 0.0005,
        "wait_rate": 200.0,
        "wait_seconds": 0.03,
        "wait_repeats": 1,
        "memory_keys": 1000,
        "redis_calls": 10,
        "redis_rounds": 2,
    },
}


def timing_cases(group: str, anchors: bool) -> list[harness.Case]:
    """Return the cases one timing job measures."""
    if group == "overhead":
        return breaker_cases.overhead_cases(anchors)
    if group == "reject":
        return breaker_cases.reject_cases(anchors) + limiters.decision_cases(anchors, "reject")
    if group == "limiters":
        return limiters.decision_cases(anchors, "allow")
    raise ValueError(group)


def worker(job: str, options: dict[str, Any]) -> Any:
    """Run one job in this (fresh) process and return its JSON-able result."""
    kind, _, name = job.partition(":")
    if kind == "time":
        return harness.time_rounds(
            timing_cases(name, options["anchors"]),
            rounds=options["rounds"],
            sample_time=options["sample_time"],
            seed=options["seed"],
        )
    if kind == "accuracy":
        return limiters.accuracy(name, options["rate"], options["seconds"])
    if kind == "memory":
        return limiters.memory(name, options["keys"])
    if kind == "redis":
        import redis_bench

        return redis_bench.redis_benchmarks(options["calls"], options["rounds"])
    raise ValueError(job)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_timing(group: str, profile: dict[str, Any], anchors: bool) -> dict[str, Any]:
    rounds: list[dict[str, float]] = []
    unavailable: dict[str, str] = {}
    for process in range(profile["processes"]):
        result = harness.spawn(
            f"time:{group}",
            {
                "anchors": anchors,
                "rounds": profile["rounds"],
                "sample_time": profile["sample_time"],
                "seed": process,
            },
        )
        rounds.extend(result["rounds"])
        unavailable.update(result["unavailable"])
    listed = timing_cases(group, anchors)
    return {
        "cases": {
            case.name: {"library": case.library, "mode": case.mode, "setup": case.setup,
                        "tags": case.tags}
            for case in listed
        },
        "rounds": rounds,
        "unavailable": unavailable,
        "processes": profile["processes"],
    }  # fmt: skip


def run_accuracy(profile: dict[str, Any], anchors: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, (library, mode, _factory, setup) in limiters.WAIT_CASES.items():
        if library != "resilio" and not anchors:
            continue
        options = {"rate": profile["wait_rate"], "seconds": profile["wait_seconds"]}
        try:
            runs = [
                harness.spawn(f"accuracy:{name}", options) for _ in range(profile["wait_repeats"])
            ]
        except RuntimeError as exc:
            results[name] = {"library": library, "mode": mode, "setup": setup, "error": str(exc)}
            continue
        results[name] = {"library": library, "mode": mode, "setup": setup, "runs": runs}
    return {"cases": results, "no_wait": limiters.NO_WAIT if anchors else {}}


def run_memory(profile: dict[str, Any], anchors: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, (library, algorithm, _factory) in limiters.MEMORY_CASES.items():
        if library != "resilio" and not anchors:
            continue
        try:
            result = harness.spawn(f"memory:{name}", {"keys": profile["memory_keys"]})
        except RuntimeError as exc:
            result = {"error": str(exc)}
        results[name] = {"library": library, "algorithm": algorithm, **result}
    return {"cases": results, "keys": profile["memory_keys"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer processes and rounds")
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the harness")
    parser.add_argument("--no-anchors", action="store_true", help="measure resilio only")
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated groups")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where to write")
    parser.add_argument("--no-write", action="store_true", help="print the JSON, write nothing")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite the markdown and chart from OUT/benchmarks.json",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.worker_options))))
        return

    if args.render_only:
        document = json.loads((args.out / "benchmarks.json").read_text("utf-8"))
        (args.out / "benchmarks.md").write_text(report.markdown(document), "utf-8")
        report.chart(document, args.out / "benchmarks.png")
        return

    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = PROFILES[name]
    anchors = not args.no_anchors
    groups = [group.strip() for group in args.groups.split(",") if group.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    raw: dict[str, Any] = {}
    for group in groups:
        _log(f"[{time.perf_counter() - started:6.1f} s] {group} ...")
        if group in ("overhead", "reject", "limiters"):
            raw[group] = run_timing(group, profile, anchors)
        elif group == "accuracy":
            raw[group] = run_accuracy(profile, anchors)
        elif group == "memory":
            raw[group] = run_memory(profile, anchors)
        else:
            raw[group] = harness.spawn(
                "redis", {"calls": profile["redis_calls"], "rounds": profile["redis_rounds"]}
            )
    elapsed = time.perf_counter() - started
    _log(f"[{elapsed:6.1f} s] done")
    results = report.analyse(raw)
    document = {
        "environment": report.environment(),
        "profile": {"name": name, **profile, "anchors": anchors, "seconds": round(elapsed, 1)},
        "argv": sys.argv[1:] if argv is None else argv,
        "targets": results["targets"],
        "groups": results["groups"],
    }
    if args.no_write:
        print(json.dumps(document, indent=2))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    (args.out / "benchmarks.md").write_text(report.markdown(document), "utf-8")
    written = ["benchmarks.json", "benchmarks.md"]
    if report.chart(document, args.out / "benchmarks.png"):
        written.append("benchmarks.png")
    _log(f"wrote {', '.join(written)} in {args.out}")


if __name__ == "__main__":
    main()
