"""Scenario 5: memory with a huge backlog — 1,000,000 events, 100 ms gateway latency, ~90 s of processing.

The backlog is pre-produced, then one bridge (shipped defaults: max_in_flight 256, max_pending_per_partition
10,000, fetch_max_records 500) starts against a simulator that answers every call after 100 ms. The bridge's
RSS (VmRSS from /proc/<pid>/status) is sampled every second from start to the end of the processing window
(90 s after the first delivery). Reported: the peak, and whether it is flat — the maximum over the last third
of the window must not exceed the maximum over the middle third by more than 5 % (the first third is the
warm-up: buffers, connection pool and metric series being created).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import ScenarioResult, World, log, produce_backlog, rss_bytes

EVENTS = 1_000_000
QUICK_EVENTS = 100_000
SECONDS = 90
QUICK_SECONDS = 20
LATENCY_MS = 100
TARGET_MIB = 200
FLAT_TOLERANCE = 0.05
MIB = 2**20


def run_once(events: int, seconds: float) -> dict[str, Any]:
    """Sample the bridge's RSS every second while it chews on the backlog."""
    with World("memory", sim_args=["--latency-ms", str(LATENCY_MS)]) as world:
        log(f"memory: producing {events:,} events")
        produced_s = produce_backlog(world.bootstrap, world.topic, world.partitions, events)
        bridge = world.start_bridge(world.config())
        pid = bridge.popen.pid
        start = time.monotonic()
        samples: list[tuple[float, float, int]] = []  # (seconds since start, RSS MiB, accepted)
        first: float | None = None
        deadline = start + 90
        while True:
            world.check_alive()
            now = time.monotonic()
            accepted = int(world.sim_stats()["accepted"])
            samples.append((round(now - start, 1), round(rss_bytes(pid) / MIB, 1), accepted))
            if first is None and accepted > 0:
                first = now
            if first is None and now > deadline:
                raise RuntimeError("no delivery within 90 s")
            if first is not None and now - first >= seconds:
                break
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    assert first is not None
    t_first = first - start
    window = [s for s in samples if s[0] >= t_first]
    third = max(1, len(window) // 3)
    middle = window[third : 2 * third]
    last = window[2 * third :]
    mid_max = max(s[1] for s in middle)
    last_max = max(s[1] for s in last)
    growth = last_max - mid_max
    delivered = window[-1][2] - window[0][2]
    return {
        "events_backlog": events,
        "produce_seconds": round(produced_s, 1),
        "latency_ms": LATENCY_MS,
        "window_seconds": round(window[-1][0] - window[0][0], 1),
        "delivered_in_window": delivered,
        "delivered_per_s": round(delivered / max(1e-9, window[-1][0] - window[0][0]), 1),
        "peak_rss_mib": max(s[1] for s in samples),
        "middle_third_max_mib": mid_max,
        "last_third_max_mib": last_max,
        "growth_last_vs_middle_mib": round(growth, 1),
        "flat": growth <= FLAT_TOLERANCE * mid_max,
        "samples_t_rss_accepted": samples,
    }


def scenario_memory(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 5, once."""
    res = ScenarioResult("memory")
    r = run_once(QUICK_EVENTS if quick else EVENTS, QUICK_SECONDS if quick else SECONDS)
    log(f"memory: peak {r['peak_rss_mib']} MiB, growth last vs middle third {r['growth_last_vs_middle_mib']} MiB")
    res.details = r
    res.row("peak RSS", r["peak_rss_mib"], "MiB", f"<= {TARGET_MIB}", r["peak_rss_mib"] <= TARGET_MIB)
    res.row(
        "RSS growth, last vs middle third",
        r["growth_last_vs_middle_mib"],
        "MiB",
        f"flat (<= {FLAT_TOLERANCE:.0%})",
        r["flat"],
    )
    res.row("delivered/s at 100 ms latency", r["delivered_per_s"], "ev/s")
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "memory", *sys.argv[1:]]))
