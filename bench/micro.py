"""The component micro-benchmarks, run as they are: `bench/bench_mapping.py` and `bench/bench_gateway_sim.py`.

Each prints its own table and one JSON line (`{"bench": ...}`); the runner keeps the JSON and puts the headline
figures in the results table. A missing script is reported as skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.common import ROOT, ScenarioResult, log


def _run(script: str, args: list[str], timeout: float) -> dict[str, Any] | None:
    path = ROOT / "bench" / script
    if not path.exists():
        return None
    r = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    sys.stderr.write(r.stdout)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith('{"bench"'):
            data: dict[str, Any] = json.loads(line)
            data["exit_status"] = r.returncode
            return data
    raise RuntimeError(f"{script} exited {r.returncode} without its JSON line:\n{r.stderr[-2000:]}")


def scenario_mapping(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """bench/bench_mapping.py: the shipped rules over the sample events, per core."""
    res = ScenarioResult("mapping")
    log("mapping: bench/bench_mapping.py")
    args = ["--rounds", "2", "--events", "20000"] if quick else ["--rounds", "5"]
    data = _run("bench_mapping.py", args, timeout=600)
    if data is None:
        res.row("skipped: bench/bench_mapping.py not found", None, "")
        return res
    res.details = data
    eps = data.get("events_per_s_per_core_median")
    target = data.get("target_events_per_s")
    res.row(
        "shipped rules, events/s per core",
        eps,
        "ev/s",
        f">= {target:,}" if target else "",
        (eps >= target) if (eps is not None and target) else None,
    )
    res.row("mapping CPU per event", data.get("us_per_event_median"), "µs")
    return res


def scenario_gateway_sim(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """bench/bench_gateway_sim.py: simulator capacity and the TopClient's CPU per request."""
    res = ScenarioResult("gateway_sim")
    log("gateway_sim: bench/bench_gateway_sim.py")
    args = ["--runs", "1", "--seconds", "3", "--client-requests", "5000"] if quick else []
    data = _run("bench_gateway_sim.py", args, timeout=900)
    if data is None:
        res.row("skipped: bench/bench_gateway_sim.py not found", None, "")
        return res
    res.details = data
    res.row(f"simulator req/s, one core ({data.get('generator')})", data.get("sim_rps_median"), "req/s")
    res.row("TopClient CPU per request", data.get("client_cpu_us_per_request"), "µs")
    return res
