"""Run-time mapping: matching, fan-out, dedupe, coercion into wire fields, and every mapping error as a value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bridge.models import Mapped, MappingFailure, RecordMeta
from bridge.rules import RuleSet

BASIC = """
- id: notify
  when: "event.type == 'ping'"
  message:
    event_type: mobile_receiver
    mobile_receiver: "{{ event.phone }}"
    resource_url: "https://x.example/{{ event.id }}"
    event_time_millis: "{{ event.at }}"
    json_data: {title: "hi {{ event.name }}", n: "{{ event.n }}"}
"""
EVENT = {"type": "ping", "phone": "13800138000", "id": "p1", "at": 1717381200000, "name": "李明", "n": 3}


def only(result: Any) -> Mapped | MappingFailure:
    assert len(result.items) == 1, result
    item: Mapped | MappingFailure = result.items[0]
    return item


def test_a_message(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    result = compile_yaml(BASIC).map(EVENT, meta())
    item = only(result)
    assert isinstance(item, Mapped)
    assert result.matched == ("notify",)
    assert item.message.to_api_dict() == {
        "msg_key": item.message.msg_key,
        "event_time_millis": 1717381200000,
        "json_data": '{"title":"hi 李明","n":3}',
        "event_type": "mobile_receiver",
        "resource_url": "https://x.example/p1",
        "mobile_receiver": "13800138000",
    }


def test_no_match(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    result = compile_yaml(BASIC).map({"type": "pong"}, meta())
    assert (result.items, result.matched, result.unmatched) == ((), (), True)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"phone": None}, "mobile_receiver", "required when event_type is mobile_receiver"),
        ({"phone": ""}, "mobile_receiver", "required"),
        ({"phone": "12-34"}, "mobile_receiver", "not a plausible phone number"),
        ({"phone": "13800138000\n"}, "mobile_receiver", "not a plausible phone number"),
        ({"phone": {"n": 1}}, "mobile_receiver", "expected text, got object"),
        ({"id": None}, "resource_url", "{{ event.id }} is null"),
        ({"id": "a b"}, "resource_url", "not an absolute http(s) URL"),
        ({"at": "2024-06-03T10:00:00"}, "event_time_millis", "without a UTC offset"),
        ({"at": "soon"}, "event_time_millis", "not an ISO-8601 timestamp"),
        ({"at": None}, "event_time_millis", "got null"),
        ({"at": -5}, "event_time_millis", "before 1970"),
        ({"name": None}, "json_data.title", "{{ event.name }} is null"),
        ({"name": "bad \ud800"}, "json_data", "cannot be written as JSON"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_mapping_errors_are_values(
    compile_yaml: Callable[..., RuleSet],
    meta: Callable[..., RecordMeta],
    change: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    item = only(compile_yaml(BASIC).map({**EVENT, **change}, meta()))
    assert isinstance(item, MappingFailure)
    assert (item.rule, item.field) == ("notify", field)
    assert reason in item.reason


PUSH = "message: {event_type: push_app}"
RUNTIME_CASES = [
    # (rule body after the id, event, failing field, reason fragment)
    (f"when: \"lower(event.type) == 'x'\"\n  {PUSH}", {"type": 5}, "when", "expression failed"),
    (f'when: "event.a < event.b"\n  {PUSH}', {"a": "x", "b": 1}, "when", "not supported"),
    (f'for_each: "event.list"\n  {PUSH}', {"list": "abc"}, "for_each", "got string"),
    (
        f'for_each: "sort_by(event.list, &n)"\n  {PUSH}',
        {"list": [{"n": 1}, {"n": "a"}]},
        "for_each",
        "expression failed",
    ),
    ('message: {event_type: "{{ event.kind }}"}', {"kind": "sms"}, "event_type", "'sms' is not one of"),
    ('message: {event_type: "{{ event.kind }}"}', {}, "event_type", "required"),
    ('message: {event_type: "{{ event.kind }}"}', {"kind": "mobile_receiver"}, "mobile_receiver", "required"),
    ('message: {event_type: push_app, json_data: "{{ event.raw }}"}', {"raw": "{bad"}, "json_data", "not valid JSON"),
    ('message: {event_type: push_app, json_data: "{{ event.raw }}"}', {"raw": 5}, "json_data", "object or array"),
    ('message: {event_type: push_app, sender: "{{ upper(event.n) }}"}', {"n": 5}, "sender", "expression failed"),
    ('message: {event_type: push_app, json_data: {a: "{{ upper(event.n) }}"}}', {"n": 5}, "json_data.a", "failed"),
    ('message: {event_type: push_app, json_data: {a: ["x{{ event.n }}"]}}', {}, "json_data.a[0]", "is null"),
    (f'idempotency_key: "{{{{ event.id }}}}"\n  {PUSH}', {}, "idempotency_key", "rendered null or empty"),
    (f'idempotency_key: "{{{{ event.id }}}}"\n  {PUSH}', {"id": {"a": 1}}, "idempotency_key", "got object"),
]


@pytest.mark.parametrize("case", RUNTIME_CASES, ids=lambda c: f"{c[2]}-{c[3]}")
def test_runtime_errors(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta], case: tuple[str, Any, str, str]
) -> None:
    rule, event, field, reason = case
    ruleset = compile_yaml(f"- id: r\n  {rule}\n")
    result = ruleset.map(event, meta())
    item = only(result)
    assert isinstance(item, MappingFailure), item
    assert (item.rule, item.field) == ("r", field)
    assert reason in item.reason
    assert result.matched == ("r",)


def test_no_timestamp_anywhere(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    item = only(compile_yaml("- id: r\n  message: {event_type: push_app}\n").map({}, meta(timestamp_ms=-1)))
    assert isinstance(item, MappingFailure)
    assert (item.field, item.reason) == (
        "event_time_millis",
        "the rule does not set it and the record has no timestamp",
    )


def test_event_time_defaults_to_the_record_timestamp(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    item = only(compile_yaml("- id: r\n  message: {event_type: push_app}\n").map({}, meta(timestamp_ms=123456)))
    assert isinstance(item, Mapped)
    assert item.message.event_time_millis == 123456


def test_coercion_into_text_fields(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    rules = """
- id: r
  message:
    event_type: mobile_receiver
    mobile_receiver: "{{ event.phone }}"
    resource_id: "{{ event.id }}"
    company_id: 10086
    sender: "{{ event.flag }}"
    action: "{{ event.missing }}"
    source: ""
    event_time_millis: "{{ event.seconds }}"
    json_data: "{{ event.payload }}"
"""
    event = {"phone": 13800138000, "id": 12.0, "flag": False, "seconds": 1717381200, "payload": {"b": [1, None]}}
    item = only(compile_yaml(rules).map(event, meta()))
    assert isinstance(item, Mapped)
    wire = item.message.to_api_dict()
    assert wire["mobile_receiver"] == "13800138000"
    assert wire["resource_id"] == "12"
    assert wire["company_id"] == "10086"
    assert wire["sender"] == "false"
    assert wire["event_time_millis"] == 1717381200000
    assert wire["json_data"] == '{"b":[1,null]}'
    assert "action" not in wire and "source" not in wire


FAN_OUT = """
- id: fan
  when: "event.type == 'a'"
  for_each: "event.people"
  message:
    event_type: mobile_receiver
    mobile_receiver: "{{ item.phone }}"
    json_data: {name: "{{ item.name }}", topic: "{{ kafka.topic }}"}
"""


def test_fan_out_with_dedupe_and_failures(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    people = [
        {"name": "a", "phone": "13600000001"},
        {"name": "b", "phone": "13600000002"},
        {"name": "a again", "phone": "13600000001"},
        {"name": "c", "phone": "nope"},
        {"name": "d", "phone": 13600000002},
    ]
    result = compile_yaml(FAN_OUT).map({"type": "a", "people": people}, meta())
    kinds = [(type(i).__name__, getattr(i, "field", None)) for i in result.items]
    assert kinds == [("Mapped", None), ("Mapped", None), ("MappingFailure", "mobile_receiver")]
    phones = [i.message.mobile_receiver for i in result.items if isinstance(i, Mapped)]
    assert phones == ["13600000001", "13600000002"]
    first = result.items[0]
    assert isinstance(first, Mapped)
    assert orjson.loads(first.message.json_data or "") == {"name": "a", "topic": "campus.forum.events"}


@pytest.mark.parametrize("people", [[], None, "absent"], ids=["empty", "null", "missing"])
def test_empty_fan_out_is_counted(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta], people: Any
) -> None:
    event: dict[str, Any] = {"type": "a"} if people == "absent" else {"type": "a", "people": people}
    result = compile_yaml(FAN_OUT).map(event, meta())
    assert (result.items, result.matched, result.empty_fanout, result.unmatched) == ((), ("fan",), ("fan",), False)


def test_dedupe_without_phone_keeps_different_messages(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    rules = """
- id: push
  for_each: "event.items"
  message: {event_type: push_app, resource_id: "{{ item }}"}
"""
    result = compile_yaml(rules).map({"items": ["x", "y", "x"]}, meta())
    assert [i.message.resource_id for i in result.items if isinstance(i, Mapped)] == ["x", "y"]


def test_all_matching_rules_apply_and_other_rules_still_go(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    rules = """
- id: first
  when: "event.type == 'x'"
  message: {event_type: mobile_receiver, mobile_receiver: "{{ event.a }}"}
- id: broken
  when: "event.type == 'x'"
  message: {event_type: mobile_receiver, mobile_receiver: "{{ event.missing }}"}
- id: other_type
  when: "event.type == 'y'"
  message: {event_type: push_app}
- id: always
  message: {event_type: push_app}
- id: never
  when: false
  message: {event_type: push_app}
"""
    result = compile_yaml(rules).map({"type": "x", "a": "13800138000"}, meta())
    assert result.matched == ("first", "broken", "always")
    assert [(type(i).__name__, i.rule) for i in result.items] == [
        ("Mapped", "first"),
        ("MappingFailure", "broken"),
        ("Mapped", "always"),
    ]


def test_topics_restrict_rules(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    rules = """
- id: forum_only
  topics: [campus.forum.events]
  message: {event_type: push_app}
- id: anywhere
  message: {event_type: push_app}
"""
    ruleset = compile_yaml(rules)
    assert ruleset.map({}, meta(topic="campus.forum.events")).matched == ("forum_only", "anywhere")
    assert ruleset.map({}, meta(topic="campus.course.events")).matched == ("anywhere",)
    assert [r.id for r in ruleset.for_topic("campus.course.events")] == ["anywhere"]


def test_context_kafka_and_headers(compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]) -> None:
    rules = """
- id: r
  when: "headers.tenant == 't1'"
  message:
    event_type: push_app
    json_data: {kafka: "{{ kafka }}", key: "{{ kafka.key }}"}
"""
    record = meta(key=b"k1", headers=(("tenant", b"t1"),), offset=9, partition=2)
    item = only(compile_yaml(rules).map({}, record))
    assert isinstance(item, Mapped)
    assert orjson.loads(item.message.json_data or "") == {
        "kafka": {
            "topic": "campus.forum.events",
            "partition": 2,
            "offset": 9,
            "key": "k1",
            "timestamp_ms": 1717372800000,
        },
        "key": "k1",
    }
    assert compile_yaml(rules).map({}, meta(headers=(("tenant", b"t2"),))).unmatched


def test_guarded_rules_still_see_the_whole_when(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    rules = """
- id: r
  when: "event.type == 'x' && event.ok"
  message: {event_type: push_app}
"""
    ruleset = compile_yaml(rules)
    assert ruleset.map({"type": "x", "ok": True}, meta()).matched == ("r",)
    assert ruleset.map({"type": "x", "ok": 0}, meta()).matched == ("r",)  # 0 is true in JMESPath
    assert ruleset.map({"type": "x", "ok": ""}, meta()).unmatched
    assert ruleset.map({"type": "y", "ok": True}, meta()).unmatched
    assert ruleset.map({"type": ["x"], "ok": True}, meta()).unmatched


def test_ruleset_introspection(compile_yaml: Callable[..., RuleSet]) -> None:
    ruleset = compile_yaml("- id: a\n  description: d\n  topics: [t]\n  message: {event_type: push_app}\n")
    assert (len(ruleset), ruleset.ids, repr(ruleset)) == (1, ("a",), "RuleSet(a)")
    rule = ruleset.rules[0]
    assert (rule.id, rule.description, rule.topics, rule.file, rule.path, rule.line) == (
        "a",
        "d",
        ("t",),
        "rules.yaml",
        "rules[0]",
        1,
    )
    assert ruleset.get("a") is rule and ruleset.get("b") is None
    assert list(ruleset) == [rule]


def test_fan_out_renders_event_fields_once(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    rules = """
- id: fan
  for_each: "event.people"
  message:
    event_type: mobile_receiver
    mobile_receiver: "{{ item }}"
    event_time_millis: "{{ event.at }}"
    resource_url: "https://x.example/{{ event.id }}"
"""
    ruleset = compile_yaml(rules)
    message = ruleset.rules[0].message
    assert message.render_item is not None and "def fn(ctx, base):" in message.source
    people = ["13600000001", "13600000002", "13600000003"]
    ok = ruleset.map({"people": people, "at": 1717381200, "id": 5}, meta())
    assert [i.message.resource_url for i in ok.items if isinstance(i, Mapped)] == ["https://x.example/5"] * 3
    broken = ruleset.map({"people": people, "at": "yesterday", "id": 5}, meta())
    assert [(i.rule, i.field) for i in broken.items if isinstance(i, MappingFailure)] == [("fan", "event_time_millis")]
