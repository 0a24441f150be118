"""Turn raw samples into figures, ratios and verdicts; render markdown and the chart."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import summary

__all__ = ["analyse", "chart", "environment", "markdown"]

HERE = Path(__file__).resolve().parent
DISTRIBUTIONS = (
    "resilio", "tenacity", "stamina", "backoff", "pybreaker", "circuitbreaker", "aiobreaker",
    "purgatory", "limits", "pyrate-limiter", "aiolimiter", "throttled-py", "token-bucket",
    "redis", "matplotlib",
)  # fmt: skip
RETRY_TARGETS = {"tenacity": 50.0, "stamina": 50.0, "backoff": 5.0}
LIMITER_TARGETS = {"limits": 4.0, "throttled-py": 4.0, "pyrate-limiter": 4.0, "token-bucket": 1.0}
BREAKERS = ("pybreaker", "circuitbreaker", "aiobreaker", "purgatory")
REDIS_TARGET = 1.1
# Issue targets for resilio's own in-memory decisions, sync: ns per call, at most.
DECISION_TARGETS_NS = {"allow": 600.0, "try_acquire": 1000.0}
# Redis: decisions per second of 100 concurrent async tasks over one task's, at least.
REDIS_SCALING_TARGET = 5.0
# resilio's row among the anchors' Redis decisions: the "decision" case.
RESILIO_ON_REDIS = "resilio: token bucket"


def environment() -> dict[str, Any]:
    versions = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # noqa: PERF203
            versions[name] = None
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


# -- analysis ------------------------------------------------------------------------------


def _per_round(
    rounds: list[dict[str, float]], fn: Callable[[dict[str, float]], float | None]
) -> dict[str, float]:
    values = [v for v in (fn(r) for r in rounds) if v is not None]
    return summary(values)


def _added(r: dict[str, float], name: str) -> float | None:
    mode = name.split("/")[1]
    plain = r.get(f"none/{mode}/plain")
    return None if plain is None or name not in r else r[name] - plain


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom <= 0:
        return None
    return top / bottom


def _target(
    label: str, measured: dict[str, float], goal: float, *, at_least: bool, unit: str = "x"
) -> dict[str, Any]:
    value = measured.get("median")
    met = None
    if value is not None and value == value:  # not NaN
        met = value >= goal if at_least else value <= goal
    return {
        "target": label,
        "goal": f"{'≥' if at_least else '≤'} {goal:g}{unit}",
        "measured": measured,
        "unit": unit,
        "met": met,
    }


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    """Return per-case figures, per-group ratios and the targets table."""
    groups: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []

    overhead = raw.get("overhead")
    if overhead:
        rounds = overhead["rounds"]
        rows = {}
        for name, meta in overhead["cases"].items():
            if name in overhead["unavailable"]:
                rows[name] = {**meta, "unavailable": overhead["unavailable"][name]}
                continue
            strategy = meta["tags"].get("strategy", "none")
            mode = meta["mode"]
            resilio = f"{strategy}/{mode}/resilio"
            rows[name] = {
                **meta,
                "ns": _per_round(rounds, lambda r, n=name: r.get(n)),
                "added_ns": _per_round(rounds, lambda r, n=name: _added(r, n)),
                "added_vs_resilio": _per_round(
                    rounds, lambda r, n=name, b=resilio: _ratio(_added(r, n), _added(r, b))
                ),
            }
        groups["overhead"] = {"rows": rows, "unavailable": overhead["unavailable"]}
        for mode in ("sync", "async"):
            for library, goal in RETRY_TARGETS.items():
                row = rows.get(f"retry/{mode}/{library}")
                if row and "added_vs_resilio" in row:
                    targets.append(
                        _target(
                            f"retry success path, {mode}: {library} overhead / resilio overhead",
                            row["added_vs_resilio"],
                            goal,
                            at_least=True,
                        )
                    )
            present = [
                (rows[f"breaker/{mode}/{b}"]["added_ns"]["median"], b)
                for b in BREAKERS
                if "added_ns" in rows.get(f"breaker/{mode}/{b}", {})
            ]
            if present:
                fastest = min(present)[1]
                targets.append(
                    _target(
                        f"breaker success path, {mode}: fastest anchor ({fastest}) overhead"
                        " / resilio overhead",
                        rows[f"breaker/{mode}/{fastest}"]["added_vs_resilio"],
                        2.0,
                        at_least=True,
                    )
                )

    for group in ("reject", "limiters"):
        data = raw.get(group)
        if not data:
            continue
        rounds = data["rounds"]
        rows = {}
        for name, meta in data["cases"].items():
            if name in data["unavailable"]:
                rows[name] = {**meta, "unavailable": data["unavailable"][name]}
                continue
            peer = _peer(name, meta)
            # The plain call of the same mode, timed in the same round.
            plain = f"{name.split('/', 1)[0]}/plain{'_async' if meta['mode'] == 'async' else ''}"
            rows[name] = {
                **meta,
                "peer": peer,
                "ns": _per_round(rounds, lambda r, n=name: r.get(n)),
                "vs_peer": _per_round(
                    rounds, lambda r, n=name, p=peer: _ratio(r.get(n), r.get(p)) if p else None
                ),
                "vs_plain": _per_round(
                    rounds, lambda r, n=name, p=plain: _ratio(r.get(n), r.get(p))
                ),
            }
        groups[group] = {"rows": rows, "unavailable": data["unavailable"]}
        if group == "limiters":
            for row in rows.values():
                api = row.get("tags", {}).get("api")
                if row["library"] == "resilio" and api in DECISION_TARGETS_NS and "ns" in row:
                    targets.append(
                        _target(
                            f"in-memory decision, {row['tags']['algorithm']}: resilio {api}"
                            " (thread-safe), ns per call",
                            row["ns"],
                            DECISION_TARGETS_NS[api],
                            at_least=False,
                            unit=" ns",
                        )
                    )
            for row in rows.values():
                if row["library"] in LIMITER_TARGETS and "vs_peer" in row:
                    algorithm = row["tags"]["algorithm"]
                    peer_api = row["peer"].rsplit(".", 1)[1]
                    targets.append(
                        _target(
                            f"in-memory decision, {algorithm}: {row['library']}"
                            f" / resilio {peer_api}",
                            row["vs_peer"],
                            LIMITER_TARGETS[row["library"]],
                            at_least=True,
                        )
                    )

    accuracy = raw.get("accuracy")
    if accuracy:
        rows = {}
        for name, data in accuracy["cases"].items():
            row = dict(data)
            if "runs" in data:
                row["ratio"] = summary([run["ratio"] for run in data["runs"]])
                row["longest_gap_ms"] = max(run["longest_gap_ms"] for run in data["runs"])
                row["shortest_gap_ms"] = min(run["shortest_gap_ms"] for run in data["runs"])
            rows[name] = row
        groups["accuracy"] = {"rows": rows, "no_wait": accuracy["no_wait"]}

    if raw.get("memory"):
        groups["memory"] = raw["memory"]

    redis = raw.get("redis")
    if redis:
        figures: dict[str, Any] = {}
        for mode in ("sync", "async"):
            rounds = redis[mode]
            figures[mode] = {
                "us": {name: _per_round(rounds, lambda r, n=name: r[n]) for name in rounds[0]},
                "decision_vs_script": _per_round(
                    rounds, lambda r: r["decision"] / r["EVALSHA limiter script"]
                ),
                "decision_vs_trivial": _per_round(
                    rounds, lambda r: r["decision"] / r["EVALSHA trivial"]
                ),
                "floor_vs_trivial": _per_round(
                    rounds, lambda r: r["EVALSHA floor script"] / r["EVALSHA trivial"]
                )
                if "EVALSHA floor script" in rounds[0]
                else None,
            }
            # The round trip read two ways: the same script called raw (what
            # resilio's Python adds), and a trivial script (what the decision costs).
            for ratio, label in (
                ("decision_vs_script", "raw EVALSHA of the same script"),
                ("decision_vs_trivial", "raw EVALSHA of a trivial script"),
            ):
                targets.append(
                    _target(
                        f"Redis decision, {mode} client: decision / {label}",
                        figures[mode][ratio],
                        REDIS_TARGET,
                        at_least=False,
                    )
                )
        throughput = redis["throughput"]
        figures["throughput"] = throughput
        figures["decisions_vs_raw_100"] = (
            throughput["decisions, 100 tasks"] / throughput["raw EVALSHA, 100 tasks"]
        )
        # One ratio per repetition: the n-th run of 100 tasks over the n-th of one task.
        samples = redis.get("throughput_samples", {})
        figures["scaling"] = summary(
            [
                many / one
                for many, one in zip(
                    samples.get("decisions, 100 tasks", []),
                    samples.get("decisions, 1 task", []),
                    strict=False,
                )
            ]
        )
        targets.append(
            _target(
                "Redis decisions per second, async client: 100 concurrent tasks / 1 task",
                figures["scaling"],
                REDIS_SCALING_TARGET,
                at_least=True,
            )
        )
        # The anchors' decisions (sync only, "library: algorithm") and resilio's,
        # each over the trivial script of the same round.
        sync_rounds = redis["sync"]
        figures["vs_trivial"] = {
            RESILIO_ON_REDIS: figures["sync"]["decision_vs_trivial"],
            **{
                name: _per_round(sync_rounds, lambda r, n=name: r[n] / r["EVALSHA trivial"])
                for name in sync_rounds[0]
                if ": " in name
            },
        }
        figures["anchors_unavailable"] = redis.get("anchors_unavailable", {})
        figures["memory"] = redis.get("memory", {})
        figures["meta"] = {k: redis[k] for k in ("server", "redis_version", "redis_py")}
        groups["redis"] = figures
    return {"groups": groups, "targets": targets}


def _peer(name: str, meta: dict[str, Any]) -> str | None:
    """The resilio case an anchor's limiter decision is compared with, or None."""
    parts = name.split("/")
    if meta["library"] == "resilio" or len(parts) != 3 or parts[0] == "breaker-open":
        if parts[0] == "breaker-open" and meta["library"] != "resilio":
            return f"breaker-open/{meta['mode']}/resilio"
        return None
    path, algorithm, library = parts
    from limiters import RESILIO_PEER_API

    return f"{path}/{algorithm}/resilio.{RESILIO_PEER_API[library]}"


# -- markdown ----------------------------------------------------------------------------


def _n(value: float) -> str:
    if value != value:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(s: dict[str, float], unit: str = "") -> str:
    if not s or not s.get("n"):
        return "n/a"
    return f"{_n(s['median'])}{unit} ({_n(s['p25'])} to {_n(s['p75'])})"


def _verdict(target: dict[str, Any]) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[target["met"]]


def _targets_table(document: dict[str, Any]) -> str:
    lines = [
        "| target | goal | measured: median (quartiles) | verdict |",
        "|---|---|---|---|",
    ]
    lines.extend(
        f"| {t['target']} | {t['goal']} | {_spread(t['measured'], t.get('unit', 'x'))} |"
        f" {_verdict(t)} |"
        for t in document["targets"]
    )
    return "\n".join(lines)


def _overhead_table(group: dict[str, Any], mode: str) -> str:
    lines = [
        "| strategy | library | ns per call | added over plain (ns) | added / resilio's |",
        "|---|---|---:|---:|---:|",
    ]
    for row in group["rows"].values():
        if row["mode"] != mode:
            continue
        strategy = row["tags"].get("strategy", "—")
        if "unavailable" in row:
            lines.append(f"| {strategy} | {row['library']} | — | — | {row['unavailable']} |")
            continue
        added = "—" if row["library"] == "plain" else _spread(row["added_ns"])
        ratio = (
            "—" if row["library"] in ("plain", "resilio") else _spread(row["added_vs_resilio"], "x")
        )
        lines.append(
            f"| {strategy} | {row['library']} | {_spread(row['ns'])} | {added} | {ratio} |"
        )
    return "\n".join(lines)


def _decision_table(group: dict[str, Any], prefix: str) -> str:
    lines = [
        "| case | mode | ns per call | / plain call | / resilio peer | call |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, row in group["rows"].items():
        if not name.startswith(prefix):
            continue
        label = name.split("/", 1)[1]
        if "unavailable" in row:
            lines.append(f"| {label} | {row['mode']} | — | — | — | {row['unavailable']} |")
            continue
        peer = _spread(row["vs_peer"], "x") if row.get("peer") else "—"
        plain = _spread(row["vs_plain"], "x") if row.get("vs_plain", {}).get("n") else "—"
        lines.append(
            f"| {label} | {row['mode']} | {_spread(row['ns'])} | {plain} | {peer} |"
            f" {row['setup']} |"
        )
    return "\n".join(lines)


def _accuracy_table(group: dict[str, Any]) -> str:
    lines = [
        "| library | mode | admitted / configured rate | shortest gap (ms) | longest gap (ms) "
        "| call |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in group["rows"].values():
        if "error" in row:
            lines.append(f"| {row['library']} | {row['mode']} | failed | — | — | {row['setup']} |")
            continue
        lines.append(
            f"| {row['library']} | {row['mode']} | {_spread(row['ratio'], 'x')} |"
            f" {row['shortest_gap_ms']:.1f} | {row['longest_gap_ms']:.1f} | {row['setup']} |"
        )
    for library, why in group["no_wait"].items():
        lines.append(f"| {library} | — | — | — | — | {why} |")
    return "\n".join(lines)


def _memory_table(group: dict[str, Any]) -> str:
    lines = ["| algorithm | library | bytes per key |", "|---|---|---:|"]
    for row in group["cases"].values():
        value = f"{row['bytes_per_key']:,.0f}" if "bytes_per_key" in row else "failed"
        lines.append(f"| {row['algorithm']} | {row['library']} | {value} |")
    return "\n".join(lines)


def _redis_tables(group: dict[str, Any]) -> str:
    lines = [
        "| per call (µs) | sync client | async client |",
        "|---|---:|---:|",
    ]
    lines.extend(
        f"| {name} | {_spread(group['sync']['us'][name])} | "
        f"{_spread(group['async']['us'][name]) if name in group['async']['us'] else '—'} |"
        for name in group["sync"]["us"]
        if ": " not in name  # the anchors have a table of their own
    )
    lines.append(
        f"| decision / raw EVALSHA of the same script | "
        f"{_spread(group['sync']['decision_vs_script'], 'x')} | "
        f"{_spread(group['async']['decision_vs_script'], 'x')} |"
    )
    lines.append(
        f"| decision / trivial EVALSHA (`return 1`) | "
        f"{_spread(group['sync']['decision_vs_trivial'], 'x')} | "
        f"{_spread(group['async']['decision_vs_trivial'], 'x')} |"
    )
    if group["sync"].get("floor_vs_trivial") is not None:
        lines.append(
            f"| floor script / trivial EVALSHA | "
            f"{_spread(group['sync']['floor_vs_trivial'], 'x')} | "
            f"{_spread(group['async']['floor_vs_trivial'], 'x')} |"
        )
    if len(group.get("vs_trivial", {})) > 1:
        lines += [
            "",
            "| sync decision, one key (library: algorithm) | µs per call | / trivial EVALSHA |",
            "|---|---:|---:|",
        ]
        for name, ratio in group["vs_trivial"].items():
            us = group["sync"]["us"]["decision" if name == RESILIO_ON_REDIS else name]
            lines.append(f"| {name} | {_spread(us)} | {_spread(ratio, 'x')} |")
    if group.get("anchors_unavailable"):
        missing = "; ".join(f"{k} ({v})" for k, v in group["anchors_unavailable"].items())
        lines += ["", f"Not compared on Redis: {missing}."]
    lines += ["", "| async throughput | per second |", "|---|---:|"]
    for label, rate in group["throughput"].items():
        lines.append(f"| {label} | {rate:,.0f} |")
    lines.append(f"| 100 tasks / 1 task (decisions) | {_spread(group['scaling'], 'x')} |")
    lines.append(
        f"| decisions / raw EVALSHA, both 100 tasks | {group['decisions_vs_raw_100']:.1f}x |"
    )
    if group.get("memory"):
        lines += ["", "| state of one limiter key on the server (30-character key) | bytes |",
                  "|---|---:|"]  # fmt: skip
        lines.extend(f"| {label} | {size:,} |" for label, size in group["memory"].items())
    return "\n".join(lines)


def markdown(document: dict[str, Any]) -> str:
    env, profile, groups = document["environment"], document["profile"], document["groups"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    missing = [k for k, v in env["versions"].items() if not v and k != "matplotlib"]
    parts = [
        "# Benchmarks",
        "",
        "resilio against the libraries people use for the same jobs, in one run on one machine"
        " and one workload. Figures are medians over every round of every worker process, with"
        " the quartiles (25th to 75th percentile) in brackets; ratios are computed within a round,"
        " between cases timed moments apart in the same process, then summarised the same way."
        " Absolute nanoseconds move between machines and runs; the ratios are the published"
        " result.",
        "",
        f"Generated by `benchmarks/run.py` ({profile['name']} profile, "
        f"{profile['processes']} worker processes x {profile['rounds']} rounds per timing group,"
        f" {profile['seconds']:.0f} s in all) on {env['date']}: {env['python']}, "
        f"{env['platform']}, {env['cpu']} ({env['cpus']} CPUs).",
        "",
        f"Versions: {versions}.",
    ]
    if missing:
        parts += ["", f"Not installed in this run: {', '.join(missing)}."]
    parts += ["", "![benchmark chart](benchmarks.png)", "", "## Targets", "",
              _targets_table(document)]  # fmt: skip
    analysis = HERE / "analysis.md"
    if analysis.exists():
        parts += ["", analysis.read_text("utf-8").strip()]
    if "overhead" in groups:
        parts += [
            "", "## Success path: retry, timeout, breaker, pipeline", "",
            "One call through a decorated function that returns its argument at once; nothing"
            " fails, no listener is registered. *Added* subtracts the plain call timed in the"
            " same round. Anchors are configured as close to resilio as their APIs allow: three"
            " attempts, retry on `OSError`; breakers that open after five failures.", "",
            "### Sync", "", _overhead_table(groups["overhead"], "sync"), "",
            "### Async (asyncio)", "", _overhead_table(groups["overhead"], "async"),
        ]  # fmt: skip
    if "reject" in groups:
        parts += [
            "", "## Reject path", "",
            "A call to a breaker that five failures opened (recovery time one hour); the timed"
            " loop catches the rejection error. Then a rejected limiter decision on an"
            " exhausted key. *\\/ resilio peer* divides by the matching resilio case.", "",
            _decision_table(groups["reject"], "breaker-open/"), "",
            _decision_table(groups["reject"], "reject/"),
        ]  # fmt: skip
    if "limiters" in groups:
        parts += [
            "", "## In-memory limiter decisions", "",
            "One admitted decision per call on one key, limits far above what the run"
            " consumes. Each anchor runs the algorithm that matches resilio's, on its own"
            " in-memory storage; it is compared with the resilio call that returns the same"
            " information: `allow()` (a bool) against the anchors that answer with a bool,"
            " `try_acquire()` (a `Decision` with remaining, retry_after and reset_after) against"
            " throttled-py's `RateLimitResult`; the exact sliding log against limits' moving"
            " window. Decision times are whole calls, nothing subtracted; *\\/ plain call*"
            " divides by a Python function of the same two arguments that returns `True`"
            " (an `async def` one for the async calls), timed in the same round. The leaky"
            " bucket admits at most one request per microsecond on one key, fewer than this"
            " loop asks for:"
            " `benchmarks/bench_limiters.py` times it on several keys. The *floor* rows are"
            " no limiter: a token bucket written in one function that only takes a lock,"
            " reads the clock and updates one dict entry (answering a bool, or a `Decision`),"
            " the least a thread-safe pure-Python decision costs on this machine; their"
            " */ resilio peer* is the floor's time over resilio's.", "",
            _decision_table(groups["limiters"], "allow/"),
        ]  # fmt: skip
    if "accuracy" in groups:
        parts += [
            "", "## Accuracy of blocking waits", "",
            "Four threads (sync) or four asyncio tasks (async) acquire from one key in a loop;"
            " the bucket holds one token, so every admission after the first waits. The"
            " admitted rate is (admissions - 1) / (last - first admission) against the"
            " configured rate: above 1 over-admits, below 1 wastes capacity.", "",
            _accuracy_table(groups["accuracy"]),
        ]  # fmt: skip
    if "memory" in groups:
        parts += [
            "", f"## Memory per key at {groups['memory']['keys']:,} keys", "",
            "One decision on each of that many distinct keys (limit 100 per minute), each"
            " library in a fresh process; tracemalloc counts what the limiter allocated"
            " (its state, its own key strings, containers), not the key strings passed in.", "",
            _memory_table(groups["memory"]),
        ]  # fmt: skip
    if "redis" in groups:
        meta = groups["redis"]["meta"]
        parts += [
            "", "## Redis", "",
            f"Redis {meta['redis_version']} on loopback ({meta['server']}), redis-py"
            f" {meta['redis_py']}. Sequential calls of the same client: PING, a trivial script,"
            " a floor script (it reads the server's clock and one key and writes the key back"
            " with a TTL, with no algorithm: the least a decision on server time costs),"
            " the limiter script called raw with exactly the keys and arguments a decision"
            " sends, and a `TokenBucket.try_acquire` on a `RedisStore` (server time). In the"
            " same rounds, the anchors' sync Redis decisions, each on a key of its own with a"
            " limit far above what the run consumes. Async"
            " throughput: decisions per second from concurrent tasks on one key.", "",
            _redis_tables(groups["redis"]),
        ]  # fmt: skip
    parts += [
        "", "## Reproduce", "",
        "```console",
        "$ nox -s bench                   # installs .[bench], runs everything, rewrites docs/",
        "$ nox -s bench -- --quick        # fewer processes and rounds",
        "$ nox -s bench -- --groups limiters,redis --out /tmp/bench",
        "$ REDIS_URL=redis://host:6379/0 nox -s bench -- --groups redis",
        "```",
        "",
        "The raw samples of every round are in [`benchmarks.json`](benchmarks.json). Use an"
        " idle machine for stable figures; ratios move less than nanoseconds between runs.",
        "",
        f"This run: `python benchmarks/run.py {' '.join(document['argv'])}`.",
        "",
    ]  # fmt: skip
    return "\n".join(parts)


# -- chart -------------------------------------------------------------------------------


def chart(document: dict[str, Any], path: Path) -> bool:
    """Draw the main comparisons into ``path``; return False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = document["groups"]
    panels: list[tuple[str, str, list[tuple[str, dict[str, float]]]]] = []
    overhead = groups.get("overhead", {}).get("rows", {})
    for strategy, title in (
        ("retry", "retry, sync: added ns"),
        ("breaker", "breaker, sync: added ns"),
    ):
        bars = [
            (row["library"], row["added_ns"])
            for name, row in overhead.items()
            if name.startswith(f"{strategy}/sync/") and "added_ns" in row
        ]
        if bars:
            panels.append((title, "ns added per call (log)", bars))
    limiter_rows = groups.get("limiters", {}).get("rows", {})
    bars = [
        (name.split("/", 2)[2].replace("resilio.", "resilio "), row["ns"])
        for name, row in limiter_rows.items()
        if name.startswith("allow/token-bucket/") and "ns" in row
    ]
    if bars:
        panels.append(("token bucket decision, in memory", "ns per decision (log)", bars))
    redis = groups.get("redis")
    if redis:
        bars = [
            (f"{n} ({m})", redis[m]["us"][n]) for m in ("sync", "async") for n in redis[m]["us"]
        ]
        panels.append(("Redis, per call", "µs per call", bars))
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), squeeze=False)
    for ax, (title, xlabel, data) in zip(axes[:, 0], panels, strict=True):
        labels = [label for label, _ in data]
        medians = [s["median"] for _, s in data]
        low = [max(0.0, s["median"] - s["p25"]) for _, s in data]
        high = [max(0.0, s["p75"] - s["median"]) for _, s in data]
        colours = ["tab:green" if label.startswith("resilio") else "tab:grey" for label in labels]
        ax.barh(labels, medians, xerr=[low, high], color=colours, capsize=3)
        ax.invert_yaxis()
        if "log" in xlabel and min(medians) > 0:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle(
        f"resilio vs anchors — {document['environment']['python']}, medians and quartiles",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
