"""Run the benchmark suite: `make bench` = `.venv/bin/python -m bench.run_all [--only A,B] [--quick]`.

Starts one local Kafka broker for the whole run (or uses $KAFKA_BOOTSTRAP_SERVERS), runs the scenarios in
order, each with its own simulator and bridge processes (all stopped when it ends, also on errors), prints a
results table (scenario, figure, value, target, pass/fail) and writes JSON: `bench/results/latest.json` for a
full run, `bench/results/partial.json.tmp` (git-ignored) for `--only` / `--quick` runs, or `--out PATH`.

Scenarios (docs/benchmarks.md explains each):
  mapping, gateway_sim          the component micro-benchmarks (bench/bench_mapping.py, bench_gateway_sim.py)
  throughput                    1. one bridge, 200k-event backlog, no rate limit, zero-latency simulator
  fast_single, fast_batch       1b. one bridge against the fast Go stand-in: single calls / batches of 20
  slow_gateway                  CPU per event at 30 ms gateway latency vs 0 ms (stand-in)
  peers                         a naive script and Benthos next to the bridge, same job, same stand-in
  scale_out                     2. two bridges in one consumer group
  latency                       3. event-to-delivery at 50 % of (1)'s throughput
  rate                          4. 200/s, 1,000/s and 5,000/s held for 60 s each (stand-in)
  memory                        5. 1M-event backlog, 100 ms gateway latency, RSS over 90 s
  drain                         6. SIGTERM under load, restart, nothing lost
  metrics_overhead              7. (1) with metrics on vs off
  shared_quota                  8. three bridges sharing 300/s through Redis for 60 s
  failover                      9. kill -9 and restart: seconds until partitions are held again (static vs dynamic)
  crash                         10. 10 × kill -9 during a 20k-event backlog with 20 % transient failures
  outage                        a 120 s gateway outage under a 100/s stream, circuit on vs off
  profile                       py-spy profile of one bridge at full load (skipped without py-spy)

Exit status: 0 when every scenario ran (whatever the figures), 1 if one failed to run, 2 on bad arguments;
with --strict also 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Row, ScenarioResult, broker, log, machine, save_json, system_cpu
from bench.crash import scenario_crash
from bench.drain import scenario_drain
from bench.failover import scenario_failover
from bench.fast import scenario_fast_batch, scenario_fast_single, scenario_peers, scenario_slow_gateway
from bench.hotspots import py_spy, scenario_profile
from bench.latency import scenario_latency
from bench.memory import scenario_memory
from bench.metrics_overhead import scenario_metrics_overhead
from bench.micro import scenario_gateway_sim, scenario_mapping
from bench.outage import scenario_outage
from bench.rate import scenario_rate
from bench.shared_quota import scenario_shared_quota
from bench.throughput import scenario_scale_out, scenario_throughput

Scenario = Callable[[bool, int, dict[str, Any]], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "mapping": scenario_mapping,
    "gateway_sim": scenario_gateway_sim,
    "throughput": scenario_throughput,
    "fast_single": scenario_fast_single,
    "fast_batch": scenario_fast_batch,
    "slow_gateway": scenario_slow_gateway,
    "peers": scenario_peers,
    "scale_out": scenario_scale_out,
    "latency": scenario_latency,
    "rate": scenario_rate,
    "memory": scenario_memory,
    "drain": scenario_drain,
    "metrics_overhead": scenario_metrics_overhead,
    "shared_quota": scenario_shared_quota,
    "failover": scenario_failover,
    "crash": scenario_crash,
    "outage": scenario_outage,
    "profile": scenario_profile,
}
NEEDS_BROKER = frozenset(SCENARIOS) - {"mapping", "gateway_sim"}
# Scenarios that are repeated (`--repeat`, default 3); the others run once (they take minutes each).
REPEATED = frozenset(
    {"throughput", "fast_single", "fast_batch", "slow_gateway", "peers"}
    | {"scale_out", "latency", "drain", "metrics_overhead"}
)


def table(rows: list[Row]) -> str:
    """The results as a fixed-width text table."""
    head = ("scenario", "figure", "value", "target", "result")
    body = [
        (
            r.scenario,
            r.figure,
            r.shown(),
            r.target,
            "" if r.passed is None else ("PASS" if r.passed else "FAIL"),
        )
        for r in rows
    ]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
    for b in body:
        out.append("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)))
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    """The results as a Markdown table (for docs/benchmarks.md)."""
    out = ["| scenario | figure | value | target | result |", "|---|---|---|---|---|"]
    for r in rows:
        result = "" if r.passed is None else ("pass" if r.passed else "**FAIL**")
        out.append(f"| {r.scenario} | {r.figure} | {r.shown()} | {r.target} | {result} |")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description="campus-bridge benchmark suite")
    p.add_argument("--only", help=f"comma-separated scenarios (default all): {', '.join(SCENARIOS)}")
    p.add_argument("--skip", help="comma-separated scenarios to leave out")
    p.add_argument("--quick", action="store_true", help="small sizes and one repetition: a smoke run")
    p.add_argument("--repeat", type=int, help="repetitions of the fast scenarios (default 3, 1 with --quick)")
    p.add_argument("--out", type=Path, help="where to write the JSON results")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios; print the table; write the JSON."""
    args = parse_args(argv)
    names = list(SCENARIOS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.skip:
        skip = {n.strip() for n in args.skip.split(",")}
        names = [n for n in names if n not in skip]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    repeat = args.repeat or (1 if args.quick else 3)
    partial = bool(args.only or args.skip or args.quick or args.repeat)
    out = args.out or (RESULTS_DIR / ("partial.json.tmp" if partial else "latest.json"))

    started = time.time()
    info = machine()
    log(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['load_average_at_start']}")
    results: list[ScenarioResult] = []
    ctx: dict[str, Any] = {}

    def run(name: str) -> None:
        reps = repeat if name in REPEATED else 1
        busy0, steal0, _ = system_cpu()
        t0 = time.monotonic()
        try:
            if name == "profile" and py_spy() is None:
                res = ScenarioResult(name)
                res.row("skipped: py-spy not installed (.venv/bin/pip install py-spy)", None, "")
            else:
                res = SCENARIOS[name](args.quick, reps, ctx)
        except Exception as exc:  # one broken scenario must not hide the others' results
            log(f"{name}: FAILED: {exc}")
            res = ScenarioResult(name, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")
            res.row("did not complete (see JSON 'error')", None, "", "runs", False)
        elapsed = time.monotonic() - t0
        busy1, steal1, _ = system_cpu()
        res.details["_run"] = {
            "seconds": round(elapsed, 1),
            "repetitions": reps,
            "machine_busy_cores_avg": round((busy1 - busy0) / elapsed, 2) if elapsed else None,
            "machine_steal_cores_avg": round((steal1 - steal0) / elapsed, 2) if elapsed else None,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        results.append(res)

    if any(n in NEEDS_BROKER for n in names):
        with broker():
            for name in names:
                run(name)
    else:
        for name in names:
            run(name)

    rows = [r for res in results for r in res.rows]
    print()
    print(table(rows))
    print()
    data = {
        "suite": "campus-bridge bench",
        "machine": info,
        "options": {"only": names, "quick": args.quick, "repeat": repeat},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_seconds": round(time.time() - started, 1),
        "table_markdown": markdown(rows),
        "scenarios": [r.to_dict() for r in results],
    }
    save_json(out, data)
    print(f"results: {out}")
    if any(r.error for r in results):
        return 1
    if args.strict and any(r.passed is False for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
