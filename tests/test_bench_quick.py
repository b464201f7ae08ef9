"""The benchmark suite runs end to end (quick sizes). It asserts that figures are produced, not how fast they are:
speed is reported by `make bench`, never judged by a timed test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_suite_smoke_run_produces_figures_for_each_scenario(tmp_path: Path, kafka_bootstrap: str) -> None:
    out = tmp_path / "bench.json"
    only = "mapping,throughput,drain,crash,fast_single"
    r = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--only", only, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    results = json.loads(out.read_text())
    names = {s["name"] for s in results["scenarios"]}
    assert {"mapping", "throughput", "drain", "crash", "fast_single"} <= names
    for scenario in results["scenarios"]:
        assert scenario["rows"], scenario["name"]
    assert "scenario" in r.stdout and "result" in r.stdout  # the table is printed
