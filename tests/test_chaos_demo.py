"""The demo's --chaos mode injects faults on both sides, and resilio still wins."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


@pytest.mark.slow
def test_chaos_mode_injects_faults_and_resilio_still_wins() -> None:
    completed = subprocess.run(
        [sys.executable, str(DEMO), "--duration", "3", "--seed", "7", "--chaos"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = completed.stdout
    assert "Chaos on both sides:" in report
    events = re.search(r"^Events heard by resilio\.add_listener: (.*)$", report, re.MULTILINE)
    assert events is not None, report
    heard = {
        kind: int(count) for kind, count in (item.split() for item in events.group(1).split(", "))
    }
    assert heard.get("chaos_fault", 0) > 0
    assert heard.get("chaos_outcome", 0) > 0
    assert heard.get("chaos_latency", 0) > 0
    rates = re.search(
        r"^Success rate: with resilio ([\d.]+)%, without resilio ([\d.]+)%", report, re.MULTILINE
    )
    assert rates is not None, report
    assert float(rates.group(1)) > float(rates.group(2))


def test_chaos_is_an_option() -> None:
    completed = subprocess.run(
        [sys.executable, str(DEMO), "--help"], capture_output=True, text=True, check=True
    )
    assert "--chaos" in completed.stdout
    assert "resilio.chaos" in completed.stdout
