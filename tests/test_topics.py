"""Topic names in the config and the rules: legal names only, and no topic the bridge writes that it consumes.

Issue 10: `topic_pattern: 'p9pat\\..*'` with `dead_letter_topic: p9pat.dlq` passed `validate`, and the bridge
consumed its own DLQ (one bad record became 2,148 dead letters in 25 s); `dead_letter_topic: 'bad topic!'`
passed `validate` too. The pattern check must see what aiokafka's pattern subscription sees: the last test
subscribes a real consumer and compares.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from bridge.errors import ConfigError
from bridge.rules import load_rules
from bridge.settings import load_settings
from bridge.topics import pattern_consumes, topic_name_problem
from tests.conftest import TopicFactory


def settings_errors(tmp_path: Path, kafka: dict[str, Any], rules: Any = None) -> list[str]:
    data: dict[str, Any] = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", **kafka},
        "gateway": {"app_key": "k", "app_secret": "s"},
    }
    if rules is not None:
        data["rules"] = rules
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(load_settings(path))
    return [str(i) for i in caught.value.issues]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("campus.forum-events_v2", None),
        ("x" * 249, None),
        ("x" * 250, "too long (at most 249)"),
        ("", "must not be empty"),
        (".", "not a legal topic name"),
        ("..", "not a legal topic name"),
        ("...", None),
        ("bad topic!", "characters Kafka does not allow (' ' '!')"),
        ("héllo", "characters Kafka does not allow ('é')"),
    ],
)
def test_topic_names(name: str, problem: str | None) -> None:
    found = topic_name_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_an_illegal_dead_letter_topic_is_refused(tmp_path: Path) -> None:
    (error,) = settings_errors(tmp_path, {"topics": ["t"], "dead_letter_topic": "bad topic!"})
    assert error.endswith(
        "bridge.yaml:5: kafka.dead_letter_topic: topic 'bad topic!' has characters Kafka does not allow"
        " (' ' '!'): use only a-z A-Z 0-9 . _ -"
    )


def test_an_illegal_consumed_topic_is_named_by_index(tmp_path: Path) -> None:
    (error,) = settings_errors(tmp_path, {"topics": ["ok", ".."]})
    assert "kafka.topics[1]: '..' is not a legal topic name" in error


def test_an_illegal_rule_topic_is_refused(tmp_path: Path) -> None:
    rule = {"id": "r", "topics": ["t", "no/slash"], "message": {"event_type": "push_app"}}
    (error,) = settings_errors(tmp_path, {"topics": ["t"]}, [rule])
    assert "rules[0].topics[1]: rule r: topic 'no/slash' has characters Kafka does not allow" in error


@pytest.mark.parametrize(
    ("kafka", "how"),
    [
        ({"topic_pattern": r"p9pat\..*", "dead_letter_topic": "p9pat.dlq"}, r"topic_pattern 'p9pat\\..*' matches"),
        ({"topic_pattern": "p9pat", "dead_letter_topic": "p9pat.dlq"}, "topic_pattern 'p9pat' matches"),
        ({"topics": ["a", "a.dlq"], "dead_letter_topic": "a.dlq"}, "kafka.topics lists it"),
    ],
    ids=["the-issue", "prefix-is-enough", "listed"],
)
def test_a_consumed_dead_letter_topic_is_refused(tmp_path: Path, kafka: dict[str, Any], how: str) -> None:
    (error,) = settings_errors(tmp_path, kafka)
    assert f"kafka.dead_letter_topic: the bridge writes to {kafka['dead_letter_topic']!r} and would also" in error
    assert how in error


def test_a_pattern_anchored_at_the_end_does_not_consume_the_dlq(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    data = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topic_pattern": r"p9pat\.[a-z]+$"},
        "gateway": {"app_key": "k", "app_secret": "s"},
    }
    data["kafka"]["dead_letter_topic"] = "p9pat.events.dlq"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_settings(path).kafka.dead_letter_topic == "p9pat.events.dlq"


def test_rule_topics_use_the_same_pattern_semantics(tmp_path: Path) -> None:
    """A rule topic the pattern matches at its start is consumed (it used to be called a typo: fullmatch)."""
    path = tmp_path / "bridge.yaml"
    rule = {"id": "r", "topics": ["campus.forum.events"], "message": {"event_type": "push_app"}}
    data = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topic_pattern": r"campus\."},
        "gateway": {"app_key": "k", "app_secret": "s"},
        "rules": [rule],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_rules(load_settings(path)).ids == ("r",)


async def test_pattern_semantics_match_aiokafkas_subscription(kafka_bootstrap: str, new_topic: TopicFactory) -> None:
    """A real pattern subscription takes exactly the topics `pattern_consumes` says it does (names are
    `<prefix>-<uuid>`: the pattern matches the first two at their start, the third not at all)."""
    base = f"pat{uuid.uuid4().hex[:8]}"
    names = [await new_topic(prefix=p) for p in (f"{base}.events", f"{base}.events.dlq", f"x{base}.events")]
    pattern = re.escape(base) + r"\.events"
    expected = {n for n in names if pattern_consumes(pattern, n)}
    assert expected == set(names[:2])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}", metadata_max_age_ms=500
    )
    await consumer.start()
    try:
        consumer.subscribe(pattern=pattern)
        deadline = asyncio.get_running_loop().time() + 30
        while {tp.topic for tp in consumer.assignment()} != expected:
            assert asyncio.get_running_loop().time() < deadline, consumer.assignment()
            await consumer.getmany(timeout_ms=200)
    finally:
        await consumer.stop()


def test_bridge_map_refuses_an_illegal_topic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    path = tmp_path / "bridge.yaml"
    data = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["t"]},
        "gateway": {"app_key": "k", "app_secret": "s"},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["map", "-c", str(path), "--topic", "a b", "-i", str(path)]) == 2
    assert (
        capsys.readouterr().err
        == "error: --topic: topic 'a b' has characters Kafka does not allow (' '): use only a-z A-Z 0-9 . _ -\n"
    )
