"""`python -m bench.bench_client` runs end to end (tiny sizes) and prints its figures. It asserts that figures are
produced for every mode and latency asked for, not how fast they are: speed is reported by the bench itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_client_smoke_run_prints_a_row_per_mode_and_latency() -> None:
    argv = ["--messages", "300", "--in-flight", "8", "--batch", "5", "--latency-ms", "0,5", "--runs", "1"]
    r = subprocess.run(
        [sys.executable, "-m", "bench.bench_client", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["bench"] == "client"
    assert [(row["latency_ms"], row["batch"]) for row in result["rows"]] == [(0.0, 1), (0.0, 5), (5.0, 1), (5.0, 5)]
    assert all(row["cpu_us_per_message"] > 0 and row["messages_per_second"] > 0 for row in result["rows"])
    assert "CPU µs/message" in r.stdout
