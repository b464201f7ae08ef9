"""msg_key: canonical UUID text; deterministic across redelivery; per rule and fan-out element; random mode."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.models import Mapped, RecordMeta
from bridge.rules import NAMESPACE, RuleSet, idempotency_key, record_key, uuid5_text

TWO_RULES = """
- id: one
  message: {event_type: push_app, resource_id: "{{ event.id }}"}
- id: two
  message: {event_type: push_app, resource_id: "{{ event.id }}"}
"""
IDEMPOTENT = """
- id: one
  idempotency_key: "{{ event.id }}"
  message: {event_type: push_app}
- id: two
  idempotency_key: "{{ event.id }}"
  for_each: event.people
  message: {event_type: mobile_receiver, mobile_receiver: "{{ item }}"}
"""


def keys(ruleset: RuleSet, event: Any, meta: RecordMeta) -> list[str]:
    return [i.message.msg_key for i in ruleset.map(event, meta).items if isinstance(i, Mapped)]


@given(st.text())
def test_uuid5_text_is_uuid5(name: str) -> None:
    try:
        expected = str(uuid.uuid5(NAMESPACE, name))
    except UnicodeEncodeError:  # lone surrogates: uuid5 cannot, we can (surrogatepass)
        return
    assert uuid5_text(name) == expected


def test_keys_are_canonical_uuids(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    for key in keys(compile_yaml(TWO_RULES), {"id": 1}, meta()):
        assert str(uuid.UUID(key)) == key
        assert uuid.UUID(key).version == 5


def test_deterministic_keys(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    ruleset = compile_yaml(TWO_RULES)
    first = keys(ruleset, {"id": 1}, meta(offset=10))
    assert first == keys(compile_yaml(TWO_RULES), {"id": 1}, meta(offset=10))  # redelivery, even after a restart
    assert first == [record_key("campus.forum.events", 0, 10, rule, "") for rule in ("one", "two")]
    assert len(set(first)) == 2  # two rules on one event: different keys
    assert keys(ruleset, {"id": 1}, meta(offset=11)) != first
    assert keys(ruleset, {"id": 1}, meta(partition=1, offset=10)) != first
    assert keys(ruleset, {"id": 1}, meta(topic="campus.course.events", offset=10)) != first


def test_fan_out_keys_differ_per_recipient(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    rules = "- id: r\n  for_each: event.p\n  message: {event_type: mobile_receiver, mobile_receiver: '{{ item }}'}\n"
    got = keys(compile_yaml(rules), {"p": ["13600000001", "13600000002"]}, meta(offset=3))
    assert got == [record_key("campus.forum.events", 0, 3, "r", p) for p in ("13600000001", "13600000002")]


def test_idempotency_key(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    ruleset = compile_yaml(IDEMPOTENT)
    event = {"id": "evt-1", "people": ["13600000001", "13600000002"]}
    got = keys(ruleset, event, meta(offset=1))
    assert got == [
        idempotency_key("evt-1", "one", ""),
        idempotency_key("evt-1", "two", "13600000001"),
        idempotency_key("evt-1", "two", "13600000002"),
    ]
    assert keys(ruleset, event, meta(offset=99, topic="campus.course.events")) == got  # re-published elsewhere
    assert keys(ruleset, {**event, "id": "evt-2"}, meta(offset=1)) != got
    assert len(set(got)) == 3


def test_random_keys(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    ruleset = compile_yaml(TWO_RULES, msg_key="random")
    first, second = keys(ruleset, {"id": 1}, meta()), keys(ruleset, {"id": 1}, meta())
    assert set(first).isdisjoint(second)
    assert all(uuid.UUID(k).version == 4 for k in first + second)


def test_a_rule_idempotency_key_wins_over_random(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    ruleset = compile_yaml(IDEMPOTENT, msg_key="random")
    assert keys(ruleset, {"id": "e", "people": []}, meta())[0] == idempotency_key("e", "one", "")


@pytest.mark.parametrize("key_id", [7, 7.0, "7"], ids=["int", "float", "text"])
def test_idempotency_key_reads_numbers_as_text(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta], key_id: Any
) -> None:
    assert keys(compile_yaml(IDEMPOTENT), {"id": key_id}, meta())[0] == idempotency_key("7", "one", "")
