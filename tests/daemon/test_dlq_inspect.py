"""`bridge dlq inspect` and `bridge dlq replay --dry-run` on a real dead-letter topic: each letter listed with its
reason, rule, source offset and masked recipient; filters by reason, rule and time; nothing written, no group."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from harness import REPO_ROOT_FOR_TESTS

from bridge.kafka.codec import InvalidReason
from bridge.models import RecordMeta
from bridge.work import DeadLetter, PartitionState, RecordRef

T0 = 1_780_000_000_000  # the letters' timestamps: T0, T0 + 1 h, T0 + 2 h
HOUR = 3_600_000


def letter(topic: str, offset: int, reason: str, rule: str | None, phone: str | None) -> DeadLetter:
    """A dead letter as the daemon writes it (same header builder)."""
    meta = RecordMeta(topic, 2, offset, T0 - 5000, key=b"k", headers=(("trace", b"t-1"),))
    ref = RecordRef(PartitionState(topic, 2, None), meta, b'{"type":"comment.created"}')  # type: ignore[arg-type]
    payload = json.dumps({"msg_key": f"key-{offset}", "mobile_receiver": phone}).encode() if phone else None
    code, sub_code = (50, "isv.invalid-parameter") if reason == "rejected" else (None, None)
    key = f"key-{offset}" if phone else None
    return DeadLetter(ref, reason, f"refused for {phone or 'nobody'}", rule=rule, code=code, sub_code=sub_code,
                      attempts=1 if phone else 0, msg_key=key, payload=payload)  # fmt: skip


@pytest.fixture
async def dlq_setup(
    kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]], tmp_path: Path
) -> tuple[Path, str, str]:
    """A source topic, a DLQ topic with three letters (rejected, mapping_error, not_json) an hour apart, a config."""
    source = await new_topic(1, prefix="src")
    dlq = await new_topic(1, prefix="dlq")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i, dl in enumerate(
            [
                letter(source, 100, "rejected", "comment_on_post", "13800138000"),
                letter(source, 101, "mapping_error", "reply_to_comment", None),
                letter(source, 102, InvalidReason.NOT_JSON.value, None, None),
            ]
        ):
            await producer.send_and_wait(
                dlq, b'{"type":"x"}', key=b"k", headers=dl.headers(), timestamp_ms=T0 + i * HOUR
            )
    finally:
        await producer.stop()
    config = {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topics": [source], "dead_letter_topic": dlq},
        "gateway": {"url": "http://127.0.0.1:1/router/rest", "app_key": "k", "app_secret": "s"},
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, source, dlq


def bridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT_FOR_TESTS, timeout=60)  # fmt: skip


async def end_offset(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def test_inspect_lists_every_letter_with_reason_rule_source_and_masked_recipient(
    dlq_setup: tuple[Path, str, str], kafka_bootstrap: str
) -> None:
    config, source, _ = dlq_setup
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        groups_before = {g[0] for g in await admin.list_consumer_groups()}
        r = await asyncio.to_thread(bridge, "dlq", "inspect", "-c", str(config))
        groups_after = {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    assert "reason=rejected" in lines[0] and "rule=comment_on_post" in lines[0]
    assert f"source={source}/2@100" in lines[0]
    assert "to=138****8000" in lines[0] and "code=50 isv.invalid-parameter" in lines[0]
    assert "reason=mapping_error" in lines[1] and "rule=reply_to_comment" in lines[1] and "to=-" in lines[1]
    assert "reason=not_json" in lines[2] and "rule=-" in lines[2]
    assert "13800138000" not in r.stdout + r.stderr, "phone numbers are masked, in the error text too"
    assert "3 dead letters shown (3 read" in r.stderr
    assert groups_after == groups_before, "inspect uses no consumer group"


@pytest.mark.parametrize(
    ("filters", "expected_reasons"),
    [
        (["--reason", "rejected"], ["rejected"]),
        (["--reason", "rejected", "--reason", "not_json"], ["rejected", "not_json"]),
        (["--rule", "reply_to_comment"], ["mapping_error"]),
        (["--since", "2026-05-28T21:26:40+00:00"], ["mapping_error", "not_json"]),  # T0 + 1 h
        (["--until", "2026-05-28T21:26:40+00:00"], ["rejected"]),
        (
            ["--since", "2026-05-28T20:26:40+00:00", "--until", "2026-05-28T22:26:40+00:00"],
            ["rejected", "mapping_error"],
        ),
        (["--limit", "1"], ["rejected"]),
    ],
    ids=["reason", "two-reasons", "rule", "since", "until", "time-range", "limit"],
)
async def test_inspect_filters_by_reason_rule_and_time(
    dlq_setup: tuple[Path, str, str], filters: list[str], expected_reasons: list[str]
) -> None:
    config, _, _ = dlq_setup
    r = await asyncio.to_thread(bridge, "dlq", "inspect", "-c", str(config), "--json", *filters)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["reason"] for row in rows] == expected_reasons


async def test_replay_dry_run_shows_each_letter_sends_nothing_and_leaves_no_unclosed_producer(
    dlq_setup: tuple[Path, str, str], kafka_bootstrap: str
) -> None:
    config, source, _ = dlq_setup
    before = await end_offset(kafka_bootstrap, source)
    r = await asyncio.to_thread(bridge, "dlq", "replay", "-c", str(config), "--reason", "rejected", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "Unclosed" not in r.stderr, r.stderr
    [shown] = [line for line in r.stdout.splitlines() if "reason=" in line]
    assert "reason=rejected" in shown and "rule=comment_on_post" in shown
    assert f"source={source}/2@100" in shown and "to=138****8000" in shown and shown.endswith(f"-> {source}")
    assert "would replay 1; skipped 2" in r.stdout
    assert await end_offset(kafka_bootstrap, source) == before, "a dry run writes nothing"


def test_dlq_help_texts_describe_the_commands() -> None:
    for args, words in (
        (("dlq", "replay", "--help"), "same msg_key"),
        (("dlq", "inspect", "--help"), "Read-only"),
        (("config", "show", "--help"), "secrets"),
    ):
        r = bridge(*args)
        assert r.returncode == 0
        assert words in " ".join(r.stdout.split()), args
