"""Scenario 4: rate accuracy — configured 200/s, 1,000/s and 5,000/s (burst 20), each held for 60 s.

A backlog larger than the run is pre-produced, so the limiter is the only brake. The gateway is the fast Go
stand-in (bench/standin): the Python simulator costs ~300 µs CPU per request, so at 5,000/s it alone would
need 1.5 of the machine's 2 cores and its own stalls would show up as the bridge's. The stand-in records when
it first received each message; from those times (t0 = the first one):

- achieved rate = messages received in [t0, t0 + 60 s) / 60, compared with the configured rate (±2 %);
- worst 1-second window = the most messages in any sliding 1-second interval inside the minute (it includes
  the opening burst), target ≤ rate × 1.02 + burst;
- lowest whole second and longest gap between two receives, for information (a stall shows here);
- the bridge's event-loop stalls: /healthz (served by the bridge's loop) is timed every 10 ms during the run,
  answers slower than 50 ms are counted (the runner's own scheduling adds some noise to this probe).
"""

from __future__ import annotations

import bisect
import itertools
import time
from typing import Any

from bench.common import LoopProbe, ScenarioResult, World, log, produce_backlog

RATES = (200, 1_000, 5_000)
BURST = 20
SECONDS = 60
QUICK_SECONDS = 10
TOLERANCE = 0.02


def analyse(times: list[float], rate: float, burst: int, seconds: float) -> dict[str, Any]:
    """Achieved rate, worst sliding 1-second window and lowest whole second of ascending receive times."""
    t0 = times[0]
    inside = times[: bisect.bisect_left(times, t0 + seconds)]
    worst, worst_end = 0, t0
    j = 0
    for i, t in enumerate(inside):
        while inside[j] <= t - 1.0:
            j += 1
        if i - j + 1 > worst:
            worst, worst_end = i - j + 1, t
    # the longest silence (a stall of the bridge or of the simulator, e.g. descheduled on a busy machine)
    gaps = [(b - a, a) for a, b in itertools.pairwise(inside)]
    gap, gap_at = max(gaps) if gaps else (0.0, t0)
    buckets = [0] * int(seconds)
    for t in inside:
        buckets[min(int(t - t0), len(buckets) - 1)] += 1
    achieved = len(inside) / seconds
    return {
        "configured": rate,
        "burst": burst,
        "seconds": seconds,
        "messages": len(inside),
        "achieved_per_s": round(achieved, 2),
        "deviation_pct": round((achieved / rate - 1) * 100, 2),
        "worst_1s_window": worst,
        "worst_1s_limit": round(rate * (1 + TOLERANCE) + burst, 1),
        "worst_1s_window_ends_at_s": round(worst_end - t0, 3),
        "longest_gap_ms": round(gap * 1000, 1),
        "longest_gap_at_s": round(gap_at - t0, 3),
        "lowest_whole_second": min(buckets),
        "highest_whole_second": max(buckets),
        "per_second": buckets,
    }


def run_once(rate: float, seconds: float) -> dict[str, Any]:
    """One configured rate for `seconds` against a backlog that outlasts it."""
    backlog = int(rate * (seconds + 20))
    with World("rate", gateway="standin") as world:
        produce_backlog(world.bootstrap, world.topic, world.partitions, backlog)
        bridge = world.start_bridge(world.config(rate=rate, burst=BURST))
        deadline = time.monotonic() + 90
        while int(world.sim_stats()["accepted"]) == 0:
            world.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("no delivery within 90 s")
            time.sleep(0.05)
        with LoopProbe(bridge) as probe:
            time.sleep(seconds + 2)
        world.check_alive()
        bridge.stop()
        stats = world.sim_stats()
        times = sorted(m["first_received"] for m in world.sim_messages())
    out = analyse(times, rate, BURST, seconds)
    out["refusals"] = stats["refusals"]
    stalls = [(round(t - times[0], 3), round(ms)) for t, ms in probe.stalls(50) if times[0] <= t < times[0] + seconds]
    out["bridge_loop_stalls_over_50ms"] = len(stalls)
    out["bridge_loop_stall_max_ms"] = max((ms for _, ms in stalls), default=0)
    out["bridge_loop_stalls_at_s_ms"] = stalls[:200]
    return out


def scenario_rate(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 4: each configured rate once (a minute each)."""
    res = ScenarioResult("rate")
    seconds = QUICK_SECONDS if quick else SECONDS
    runs = []
    for rate in RATES:
        log(f"rate: {rate}/s (burst {BURST}) for {seconds} s")
        r = run_once(rate, seconds)
        log(f"rate: achieved {r['achieved_per_s']}/s ({r['deviation_pct']:+.2f} %), worst 1 s {r['worst_1s_window']}")
        runs.append(r)
        ok_rate = abs(r["deviation_pct"]) <= TOLERANCE * 100
        res.row(f"{rate}/s: achieved over {seconds} s", r["achieved_per_s"], "/s", f"{rate} ± 2 %", ok_rate)
        res.row(
            f"{rate}/s: worst 1-second window",
            r["worst_1s_window"],
            "msgs",
            f"<= {r['worst_1s_limit']:g}",
            r["worst_1s_window"] <= r["worst_1s_limit"],
        )
        gap = f"/ {r['longest_gap_ms']:.0f} ms"
        res.row(f"{rate}/s: lowest whole second / longest gap", r["lowest_whole_second"], gap)
        res.row(
            f"{rate}/s: bridge event-loop stalls > 50 ms (/healthz probe) / longest",
            r["bridge_loop_stalls_over_50ms"],
            f"/ {r['bridge_loop_stall_max_ms']} ms",
        )
    res.details = {"runs": runs}
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "rate", *sys.argv[1:]]))
