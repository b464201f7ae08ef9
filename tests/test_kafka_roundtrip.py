"""The local Kafka broker really works: produce, consume in a group, commit; and the start/stop script."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

TopicFactory = Callable[..., Awaitable[str]]
KAFKA_LOCAL = Path(__file__).resolve().parents[1] / "scripts" / "kafka-local"
START_TIMEOUT_S = 600.0  # the first start on a machine also fetches the jars


async def _produce(bootstrap: str, topic: str, count: int, partitions: int = 1) -> None:
    """Send ``count`` records round-robin over ``partitions``, keyed/valued by their index."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(topic, key=b"%d" % i, value=b"value-%d" % i, partition=i % partitions)
            for i in range(count)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    """Read ``count`` records in consumer group ``group``, commit manually, and return their values."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=500)
                values.extend(record.value for records in batches.values() for record in records)
        await consumer.commit()
        return values
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> list[int | None]:
    """Read the group's committed offsets with a fresh consumer that joins nothing."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return [await consumer.committed(tp) for tp in partitions]
    finally:
        await consumer.stop()


async def test_produce_consume_commit_roundtrip(kafka_bootstrap: str, topic: str) -> None:
    """N records go in and come out in order; the group's committed offset is N afterwards."""
    count = 100
    group = f"group-{uuid.uuid4().hex}"
    await _produce(kafka_bootstrap, topic, count)

    values = await _consume_and_commit(kafka_bootstrap, topic, group, count)

    assert values == [b"value-%d" % i for i in range(count)]
    assert await _committed(kafka_bootstrap, group, [TopicPartition(topic, 0)]) == [count]


async def test_new_topic_with_partitions(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    """``new_topic(3)`` makes a 3-partition topic; commits are tracked per partition."""
    partitions, count = 3, 30
    name = await new_topic(partitions, prefix="multi")
    group = f"group-{uuid.uuid4().hex}"
    await _produce(kafka_bootstrap, name, count, partitions)

    values = await _consume_and_commit(kafka_bootstrap, name, group, count)

    assert name.startswith("multi-")
    assert sorted(values) == sorted(b"value-%d" % i for i in range(count))
    tps = [TopicPartition(name, p) for p in range(partitions)]
    assert await _committed(kafka_bootstrap, group, tps) == [count // partitions] * partitions


def _kafka_local(command: str, state: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/kafka-local COMMAND`` with state dir ``state``."""
    return subprocess.run(
        [sys.executable, str(KAFKA_LOCAL), command],
        env={**os.environ, "KAFKA_LOCAL_DIR": str(state)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _alive(pid: int) -> bool:
    """Return True if ``pid`` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


async def _cluster_brokers(bootstrap: str) -> int:
    """Return how many brokers the cluster at ``bootstrap`` reports."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return len((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()


@pytest.mark.kafka
def test_kafka_local_script_lifecycle(tmp_path: Path) -> None:
    """A second broker in its own state dir: start is idempotent, status/address/stop behave."""
    state = tmp_path / "kafka-local"
    try:
        started = _kafka_local("start", state, START_TIMEOUT_S)
        assert started.returncode == 0, started.stderr
        address = started.stdout.strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address), started.stdout
        assert asyncio.run(_cluster_brokers(address)) == 1

        again = _kafka_local("start", state, START_TIMEOUT_S)
        assert (again.returncode, again.stdout.strip()) == (0, address)
        assert "already running" in again.stderr

        status = _kafka_local("status", state)
        assert status.returncode == 0
        match = re.fullmatch(rf"running {re.escape(address)} pid (\d+)", status.stdout.strip())
        assert match, status.stdout
        pid = int(match.group(1))
        assert _alive(pid)
        shown = _kafka_local("address", state)
        assert (shown.returncode, shown.stdout.strip()) == (0, address)

        stopped = _kafka_local("stop", state)
        assert stopped.returncode == 0, stopped.stderr
        assert not _alive(pid)
        assert not (state / "kafka.pid").exists()
        status = _kafka_local("status", state)
        assert (status.returncode, status.stdout.strip()) == (1, "stopped")
        shown = _kafka_local("address", state)
        assert (shown.returncode, shown.stdout) == (1, "")
        assert _kafka_local("stop", state).returncode == 0
    finally:
        _kafka_local("stop", state)


async def test_commit_metadata_round_trips_through_the_group_coordinator_in_one_fetch(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    """Pins what restarts rely on: aiokafka commits (offset, metadata) and `fetch_committed` reads both back
    (aiokafka's public `committed()` drops the metadata), and the broker takes the default metadata budget."""
    from aiokafka.errors import KafkaError

    from bridge.kafka.progress import DEFAULT_BUDGET
    from bridge.kafka.source import fetch_committed

    topic = await new_topic(partitions=3)
    group = f"meta-{uuid.uuid4().hex[:8]}"
    tps = [TopicPartition(topic, p) for p in range(3)]
    writer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    writer.assign(tps)
    await writer.start()
    try:
        big = "v1:" + "A" * (DEFAULT_BUDGET - 3)
        await writer.commit({tps[0]: (5, "v1:eJxjYGBgAAAABQAB"), tps[1]: (3, ""), tps[2]: (9, big)})
        with pytest.raises(KafkaError):  # offset.metadata.max.bytes (4096) is enforced by the broker
            await writer.commit({tps[0]: (6, "x" * 4097)})
    finally:
        await writer.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        other = TopicPartition(topic + "-none", 0)
        got = await fetch_committed(reader, [*tps, other])
    finally:
        await reader.stop()
    assert got == {tps[0]: (5, "v1:eJxjYGBgAAAABQAB"), tps[1]: (3, ""), tps[2]: (9, big)}
