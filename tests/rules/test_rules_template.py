"""Templates: splitting `{{ }}` parts, the three shapes, and how values read inside text."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.rules.coerce import RenderError
from bridge.rules.evaluators import Compiler
from bridge.rules.template import TemplateError, parse_template, split_template

CTX: dict[str, Any] = {
    "event": {"id": 42, "name": "李明", "score": 95.0, "ratio": 0.5, "ok": True, "tags": ["a", "b"], "none": None},
    "item": None,
    "kafka": {"topic": "t", "offset": 7},
    "headers": {},
}


def render(text: str) -> Any:
    return parse_template(text, Compiler()).render(CTX)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("plain", ["plain"]),
        ("{{ a }}", [("a",)]),
        ("x{{a}}y{{ b.c }}", ["x", ("a",), "y", ("b.c",)]),
        ("{{ a }}{{ b }}", [("a",), ("b",)]),
        ("{{ '{{' }}", [("'{{'",)]),
        ("}} alone is text", ["}} alone is text"]),
        ("{{ {k: a} }}", [("{k: a}",)]),
        ("multi\nline {{\n a \n}}", ["multi\nline ", ("a",)]),
    ],
    ids=["constant", "single", "mixed", "adjacent", "escaped-open", "stray-close", "multiselect", "newlines"],
)
def test_split(text: str, pieces: list[Any]) -> None:
    assert split_template(text) == pieces


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ a ", "is not closed"),
        ("x {{ a }} {{ b", "is not closed"),
        ("{{ }}", "empty"),
        ("{{ {{ a }}", "inside the expression"),
        ("{{ a == }}", "incomplete JMESPath"),
        ("{{ a..b }}", "invalid JMESPath .* at column 2"),
        ("{{ nope(a) }}", "unknown function nope()"),
        ("{{ lower(a, b) }}", r"lower\(\) takes 1 argument, got 2"),
        ("{{ !a.b }}", "put the path in parentheses"),
    ],
    ids=["unclosed", "unclosed-later", "empty", "nested", "incomplete", "bad-token", "unknown-fn", "arity", "not-dot"],
)
def test_bad_templates(text: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        parse_template(text, Compiler())


def test_shapes() -> None:
    compiler = Compiler()
    constant = parse_template("https://x.example/a", compiler)
    single = parse_template("{{ event.id }}", compiler)
    text = parse_template("https://x.example/{{ event.id }}", compiler)
    assert (constant.is_constant, constant.is_single) == (True, False)
    assert (single.is_constant, single.is_single) == (False, True)
    assert (text.is_constant, text.is_single, text.leading_text) == (False, False, "https://x.example/")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{{ event.id }}", 42),
        ("{{ event.score }}", 95.0),
        ("{{ event.tags }}", ["a", "b"]),
        ("{{ event.none }}", None),
        ("{{ event.missing }}", None),
        ("{{ event.ok }}", True),
        ("id={{ event.id }}", "id=42"),
        ("{{ event.score }} points", "95 points"),
        ("{{ event.ratio }}", 0.5),
        ("r={{ event.ratio }}", "r=0.5"),
        ("{{ event.ok }}!", "true!"),
        ("tags={{ event.tags }}", 'tags=["a","b"]'),
        ("{{ event.name }}，你好", "李明，你好"),
        ("{{ event.name }}/{{ event.id }}/{{ kafka.topic }}@{{ kafka.offset }}", "李明/42/t@7"),
        ("a {{ '{{' }} b }} c", "a {{ b }} c"),
        ("{{ {n: event.id} }}", {"n": 42}),
        ("{{ default(event.none, 'x') }}-{{ upper(event.name) }}", "x-李明"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_render(text: str, value: Any) -> None:
    assert render(text) == value


@pytest.mark.parametrize("text", ["id={{ event.none }}", "{{ event.id }}-{{ event.missing }}", "{{ a }}{{ b }}{{ c }}"])
def test_null_inside_text_is_an_error_naming_the_expression(text: str) -> None:
    with pytest.raises(RenderError, match=r"\{\{ .* \}\} is null"):
        render(text)
