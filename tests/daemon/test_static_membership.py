"""Static membership (`kafka.group_instance_id`, what the Helm chart's StatefulSet sets from the pod name).

After `kill -9`, a dynamic member's replacement waits for the dead member's session to time out before it gets
partitions (`make bench` scenario "failover" measures both). A static member restarted under the same id is
given its partitions back at once: this test checks it holds them long before the session timeout, and that
nothing is lost.
"""

from __future__ import annotations

import time

from harness import Harness, note, wait_until

SESSION_TIMEOUT_S = 45


async def test_kill_9_and_restart_under_the_same_instance_id_gets_the_partitions_back_before_the_session_timeout(
    harness: Harness,
) -> None:
    h = harness
    await h.start_sim()
    kafka = {"group_instance_id": "campus-bridge-0", "session_timeout_ms": SESSION_TIMEOUT_S * 1000}
    cfg = h.config(kafka=kafka, delivery={"rate_limit": {"per_second": 200, "burst": 10}})
    first = await h.start_bridge(cfg, name="campus-bridge-0")
    events = [note(i, to=f"1350000{i % 80:04d}") for i in range(1200)]
    await h.produce(events, key=lambda e: e["to"].encode())
    await wait_until(lambda: len(h.accepted()) >= 200, 60, "delivering before the kill")
    first.kill()
    killed = time.monotonic()
    again = await h.start_bridge(cfg, name="campus-bridge-0-restarted", wait_ready=False)
    await h.wait_ready(again, timeout=SESSION_TIMEOUT_S, partitions=3)
    took = time.monotonic() - killed
    # a dynamic member would wait for the dead one's 45 s session to expire; the static one is let straight in
    assert took < SESSION_TIMEOUT_S / 2, f"partitions back after {took:.1f} s"
    await h.wait_accepted({e["id"] for e in events}, timeout=90)
    await h.wait_committed_to_end()
