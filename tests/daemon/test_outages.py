"""Production weather, end to end: the gateway or the broker away, frozen, refusing; the DLQ refusing; bans.

Every scenario: nothing lost, nothing dead-lettered for an outage, the condition visible in /readyz and a
log line while it lasts, and recovery without a restart. Windows are short so `make test` stays fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from harness import Harness, note, wait_until
from private_broker import PrivateBroker

from bridge.devstack import BridgeProc
from bridge.gateway.simstate import Faults

FAST_KAFKA = {"connect_timeout_seconds": 3, "unreachable_after_seconds": 4}


@pytest.fixture
async def broker(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    """A broker of this test's own (not started yet), stopped at the end whatever happened.

    (Depends on the session broker only so that its first start has fetched the jars.)"""
    b = PrivateBroker(tmp_path / "broker")
    try:
        yield b
    finally:
        await asyncio.to_thread(b.stop)


async def create_topic(bootstrap: str, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    finally:
        await admin.close()


async def private_world(broker: PrivateBroker, tmp_path: Path, topic: str, partitions: int) -> Harness:
    """The private broker started, a simulator (2 ms latency) and `topic` on it: a Harness the test closes."""
    await asyncio.to_thread(broker.start)
    h = Harness(broker.bootstrap, tmp_path / "world")
    try:
        await h.start_sim(Faults(latency_ms=2))
        h.topic, h.partitions = topic, partitions
        await create_topic(broker.bootstrap, topic, partitions)
    except BaseException:
        await h.close()
        raise
    return h


async def ready_reasons(h: Harness, proc: BridgeProc) -> tuple[int, list[str]]:
    status, body = await h.get(f"{proc.metrics_url}/readyz")
    return status, (orjson.loads(body).get("reasons", []) if body else [])


async def wait_not_ready(h: Harness, proc: BridgeProc, words: str, timeout: float = 30) -> list[str]:
    """Until /readyz is 503 with a reason containing `words`; the reasons, that one first."""

    async def check() -> list[str] | None:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_tail()}")
        status, reasons = await ready_reasons(h, proc)
        if status != 503 or not any(words in r for r in reasons):
            return None
        return sorted(reasons, key=lambda r: words not in r)

    reasons: list[str] = await wait_until(check, timeout, f"/readyz 503 mentioning {words!r}")
    return reasons


def log_lines(proc: BridgeProc) -> list[dict[str, Any]]:
    out = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return out


# --------------------------------------------------------------------------- the gateway away
async def test_gateway_closed_longer_than_max_age_dead_letters_nothing_and_delivers_all_after(
    harness: Harness,
) -> None:
    h = harness
    sim = await h.start_sim()
    port = sim.port
    cfg = h.config(
        delivery={
            "retry": {"max_attempts": 3, "max_age_seconds": 4},
            "circuit": {"initial_probe_interval_seconds": 0.5, "max_probe_interval_seconds": 2},
        }
    )
    await sim.stop()  # the port is closed: connection refused
    proc = await h.start_bridge(cfg, wait_ready=False)
    events = [note(i, to=f"1380000{i % 20:04d}") for i in range(120)]
    await h.produce(events)
    reasons = await wait_not_ready(h, proc, "circuit open")
    assert reasons[0] == "paused: circuit open, gateway unreachable"
    opened_at = time.monotonic()
    m = await h.metrics(proc)
    assert m["bridge_circuit_state"] == 1
    # longer than max_age and than max_attempts' worth of retries: the retry clocks are stopped while open
    await wait_until(lambda: time.monotonic() - opened_at > 8, 10, "outage longer than max_age")
    assert proc.alive()
    await sim.start(port=port)
    await h.wait_accepted({e["id"] for e in events}, timeout=60)
    await h.wait_committed_to_end()
    m = await h.metrics(proc)
    assert m.get("bridge_dead_letters_total", 0) == 0
    assert m["bridge_circuit_state"] == 0
    assert m["bridge_circuit_openings_total"] >= 1
    lines = log_lines(proc)
    assert sum(1 for x in lines if x["msg"].startswith("CIRCUIT OPEN")) == m["bridge_circuit_openings_total"]
    assert any(x["msg"].startswith("CIRCUIT CLOSED") and x["level"] == "info" for x in lines)
    assert all(v["count"] == 1 for v in h.accepted().values())


async def test_gateway_answering_503_to_everything_is_an_outage_not_a_reason_to_dead_letter(
    harness: Harness,
) -> None:
    h = harness
    sim = await h.start_sim(Faults(http_503_rate=1.0))
    cfg = h.config(
        delivery={
            "retry": {"max_attempts": 2, "max_age_seconds": 3},
            "circuit": {"initial_probe_interval_seconds": 0.5, "max_probe_interval_seconds": 1},
        }
    )
    proc = await h.start_bridge(cfg, wait_ready=False)
    events = [note(i, to=f"1370000{i % 20:04d}") for i in range(80)]
    await h.produce(events)
    await wait_not_ready(h, proc, "circuit open")
    await asyncio.sleep(0)
    started = time.monotonic()
    await wait_until(lambda: time.monotonic() - started > 5, 7, "503s longer than max_age")
    sim.state.set_faults(Faults())
    await h.wait_accepted({e["id"] for e in events}, timeout=60)
    await h.wait_committed_to_end()
    m = await h.metrics(proc)
    assert m.get("bridge_dead_letters_total", 0) == 0


async def test_ban_loop_rate_below_quota_with_a_big_burst_delivers_everything(harness: Harness) -> None:
    """The issue's loop: quota 10/s with a ban, rate 8/s burst 20. The burst after each ban tripped the next."""
    h = harness
    sim = await h.start_sim(Faults(qps=10, ban_seconds=3))
    cfg = h.config(
        delivery={
            "max_in_flight": 8,
            "rate_limit": {"per_second": 8, "burst": 20, "adaptive": {"interval_seconds": 2}},
        }
    )
    proc = await h.start_bridge(cfg)
    events = [note(i, to=f"1360000{i % 40:04d}") for i in range(120)]
    await h.produce(events)
    await h.wait_accepted({e["id"] for e in events}, timeout=120)
    await h.wait_committed_to_end()
    stats = sim.state.stats_dict()
    assert stats["bans"] <= 2, stats  # the opening burst, and at most one more while climbing back
    m = await h.metrics(proc)
    assert m.get("bridge_dead_letters_total", 0) == 0
    assert m["bridge_throttle_bans_total"] == stats["bans"]


# --------------------------------------------------------------------------- the broker away
async def test_bridge_started_before_the_broker_waits_ready_503_then_delivers(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    h = Harness(broker.bootstrap, tmp_path / "world")
    try:
        await h.start_sim()
        h.topic, h.partitions = "early-events", 2
        cfg = h.config(kafka={"bootstrap_servers": broker.bootstrap, **FAST_KAFKA})
        proc = await h.start_bridge(cfg, wait_ready=False)
        reasons = await wait_not_ready(h, proc, "kafka unreachable")
        assert broker.bootstrap in reasons[0]
        status, _ = await h.get(f"{proc.metrics_url}/healthz")
        assert status == 200
        await wait_until(
            lambda: any(x["msg"] == "kafka unreachable: retrying" for x in log_lines(proc)), 20, "a WARNING"
        )
        warning = next(x for x in log_lines(proc) if x["msg"] == "kafka unreachable: retrying")
        assert warning["level"] == "warning" and warning["bootstrap_servers"] == broker.bootstrap
        assert proc.alive()
        await asyncio.to_thread(broker.start)
        await create_topic(broker.bootstrap, h.topic, 2)
        events = [note(i) for i in range(30)]
        await h.produce(events)
        await h.wait_ready(proc, timeout=60)
        await h.wait_accepted({e["id"] for e in events}, timeout=60)
        await h.wait_committed_to_end()
        assert proc.stop() == 0
        assert not [x for x in log_lines(proc) if x["level"] == "error"]
    finally:
        await h.close()


async def test_bridge_started_with_the_broker_frozen_waits_then_delivers(broker: PrivateBroker, tmp_path: Path) -> None:
    await asyncio.to_thread(broker.start)
    h = Harness(broker.bootstrap, tmp_path / "world")
    try:
        await h.start_sim()
        h.topic, h.partitions = "frozen-events", 2
        await create_topic(broker.bootstrap, h.topic, 2)
        broker.freeze()
        cfg = h.config(kafka={"bootstrap_servers": broker.bootstrap, **FAST_KAFKA})
        proc = await h.start_bridge(cfg, wait_ready=False)
        await wait_until(
            lambda: any("no answer within" in str(x.get("error")) for x in log_lines(proc)), 30, "a timed-out attempt"
        )
        status, reasons = await ready_reasons(h, proc)
        assert status == 503 and "kafka unreachable" in reasons[0]
        broker.thaw()
        events = [note(i) for i in range(30)]
        await h.produce(events)
        await h.wait_accepted({e["id"] for e in events}, timeout=90)
        await h.wait_committed_to_end()
    finally:
        await h.close()


async def test_broker_frozen_mid_stream_turns_not_ready_then_recovers_with_nothing_lost(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    h = await private_world(broker, tmp_path, "freeze-events", 3)
    try:
        cfg = h.config(kafka={"bootstrap_servers": broker.bootstrap, **FAST_KAFKA})
        proc = await h.start_bridge(cfg)
        first = [note(i, to=f"1350000{i % 30:04d}") for i in range(150)]
        await h.produce(first)
        await wait_until(lambda: len(h.accepted()) >= 50, 60, "delivering before the freeze")
        broker.freeze()
        frozen_at = time.monotonic()
        reasons = await wait_not_ready(h, proc, "kafka unreachable for")
        assert time.monotonic() - frozen_at < 15, "not-ready within a few seconds of the freeze"
        assert broker.bootstrap in reasons[0]
        await wait_until(lambda: time.monotonic() - frozen_at > 15, 20, "a 15 s freeze")
        broker.thaw()
        second = [note(i, to=f"1350000{i % 30:04d}") for i in range(150, 200)]
        await h.produce(second)
        await h.wait_accepted({e["id"] for e in first + second}, timeout=120)
        await h.wait_committed_to_end(timeout=60)
        await h.wait_ready(proc, timeout=60)
        lines = log_lines(proc)
        assert any(x["msg"].startswith("kafka unreachable: no broker answered") for x in lines)
        # said as soon as a broker answered, before /readyz turned 200 again
        assert any(x["msg"] == "kafka reachable again" for x in lines)
    finally:
        await h.close()


# --------------------------------------------------------------------------- the dead-letter topic refusing
async def test_dlq_too_small_is_reported_meanwhile_and_recovers_when_fixed(harness: Harness, new_topic: Any) -> None:
    h = harness
    h.dlq_topic = await new_topic(1, prefix="dlq", configs={"max.message.bytes": "100"})
    await h.start_sim()
    proc = await h.start_bridge(h.config())
    await h.produce([b"not json at all", *[orjson.dumps(note(i)) for i in range(10)]], partition=0)
    reasons = await wait_not_ready(h, proc, "dead-letter topic")
    assert "too large" in reasons[0]
    await wait_until(lambda: len(h.accepted()) == 10, 30, "later records delivered meanwhile")
    assert (await h.committed())[0] in (-1, 0), "the partition waits for its dead letter"
    m = await h.metrics(proc)
    assert m["bridge_dead_letter_publish_failures_total"] >= 1
    errors = [x for x in log_lines(proc) if x["level"] == "error" and x["logger"] == "bridge.dead_letter"]
    assert len(errors) == 1, "one ERROR per cause, not one per retry"
    admin = AIOKafkaAdminClient(bootstrap_servers=h.bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, h.dlq_topic, configs={"max.message.bytes": "1048576"})]
        )
    finally:
        await admin.close()
    letters = await h.read_dlq(1, timeout=60)
    headers = dict(letters[0].headers)
    assert headers["bridge.reason"] == b"not_json"
    # the full letter once the topic takes it — or, if the fix landed while it was trying a smaller shape, that one
    if "bridge.letter_shape" in headers:
        assert letters[0].value == b"" and headers["bridge.value_omitted"] == b"15"
    else:
        assert letters[0].value == b"not json at all"
    await h.wait_committed_to_end(timeout=60)
    await h.wait_ready(proc)


async def test_dlq_that_refuses_the_full_letter_gets_a_minimal_one_without_stalling(
    harness: Harness, new_topic: Any
) -> None:
    h = harness
    h.dlq_topic = await new_topic(1, prefix="dlq", configs={"max.message.bytes": "700"})
    await h.start_sim()
    await h.start_bridge(h.config())
    await h.produce([b"x" * 2000, orjson.dumps(note(1))], partition=0)
    letters = await h.read_dlq(1)
    headers = dict(letters[0].headers)
    assert letters[0].value == b""
    assert headers["bridge.reason"] == b"not_json"
    assert headers["bridge.value_omitted"] == b"2000"
    assert headers["bridge.letter_shape"] in (b"value_omitted", b"bare")
    await h.wait_committed_to_end()


async def test_missing_dlq_topic_is_one_error_at_start_and_recovers_when_created(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    broker.auto_create = False
    await asyncio.to_thread(broker.start)
    h = Harness(broker.bootstrap, tmp_path / "world")
    try:
        await h.start_sim()
        h.topic, h.partitions = "nodlq-events", 1
        await create_topic(broker.bootstrap, h.topic, 1)
        cfg = h.config(kafka={"bootstrap_servers": broker.bootstrap, **FAST_KAFKA})
        proc = await h.start_bridge(cfg, wait_ready=False)
        reasons = await wait_not_ready(h, proc, "does not exist")
        assert reasons[0].startswith("dead-letter topic")
        errors = [x for x in log_lines(proc) if x["level"] == "error"]
        assert len(errors) == 1 and errors[0]["dlq_topic"] == h.dlq_topic
        await h.produce([b"not json", orjson.dumps(note(1))])
        await wait_until(lambda: "n1" in h.accepted(), 30, "delivery goes on meanwhile")
        await create_topic(broker.bootstrap, h.dlq_topic, 1)
        await h.wait_ready(proc, timeout=60)
        letters = await h.read_dlq(1, timeout=60)
        assert dict(letters[0].headers)["bridge.reason"] == b"not_json"
        await h.wait_committed_to_end(timeout=60)
        assert len([x for x in log_lines(proc) if x["level"] == "error"]) <= 2  # the check, maybe one write
    finally:
        await h.close()


async def test_sigterm_with_the_broker_frozen_exits_in_bounded_time_and_loses_nothing(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    # the final commit cannot reach the coordinator: the stop must not hang on it (systemd would SIGKILL after
    # TimeoutStopSec), and what it could not commit is delivered again, with the same msg_keys, after a restart
    h = await private_world(broker, tmp_path, "frozen-stop-events", 2)
    try:
        cfg = h.config(kafka={"bootstrap_servers": broker.bootstrap, **FAST_KAFKA})
        proc = await h.start_bridge(cfg)
        events = [note(i, to=f"1350000{i % 30:04d}") for i in range(100)]
        await h.produce(events)
        await h.wait_accepted({e["id"] for e in events}, timeout=60)
        broker.freeze()
        started = time.monotonic()
        code = await asyncio.to_thread(proc.stop, 60.0)
        took = time.monotonic() - started
        broker.thaw()
        print(f"\nSIGTERM with the broker frozen: exit {code} after {took:.1f} s")
        assert code == 0 and took < 30, (code, took)
        said = [x["msg"] for x in log_lines(proc)]
        assert any(m.startswith("final commit gave up: the brokers did not answer") for m in said), said[-10:]
        restarted = await h.start_bridge(cfg, name="bridge-restarted")
        await h.wait_committed_to_end(timeout=60)
        assert {e["id"] for e in events} <= set(h.accepted())
        assert restarted.stop() == 0
    finally:
        await h.close()
