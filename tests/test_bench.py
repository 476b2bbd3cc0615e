"""The benchmarks still run end to end (tiny sizes; the numbers are not checked here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PARLEY_"))}
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def test_slack_bench_runs() -> None:
    out = run_bench("bench/slack_actions.py", "--actions", "30", "--rounds", "1")
    assert re.search(r"ratio, median of 1 rounds: \d+\.\d\d by wall clock", out), out


def test_web_bench_runs_and_stores_every_answer() -> None:
    out = run_bench(
        "bench/web_api.py",
        "--respondents",
        "20",
        "--concurrency",
        "5",
        "--warmup",
        "2",
        "--rounds",
        "1",
    )
    assert "parley stored 44 answers (expected 44)" in out, out
    # each row ends with the server's CPU per request, a number (not nan) on Linux
    assert re.search(r"^parley 1 .* \d+$", out, re.M), out
    assert re.search(r"ratio parley/floor answers/s = \d+\.\d\d", out), out
