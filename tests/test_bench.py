"""Smoke test of the benchmark: ``python -m bench`` with tiny sizes and one
round prints the results table and every target's verdict. Speed is never
asserted here: the figures of a tiny run mean nothing."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow

TINY = [
    "--rounds", "1",
    "--loop-count", "20",
    "--sync-count", "200",
    "--one-count", "20",
    "--chunked-count", "2000",
    "--publish-count", "50",
    "--api-seconds", "0.5",
    "--latency-requests", "5",
    "--memory-count", "3000",
    "--small-jobs", "30",  # the workers' CPU is read in 10 ms clock ticks: 4 cheap jobs could read 0
    "--depth-followers", "300",
    "--depth-requests", "2",
    "--prefix", "bench_smoke",
]  # fmt: skip


def test_bench_prints_the_table_with_ratios():
    # The bench names its own databases and queues: drop the tests' overrides.
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "QUEUE_NAME")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", *TINY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| workload | size | unit | median | min–max | rounds |" in out
    rows = ["(a) original's loop", "(b) Peewee insert_many", "(c) COPY", "(1) service: sync",
            "(1s) the statements of (1) alone", "(d) pika",
            "(2) service: async, 1 follower", "(f) bare Dramatiq", "(3) service: async, default chunking",
            "(e) pika publish", "(4) service: p99 latency, async count=10, under load", "(4) service: p99",
            "(4) service: 1-follower async jobs, POST → all done",
            "(4) service: 1-follower async jobs, intake only", "(4) service: worker CPU per 1-follower job",
            "(4) bound: ", "(6) service: a page of 100 at depth 0, by offset",
            "(6) service: a page of 100 at depth 200, by cursor", "(5) service: peak RSS"]  # fmt: skip
    for row in rows:
        assert row in out
    verdicts = [line for line in out.splitlines() if line.endswith(("| PASS |", "| MISS |"))]
    assert len(verdicts) == 10, out
    assert all("×" in line for line in verdicts if "≥" in line)
    reported = [line for line in out.splitlines() if line.endswith("| reported |")]
    assert len(reported) == 4 and all("×" in line for line in reported), out
    # Progress goes to stderr, round by round.
    assert "round 1/1" in result.stderr
