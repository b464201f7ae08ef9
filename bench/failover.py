"""Scenario 9: failover — after `kill -9`, how long until the restarted instance holds partitions again.

Two bridges share a three-partition topic with a backlog (so both are busy). One is killed with SIGKILL and
started again at once with the same config and name, as Kubernetes restarts a crashed container in the same
pod. Measured from the kill (runner's clock, /metrics polled every 100 ms):

- restarted holds partitions: `bridge_assigned_partitions` of the new process >= 1 and /readyz 200;
- all partitions consumed again: both processes' assignments add up to the partition count.

Three set-ups: dynamic membership with the default 45 s session timeout; static membership
(`kafka.group_instance_id`, what the Helm chart's StatefulSet sets from the pod name) with the same timeout;
and dynamic membership with a 10 s session timeout (the other way to shorten it).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import ScenarioResult, World, log, produce_backlog, wait_accepted

CASES: tuple[tuple[str, bool, int], ...] = (
    ("dynamic membership, session 45 s", False, 45_000),
    ("static membership (group_instance_id), session 45 s", True, 45_000),
    ("dynamic membership, session 10 s", False, 10_000),
)
TIMEOUT = 120.0


def _assigned(metrics: dict[str, float]) -> float:
    return metrics.get("bridge_assigned_partitions", 0.0)


def run_case(static: bool, session_ms: int) -> dict[str, Any]:
    """Kill -9 one of two bridges and restart it at once; seconds until it and the group consume again."""
    with World("failover", partitions=3, sim_args=["--latency-ms", "5"]) as world:
        produce_backlog(world.bootstrap, world.topic, world.partitions, 50_000)
        kafka = {"session_timeout_ms": session_ms, "heartbeat_interval_ms": min(3000, session_ms // 3)}
        configs = {
            name: world.config(name, rate=500, kafka={**kafka, **({"group_instance_id": name} if static else {})})
            for name in ("bridge-a", "bridge-b")
        }
        a = world.start_bridge(configs["bridge-a"], name="bridge-a")
        b = world.start_bridge(configs["bridge-b"], name="bridge-b")
        deadline = time.monotonic() + TIMEOUT
        while sorted([_assigned(a.metrics()), _assigned(b.metrics())]) != [1, 2]:
            world.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the two bridges did not share the partitions")
            time.sleep(0.1)
        wait_accepted(world, int(world.sim_stats()["accepted"]) + 500, timeout=60)
        killed = time.monotonic()
        a.kill()
        again = world.start_bridge(configs["bridge-a"], name="bridge-a-restarted")
        holds = consumed = None
        while holds is None or consumed is None:
            if time.monotonic() - killed > TIMEOUT:
                break
            for proc in (again, b):
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_tail()}")
            m_again, m_b = again.metrics(), b.metrics()
            now = time.monotonic() - killed
            if holds is None and _assigned(m_again) >= 1 and again.ready()[0] == 200:
                holds = now
            if consumed is None and _assigned(m_again) >= 1 and _assigned(m_again) + _assigned(m_b) == 3:
                consumed = now
            time.sleep(0.1)
    return {
        "static": static,
        "session_timeout_ms": session_ms,
        "restarted_holds_partitions_s": None if holds is None else round(holds, 1),
        "all_partitions_consumed_s": None if consumed is None else round(consumed, 1),
    }


def scenario_failover(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 9: each set-up once."""
    res = ScenarioResult("failover")
    runs = []
    for label, static, session_ms in CASES:
        log(f"failover: {label}")
        r = run_case(static, session_ms)
        r["case"] = label
        runs.append(r)
        log(f"failover: {label}: holds partitions after {r['restarted_holds_partitions_s']} s")
        res.row(f"{label}: restarted instance holds partitions after", r["restarted_holds_partitions_s"], "s")
        res.row(f"{label}: every partition consumed again after", r["all_partitions_consumed_s"], "s")
    res.details = {"runs": runs}
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "failover", *sys.argv[1:]]))
