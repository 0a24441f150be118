"""The demo in examples/ runs end to end and shows resilio beating the bare client."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


@pytest.fixture(scope="module")
def report() -> str:
    completed = subprocess.run(
        [sys.executable, str(DEMO), "--duration", "6", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed.stdout


@pytest.mark.slow
def test_live_report_has_a_line_per_second(report: str) -> None:
    assert "with resilio: ok/calls" in report
    seconds = re.findall(r"^\s*(\d+)\.0s \|", report, flags=re.MULTILINE)
    assert [int(s) for s in seconds[:6]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_breaker_opens_half_opens_and_closes(report: str) -> None:
    transitions = re.search(r"^Breaker transitions: (.*)$", report, flags=re.MULTILINE)
    assert transitions is not None
    steps = transitions.group(1)
    assert "closed->open" in steps
    assert "open->half_open" in steps
    assert steps.endswith("half_open->closed")


@pytest.mark.slow
def test_summary_has_both_sides(report: str) -> None:
    assert "== Summary:" in report
    assert re.search(r"^with resilio\s+240\s", report, flags=re.MULTILINE)
    assert re.search(r"^without resilio\s+240\s", report, flags=re.MULTILINE)
    for column in ("timeout", "5xx", "circuit open", "rate limited", "transport", "requests sent"):
        assert column in report


@pytest.mark.slow
def test_resilio_succeeds_more_often_than_the_bare_client(report: str) -> None:
    rates = re.search(
        r"^Success rate: with resilio ([\d.]+)%, without resilio ([\d.]+)%",
        report,
        flags=re.MULTILINE,
    )
    assert rates is not None, report
    with_resilio, without = float(rates.group(1)), float(rates.group(2))
    assert with_resilio > without, report


@pytest.mark.slow
def test_report_shows_what_the_client_side_limiter_did(report: str) -> None:
    assert "limiter delayed/rejected" in report  # the live column
    line = re.search(
        r"^Client-side limiter \([\d.]+/s, burst \d+\): delayed (\d+) attempts for [\d.]+ s"
        r" in all, rejected (\d+)",
        report,
        flags=re.MULTILINE,
    )
    assert line is not None, report
    # The retries after the outage come in a burst that the limiter has to pace.
    assert int(line.group(1)) > 0, report
