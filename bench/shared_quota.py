"""Scenario 8: shared quota — three bridges in one consumer group share 300/s through one Redis, for 60 s.

A backlog larger than the run is pre-produced on three partitions; each bridge holds one. The measurement
starts once all three hold their partition (plus one second), so the group's start-up rebalances are not in
it. From the simulator's first-receive times inside the window:

- aggregate rate of the three = messages / seconds, against 300/s ± 3 %;
- worst sliding 1-second window, against 300 × 1.03 + burst;
- each bridge's share of the messages (from its `bridge_messages_total`), for information;
- Redis round trips per second, all bridges together (every operation: leases, heartbeats, bans) and leases
  alone, from `bridge_shared_quota_redis_duration_seconds_count`; tokens per lease and expired tokens.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from bench.common import ScenarioResult, World, log, produce_backlog
from bench.rate import analyse

RATE = 300
BURST = 20
LEASE = 5
INSTANCES = 3
SECONDS = 60
QUICK_SECONDS = 10
TOLERANCE = 0.03


def _sum(metrics: list[dict[str, float]], key: str) -> float:
    return sum(m.get(key, 0.0) for m in metrics)


LEASE_BUCKET = re.compile(r'^bridge_shared_quota_redis_duration_seconds_bucket\{le="([^"]+)",op="lease"\}$')


def _lease_quantile(before: list[dict[str, float]], after: list[dict[str, float]], q: float) -> float | None:
    """Upper bucket bound (ms) below which a fraction q of the window's lease round trips fell, all bridges."""
    keys = sorted({k for m in after for k in m if LEASE_BUCKET.match(k)}, key=lambda k: float(LEASE_BUCKET.match(k)[1]))
    counts = [(float(LEASE_BUCKET.match(k)[1]), _sum(after, k) - _sum(before, k)) for k in keys]
    total = counts[-1][1] if counts else 0.0
    for le, n in counts:
        if total and n >= q * total:
            return round(le * 1000, 3)
    return None


def run_once(seconds: float) -> dict[str, Any]:
    """Three bridges, one quota, a backlog that outlasts `seconds`."""
    backlog = int(RATE * (seconds + 30))
    with World("shared_quota", partitions=INSTANCES) as world:
        redis = world.stack.start_redis()
        produce_backlog(world.bootstrap, world.topic, world.partitions, backlog)
        shared = {"redis_url": redis.url, "key_prefix": f"bench-{uuid.uuid4().hex[:8]}", "lease": LEASE}
        cfg = world.config(rate=RATE, burst=BURST, max_in_flight=64, shared=shared)
        bridges = [world.start_bridge(cfg, name=f"bridge-{i}") for i in range(INSTANCES)]
        deadline = time.monotonic() + 120
        while not all(b.metrics().get("bridge_assigned_partitions", 0) == 1 for b in bridges):
            world.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the three bridges did not get one partition each within 120 s")
            time.sleep(0.1)
        time.sleep(1.0)
        start = time.time()
        before = [b.metrics() for b in bridges]
        time.sleep(seconds)
        after = [b.metrics() for b in bridges]
        world.check_alive()
        times = sorted(t for m in world.sim_messages() if (t := m["first_received"]) >= start)
        stats = world.sim_stats()
    out = analyse(times, RATE, BURST, seconds)
    out["worst_1s_limit"] = round(RATE * (1 + TOLERANCE) + BURST, 1)

    def delta(key: str) -> float:
        return _sum(after, key) - _sum(before, key)

    out["redis_round_trips_per_s"] = round(delta("bridge_shared_quota_redis_duration_seconds_count") / seconds, 1)
    out["redis_leases_per_s"] = round(delta("bridge_shared_quota_leases_total") / seconds, 1)
    leases = delta("bridge_shared_quota_leases_total")
    out["tokens_per_lease"] = round(delta("bridge_shared_quota_leased_tokens_total") / leases, 2) if leases else 0.0
    out["expired_tokens"] = delta("bridge_shared_quota_expired_tokens_total")
    out["redis_errors"] = delta("bridge_shared_quota_redis_errors_total")
    out["lease_round_trip_ms_p50_p99"] = [_lease_quantile(before, after, q) for q in (0.5, 0.99)]
    delivered = 'bridge_messages_total{outcome="delivered",rule="note"}'
    out["per_bridge_delivered"] = [
        a.get(delivered, 0.0) - b.get(delivered, 0.0) for a, b in zip(after, before, strict=True)
    ]
    out["degraded"] = [m.get("bridge_shared_quota_degraded", 0.0) for m in after]
    out["refusals"] = stats["refusals"]
    return out


def scenario_shared_quota(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 8: one run (a minute)."""
    res = ScenarioResult("shared_quota")
    seconds = QUICK_SECONDS if quick else SECONDS
    log(f"shared quota: {INSTANCES} bridges, {RATE}/s (burst {BURST}, lease {LEASE}) for {seconds} s")
    r = run_once(seconds)
    log(
        f"shared quota: {r['achieved_per_s']}/s ({r['deviation_pct']:+.2f} %), worst 1 s {r['worst_1s_window']}, "
        f"Redis {r['redis_round_trips_per_s']} round trips/s"
    )
    res.row(
        f"{INSTANCES} bridges, {RATE}/s shared: aggregate over {seconds} s",
        r["achieved_per_s"],
        "/s",
        f"{RATE} ± 3 %",
        abs(r["deviation_pct"]) <= TOLERANCE * 100,
    )
    res.row(
        "shared: worst 1-second window",
        r["worst_1s_window"],
        "msgs",
        f"<= {r['worst_1s_limit']:g}",
        r["worst_1s_window"] <= r["worst_1s_limit"],
    )
    res.row("shared: Redis round trips /s (all ops, all bridges)", r["redis_round_trips_per_s"], "/s")
    res.row("shared: leases /s / tokens per lease", r["redis_leases_per_s"], f"/s / {r['tokens_per_lease']}")
    p50, p99 = r["lease_round_trip_ms_p50_p99"]
    res.row("shared: lease round trip p50 / p99 (bucket bound)", p50, f"ms / {p99} ms")
    shares = r["per_bridge_delivered"]
    res.row("shared: delivered per bridge (least)", min(shares), "msgs; all: " + " / ".join(f"{d:.0f}" for d in shares))
    res.row("shared: expired tokens / Redis errors", r["expired_tokens"], f"/ {r['redis_errors']:.0f}")
    res.details = {"runs": [r]}
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "shared_quota", *sys.argv[1:]]))
