"""Scenarios 1 and 2: how fast the bridge empties a backlog with no rate limit and a zero-latency simulator.

1. `throughput`: N events pre-produced on a 4-partition topic, then ONE bridge starts (auto_offset_reset
   earliest). The window opens at the simulator's first accepted message and closes when it has accepted all
   N; events/s over the window and the bridge's CPU (utime+stime from /proc) per event.
2. `scale_out`: TWO bridges in one consumer group. Both join the empty topic first and hold 2 partitions each
   (so no rebalance is measured); then N events are produced and the window runs from the end of production
   to the last accepted message. Total events/s, and both bridges' CPU per event.

`python -m bench.throughput [--quick] [--only throughput|scale_out]` runs them alone.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import (
    ScenarioResult,
    World,
    log,
    measure_window,
    median,
    produce_backlog,
    rss_bytes,
)

EVENTS = 200_000
QUICK_EVENTS = 20_000
MAX_IN_FLIGHT = 256
TARGET_EPS = 5_000
TARGET_CPU_US = 200
TARGET_EPS_TWO = 8_000


def run_single(events: int, *, metrics: bool = True, max_in_flight: int = MAX_IN_FLIGHT) -> dict[str, Any]:
    """One bridge through a pre-produced backlog; the window's figures."""
    with World("throughput") as world:
        produced_s = produce_backlog(world.bootstrap, world.topic, world.partitions, events)
        cfg = world.config(max_in_flight=max_in_flight, metrics=metrics)
        started = time.monotonic()
        bridge = world.start_bridge(cfg)
        pid = bridge.popen.pid
        win = measure_window(world, [pid], events)
        committed = world.committed_to_end(timeout=30)
        out = {
            "events": events,
            "metrics_enabled": metrics,
            "max_in_flight": max_in_flight,
            "produce_seconds": round(produced_s, 2),
            "startup_to_first_delivery_seconds": None,
            "window_events": win.events,
            "window_seconds": round(win.seconds, 3),
            "events_per_s": round(win.events_per_s, 1),
            "cpu_seconds": round(sum(win.cpu_seconds.values()), 3),
            "cpu_us_per_event": round(win.cpu_us_per_event, 1),
            "sim_cpu_us_per_request": round(win.sim_cpu_seconds / win.events * 1e6, 1),
            "cpu_cores_during_window": win.load(),
            "bridge_rss_mib_at_end": round(rss_bytes(pid) / 2**20, 1),
            "committed_to_end": committed,
            "duplicates": int(world.sim_stats()["duplicates"]),
        }
        out["startup_to_first_delivery_seconds"] = round(time.monotonic() - started - win.seconds, 2)
        return out


def run_pair(events: int, *, max_in_flight: int = MAX_IN_FLIGHT) -> dict[str, Any]:
    """Two bridges in one group, joined before the events are produced."""
    with World("scaleout") as world:
        cfg = world.config(max_in_flight=max_in_flight)
        bridges = [world.start_bridge(cfg, name=f"bridge-{i}") for i in range(2)]
        deadline = time.monotonic() + 90
        while True:
            world.check_alive()
            held = [b.metrics().get("bridge_assigned_partitions", 0) for b in bridges]
            ready = [b.ready()[0] == 200 for b in bridges]
            if all(ready) and held == [2, 2]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"two bridges did not settle on 2+2 partitions (held {held})")
            time.sleep(0.2)
        pids = [b.popen.pid for b in bridges]
        produced_s = produce_backlog(world.bootstrap, world.topic, world.partitions, events)
        win = measure_window(world, pids, events, start_when=lambda accepted: True)
        committed = world.committed_to_end(timeout=30)
        return {
            "events": events,
            "produce_seconds": round(produced_s, 2),
            "accepted_while_producing": win.accepted_before,
            "window_events": win.events,
            "window_seconds": round(win.seconds, 3),
            "events_per_s": round(win.events_per_s, 1),
            "cpu_us_per_event_both": round(win.cpu_us_per_event, 1),
            "cpu_seconds_per_bridge": [round(v, 2) for v in win.cpu_seconds.values()],
            "sim_cpu_us_per_request": round(win.sim_cpu_seconds / win.events * 1e6, 1),
            "cpu_cores_during_window": win.load(),
            "committed_to_end": committed,
            "duplicates": int(world.sim_stats()["duplicates"]),
        }


def scenario_throughput(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 1, repeated; medians in the table."""
    res = ScenarioResult("throughput")
    n = QUICK_EVENTS if quick else EVENTS
    runs = []
    for i in range(repeat):
        log(f"throughput: run {i + 1}/{repeat}, {n:,} events, one bridge")
        r = run_single(n)
        log(f"throughput: {r['events_per_s']:,.0f} events/s, {r['cpu_us_per_event']:.0f} µs CPU/event")
        runs.append(r)
    eps = median([r["events_per_s"] for r in runs])
    cpu = median([r["cpu_us_per_event"] for r in runs])
    ctx["throughput_eps"] = eps
    res.details = {"events": n, "max_in_flight": MAX_IN_FLIGHT, "runs": runs}
    res.row("events/s, 1 bridge (median)", eps, "ev/s", f">= {TARGET_EPS:,}", eps >= TARGET_EPS)
    res.row("bridge CPU per event (median)", cpu, "µs", f"<= {TARGET_CPU_US}", cpu <= TARGET_CPU_US)
    res.row("simulator CPU per request (median, context)", median([r["sim_cpu_us_per_request"] for r in runs]), "µs")
    res.row(
        "machine busy during window (median, of 2 cores)",
        median([r["cpu_cores_during_window"]["machine_busy_cores"] for r in runs]),
        "cores",
    )
    res.row(
        "committed to end / duplicates",
        sum(r["duplicates"] for r in runs),
        "dup",
        "all committed",
        all(r["committed_to_end"] for r in runs),
    )
    return res


def scenario_scale_out(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 2, repeated; medians in the table."""
    res = ScenarioResult("scale_out")
    n = QUICK_EVENTS if quick else EVENTS
    runs = []
    for i in range(repeat):
        log(f"scale_out: run {i + 1}/{repeat}, {n:,} events, two bridges in one group")
        r = run_pair(n)
        log(f"scale_out: {r['events_per_s']:,.0f} events/s total")
        runs.append(r)
    eps = median([r["events_per_s"] for r in runs])
    res.details = {"events": n, "max_in_flight_each": MAX_IN_FLIGHT, "runs": runs}
    res.row("events/s, 2 bridges (median)", eps, "ev/s", f">= {TARGET_EPS_TWO:,}", eps >= TARGET_EPS_TWO)
    res.row("CPU per event, both bridges (median)", median([r["cpu_us_per_event_both"] for r in runs]), "µs")
    res.row(
        "machine busy during window (median, of 2 cores)",
        median([r["cpu_cores_during_window"]["machine_busy_cores"] for r in runs]),
        "cores",
    )
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "throughput,scale_out", *sys.argv[1:]]))
