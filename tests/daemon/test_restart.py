"""Restarts and rebalances do not re-send what was finished (issue 14): the commit metadata remembers it.

What may still be sent twice after a kill -9 is exactly what the last commit before the kill did not cover:
messages whose record was neither below the committed offset nor marked finished (or, in a fan-out, whose
index was not marked final) in that commit's metadata. Each test reads that last commit after the kill and
checks every duplicate the simulator counted against it.
"""

from __future__ import annotations

from typing import Any

from harness import NOTE_RULE, Harness, note, wait_until

from bridge.gateway.simstate import Faults
from bridge.kafka.progress import Progress

Committed = dict[int, tuple[int, Progress | None]]


def covered(committed: Committed, p: int, o: int) -> bool:
    """The record at partition p, offset o was finished as far as the last commit knew."""
    offset, progress = committed[p]
    return o < offset or (progress is not None and progress.is_finished(o))


def finished_above(committed: Committed) -> int:
    return sum(progress.finished_count() for _, progress in committed.values() if progress is not None)


async def test_kill_9_with_transient_failures_bans_and_rejections_resends_only_what_the_last_commit_missed(
    harness: Harness,
) -> None:
    h = harness
    faults = Faults(isp_error_rate=0.2, qps=50, ban_seconds=1, reject_mobile_prefixes=("1999",), seed=14)
    await h.start_sim(faults)
    cfg = h.config(
        kafka={"commit_interval_seconds": 1},
        delivery={"max_in_flight": 16, "rate_limit": {"per_second": 60, "burst": 5}},
    )
    proc = await h.start_bridge(cfg)
    events = [note(i, to=("19990000000" if i % 10 == 7 else f"1390000{i % 97:04d}")) for i in range(300)]
    await h.produce(events, key=lambda e: str(e["seq"]).encode())
    deliverable = {e["id"] for e in events if not e["to"].startswith("1999")}

    async def mid_stream_with_finished_records_above_the_prefix() -> bool:
        accepted = h.accepted()
        if len(accepted) < 0.4 * len(deliverable):
            return False
        committed = await h.committed_progress()
        above_prefix = [a for a in accepted.values() if a["o"] >= committed[a["p"]][0]]
        return sum(covered(committed, a["p"], a["o"]) for a in above_prefix) >= 5

    await wait_until(mid_stream_with_finished_records_above_the_prefix, 60, "40 % accepted, finished records marked")
    proc.kill()
    at_kill = await h.committed_progress()
    before = h.accepted()
    assert h.sim is not None
    stats_at_kill = h.sim.state.stats_dict()
    restarted = await h.start_bridge(cfg, name="bridge-restarted")
    got = await h.wait_accepted(deliverable, timeout=120)
    await h.wait_committed_to_end(timeout=60)

    duplicates = {k for k, v in got.items() if v["count"] > 1}
    exposed = {k for k, v in before.items() if not covered(at_kill, v["p"], v["o"])}
    prefix_only = {k for k, v in before.items() if v["o"] >= at_kill[v["p"]][0]}
    print(
        f"\nkill -9 at {len(before)}/{len(deliverable)} accepted: duplicates {len(duplicates)}; "
        f"not covered by the last commit {len(exposed)}; the prefix alone would have re-sent {len(prefix_only)}; "
        f"bans {stats_at_kill['bans']}, refusals {stats_at_kill['refusals']}"
    )
    assert duplicates <= exposed, sorted(duplicates - exposed)
    assert len(exposed) + 5 <= len(prefix_only)  # the metadata covered records the prefix did not
    assert stats_at_kill["bans"] >= 1 and stats_at_kill["refusals"].get("15", 0) > 0
    m = await h.metrics(restarted)
    assert m['bridge_records_skipped_total{reason="already_finished"}'] >= finished_above(at_kill) > 0
    # dead-lettered counts as finished: a rejection the last commit covered is not dead-lettered again
    letters = await h.read_dlq(len(events) - len(deliverable))
    by_source: dict[tuple[int, int], int] = {}
    for rec in letters:
        headers = dict(rec.headers)
        source = (int(headers["bridge.source_partition"]), int(headers["bridge.source_offset"]))
        by_source[source] = by_source.get(source, 0) + 1
    assert len(by_source) == len(events) - len(deliverable)
    twice = [src for src, n in by_source.items() if n > 1]
    assert all(not covered(at_kill, p, o) for p, o in twice), twice
    assert restarted.stop() == 0


async def test_second_instance_joining_mid_stream_loses_nothing_and_resends_nothing_that_was_finished(
    harness: Harness,
) -> None:
    h = harness
    # half the calls fail transiently and the rate is capped: the stream is mid-way when b joins, and many records
    # above each committed offset are finished while earlier ones wait for a retry
    await h.start_sim(Faults(latency_ms=3, latency_jitter_ms=5, isp_error_rate=0.5, seed=5))
    cfg = h.config(
        delivery={"max_in_flight": 8, "rate_limit": {"per_second": 150, "burst": 5}, "retry": {"max_attempts": 40}}
    )
    first = await h.start_bridge(cfg, name="bridge-a")
    events = [note(i, to=f"1320000{i % 60:04d}") for i in range(900)]
    await h.produce(events, key=lambda e: e["to"].encode())
    await wait_until(lambda: len(h.accepted()) >= 200, 60, "first instance delivering")
    second = await h.start_bridge(cfg, name="bridge-b", wait_ready=False)
    await h.wait_ready(second)
    got = await h.wait_accepted({e["id"] for e in events}, timeout=90)
    await h.wait_committed_to_end()
    m_a, m_b = await h.metrics(first), await h.metrics(second)
    skipped = sum(m.get('bridge_records_skipped_total{reason="already_finished"}', 0) for m in (m_a, m_b))
    duplicates = {k: v["count"] for k, v in got.items() if v["count"] > 1}
    print(f"\nrebalance mid-stream: duplicates {len(duplicates)}, records skipped as already finished {skipped:.0f}")
    assert m_a["bridge_rebalances_total"] >= 2  # assigned, then revoked/assigned when b joined
    assert m_a["bridge_assigned_partitions"] + m_b["bridge_assigned_partitions"] == 3
    # on revoke, in-flight calls finish and the commit lists every finished record: nothing is sent twice
    assert duplicates == {}
    assert skipped > 0, "the new owners skipped records finished before the rebalance"
    assert m_a.get("bridge_dead_letters_total", 0) + m_b.get("bridge_dead_letters_total", 0) == 0
    assert first.stop() == 0 and second.stop() == 0


FANOUT_RULE: dict[str, Any] = {
    "id": "class",
    "when": "event.kind == 'class'",
    "for_each": "event.students",
    "message": {
        "event_type": "mobile_receiver",
        "mobile_receiver": "{{ item }}",
        "json_data": {"id": "{{ item }}", "seq": "{{ event.seq }}", "p": "{{ kafka.partition }}", "o": 0},
    },
}


async def test_fanout_partly_delivered_at_a_kill_resends_only_the_undelivered_students(harness: Harness) -> None:
    h = harness
    await h.start_sim(Faults(latency_ms=2, isp_error_rate=0.1, seed=9))
    cfg = h.config(
        kafka={"group_instance_id": "fanout-test-0"},  # static membership: the restart takes its partitions back
        delivery={"max_in_flight": 8, "rate_limit": {"per_second": 100, "burst": 5}},
        rules={"inline": [NOTE_RULE, FANOUT_RULE]},
    )
    proc = await h.start_bridge(cfg)
    students = [f"1371234{i:04d}" for i in range(300)]
    await h.produce([{"kind": "class", "seq": 1, "students": students}], partition=0)

    async def partly_done_in_the_commit() -> bool:
        _, progress = (await h.committed_progress())[0]
        return progress is not None and 0 in progress.partial and progress.done_count(0) >= 50

    await wait_until(partly_done_in_the_commit, 60, "a commit listing delivered students of the fan-out")
    proc.kill()
    offset, progress = (await h.committed_progress())[0]
    assert offset == 0 and progress is not None
    done = {students[i] for s, e in progress.partial[0].done for i in range(s, e)}
    assert len(done) == progress.done_count(0) >= 50
    before = h.accepted()
    restarted = await h.start_bridge(cfg, name="bridge-restarted")
    got = await h.wait_accepted(set(students), timeout=60)
    await h.wait_committed_to_end()

    duplicates = {k for k, v in got.items() if v["count"] > 1}
    print(
        f"\nfan-out of 300: {len(before)} accepted at the kill, {len(done)} marked final in the last commit, "
        f"{len(duplicates)} sent twice"
    )
    assert done <= before.keys()
    assert not duplicates & done, "a student marked final was sent again"
    assert duplicates <= before.keys() - done
    m = await h.metrics(restarted)
    assert m['bridge_messages_skipped_total{reason="already_finished"}'] >= len(done)
    assert restarted.stop() == 0


async def test_commits_early_once_commit_every_messages_became_final_without_waiting_for_the_interval(
    harness: Harness,
) -> None:
    # the interval alone would commit after 120 s; 40 final messages trigger a commit within ~0.1 s, so a crash
    # at high rates re-sends about that many finished messages, not an interval's worth
    h = harness
    await h.start_sim()
    cfg = h.config(kafka={"commit_interval_seconds": 120, "commit_every_messages": 40})
    proc = await h.start_bridge(cfg)
    events = [note(i, to=f"1370000{i:04d}") for i in range(200)]
    await h.produce(events, key=lambda e: str(e["seq"]).encode())
    await h.wait_accepted({e["id"] for e in events}, timeout=60)
    await h.wait_committed_to_end(timeout=15)  # far below the 120 s interval: the count did it
    m = await h.metrics(proc)
    assert m['bridge_commits_total{result="ok"}'] >= 1  # early commits, none failed
    assert m.get('bridge_commits_total{result="failed"}', 0) == 0
    assert proc.stop() == 0
