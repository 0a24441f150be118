"""The degradation experiment in examples/ runs and shows resilio degrading gracefully."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "degradation.py"


def run(*args: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
def report() -> str:
    return run("--calls", "150", "--seed", "7", "--no-plot")


def _row(report: str, label: str) -> list[str]:
    match = re.search(rf"^{label}\s+(.*)$", report, flags=re.MULTILINE)
    assert match is not None, report
    return match.group(1).split()


@pytest.mark.slow
def test_both_sides_make_every_call(report: str) -> None:
    assert "30% injected faults" in report
    for label in ("without resilio", "with resilio"):
        calls, live, fallback, failed = (int(x) for x in _row(report, label)[:4])
        assert calls == 150
        assert live + fallback + failed == 150


@pytest.mark.slow
def test_faults_really_were_injected_on_the_bare_side(report: str) -> None:
    success = float(_row(report, "without resilio")[4].rstrip("%"))
    assert 55.0 < success < 85.0  # about 70 % of requests get through untouched


@pytest.mark.slow
def test_resilio_serves_more_calls_and_cuts_the_tail(report: str) -> None:
    rates = re.search(
        r"^Success rate: with resilio ([\d.]+)%, without resilio ([\d.]+)%; "
        r"served with fallback ([\d.]+)%",
        report,
        flags=re.MULTILINE,
    )
    assert rates is not None, report
    ours, theirs, served = (float(x) for x in rates.groups())
    assert ours > theirs + 15
    assert served >= 99.0
    tail = re.search(r"^p99 latency: with resilio (\d+) ms, without resilio (\d+) ms", report, re.M)
    assert tail is not None, report
    assert int(tail.group(1)) < int(tail.group(2))


@pytest.mark.slow
def test_writes_the_plot(tmp_path: Path) -> None:
    # matplotlib is in the test extra: a missing one fails here, it does not skip.
    target = tmp_path / "plots" / "degradation.png"
    output = run("--calls", "20", "--plot", str(target))
    assert f"Plot written to {target}" in output
    assert target.read_bytes().startswith(b"\x89PNG")


def test_rejects_bad_arguments() -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--calls", "3"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert "--calls must be between" in completed.stderr
