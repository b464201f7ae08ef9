"""Scenario 7: what the Prometheus metrics cost — scenario 1 with `metrics.enabled` true vs false.

`metrics: {enabled: false}` turns every collector into a no-op (bridge/metrics.py) and the status server is not
started. Runs alternate (off, on), (on, off), ... so slow drifts of the shared machine hit both sides alike.
Reported: the median bridge CPU-µs per event of each side, and the overhead = (on − off) / off, from the
medians, the median of the per-pair overheads, and normalised by the simulator's CPU per request (the simulator
does the same work in both arms, so bridge-µs / simulator-µs cancels how busy the shared machine was during each
run). Target < 5 %. Nobody scrapes /metrics during the window (a scrape every 15 s costs nothing per event).
"""

from __future__ import annotations

from typing import Any

from bench.common import ScenarioResult, log, median
from bench.throughput import EVENTS, QUICK_EVENTS, run_single

TARGET_PCT = 5.0


def scenario_metrics_overhead(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 7: `repeat` pairs of runs."""
    res = ScenarioResult("metrics_overhead")
    n = QUICK_EVENTS if quick else EVENTS
    pairs: list[dict[str, Any]] = []
    for i in range(repeat):
        order = (False, True) if i % 2 == 0 else (True, False)
        pair: dict[str, Any] = {}
        for enabled in order:
            log(f"metrics_overhead: pair {i + 1}/{repeat}, metrics {'on' if enabled else 'off'}, {n:,} events")
            r = run_single(n, metrics=enabled)
            log(f"metrics_overhead: {r['cpu_us_per_event']:.0f} µs CPU/event, {r['events_per_s']:,.0f} events/s")
            pair["on" if enabled else "off"] = r
        pair["overhead_pct"] = round((pair["on"]["cpu_us_per_event"] / pair["off"]["cpu_us_per_event"] - 1) * 100, 2)
        pairs.append(pair)
    off = median([p["off"]["cpu_us_per_event"] for p in pairs])
    on = median([p["on"]["cpu_us_per_event"] for p in pairs])
    pct = (on / off - 1) * 100
    pair_pct = median([p["overhead_pct"] for p in pairs])
    # Contention control: the simulator does exactly the same work per request in both arms, so its CPU per
    # request tracks how fast the shared machine was during each run. bridge µs / simulator µs cancels that.
    ratio_off = median([p["off"]["cpu_us_per_event"] / p["off"]["sim_cpu_us_per_request"] for p in pairs])
    ratio_on = median([p["on"]["cpu_us_per_event"] / p["on"]["sim_cpu_us_per_request"] for p in pairs])
    norm_pct = (ratio_on / ratio_off - 1) * 100
    res.details = {
        "events": n,
        "pairs": pairs,
        "overhead_pct_of_medians": round(pct, 2),
        "bridge_per_sim_cpu_ratio_off_on": [round(ratio_off, 3), round(ratio_on, 3)],
        "overhead_pct_normalised_by_simulator": round(norm_pct, 2),
    }
    res.row("CPU per event, metrics off (median)", off, "µs")
    res.row("CPU per event, metrics on (median)", on, "µs")
    res.row("metrics overhead (of medians)", pct, "%", f"< {TARGET_PCT:g} %", pct < TARGET_PCT)
    res.row("metrics overhead (median of pairs)", pair_pct, "%", f"< {TARGET_PCT:g} %", pair_pct < TARGET_PCT)
    res.row(
        "metrics overhead, normalised by simulator CPU/request",
        norm_pct,
        "%",
        f"< {TARGET_PCT:g} %",
        norm_pct < TARGET_PCT,
    )
    res.row(
        "events/s off / on (median)",
        median([p["off"]["events_per_s"] for p in pairs]),
        f"/ {median([p['on']['events_per_s'] for p in pairs]):,.0f} ev/s",
    )
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "metrics_overhead", *sys.argv[1:]]))
