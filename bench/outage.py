"""Scenario "outage": the gateway goes away for 120 s under a steady 100 events/s stream.

One bridge with the shipped retry budget shortened to what an outage outlasts (`max_attempts` 12 with 0.1–2 s
backoff, `max_age_seconds` 60 s) consumes a paced stream of 100 events/s. 20 s in, the simulator starts
closing every connection without an answer (`drop_rate` 1.0: connection reset, a transport failure); 120 s
later it answers again. The stream goes on for another 40 s. Measured from the outside:

- dead letters (bridge_dead_letters_total, and the DLQ topic's records): must be 0 — an outage is not a
  message's fault;
- delivered (distinct msg_keys the simulator accepted) against produced, and lost = produced − delivered −
  dead-lettered (must be 0);
- duplicates (calls for an already accepted msg_key);
- time to recover: from the end of the outage until the simulator had accepted every event produced up to
  that moment (the backlog of the outage drained; the rate limit is 500/s for that);
- the circuit's openings (bridge_circuit_openings_total).

The same run is made with `delivery.circuit.enabled: false` — the bridge as it was before the circuit breaker —
for comparison: its dead letters are what an outage cost before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.common import ScenarioResult, World, end_offsets, log, produce_paced

STREAM_RATE = 100
BEFORE, OUTAGE, AFTER = 20.0, 120.0, 40.0
QUICK = (5.0, 20.0, 10.0)
RATE_LIMIT = 500
RETRY = {"max_attempts": 12, "initial_backoff_seconds": 0.1, "max_backoff_seconds": 2, "max_age_seconds": 60}


def run_once(circuit: bool, before: float, outage: float, after: float) -> dict[str, Any]:
    """One paced stream through one outage; the figures of the module docstring."""
    with World("outage") as world:
        cfg = world.config(
            rate=RATE_LIMIT,
            burst=20,
            delivery={"retry": RETRY, "circuit": {"enabled": circuit, "max_probe_interval_seconds": 10}},
        )
        bridge = world.start_bridge(cfg)
        world.stack.wait_bridge(bridge, partitions=world.partitions, timeout=90)
        produced: list[int] = []
        producer = threading.Thread(
            target=lambda: produced.append(
                produce_paced(
                    world.bootstrap, world.topic, world.partitions, rate=STREAM_RATE, seconds=before + outage + after
                )[0]
            ),
            name="paced-producer",
        )
        t0 = time.monotonic()
        producer.start()
        time.sleep(before)
        world.set_faults(drop_rate=1.0)
        log(f"outage: gateway drops every connection for {outage:.0f} s (circuit {'on' if circuit else 'off'})")
        time.sleep(outage)
        world.set_faults(drop_rate=0.0)
        outage_end = time.monotonic()
        due = int((outage_end - t0) * STREAM_RATE)  # events produced by the end of the outage (paced)
        recovered_at = None
        deadline = outage_end + after + 300
        while time.monotonic() < deadline:
            world.check_alive()
            accepted = int(world.sim_stats()["accepted"])
            if recovered_at is None and accepted >= due:
                recovered_at = time.monotonic()
            if not producer.is_alive() and produced and recovered_at is not None:
                metrics = bridge.metrics()
                dead = int(metrics.get("bridge_dead_letters_total", 0))
                if accepted + dead >= produced[0]:
                    break
            time.sleep(0.25)
        producer.join(60)
        world.check_alive()
        stats = world.sim_stats()
        metrics = bridge.metrics()
        dead = int(metrics.get("bridge_dead_letters_total", 0))
        dlq_records = sum(end_offsets(world.bootstrap, world.dlq, 1).values()) if dead else 0
        total = produced[0] if produced else 0
        out = {
            "circuit": circuit,
            "produced": total,
            "delivered": int(stats["accepted"]),
            "dead_letters": dead,
            "dlq_records": dlq_records,
            "lost": total - int(stats["accepted"]) - dead,
            "duplicates": int(stats["duplicates"]),
            "dropped_connections": int(stats["dropped"]),
            "circuit_openings": int(metrics.get("bridge_circuit_openings_total", 0)),
            "recover_seconds": None if recovered_at is None else round(recovered_at - outage_end, 1),
            "outage_seconds": outage,
        }
        bridge.stop()
        return out


def scenario_outage(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """The outage with the circuit breaker (the shipped default), then without it for comparison."""
    res = ScenarioResult("outage")
    before, outage, after = QUICK if quick else (BEFORE, OUTAGE, AFTER)
    on = run_once(True, before, outage, after)
    log(f"outage (circuit on): {on}")
    off = run_once(False, before, outage, after)
    log(f"outage (circuit off): {off}")
    res.row(
        f"{outage:.0f} s outage at {STREAM_RATE}/s: dead letters", on["dead_letters"], "", "0", on["dead_letters"] == 0
    )
    res.row("delivered / produced", on["delivered"], f"/ {on['produced']:,}", "all", on["lost"] == 0)
    res.row("lost", on["lost"], "", "0", on["lost"] == 0)
    res.row("duplicates", on["duplicates"], "")
    res.row("time to recover after the outage", on["recover_seconds"], "s")
    res.row("circuit openings", on["circuit_openings"], "")
    calls_off = f"/ {off['dropped_connections']:,}"
    res.row("calls into the outage (dropped connections): on / off", on["dropped_connections"], calls_off)
    res.row("(before: circuit off) dead letters", off["dead_letters"], f"of {off['produced']:,}")
    res.row("(before: circuit off) duplicates / time to recover", off["duplicates"], f"/ {off['recover_seconds']} s")
    res.details = {"circuit_on": on, "circuit_off": off}
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "outage", *sys.argv[1:]]))
