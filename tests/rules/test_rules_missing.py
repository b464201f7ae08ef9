"""Templates that resolved to missing: reported per rule and field in MapResult.missing (the daemon counts
them); rendering itself is unchanged. And `bridge map --explain`'s reading of rules (pure parts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from bridge.models import Mapped, RecordMeta
from bridge.rules import RuleSet
from bridge.rules.explain import explain_rules, missing_detail, missing_effect, node_text
from bridge.rules.jmes import parse

RULES = """\
- id: note
  when: "event.type == 'note'"
  message:
    event_type: mobile_receiver
    mobile_receiver: "{{ event.to }}"
    company_id: "{{ event.tenant.companyid }}"
    corp_id: "{{ event.tenant.corp_id }}"
    sender: "{{ default(event.sender, '') }}"
    source: "{{ event.source || event.origin }}"
    resource_url: "https://campus.example/n/{{ event.id }}"
    event_time_millis: "{{ event.at }}"
    json_data:
      title: "note {{ event.id }}"
      term: "{{ event.trem }}"
      tags: ["{{ event.tag }}", fixed]
- id: fan
  when: "event.type == 'fan'"
  for_each: event.people
  message:
    event_type: mobile_receiver
    mobile_receiver: "{{ item.phone }}"
    sender: "{{ item.name }}"
    company_id: "{{ event.tenant.company_id }}"
"""

COMPLETE = {
    "type": "note",
    "to": "13800138000",
    "id": "n1",
    "at": 1_717_372_800_123,
    "source": "forum",
    "trem": "spring",
    "tag": "t1",
    "tenant": {"companyid": "c1", "corp_id": "d1"},
}


@pytest.fixture
def rules(compile_yaml: Callable[..., RuleSet]) -> RuleSet:
    return compile_yaml(RULES)


def test_a_complete_event_reports_nothing_missing(rules: RuleSet, meta: Callable[..., RecordMeta]) -> None:
    result = rules.map(COMPLETE, meta())
    assert result.missing == ()
    assert isinstance(result.items[0], Mapped)


@pytest.mark.parametrize(
    ("change", "missing"),
    [
        ({"tenant": {"corp_id": "d1"}}, ["company_id"]),
        ({"tenant": {"companyid": "c1", "corp_id": None}}, []),  # an explicit null is not missing
        ({"tenant": None}, ["company_id", "corp_id"]),  # null on the way: both paths break there
        ({"tenant": "acme"}, ["company_id", "corp_id"]),  # text on the way
        ({"trem": None}, []),
        ({"trem": "__delete__"}, ["json_data.term"]),
        ({"tag": "__delete__"}, ["json_data.tags[0]"]),
        ({"source": "__delete__"}, ["source"]),  # not a plain path: null from it counts as missing
        ({"source": "__delete__", "origin": "mail"}, []),
        ({"sender": "__delete__"}, []),  # default(…, '') says "optional": never reported
    ],
    ids=[
        "absent-key",
        "explicit-null",
        "null-parent",
        "text-parent",
        "json-leaf-null",
        "json-leaf-absent",
        "json-array-element",
        "or-expression",
        "or-expression-second",
        "default-empty",
    ],
)
def test_missing_fields_are_reported_per_rule_and_field(
    rules: RuleSet, meta: Callable[..., RecordMeta], change: dict[str, Any], missing: list[str]
) -> None:
    event = dict(COMPLETE)
    for key, value in change.items():
        if value == "__delete__":
            event.pop(key, None)
        else:
            event[key] = value
    result = rules.map(event, meta())
    assert sorted(result.missing) == sorted(("note", f) for f in missing)
    assert isinstance(result.items[0], Mapped), result.items  # the message is made as before


def test_a_missing_event_time_is_a_mapping_failure_not_a_missing_field(
    rules: RuleSet, meta: Callable[..., RecordMeta]
) -> None:
    event = {k: v for k, v in COMPLETE.items() if k != "at"}
    result = rules.map(event, meta())
    assert [(i.rule, getattr(i, "field", None)) for i in result.items] == [("note", "event_time_millis")]
    assert result.missing == ()


def test_a_failed_render_reports_no_missing_field(rules: RuleSet, meta: Callable[..., RecordMeta]) -> None:
    event = {k: v for k, v in COMPLETE.items() if k not in ("to", "tenant")}
    result = rules.map(event, meta())
    assert result.items[0].rule == "note" and not isinstance(result.items[0], Mapped)
    assert result.missing == ()


def test_fan_out_reports_once_per_event_for_event_and_item_fields(
    rules: RuleSet, meta: Callable[..., RecordMeta]
) -> None:
    people = [{"phone": "13600000001", "name": "a"}, {"phone": "13600000002"}, {"phone": "13600000003"}]
    result = rules.map({"type": "fan", "people": people}, meta())
    assert len([i for i in result.items if isinstance(i, Mapped)]) == 3
    assert result.missing == (("fan", "company_id"), ("fan", "sender"))


def test_missing_detail_names_the_absent_key(rules: RuleSet, meta: Callable[..., RecordMeta]) -> None:
    rule = rules.get("note")
    assert rule is not None
    event = {**COMPLETE, "tenant": {"corp_id": "d1"}}
    assert missing_detail(rule, "company_id", event, meta(), rules) == (
        "{{ event.tenant.companyid }}: event.tenant has no key 'companyid'"
    )
    event = {**COMPLETE, "tenant": "acme"}
    assert missing_detail(rule, "company_id", event, meta(), rules) == (
        "{{ event.tenant.companyid }}: event.tenant is str, not an object"
    )
    assert missing_detail(rule, "source", {}, meta(), rules) == "{{ event.source || event.origin }} gave null"
    fan = rules.get("fan")
    assert fan is not None
    assert missing_detail(fan, "sender", {}, meta(), rules) == "{{ item.name }}: an element of for_each has no name"
    assert missing_effect("json_data.term") == "it renders null in json_data"
    assert missing_effect("corp_id") == "the field is left out"


def test_the_metric_counts_per_rule_and_field() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.template_missing("note", "company_id")
    metrics.template_missing("note", "company_id")
    metrics.template_missing("note", "json_data.term")
    value = metrics.registry.get_sample_value
    assert value("bridge_template_missing_total", {"rule": "note", "field": "company_id"}) == 2
    assert value("bridge_template_missing_total", {"rule": "note", "field": "json_data.term"}) == 1
    Metrics(CollectorRegistry(), enabled=False).template_missing("note", "x")  # a no-op when disabled


# ------------------------------------------------------------------------------------------------ explain
def test_explain_says_why_each_rule_matched_or_not(rules: RuleSet, meta: Callable[..., RecordMeta]) -> None:
    got = {e["rule"]: e for e in explain_rules(rules, COMPLETE, meta(), not_consumed=None)}
    assert got["note"]["matched"] is True and got["note"]["why"] == "`when` holds"
    assert got["fan"]["matched"] is False
    assert got["fan"]["why"] == "`when` is false"
    assert got["fan"]["when"]["terms"] == [
        {"expr": "event.type == 'fan'", "value": False, "left": "note", "right": "fan"}
    ]


def test_explain_names_the_first_false_term_and_the_topic_problems(
    compile_yaml: Callable[..., RuleSet], meta: Callable[..., RecordMeta]
) -> None:
    rules = compile_yaml(
        """\
        - id: reply
          topics: [campus.forum.events]
          when: "event.type == 'c' && !(event.parent) && event.a != event.b"
          message: {event_type: push_app}
        - id: course
          topics: [campus.course.events]
          message: {event_type: push_app}
        - id: any
          message: {event_type: push_app}
        - id: broken
          when: "lower(event.n)"
          message: {event_type: push_app}
        """.replace("        ", "")
    )
    event = {"type": "c", "parent": {"id": 1}, "a": 1, "b": 2, "n": 5}
    got = {e["rule"]: e for e in explain_rules(rules, event, meta(), not_consumed=None)}
    assert got["reply"]["why"] == "`when` is false: `!(event.parent)` is false"
    assert got["reply"]["when"]["terms"][1] == {"expr": "!(event.parent)", "value": False, "operand": {"id": 1}}
    why = "applies to campus.course.events only, not campus.forum.events"
    assert got["course"] == {"rule": "course", "matched": False, "why": why}
    assert got["any"] == {"rule": "any", "matched": True, "why": "no `when`"}
    assert got["broken"]["why"] == "`when` failed: the event is dead-lettered (mapping_error)"
    assert "error" in got["broken"]["when"]
    not_consumed = explain_rules(rules, event, meta(), not_consumed="topic x is not consumed (kafka.topics: a)")
    assert {e["why"] for e in not_consumed if e["rule"] != "course"} == {"topic x is not consumed (kafka.topics: a)"}
    assert not any(e["matched"] for e in not_consumed)


WHEN_TEXTS = [
    "event.type == 'comment.created' && !(event.comment.parent) && event.post.author.id != event.actor.id",
    "event.a || event.b && event.c",
    "(event.a || event.b) && event.c",
    "!(event.a && event.b)",
    "!event",
    "event.items[0].id == `3`",
    "lower(event.name) == 'x' || event.n >= `2`",
    "event.\"odd key\" == 'it''s'".replace("''", "\\'"),
    "@.event.x | length(@) > `1`",
]


@pytest.mark.parametrize("text", WHEN_TEXTS)
def test_node_text_writes_an_expression_that_parses_back_to_the_same_tree(text: str) -> None:
    node = parse(text)
    assert parse(node_text(node)) == node


NAMES = st.sampled_from(["event", "item", "a", "b", "type", "odd key"])
LEAVES = st.one_of(
    st.lists(NAMES, min_size=1, max_size=3).map(lambda ks: ".".join(k if " " not in k else f'"{k}"' for k in ks)),
    st.sampled_from(["'x'", "`1`", "`null`", "`true`", "'it\\'s'"]),
)


def expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        LEAVES,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["==", "!=", "<", ">=", "&&", "||"]), inner).map(
                lambda t: f"({t[0]}) {t[1]} ({t[2]})"
            ),
            inner.map(lambda e: f"!({e})"),
        ),
        max_leaves=6,
    )


@settings(max_examples=300, deadline=None)
@given(text=expressions())
def test_property_node_text_round_trips(text: str) -> None:
    node = parse(text)
    assert parse(node_text(node)) == node
