"""The benchmark harness runs end to end in its tiny mode, so it cannot rot.

No timing is asserted: only that every group produces figures and the report
is written. Anchor libraries are not needed (``--no-anchors``); the Redis group
needs a redis-server, like the Redis tests (from PATH or the bundled one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


def test_harness_writes_every_group(tmp_path: Path) -> None:
    from tests.redis.servers import find_redis_server

    find_redis_server()  # no Redis to be had fails here, saying how to get one
    groups = "overhead,reject,limiters,accuracy,memory,redis"
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--no-anchors", "--groups", groups,
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "benchmarks.json").read_text())
    assert set(document["groups"]) == set(groups.split(","))
    assert document["profile"]["anchors"] is False
    rows = document["groups"]["overhead"]["rows"]
    assert rows["retry/sync/resilio"]["added_ns"]["n"] == 2
    assert "ns" in document["groups"]["limiters"]["rows"]["allow/token-bucket/resilio.allow"]
    assert document["groups"]["memory"]["cases"]["token-bucket/resilio"]["bytes_per_key"] > 0
    accuracy = document["groups"]["accuracy"]["rows"]["resilio/sync"]
    assert accuracy["ratio"]["n"] == 1
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "## Targets" in markdown
    assert "## Success path" in markdown
    assert "resilio allow (thread-safe), ns per call" in markdown
    assert "100 concurrent tasks / 1 task" in markdown
    assert (tmp_path / "benchmarks.png").stat().st_size > 0  # the test extra has matplotlib


def test_unknown_group_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--groups", "nope", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "unknown groups: nope" in done.stderr


@pytest.mark.parametrize("module", ["cases", "limiters", "redis_bench", "report", "harness"])
def test_benchmark_modules_import(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT / "benchmarks",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
