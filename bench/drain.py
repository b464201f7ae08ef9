"""Scenario 6: drain — SIGTERM under load, seconds to exit, then a restart proves nothing was lost.

A backlog is pre-produced and one bridge works through it against a simulator with 50 ms latency (so ~all
of max_in_flight = 256 calls are in flight at any moment). Once a fifth of the backlog is delivered, the
runner sends SIGTERM and measures the time until the process has exited, and its exit status. Then a new
bridge in the same group finishes the backlog. Every event's message must reach the simulator (its
`msg_key` is deterministic, so redeliveries are counted as duplicates, not as new messages): lost = events
whose message never arrived (must be 0); duplicates = calls for an already accepted msg_key (allowed:
at-least-once). The group must end committed to the end of every partition.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

from bench.common import ScenarioResult, World, committed, log, median, produce_backlog, wait_accepted

EVENTS = 60_000
QUICK_EVENTS = 10_000
LATENCY_MS = 50
TARGET_SECONDS = 5.0


def run_once(events: int) -> dict[str, Any]:
    """SIGTERM one bridge mid-backlog, restart, verify."""
    with World("drain", sim_args=["--latency-ms", str(LATENCY_MS)]) as world:
        produce_backlog(world.bootstrap, world.topic, world.partitions, events)
        cfg = world.config(shutdown_timeout=10)
        first = world.start_bridge(cfg, name="bridge-1")
        wait_accepted(world, events // 5, timeout=180)
        world.check_alive()
        before = int(world.sim_stats()["accepted"])
        t = time.monotonic()
        first.popen.send_signal(signal.SIGTERM)
        try:
            rc: int | None = first.popen.wait(60)
        except subprocess.TimeoutExpired:  # still running after 60 s: report it, then kill
            rc = None
            first.kill()
        exit_seconds = time.monotonic() - t
        at_exit = int(world.sim_stats()["accepted"])
        committed_at_exit = sum(committed(world.bootstrap, world.group, world.topic).values())
        second = world.start_bridge(cfg, name="bridge-2")
        got = wait_accepted(world, events, timeout=max(120, events / 200))
        all_committed = world.committed_to_end(timeout=30)
        stats = world.sim_stats()
        ids = world.accepted_ids()
        second.stop()
    expected = {f"n{i}" for i in range(events)}
    return {
        "events": events,
        "latency_ms": LATENCY_MS,
        "accepted_at_sigterm": before,
        "accepted_at_exit": at_exit,
        "committed_at_exit": committed_at_exit,
        "exit_seconds": round(exit_seconds, 2),
        "exit_status": rc,
        "accepted_after_restart": got,
        "lost": len(expected - ids),
        "unexpected": len(ids - expected),
        "duplicates": int(stats["duplicates"]),
        "committed_to_end": all_committed,
    }


def scenario_drain(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 6, repeated; the worst exit time and the total lost in the table."""
    res = ScenarioResult("drain")
    n = QUICK_EVENTS if quick else EVENTS
    runs = []
    for i in range(repeat):
        log(f"drain: run {i + 1}/{repeat}, {n:,} events, {LATENCY_MS} ms latency, SIGTERM at 20 %")
        r = run_once(n)
        log(f"drain: exit {r['exit_status']} after {r['exit_seconds']} s, lost {r['lost']}, dup {r['duplicates']}")
        runs.append(r)
    worst = max(r["exit_seconds"] for r in runs)
    res.details = {"runs": runs}
    res.row("SIGTERM to exit (worst of runs)", worst, "s", f"<= {TARGET_SECONDS:g}", worst <= TARGET_SECONDS)
    res.row("SIGTERM to exit (median)", median([r["exit_seconds"] for r in runs]), "s")
    statuses = [r["exit_status"] for r in runs]
    worst_status = None if None in statuses else max(statuses, key=abs)
    res.row("exit status (worst of runs; n/a = had to be killed)", worst_status, "", "0", worst_status == 0)
    lost = sum(r["lost"] for r in runs)
    committed_all = all(r["committed_to_end"] for r in runs)
    res.row("messages lost after restart (all runs)", lost, "", "0, committed to end", lost == 0 and committed_all)
    res.row("duplicates after restart (all runs)", sum(r["duplicates"] for r in runs), "")
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "drain", *sys.argv[1:]]))
