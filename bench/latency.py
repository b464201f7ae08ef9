"""Scenario 3: the latency the bridge adds — event-to-delivery at 50 % of the measured throughput.

One bridge is started and ready (holding the 4 partitions) before anything is produced. Then the runner
produces events at half of scenario 1's median throughput for ~30 s, each record stamped with its send time
(Kafka CreateTime, ms). The rule leaves `event_time_millis` to its default — the record timestamp — so every
accepted message carries its produce time; the simulator records when it first received it. Latency =
first_received − event_time_millis, over the events produced after a 2-second warm-up. It covers the
produce request, the broker, the consumer fetch, mapping, signing and the HTTP call (the simulator answers at
once). Resolution: the producer stamps whole milliseconds (truncated), so figures are up to 1 ms high.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.common import (
    RESULTS_DIR,
    ScenarioResult,
    World,
    cpu_seconds,
    log,
    median,
    percentile,
    produce_paced,
    system_cpu,
    wait_accepted,
)

SECONDS = 30
QUICK_SECONDS = 8
WARMUP_SECONDS = 2
DEFAULT_RATE = 1_000  # when scenario 1 did not run in this invocation and no earlier result exists
TARGET_P50_MS = 5
TARGET_P99_MS = 25


def _rate(ctx: dict[str, Any]) -> tuple[float, str]:
    """50 % of scenario 1's throughput: from this run, else from bench/results/latest.json, else a default."""
    if "throughput_eps" in ctx:
        return ctx["throughput_eps"] / 2, "this run's scenario 1"
    latest = RESULTS_DIR / "latest.json"
    try:
        data = json.loads(latest.read_text())
        for sc in data["scenarios"]:
            if sc["name"] == "throughput":
                return float(sc["rows"][0]["value"]) / 2, "scenario 1 of bench/results/latest.json"
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        pass
    return DEFAULT_RATE / 2, "default (scenario 1 not run)"


def run_once(rate: float, seconds: float) -> dict[str, Any]:
    """Produce at `rate` for `seconds + warm-up` into a ready bridge; latency percentiles in ms."""
    with World("latency") as world:
        bridge = world.start_bridge(world.config())
        world.stack.wait_bridge(bridge, world.partitions, timeout=90)
        pid = bridge.popen.pid
        t_start_ms = time.time_ns() // 1_000_000
        cpu0, sim0, sys0, runner0 = cpu_seconds(pid), cpu_seconds(world.sim_pid), system_cpu(), time.process_time()
        sent, took = produce_paced(
            world.bootstrap, world.topic, world.partitions, rate=rate, seconds=seconds + WARMUP_SECONDS
        )
        cpu1, sim1, sys1, runner1 = cpu_seconds(pid), cpu_seconds(world.sim_pid), system_cpu(), time.process_time()
        got = wait_accepted(world, sent, timeout=120)
        if got < sent:
            raise RuntimeError(f"only {got}/{sent} messages accepted")
        messages = world.sim_messages()
        cutoff = t_start_ms + WARMUP_SECONDS * 1000
        lat = sorted(
            m["first_received"] * 1000 - m["message"]["event_time_millis"]
            for m in messages
            if m["message"]["event_time_millis"] >= cutoff
        )
        return {
            "rate_target": round(rate, 1),
            "rate_produced": round(sent / took, 1),
            "events": sent,
            "measured_events": len(lat),
            "p50_ms": round(percentile(lat, 50), 2),
            "p90_ms": round(percentile(lat, 90), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "p999_ms": round(percentile(lat, 99.9), 2),
            "max_ms": round(lat[-1], 2),
            "min_ms": round(lat[0], 2),
            "bridge_cpu_us_per_event": round((cpu1 - cpu0) / sent * 1e6, 1),
            "cpu_cores_while_producing": {
                "bridge": round((cpu1 - cpu0) / took, 2),
                "simulator": round((sim1 - sim0) / took, 2),
                "runner_producer": round((runner1 - runner0) / took, 2),
                "machine_busy": round((sys1[0] - sys0[0]) / took, 2),
            },
        }


def scenario_latency(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 3, repeated; medians of the per-run percentiles."""
    res = ScenarioResult("latency")
    rate, source = _rate(ctx)
    seconds = QUICK_SECONDS if quick else SECONDS
    runs = []
    for i in range(repeat):
        log(f"latency: run {i + 1}/{repeat}, {rate:,.0f} events/s for {seconds + WARMUP_SECONDS} s")
        r = run_once(rate, seconds)
        log(f"latency: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        runs.append(r)
    p50 = median([r["p50_ms"] for r in runs])
    p99 = median([r["p99_ms"] for r in runs])
    res.details = {"rate": round(rate, 1), "rate_source": source, "seconds": seconds, "runs": runs}
    res.row(f"rate produced (50 % of (1), {source})", median([r["rate_produced"] for r in runs]), "ev/s")
    res.row("event-to-delivery p50 (median of runs)", p50, "ms", f"<= {TARGET_P50_MS}", p50 <= TARGET_P50_MS)
    res.row("event-to-delivery p99 (median of runs)", p99, "ms", f"<= {TARGET_P99_MS}", p99 <= TARGET_P99_MS)
    res.row("bridge CPU per event at this rate (median)", median([r["bridge_cpu_us_per_event"] for r in runs]), "µs")
    # Context, not a target: the same at a quarter of (1)'s throughput, once.
    log(f"latency: one more run at {rate / 2:,.0f} events/s (25 % of (1)) for context")
    quarter = run_once(rate / 2, seconds)
    res.details["quarter_rate_run"] = quarter
    label = f"at 25 % ({quarter['rate_produced']:,.0f} ev/s): p50 / p99"
    res.row(label, quarter["p50_ms"], f"/ {quarter['p99_ms']:,.1f} ms")
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "latency", *sys.argv[1:]]))
