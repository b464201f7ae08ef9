"""JMESPath in rules: parse errors, name checks, guards, custom functions, and exact jmespath semantics.

The differential property test evaluates a table of expressions covering every AST node type three ways
(jmespath's interpreter, our closures, our generated code) on arbitrary JSON and demands identical results,
including the type (1 vs true) and which exception, if any.
"""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jmespath.visitor import Options

from bridge.rules.evaluators import Compiler
from bridge.rules.functions import RuleFunctions
from bridge.rules.jmes import ExpressionError, equality_guard, is_true, parse, root_names, without_leftmost
from bridge.rules.pygen import compile_predicate, compile_value

EXPRESSIONS = [
    "a",
    "a.b",
    "a.b.c",
    "a.b.c.d",
    '"a"',
    "a[0]",
    "a[-1]",
    "a[1:3]",
    "a[::-1]",
    "a[*].b",
    "a[].b",
    "a[]",
    "a[?b].c",
    "a[?b == `1`]",
    "a[?b > `0`].b",
    "*.b",
    "a.*",
    "a == b",
    "a != b",
    "a == `1`",
    "a == `0`",
    "a == `true`",
    "a != `false`",
    "a == 'x'",
    "'x' == a",
    "a != 'x'",
    "a == `null`",
    "a < b",
    "a >= `2`",
    "a <= 'm'",
    "a > b.c",
    "a && b",
    "a || b",
    "!a",
    "!(a.b)",
    "a && b || c",
    "!(a && b)",
    "a && b && c",
    "a == 'x' && b",
    "a == 'x' && b && !c",
    "[a, b]",
    "{x: a, y: b.c}",
    "a | b",
    "@",
    "a.b | c",
    "a.b | [0]",
    "length(a)",
    "lower(a)",
    "upper(a.b)",
    "default(a, 'd')",
    "to_millis(a)",
    "mask(a)",
    "sort_by(a, &b)",
    "max_by(a, &b)",
    "map(&b, a)",
    "not_null(a, b)",
    "a[0].b[1]",
    "a.b[0]",
    "`[1,2]`",
    "a == `{}`",
    "a == `[]`",
    "[a][0]",
    "a.b == c.d && !e",
    "contains(a, 'x')",
    "keys(a)",
    "to_string(a)",
    "starts_with(a, 'x')",
    "join(',', a)",
    "a[?b] | length(@)",
    "{k: a}.k",
    "a.{x: b}",
    "a[*].[b, c]",
]

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "x"])
LEAVES = (
    st.sampled_from([0, 1, -1, 0.0, 1.0, True, False, None, "", "x", "m", "X", [], {}])
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
JSON = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=3), inner, max_size=5)
)
DATA = st.dictionaries(KEYS, JSON, max_size=6) | JSON


def canonical(value: Any) -> Any:
    """A form in which 1 and true (and 1.0) differ, for exact comparisons."""
    if isinstance(value, dict):
        return ("object", sorted((k, canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", [canonical(v) for v in value])
    return (type(value).__name__, value)


def outcome(fn: Any, data: Any) -> Any:
    try:
        return canonical(fn(data))
    except Exception as exc:
        return ("raised", type(exc).__name__)


OPTIONS = Options(custom_functions=RuleFunctions())


@settings(max_examples=250, deadline=None)
@given(data=DATA, source=st.sampled_from(EXPRESSIONS))
def test_closures_and_generated_code_match_jmespath(data: Any, source: str) -> None:
    compiler = Compiler()
    node = parse(source)
    expected = outcome(lambda d: jmespath.search(source, d, options=OPTIONS), data)
    assert outcome(compiler.compile(node), data) == expected
    generated, _code = compile_value(node, compiler, "t")
    assert outcome(generated, data) == expected
    predicate, _code = compile_predicate(node, compiler, "t")
    truth = outcome(lambda d: is_true(jmespath.search(source, d, options=OPTIONS)), data)
    assert outcome(predicate, data) == truth


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_every_table_expression_parses(source: str) -> None:
    Compiler().expression(source)


@pytest.mark.parametrize(
    ("value", "truth"),
    [(None, False), (False, False), ("", False), ([], False), ({}, False), (0, True), (0.0, True), ("0", True)],
    ids=str,
)
def test_truthiness(value: Any, truth: bool) -> None:
    assert is_true(value) is truth


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("", "empty expression"),
        ("a ==", "incomplete"),
        ("a ^ b", "Unknown token"),
        ("frobnicate(a)", r"unknown function frobnicate\(\)"),
        ("default(a)", r"default\(\) takes 2 arguments, got 1"),
        ("not_null()", r"not_null\(\) takes at least 1 arguments, got 0"),
        ("!event.comment.parent", "put the path in parentheses"),
        ("a && !b.c", "put the path in parentheses"),
    ],
    ids=str,
)
def test_parse_errors(source: str, reason: str) -> None:
    with pytest.raises(ExpressionError, match=reason):
        parse(source)


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("event.a", {"event"}),
        ("event.a == item.b", {"event", "item"}),
        ("lower(kafka.topic) == headers.x", {"kafka", "headers"}),
        ("event.list[?item.x].y", {"event"}),
        ("@.event", {"@"}),
        ("event | post", {"event"}),
        ("{a: event.x, b: post.y}", {"event", "post"}),
        ("sort_by(event.list, &name)", {"event"}),
        ("`1`", set()),
    ],
    ids=str,
)
def test_root_names(source: str, names: set[str]) -> None:
    assert root_names(parse(source)) == names


@pytest.mark.parametrize(
    ("source", "guard", "rest"),
    [
        ("event.type == 'x'", (("event", "type"), "x"), None),
        ("'x' == event.type", (("event", "type"), "x"), None),
        ("event.type == 'x' && a", (("event", "type"), "x"), "a"),
        ("event.type == 'x' && a && b", (("event", "type"), "x"), "a && b"),
        ("event.type == 'x' || a", None, None),
        ("a && event.type == 'x'", None, None),
        ("event.type == `1`", None, None),
        ("lower(event.type) == 'x'", None, None),
        ("event.type != 'x'", None, None),
    ],
    ids=str,
)
def test_equality_guard(source: str, guard: Any, rest: str | None) -> None:
    node = parse(source)
    assert equality_guard(node) == guard
    if guard is not None:
        remaining = without_leftmost(node)
        assert remaining == (parse(rest) if rest else None)


def call(source: str, data: Any = None) -> Any:
    return Compiler().expression(source).evaluate(data)


@pytest.mark.parametrize(
    ("source", "data", "value"),
    [
        ("to_millis(@)", "2024-06-03T10:15:30+08:00", 1717380930000),
        ("to_millis(@)", 1717381200, 1717381200000),
        ("to_millis(@)", "2024-06-03T10:15:30", None),
        ("to_millis(@)", {"a": 1}, None),
        ("lower(@)", "AbC", "abc"),
        ("upper(@)", "x1y", "X1Y"),
        ("lower(@)", None, None),
        ("default(@, 'd')", None, "d"),
        ("default(@, 'd')", "", "d"),
        ("default(@, 'd')", False, False),
        ("default(@, 'd')", 0, 0),
        ("mask(@)", "13312345678", "133****5678"),
        ("mask(@)", 13312345678, "133****5678"),
        ("mask(@)", None, None),
    ],
    ids=str,
)
def test_custom_functions(source: str, data: Any, value: Any) -> None:
    assert call(source, data) == value


@pytest.mark.parametrize(("source", "data"), [("lower(@)", 5), ("upper(@)", ["a"]), ("mask(@)", True)], ids=str)
def test_custom_functions_check_types(source: str, data: Any) -> None:
    with pytest.raises(jmespath.exceptions.JMESPathTypeError):
        call(source, data)
