"""Property tests: `RuleSet.map` never raises, whatever JSON it is given, and what it returns is well formed.

Two kinds of input: arbitrary JSON values (any shape), and the shipped sample events with random parts
replaced by arbitrary JSON (structured but wrong: the rules get far into rendering before things break).
Rules: the shipped rules, plus rules that use every function, fan-out and the kafka/headers context.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.models import EVENT_TYPES, Mapped, MappingFailure, RecordMeta
from bridge.rules import RuleSet, compile_rules, load_rules
from bridge.settings import load_settings
from bridge.yamlsrc import parse_yaml

EXTRA_RULES = """
- id: everything
  when: "event.type || event.kind || `true`"
  idempotency_key: "{{ event.id }}-{{ kafka.offset }}"
  message:
    event_type: "{{ default(event.kind, 'push_app') }}"
    mobile_receiver: "{{ event.phone }}"
    resource_id: "{{ to_string(event.id) }}"
    resource_url: "https://x.example/{{ event.id }}?t={{ kafka.topic }}"
    sender: "{{ upper(event.name) }}"
    action: "{{ lower(headers.action) }}"
    event_time_millis: "{{ to_millis(event.at) }}"
    json_data:
      all: "{{ @ }}"
      masked: "{{ mask(event.phone) }}"
      list: ["{{ event.list[0] }}", "{{ length(event.list) }}"]
- id: fan
  for_each: "event.list"
  message:
    event_type: mobile_receiver
    mobile_receiver: "{{ item.phone || item }}"
    json_data: "{{ item }}"
- id: text_json
  when: "event.raw"
  message: {event_type: account_receiver, json_data: "{{ event.raw }}", sender: "{{ event.raw }}"}
"""

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet=st.characters(codec="utf-8", categories=["Cs", "Lo", "Nd"]))
    | st.sampled_from(["", "0", "13800138000", "2024-06-03T10:15:30+08:00", "2024-06-03", "{}", "[1]", "{bad"])
)
JSON = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=25,
)
KEYS = st.sampled_from(["type", "kind", "id", "phone", "name", "at", "list", "raw", "post", "actor", "data"])
EVENT_LIKE = st.dictionaries(KEYS, JSON, max_size=8)


@pytest.fixture(scope="module")
def rulesets() -> list[RuleSet]:
    root = Path(__file__).resolve().parents[2]
    config = root / "config" / "demo.yaml"
    shipped = []
    if config.exists():
        shipped.append(load_rules(load_settings(config)))
    data, locator = parse_yaml(EXTRA_RULES)
    return [*shipped, compile_rules(data, locator=locator)]


@pytest.fixture(scope="module")
def sample_events() -> list[dict[str, Any]]:
    path = Path(__file__).resolve().parents[2] / "config" / "examples" / "events.jsonl"
    return [orjson.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


METAS = st.builds(
    RecordMeta,
    topic=st.sampled_from(["campus.forum.events", "campus.course.events", "campus.facility.events", "other"]),
    partition=st.integers(0, 5),
    offset=st.integers(0, 2**40),
    timestamp_ms=st.integers(-1, 2**41),
    key=st.none() | st.binary(max_size=8),
    headers=st.lists(st.tuples(st.sampled_from(["action", "x"]), st.binary(max_size=8)), max_size=2).map(tuple),
)
PHONE = re.compile(r"^\+?[0-9]{5,20}$")


def check(result: Any) -> None:
    """Everything `map` returned is well formed: what a sender and a dead-letter writer can rely on."""
    for item in result.items:
        assert item.rule in result.matched
        if isinstance(item, MappingFailure):
            assert item.field and item.reason
            assert not item.reason.startswith("internal error"), item
            continue
        assert isinstance(item, Mapped)
        message = item.message
        assert str(uuid.UUID(message.msg_key)) == message.msg_key
        assert isinstance(message.event_time_millis, int) and message.event_time_millis >= 0
        assert message.event_type in EVENT_TYPES
        if message.event_type == "mobile_receiver" or message.mobile_receiver is not None:
            assert message.mobile_receiver is not None and PHONE.fullmatch(message.mobile_receiver)
        if message.json_data is not None:
            assert isinstance(orjson.loads(message.json_data), dict | list)
        if message.resource_url is not None:
            assert message.resource_url.startswith(("http://", "https://"))
        assert orjson.loads(message.to_json())["msg_key"] == message.msg_key  # sendable as is
    assert set(result.empty_fanout) <= set(result.matched)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=JSON, meta=METAS)
def test_map_never_raises_on_any_json(rulesets: list[RuleSet], event: Any, meta: RecordMeta) -> None:
    for ruleset in rulesets:
        check(ruleset.map(event, meta))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=EVENT_LIKE, meta=METAS)
def test_map_never_raises_on_event_like_objects(rulesets: list[RuleSet], event: Any, meta: RecordMeta) -> None:
    for ruleset in rulesets:
        check(ruleset.map(event, meta))


def _mutate(value: Any, draw: Any, depth: int = 0) -> Any:
    if depth > 6 or draw(st.integers(0, 5)) == 0:
        return draw(JSON)
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate(value[key], draw, depth + 1)}
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate(value[i], draw, depth + 1), *value[i + 1 :]]
    return draw(JSON)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), meta=METAS)
def test_map_never_raises_on_broken_samples(
    rulesets: list[RuleSet], sample_events: list[dict[str, Any]], data: st.DataObject, meta: RecordMeta
) -> None:
    event = data.draw(st.sampled_from(sample_events))
    for _ in range(data.draw(st.integers(1, 3))):
        event = _mutate(event, data.draw)
    for ruleset in rulesets:
        check(ruleset.map(event, meta))


def test_deeply_nested_event(rulesets: list[RuleSet]) -> None:
    deep: Any = "x"
    for _ in range(2000):
        deep = {"type": deep, "list": [deep]}
    for ruleset in rulesets:
        check(
            ruleset.map({"type": "comment.created", "id": deep, "raw": deep, "list": [deep]}, RecordMeta("t", 0, 0, 0))
        )


def test_huge_numbers(rulesets: list[RuleSet]) -> None:
    for ruleset in rulesets:
        check(ruleset.map({"id": 10**5000, "at": 10**400, "phone": 2**200, "raw": [10**30]}, RecordMeta("t", 0, 0, 0)))
