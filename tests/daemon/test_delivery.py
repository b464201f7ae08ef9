"""`bridge run` end to end: real broker, simulated gateway, the daemon as a subprocess."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest
from harness import NOTE_RULE, Harness, note, wait_until

from bridge.gateway.simstate import Faults

# The fault matrix runs with single calls and with TOP batch calls (gateway.batch.max_messages: 10).
BATCHING = pytest.mark.parametrize("batch", [1, 10], ids=["single", "batch10"])


def batching(batch: int) -> dict[str, Any]:
    """The gateway section of a config with this batch size."""
    return {"batch": {"max_messages": batch, "max_wait_ms": 5}}


@BATCHING
async def test_happy_path_delivers_every_event_across_partitions_and_commits_to_the_end(
    harness: Harness, batch: int
) -> None:
    h = harness
    await h.start_sim()
    proc = await h.start_bridge(h.config(gateway=batching(batch)))
    events = [note(i, to=f"1380000{i % 50:04d}") for i in range(300)]
    await h.produce(events, key=lambda e: e["to"].encode())
    got = await h.wait_accepted({e["id"] for e in events})
    assert all(g["count"] == 1 for g in got.values()), "no duplicates on the happy path"
    assert {g["p"] for g in got.values()} == {0, 1, 2}, "events came from every partition"
    await h.wait_committed_to_end()
    m = await h.metrics(proc)
    assert m['bridge_messages_total{outcome="delivered",rule="note"}'] == 300
    assert m.get("bridge_dead_letters_total", 0) == 0
    assert proc.stop() == 0
    # a normal start (new group, auto-created DLQ topic) logs no ERROR, from us or from aiokafka
    errors = [line for line in proc.log_path.read_text().splitlines() if '"level":"error"' in line]
    assert errors == []


async def test_kill_9_mid_stream_then_restart_delivers_everything_duplicates_only_past_the_commit(
    harness: Harness,
) -> None:
    h = harness
    await h.start_sim(Faults(latency_ms=5, latency_jitter_ms=10))
    cfg = h.config(delivery={"max_in_flight": 16})
    proc = await h.start_bridge(cfg)
    events = [note(i, to=f"1390000{i % 97:04d}") for i in range(1500)]
    await h.produce(events, key=lambda e: e["to"].encode())
    await wait_until(lambda: len(h.accepted()) >= 300, 60, "300 accepted before the kill")
    proc.kill()  # SIGKILL: no drain, no final commit
    assert h.sim is not None
    sim = h.sim
    # calls the killed process had already sent are still being answered: count them in "before"
    await wait_until(lambda: sim.in_progress == 0, 10, "the killed process's calls answered")
    committed_at_kill = await h.committed()
    before = {k: v["count"] for k, v in h.accepted().items()}
    proc2 = await h.start_bridge(cfg, name="bridge-restarted")
    got = await h.wait_accepted({e["id"] for e in events}, timeout=90)
    duplicates = {k: v for k, v in got.items() if v["count"] > 1}
    for event_id, info in duplicates.items():
        # a message is resent only if its record was at or past the committed offset at the kill
        assert info["o"] >= committed_at_kill[info["p"]], (event_id, info, committed_at_kill)
        assert event_id in before
    await h.wait_committed_to_end()
    assert proc2.stop() == 0


@BATCHING
async def test_gateway_faults_isp_503_timeouts_and_dropped_connections_all_end_delivered(
    harness: Harness, batch: int
) -> None:
    h = harness
    faults = Faults(
        isp_error_rate=0.1,
        http_503_rate=0.08,
        http_502_rate=0.04,
        drop_rate=0.05,
        hang_rate=0.03,
        hang_seconds=3,
        bad_body_rate=0.03,
        seed=7,
    )
    await h.start_sim(faults)
    proc = await h.start_bridge(
        h.config(gateway={"timeout_seconds": 0.5, **batching(batch)}, delivery={"retry": {"max_attempts": 20}})
    )
    events = [note(i, to=f"1370000{i % 40:04d}") for i in range(200)]
    await h.produce(events)
    await h.wait_accepted({e["id"] for e in events}, timeout=90)
    await h.wait_committed_to_end()
    m = await h.metrics(proc)
    assert m.get("bridge_dead_letters_total", 0) == 0
    assert m["bridge_retries_total"] > 0
    stats = h.sim.state.stats_dict() if h.sim else {}
    assert stats["dropped"] > 0 and stats["hung"] > 0 and stats["http_errors"]


@BATCHING
async def test_throttling_below_configured_rate_shared_cooldown_no_calls_during_ban_nothing_dead_lettered(
    harness: Harness, batch: int
) -> None:
    h = harness
    await h.start_sim(Faults(qps=25, ban_seconds=1))
    cfg = h.config(gateway=batching(batch), delivery={"max_in_flight": 4, "rate_limit": {"per_second": 60, "burst": 5}})
    proc = await h.start_bridge(cfg)
    events = [note(i, to=f"1360000{i % 30:04d}") for i in range(150)]
    await h.produce(events)
    await h.wait_accepted({e["id"] for e in events}, timeout=90)
    await h.wait_committed_to_end()
    assert h.sim is not None
    stats = h.sim.state.stats_dict()
    m = await h.metrics(proc)
    assert stats["bans"] >= 1
    assert m["bridge_throttle_bans_total"] >= 1
    # only calls already in flight when a ban starts may arrive during it (at most max_in_flight per ban)
    assert stats["calls_during_ban"] <= 4 * stats["bans"], stats
    assert m.get("bridge_dead_letters_total", 0) == 0
    assert m['bridge_messages_total{outcome="delivered",rule="note"}'] == 150


@BATCHING
async def test_permanent_rejections_dead_letter_exactly_those_with_headers_and_do_not_stall(
    harness: Harness, batch: int
) -> None:
    h = harness
    await h.start_sim(Faults(reject_mobile_prefixes=("1999",)))
    proc = await h.start_bridge(h.config(gateway=batching(batch)))
    events = [note(i, to=("19990000001" if i % 10 == 3 else f"1350000{i:04d}")) for i in range(100)]
    await h.produce(events, partition=0)
    good = {e["id"] for e in events if not e["to"].startswith("1999")}
    bad = {e["id"] for e in events} - good
    got = await h.wait_accepted(good)
    assert not (got.keys() & bad)
    await h.wait_committed_to_end()  # the partition is not stalled by the rejected ones
    letters = await h.read_dlq(len(bad))
    assert len(letters) == len(bad)
    for rec in letters:
        headers = {k: v.decode() for k, v in rec.headers}
        assert headers["bridge.reason"] == "rejected"
        assert headers["bridge.rule"] == "note"
        assert headers["bridge.code"] and headers["bridge.sub_code"].startswith("isv.")
        assert headers["bridge.attempts"] == "1"
        assert headers["bridge.source_topic"] == h.topic
        assert headers["bridge.source_partition"] == "0"
        assert int(headers["bridge.source_offset"]) >= 0
        assert int(headers["bridge.first_attempt_ms"]) <= int(headers["bridge.last_attempt_ms"])
        assert headers["bridge.msg_key"]
        assert orjson.loads(rec.value)["id"] in bad  # the original value
        assert orjson.loads(headers["bridge.message"])["mobile_receiver"] == "19990000001"
    m = await h.metrics(proc)
    assert m['bridge_dead_letters_total{reason="rejected"}'] == len(bad)


async def test_wrong_secret_pauses_without_dead_letters_then_right_secret_delivers_all(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    wrong = await h.start_bridge(h.config("wrong", secret="not-the-secret"))
    events = [note(i, to=f"1340000{i % 5:04d}") for i in range(40)]
    await h.produce(events)

    async def paused() -> bool:
        status, body = await h.get(f"{wrong.metrics_url}/readyz")
        return status == 503 and b"paused" in body

    await wait_until(paused, 30, "bridge with the wrong secret reports not ready (paused)")
    m = await h.metrics(wrong)
    assert m.get("bridge_paused", 0) == 1
    assert m.get("bridge_dead_letters_total", 0) == 0
    assert h.accepted() == {}
    # nothing committed past the start while paused (a fresh group may pin its starting offset, 0)
    assert all(v in (-1, 0) for v in (await h.committed()).values()), "nothing committed while paused"
    assert wrong.stop() == 0
    right = await h.start_bridge(h.config("right"), name="bridge-right")
    await h.wait_accepted({e["id"] for e in events})
    await h.wait_committed_to_end()
    assert (await h.metrics(right)).get("bridge_dead_letters_total", 0) == 0


async def test_poison_records_are_dead_lettered_and_later_records_delivered(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    proc = await h.start_bridge(h.config())
    poison = [
        b"this is not json",
        b"[1, 2, 3]",
        b'{"kind": "note", ' + b"x" * (2 * 1024 * 1024) + b"}",
        b"\xff\xfe\xfd",
    ]
    after = [note(i) for i in range(20)]
    await h.produce([*poison, *after], partition=1)
    await h.wait_accepted({e["id"] for e in after})
    await h.wait_committed_to_end()
    letters = await h.read_dlq(4)
    reasons = sorted(dict(r.headers)["bridge.reason"].decode() for r in letters)
    assert reasons == ["not_json", "not_object", "not_utf8", "oversized"]
    m = await h.metrics(proc)
    assert m["bridge_records_invalid_total"] == 4


@BATCHING
async def test_per_recipient_order_is_kept_under_random_latency(harness: Harness, batch: int) -> None:
    h = harness
    await h.start_sim(Faults(latency_ms=1, latency_jitter_ms=25, isp_error_rate=0.05, seed=3))
    await h.start_bridge(h.config(gateway=batching(batch), delivery={"max_in_flight": 64, "ordering": "recipient"}))
    recipients = [f"1330000{r:04d}" for r in range(8)]
    events = [note(i, to=recipients[i % 8]) for i in range(240)]
    # spread one recipient's events over several partitions: order is per recipient, not per partition
    await h.produce(events[:120], partition=0)
    await h.produce(events[120:], partition=1)
    got = await h.wait_accepted({e["id"] for e in events})
    by_recipient: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for info in got.values():
        by_recipient[info["mobile"]].append((info["first"], info["seq"]))
    for mobile, seen in by_recipient.items():
        seqs_in_arrival_order = [seq for _, seq in sorted(seen)]
        first_half = [s for s in seqs_in_arrival_order if s < 120]
        second_half = [s for s in seqs_in_arrival_order if s >= 120]
        assert first_half == sorted(first_half), mobile
        assert second_half == sorted(second_half), mobile


async def test_sigterm_exits_0_within_timeout_and_restart_loses_nothing(harness: Harness) -> None:
    h = harness
    await h.start_sim(Faults(latency_ms=20))
    cfg = h.config(delivery={"max_in_flight": 16, "shutdown_timeout_seconds": 5})
    proc = await h.start_bridge(cfg)
    events = [note(i, to=f"1310000{i % 100:04d}") for i in range(800)]
    await h.produce(events)
    await wait_until(lambda: len(h.accepted()) >= 100, 60, "delivering")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    code = proc.popen.wait(30)
    took = time.monotonic() - started
    assert code == 0
    assert took < 5 + 3, f"exit took {took:.1f}s with a 5 s drain timeout"
    await h.start_bridge(cfg, name="bridge-restarted")
    await h.wait_accepted({e["id"] for e in events}, timeout=90)
    await h.wait_committed_to_end()


async def test_stale_events_are_skipped_and_counted_not_sent(harness: Harness) -> None:
    h = harness
    await h.start_sim()
    proc = await h.start_bridge(h.config(delivery={"skip_older_than_seconds": 3600}))
    two_days_ago = int(time.time() * 1000) - 2 * 86400 * 1000
    stale = [note(i) for i in range(5)]
    fresh = [note(i) for i in range(5, 10)]
    await h.produce(stale, timestamp_ms=two_days_ago, partition=2)
    await h.produce(fresh, partition=2)
    got = await h.wait_accepted({e["id"] for e in fresh})
    await h.wait_committed_to_end()
    assert not (got.keys() & {e["id"] for e in stale})
    m = await h.metrics(proc)
    assert m['bridge_messages_total{outcome="skipped_stale",rule="note"}'] == 5


async def test_a_template_path_that_resolves_to_missing_is_counted_and_the_message_still_goes(
    harness: Harness,
) -> None:
    h = harness
    await h.start_sim()
    rule = {**NOTE_RULE, "message": {**NOTE_RULE["message"], "company_id": "{{ event.tenant.company_id }}"}}
    proc = await h.start_bridge(h.config(rules={"inline": [rule]}))
    await h.produce([note(1), note(2, tenant={"company_id": "c-9"})], partition=0)
    got = await h.wait_accepted({"n1", "n2"})
    assert h.sim is not None
    companies = {
        orjson.loads(r.message["json_data"])["id"]: r.message.get("company_id") for r in h.sim.state.messages.values()
    }
    assert companies == {"n1": None, "n2": "c-9"}
    assert set(got) == {"n1", "n2"}
    m = await h.metrics(proc)
    assert m['bridge_template_missing_total{field="company_id",rule="note"}'] == 1
