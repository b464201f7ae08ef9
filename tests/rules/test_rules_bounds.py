"""Rules that could crash the process at run time are refused at load; what still fails at run time fails
one record, never the process.

The hostile cases are those measured in issue 10: a template `{{ event.title | [@, @] | … }}` nested 40 deep
(it passed `validate`, then segfaulted `bridge run` on the first matching event: the JSON of the result is
2^40 times the title while the values share memory), JMESPath nested thousands deep (RecursionError), and
events deep enough to make evaluation recurse past Python's limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.models import Mapped, MappingFailure, RecordMeta
from bridge.rules import load_rules
from bridge.rules.evaluators import Compiler
from bridge.rules.jmes import (
    MAX_DEPTH,
    MAX_GROWTH,
    MAX_SOURCE_CHARS,
    ExpressionError,
    parse,
    size_bound,
)
from bridge.rules.loader import compile_rules
from bridge.rules.ruleset import ANY_RULE
from bridge.settings import load_settings

META = RecordMeta("campus.forum.events", 0, 7, 1_700_000_000_000)


def doubling(levels: int) -> str:
    """The expression of the issue: each `[@, @]` doubles the JSON of its input."""
    return "event.title" + " | [@, @]" * levels


# ------------------------------------------------------------------------------------------- parse-time bounds
@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (doubling(40), "2^40× or more the size of the event (at most 64×)"),
        (doubling(7), "128× the size of the event (at most 64×)"),
        ("(" * 3000 + "event.title" + ")" * 3000, f"too long (at most {MAX_SOURCE_CHARS:,})"),
        ("[" * 1500 + "event" + "]" * 1500, "nested too deeply"),
        ("!" * 100 + "event.a", f"nested 102 levels deep (at most {MAX_DEPTH})"),
        ("join(event.sep, event.tags)", "join()'s separator must not depend on the event"),
        ("to_string(to_string(to_string(to_string(event))))", "256× the size"),
        ("'" + "x" * 4000 + "' | [@, @, @, @, @, @, @, @, @, @, @, @, @, @, @, @, @, @]", "bytes of literal text"),
    ],
    ids=["doubling-40", "doubling-7", "parens-3000", "brackets-1500", "not-100", "join-sep", "to_string-4", "literal"],
)
def test_hostile_expressions_are_refused_with_a_reason(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(source)
    assert fragment in caught.value.reason


@pytest.mark.parametrize(
    ("source", "bound"),
    [
        ("event.post.author.id", (1, 0)),
        ("event.a || event.b", (1, 0)),
        ("{id: event.id, name: event.name, tags: event.tags}", (1, 36)),  # disjoint paths: one event at most
        ("{a: event, b: event.id}", (2, 20)),  # overlapping paths count twice
        ("event.items[*].id", (1, 5)),
        ("map(&{id: id, n: name}, event.items)", (22, 110)),  # keys and nulls for each element of >= 2 bytes
        ("join(', ', event.tags)", (6, 32)),
        ("upper(event.code)", (3, 15)),
        ("to_string(event)", (4, 22)),
        ("length(event.tags) > `3`", (0, 5)),
        (doubling(6), (64, 2802)),  # the most doubling the limit allows
    ],
)
def test_size_bounds(source: str, bound: tuple[int, int]) -> None:
    assert size_bound(parse(source)) == bound


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from("abcdef"), inner, max_size=5),
    max_leaves=30,
)
SOUNDNESS = [
    "a",
    "{x: a, y: b, z: @}",
    "[a, b, [c, @]]",
    "a[*].b",
    "a[*].[@, @, 'abc']",
    "*.b",
    "a[?b].c",
    "a[] | [0]",
    "to_string(@)",
    "to_string([@, a])",
    "upper(to_string(a))",
    "join('--', keys(@))",
    "map(&{k: @, v: 'xyz'}, values(@))",
    "merge(@, {z: a})",
    "to_array(a) | [@, @]",
    "sort_by(values(@)[?type(@) == 'number'], &@)",
    "a || `[1, 2, 3]`",
    "@ | [@, @] | [@, @] | [@, @]",
    "not_null(a, b, c)",
    "mask(to_string(a))",
]


@settings(max_examples=60, deadline=None)
@given(value=JSON)
@pytest.mark.parametrize("source", SOUNDNESS)
def test_size_bound_holds_on_every_input(source: str, value: Any) -> None:
    """The static bound is an upper bound of the real result's JSON size (what the guarantee rests on):
    at most max(a × input + b, 5) bytes, 5 being null, true or false, which any expression can give."""
    compiler = Compiler()
    expr = compiler.expression(source)
    try:
        result = expr.evaluate(value)
    except Exception:  # a type error of the expression on this input: a mapping failure, not a size
        return
    a, b = expr_bound = size_bound(expr.node)
    size_in = len(orjson.dumps(value))
    size_out = len(orjson.dumps(result))
    assert size_out <= max(a * size_in + b, 5), (source, expr_bound, value, result)


def test_every_function_has_a_size_bound() -> None:
    """A function added to the rules must say how large its result can be (else `parse` refuses it)."""
    from bridge.rules.functions import function_names

    arguments = {"join": "'-', @", "map": "&a, @", "sort_by": "@, &a", "max_by": "@, &a", "min_by": "@, &a"}
    for name in sorted(function_names()):
        args = arguments.get(name) or ", ".join("@" for _ in range(_arity(name)))
        a, _b = size_bound(parse(f"{name}({args})"))
        assert a <= 6, name


def _arity(name: str) -> int:
    from bridge.rules.functions import RuleFunctions

    return len(RuleFunctions.FUNCTION_TABLE[name]["signature"])


# ------------------------------------------------------------------------------------------- rules at load
def test_the_deep_rule_is_refused_naming_file_rule_field_and_line(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "deep.rules.yaml").write_text(
        "rules:\n"
        "  - id: deep\n"
        "    message:\n"
        "      event_type: push_app\n"
        "      json_data:\n"
        f'        title: "{{{{ {doubling(40)} }}}}"\n',
        encoding="utf-8",
    )
    config = write_config(rule_files=["deep.rules.yaml"])
    with pytest.raises(ConfigError) as caught:
        load_rules(load_settings(config))
    (issue,) = caught.value.issues
    assert issue.file == str(tmp_path / "deep.rules.yaml")
    assert issue.path == "rules[0].message.json_data.title"
    assert issue.line == 6
    assert issue.message.startswith("rule deep: bad template")
    assert "(at most 64×)" in issue.message


def test_a_message_is_bounded_as_a_whole() -> None:
    """Each `{{ event }}` is one event; a json_data of hundreds of them is refused, not rendered."""
    leaves = {f"k{i}": "{{ event }}" for i in range(MAX_GROWTH * 4 + 1)}
    raw = [{"id": "wide", "message": {"event_type": "push_app", "json_data": leaves}}]
    with pytest.raises(ConfigError) as caught:
        compile_rules(raw)
    (issue,) = caught.value.issues
    assert issue.path == "rules[0].message"
    assert "257× the size of the event (at most 256×)" in issue.message


def test_a_long_but_ordinary_when_chain_is_accepted() -> None:
    when = " || ".join(f"event.type == 't{i}'" for i in range(60))
    raw = [{"id": "many", "when": when, "message": {"event_type": "push_app"}}]
    ruleset = compile_rules(raw)
    result = ruleset.map({"type": "t59"}, META)
    assert [type(i) for i in result.items] == [Mapped]


# ------------------------------------------------------------------------------------------- run time
def test_a_recursion_error_fails_that_record_only() -> None:
    """A 1,000-deep event (orjson decodes up to 1,024) makes `to_string` recurse past Python's limit."""
    raw = [
        {"id": "deep", "message": {"event_type": "push_app", "json_data": {"s": "{{ to_string(event.d) }}"}}},
        {"id": "fine", "message": {"event_type": "push_app", "json_data": {"n": "{{ event.n }}"}}},
    ]
    event = orjson.loads('{"n": 1, "d": ' + "[" * 1000 + "]" * 1000 + "}")
    result = compile_rules(raw).map(event, META)
    failure, mapped = result.items
    assert isinstance(failure, MappingFailure)
    assert (failure.rule, failure.field) == ("deep", "json_data.s")
    assert "maximum recursion depth exceeded" in failure.reason
    assert isinstance(mapped, Mapped)
    assert mapped.message.json_data == '{"n":1}'


@pytest.mark.parametrize("error", [MemoryError(), RecursionError("maximum recursion depth exceeded"), KeyError("x")])
def test_any_exception_in_a_rule_is_that_rules_mapping_failure(error: Exception) -> None:
    """Whatever a rule's evaluation raises (a MemoryError cannot be made on purpose: it is raised into it)."""
    raw = [
        {"id": "boom", "when": "event.a && event.b", "message": {"event_type": "push_app"}},
        {"id": "fine", "message": {"event_type": "push_app"}},
    ]
    ruleset = compile_rules(raw)

    def explode(_ctx: Any) -> bool:
        raise error

    boom = dataclasses.replace(ruleset.rules[0], check=explode, guard=None)
    ruleset = type(ruleset)([boom, ruleset.rules[1]])
    failure, mapped = ruleset.map({"a": 1, "b": 2}, META).items
    assert isinstance(failure, MappingFailure)
    assert (failure.rule, failure.field) == ("boom", "when")
    assert isinstance(mapped, Mapped)


def test_an_exception_outside_every_rule_is_a_mapping_failure_of_the_record() -> None:
    ruleset = compile_rules([{"id": "fine", "message": {"event_type": "push_app"}}])

    class BadMeta(RecordMeta):
        def key_text(self) -> str | None:
            raise MemoryError

    meta = BadMeta("t", 0, 1, 1, key=b"k")
    ruleset._needs_kafka = True  # the kafka context is built from the record's metadata
    (failure,) = ruleset.map({}, meta).items
    assert isinstance(failure, MappingFailure)
    assert (failure.rule, failure.field) == (ANY_RULE, "$")
    assert failure.reason == "internal error: MemoryError: MemoryError"
