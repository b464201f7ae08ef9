"""Templates: text with `{{ expr }}` parts, pre-split at load so rendering never parses.

Three shapes, decided once by `parse_template`:
- no `{{` at all: a constant;
- exactly one `{{ expr }}` and nothing else: the expression's value, with its type (number, object, null …);
- text with parts: every part's value is written into the text (`interpolated_text`); a part that is null is a
  render error naming the expression, so a missing id never yields `…/posts/` silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.rules.coerce import RenderError, interpolated_text
from bridge.rules.evaluators import Compiler
from bridge.rules.jmes import Expression, ExpressionError

Render = Callable[[dict[str, Any]], Any]

_PART_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class TemplateError(Exception):
    """Template syntax (unclosed `{{`, empty part) or an invalid expression inside it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal `head`, then each expression with the literal text after it.

    `render(context)` gives its value. The rule engine compiles message templates into one function per
    rule (`bridge.rules.codegen`); `render` serves `idempotency_key` and anything rendered outside it.
    """

    source: str
    head: str
    parts: tuple[tuple[Expression, str], ...]
    render: Render

    @property
    def is_constant(self) -> bool:
        """No `{{ }}` at all: the text is the value."""
        return not self.parts

    @property
    def is_single(self) -> bool:
        """Exactly one `{{ expr }}` and nothing else: the value keeps the expression's type."""
        return len(self.parts) == 1 and not self.head and not self.parts[0][1]

    @property
    def expressions(self) -> tuple[Expression, ...]:
        """The expressions, in order."""
        return tuple(expr for expr, _ in self.parts)

    @property
    def leading_text(self) -> str:
        """The literal text before the first expression (all of it for a constant)."""
        return self.head


def split_template(text: str) -> list[str | tuple[str]]:
    """Split text into literal strings and `(expression source,)` parts; TemplateError on bad syntax."""
    pieces: list[str | tuple[str]] = []
    pos = 0
    for m in _PART_RE.finditer(text):
        literal = text[pos : m.start()]
        if "{{" in literal:
            raise TemplateError(f"'{{{{' at offset {pos + literal.index('{{')} is not closed by '}}}}'")
        if literal:
            pieces.append(literal)
        source = m.group(1).strip()
        if not source:
            raise TemplateError(f"empty '{{{{ }}}}' at offset {m.start()}")
        pieces.append((source,))
        pos = m.end()
    rest = text[pos:]
    if "{{" in rest:
        raise TemplateError(f"'{{{{' at offset {pos + rest.index('{{')} is not closed by '}}}}'")
    if rest:
        pieces.append(rest)
    return pieces


def parse_template(text: str, compiler: Compiler) -> Template:
    """Parse and compile a template string; TemplateError on bad syntax or a bad expression."""
    head = ""
    parts: list[tuple[Expression, str]] = []
    for piece in split_template(text):
        if isinstance(piece, str):
            if parts:
                parts[-1] = (parts[-1][0], parts[-1][1] + piece)
            else:
                head += piece
            continue
        try:
            parts.append((compiler.expression(piece[0]), ""))
        except ExpressionError as exc:
            if "{{" in piece[0]:  # `{{ a {{ b }}`: say what went wrong, not what JMESPath thinks of `a {{ b`
                raise TemplateError(
                    f"'{{{{' inside the expression {piece[0]!r} (a literal '{{{{' is {{{{ '{{{{' }}}})"
                ) from None
            raise TemplateError(exc.reason) from None
    if not parts:
        return Template(text, text, (), lambda _ctx: text)
    if len(parts) == 1 and not head and not parts[0][1]:
        return Template(text, head, tuple(parts), parts[0][0].evaluate)
    return Template(text, head, tuple(parts), _text_renderer(head, parts))


def _text_renderer(head: str, steps: list[tuple[Expression, str]]) -> Render:
    if len(steps) == 1:
        ((expr, tail),) = steps
        return _one_part(head, expr, tail)
    if len(steps) == 2:
        (expr1, mid), (expr2, tail) = steps
        return _two_parts(head, expr1, mid, expr2, tail)
    plan = tuple((e.evaluate, e.source, tail) for e, tail in steps)

    def render(ctx: dict[str, Any]) -> str:
        out = [head]
        for evaluate, source, tail in plan:
            value = evaluate(ctx)
            out.append(value if type(value) is str else interpolate(value, source))
            out.append(tail)
        return "".join(out)

    return render


def interpolate(value: Any, source: str) -> str:
    """How a non-text value reads inside text; null raises RenderError naming the expression."""
    try:
        return interpolated_text(value)
    except RenderError as exc:
        raise RenderError(f"{{{{ {source} }}}} {exc.reason}") from None


def _one_part(head: str, expr: Expression, tail: str) -> Render:
    evaluate, source = expr.evaluate, expr.source

    def render(ctx: dict[str, Any]) -> str:
        value = evaluate(ctx)
        if type(value) is not str:
            value = interpolate(value, source)
        return f"{head}{value}{tail}"

    return render


def _two_parts(head: str, expr1: Expression, mid: str, expr2: Expression, tail: str) -> Render:
    evaluate1, source1, evaluate2, source2 = expr1.evaluate, expr1.source, expr2.evaluate, expr2.source

    def render(ctx: dict[str, Any]) -> str:
        value1 = evaluate1(ctx)
        if type(value1) is not str:
            value1 = interpolate(value1, source1)
        value2 = evaluate2(ctx)
        if type(value2) is not str:
            value2 = interpolate(value2, source2)
        return f"{head}{value1}{mid}{value2}{tail}"

    return render
