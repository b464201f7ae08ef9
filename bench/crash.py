"""Scenario 8: crash — 10 × kill -9 at random moments during a backlog with transient failures; what is re-sent.

A 20,000-event backlog (4 partitions) goes to a simulator that answers 20 % of the calls with a transient
error (code 15, retried with backoff) after 20 ms of latency. One bridge works through it and is killed with
SIGKILL at 10 random moments (seeded: the same moments on every run, drawn as accepted-message counts, each
at least 1 % of the backlog after the previous kill, so every restarted process does some new work), each
time restarted at once with the same static member id (`kafka.group_instance_id`), so the new process takes
the partitions back without waiting for a session timeout. At the end every event's message must have reached
the simulator (lost = 0) and the group must be committed to the end of every partition.

Duplicates are calls for a msg_key the simulator had already accepted (the gateway would show them to a
student twice). The simulator's duplicate counter is read at each kill; the duplicates of kill N are the ones
counted between kill N and kill N + 1 (or the end): what the restart after that kill sent again.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from bench.common import (
    ScenarioResult,
    World,
    committed,
    committed_with_metadata,
    log,
    median,
    produce_backlog,
    wait_accepted,
)
from bridge.devstack import BridgeProc

EVENTS = 20_000
QUICK_EVENTS = 3_000
KILLS = 10
QUICK_KILLS = 3
TRANSIENT_RATE = 0.2
LATENCY_MS = 20
SEED = 14


def kill_points(events: int, kills: int, seed: int = SEED) -> list[int]:
    """The accepted-message counts at which to kill: `kills` distinct random counts in 5 %..90 % of `events`."""
    rng = random.Random(seed)
    return sorted(rng.sample(range(events // 20, events * 9 // 10), kills))


def _check_alive(world: World, proc: BridgeProc) -> None:
    """The running bridge and the simulator are alive (the killed bridges are, of course, not)."""
    for p in (proc, world.stack.sim):
        if p is not None and not p.alive():
            raise RuntimeError(f"{p.name} exited {p.popen.returncode}:\n{p.log_tail()}")


def _settled(world: World) -> dict[str, Any]:
    """The simulator's stats once the calls the killed bridge had in flight have all been answered."""
    stats = world.sim_stats()
    while True:
        time.sleep(LATENCY_MS * 5 / 1000)
        now = world.sim_stats()
        if now["total_requests"] == stats["total_requests"]:
            return now
        stats = now


def exposure(world: World) -> dict[str, int]:
    """Right after a kill: what the group's last commit covers of the messages the simulator has accepted.

    `not_covered`: accepted messages whose record is neither below the committed offset nor marked finished
    in the commit metadata — the most a restart can send again. `above_prefix`: accepted messages at or above
    the committed offset — what a prefix-only commit (the code before issue 14) leaves to send again.
    """

    committed_at = {
        p: (offset, _progress(metadata, offset))
        for p, (offset, metadata) in committed_with_metadata(world.bootstrap, world.group, world.topic).items()
    }
    marked = not_covered = above_prefix = 0
    for _, progress in committed_at.values():
        marked += progress.finished_count() if progress is not None else 0
    for m in world.sim_messages():
        data = orjson.loads(m["message"]["json_data"])
        offset, progress = committed_at.get(int(data["p"]), (-1, None))
        o = int(data["o"])
        if o >= offset:
            above_prefix += 1
            if progress is None or not progress.is_finished(o):
                not_covered += 1
    return {"marked_finished": marked, "not_covered": not_covered, "above_prefix": above_prefix}


def _progress(metadata: str, offset: int) -> Any:
    try:
        from bridge.kafka.progress import decode
    except ImportError:  # the code base before commit metadata existed: nothing is marked
        return None
    return decode(metadata, offset).progress


def run_once(events: int, kills: int) -> dict[str, Any]:
    """Kill and restart one bridge `kills` times during the backlog; count lost and duplicate messages."""
    sim_args = ["--isp-error-rate", str(TRANSIENT_RATE), "--latency-ms", str(LATENCY_MS), "--seed", str(SEED)]
    with World("crash", sim_args=sim_args) as world:
        produce_backlog(world.bootstrap, world.topic, world.partitions, events)
        cfg = world.config(kafka={"group_instance_id": "crash-bench-0", "commit_interval_seconds": 1.0})
        proc = world.start_bridge(cfg, name="bridge-0")
        per_kill: list[dict[str, Any]] = []
        last = 0
        for n, point in enumerate(kill_points(events, kills), 1):
            # each restarted process gets to deliver something new (1 %) before it is killed in turn
            target = max(point, last + events // 100)
            reached = wait_accepted(world, target, timeout=max(120, events / 100))
            _check_alive(world, proc)
            seen = proc.metrics()  # what this process did, just before it dies
            proc.kill()
            stats = _settled(world)
            per_kill.append(
                {
                    "kill": n,
                    "at_accepted": int(stats["accepted"]),
                    "target": target,
                    "reached": reached,
                    "duplicates_before": int(stats["duplicates"]),
                    "committed_at_kill": sum(committed(world.bootstrap, world.group, world.topic).values()),
                    **exposure(world),
                    "process_assigned_partitions": seen.get("bridge_assigned_partitions"),
                    "process_records_consumed": seen.get("bridge_records_consumed_total"),
                    "process_delivered": seen.get('bridge_messages_total{outcome="delivered",rule="note"}'),
                    "process_records_skipped": seen.get('bridge_records_skipped_total{reason="already_finished"}'),
                }
            )
            last = int(stats["accepted"])
            proc = world.start_bridge(cfg, name=f"bridge-{n}")
        t = time.monotonic()
        got = wait_accepted(world, events, timeout=max(180, events / 50))
        finish_seconds = time.monotonic() - t
        all_committed = world.committed_to_end(timeout=60)
        stats = world.sim_stats()
        ids = world.accepted_ids()
        proc.stop()
    marks = [k["duplicates_before"] for k in per_kill] + [int(stats["duplicates"])]
    for i, k in enumerate(per_kill):
        k["duplicates"] = marks[i + 1] - marks[i]
    expected = {f"n{i}" for i in range(events)}
    return {
        "events": events,
        "kills": kills,
        "transient_rate": TRANSIENT_RATE,
        "latency_ms": LATENCY_MS,
        "per_kill": per_kill,
        "duplicates_before_first_kill": marks[0],
        "accepted": got,
        "seconds_after_last_restart": round(finish_seconds, 1),
        "lost": len(expected - ids),
        "unexpected": len(ids - expected),
        "duplicates": int(stats["duplicates"]),
        "total_requests": int(stats["total_requests"]),
        "committed_to_end": all_committed,
    }


def scenario_crash(quick: bool, repeat: int, ctx: dict[str, Any]) -> ScenarioResult:
    """Scenario 8 (run once: it takes minutes): lost must be 0; duplicates reported in total and per kill."""
    res = ScenarioResult("crash")
    n = QUICK_EVENTS if quick else EVENTS
    kills = QUICK_KILLS if quick else KILLS
    log(f"crash: {n:,} events, {kills} × kill -9 at random moments, {TRANSIENT_RATE:.0%} transient failures")
    r = run_once(n, kills)
    per = [k["duplicates"] for k in r["per_kill"]]
    log(f"crash: lost {r['lost']}, duplicates {r['duplicates']} (per kill {per})")
    res.details = {"runs": [r]}
    ok = r["lost"] == 0 and r["committed_to_end"]
    res.row(f"messages lost after {kills} kills", r["lost"], "", "0, committed to end", ok)
    res.row(f"duplicates, all kills (per kill: {' '.join(str(d) for d in per)})", r["duplicates"], "")
    res.row("duplicates per kill (median)", median(per) if per else None, "")
    res.row("duplicates per kill (max)", max(per) if per else None, "")
    exposed = sum(k["not_covered"] for k in r["per_kill"])
    res.row("accepted, not covered by the last commit, at the kills (sum: the most re-sendable)", exposed, "")
    res.row(
        "accepted at or above the committed offset, at the kills (sum: prefix-only commits)",
        sum(k["above_prefix"] for k in r["per_kill"]),
        "",
    )
    return res


if __name__ == "__main__":
    import sys

    from bench.run_all import main

    raise SystemExit(main(["--only", "crash", *sys.argv[1:]]))
