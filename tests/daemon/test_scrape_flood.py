"""A scrape flood cannot starve delivery: 2,000 concurrent /metrics clients against a running daemon.

Issue 10 measured 2,000 concurrent scrapes cutting delivery from 50/s to 2-4/s for 30 s and /healthz taking
8-11 s (Docker's HEALTHCHECK gives it 2 s). Here the daemon delivers a backlog at a fixed rate (burst 1, so
lost time is never made up); the test measures the rate over a window without the flood, then over a window
with the flood running in another process, and probes /healthz throughout the flood.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import Harness, note, wait_until

RATE = 40  # messages a second
WINDOW = 5.0  # seconds of each measurement
FLOOD = Path(__file__).with_name("scrape_flood.py")


async def delivered_in(h: Harness, seconds: float) -> float:
    """Messages the gateway accepted per second over the next `seconds`."""
    assert h.sim is not None
    before = len(h.sim.state.messages)
    await asyncio.sleep(seconds)
    return (len(h.sim.state.messages) - before) / seconds


async def test_a_scrape_flood_keeps_delivery_and_healthz(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    cfg = h.config(delivery={"rate_limit": {"per_second": RATE, "burst": 1}})
    proc = await h.start_bridge(cfg)
    events = [note(i, to=f"1371000{i % 89:04d}") for i in range(int(RATE * (2 * WINDOW + 12)))]
    await h.produce(events, key=lambda e: e["to"].encode())
    await wait_until(lambda: len(h.accepted()) >= RATE, 30, "delivery under way")
    normal = await delivered_in(h, WINDOW)

    flood = subprocess.Popen(
        [sys.executable, str(FLOOD), "127.0.0.1", str(proc.metrics_port), "/metrics", "2000", str(WINDOW + 3)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.sleep(1.5)  # the flood's clients are connecting
        latencies: list[float] = []

        async def probe() -> None:
            while flood.poll() is None:
                started = time.monotonic()
                status, _ = await h.get(f"{proc.metrics_url}/healthz")
                latencies.append(time.monotonic() - started if status == 200 else float("inf"))
                await asyncio.sleep(0.25)

        probing = asyncio.create_task(probe())
        flooded = await delivered_in(h, WINDOW)
        out, _ = await asyncio.to_thread(flood.communicate, timeout=30)
        await probing
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    stats = json.loads(out)
    print(f"normal {normal:.1f}/s, flooded {flooded:.1f}/s, healthz max {max(latencies):.3f}s, flood {stats}")
    assert stats["responses"] > 2000, stats  # the flood really scraped
    assert flooded >= 0.8 * normal, (normal, flooded)
    assert latencies and max(latencies) < 2.0, latencies
    assert proc.stop() == 0
