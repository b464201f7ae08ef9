"""Compiling a rule's `message:` block: constants checked and rendered at load, the rest into one function.

`compile_message` returns a CompiledMessage (the constant fields, and `render(context)` giving every field's
final value, see `bridge.rules.codegen`) and every problem found as `(key path, reason)` pairs; the schema
turns those into ConfigIssues naming file, rule and line. Cross-field checks (event_type needs a
mobile_receiver) happen in the rule engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.models import EVENT_TYPES, MESSAGE_FIELDS
from bridge.rules.codegen import (
    Arr,
    Const,
    FieldPlan,
    FieldsRender,
    ItemRender,
    Obj,
    Single,
    Spec,
    Text,
    TextCheck,
    compile_fields,
    compile_item_fields,
    spec_roots,
    spec_templates,
)
from bridge.rules.coerce import (
    URL_RE,
    RenderError,
    field_text,
    is_url_prefix,
    json_data_text,
    parse_millis,
)
from bridge.rules.evaluators import Compiler
from bridge.rules.jmes import CONTEXT_NAMES, Expression
from bridge.rules.template import Template, TemplateError, parse_template
from bridge.yamlsrc import dotted

Problem = tuple[tuple[str | int, ...], str]

# Every field a rule may set; `msg_key` is generated (see `idempotency_key`).
TEXT_FIELDS = tuple(f for f in MESSAGE_FIELDS if f not in ("msg_key", "event_time_millis", "json_data"))
MESSAGE_KEYS = frozenset({*TEXT_FIELDS, "event_time_millis", "json_data"})


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """A message block ready to render: `render(context)` gives the fields (constants included)."""

    constants: dict[str, Any]
    rendered: tuple[str, ...]  # the fields rendered per event (or per element)
    render: FieldsRender  # the constants and every field that does not read `item`
    render_item: ItemRender | None  # with for_each: the fields that read `item`, on a copy of `render`'s
    roots: frozenset[str]
    source: str  # the generated code, for debugging
    # The fields (and json_data keys) that are one whole `{{ expr }}`: what a missing value is reported under.
    templates: dict[str, Expression] = field(default_factory=dict)


class _Builder:
    def __init__(
        self, compiler: Compiler, phone: re.Pattern[str], has_item: bool, names: tuple[str, ...] = CONTEXT_NAMES
    ) -> None:
        self.compiler = compiler
        self.phone = phone
        self.has_item = has_item
        self.names = names
        self.problems: list[Problem] = []
        self.roots: set[str] = set()

    def template(self, text: str, path: tuple[str | int, ...]) -> Template | None:
        try:
            template = parse_template(text, self.compiler)
        except TemplateError as exc:
            self.problems.append((path, f"bad template {text[:80]!r}: {exc.reason}"))
            return None
        for expr in template.expressions:
            self.check_roots(expr, path)
        return template

    def check_roots(self, expr: Expression, path: tuple[str | int, ...]) -> None:
        self.roots |= expr.roots
        for reason in root_problems(expr, has_item=self.has_item, where=dotted(path), names=self.names):
            self.problems.append((path, reason))


def root_problems(expr: Expression, *, has_item: bool, where: str, names: tuple[str, ...] = CONTEXT_NAMES) -> list[str]:
    """Why an expression's names do not fit the context `names` (unknown name, `item` outside for_each)."""

    def hint(name: str) -> str:
        if names == CONTEXT_NAMES:
            return f"event.{name}"
        return f"{names[0]}[0].{name}" if name in CONTEXT_NAMES else f"{names[0]}[0].event.{name}"  # a digest's

    problems = [
        f"`{expr.source}` reads `{name}`, which is not in the context ({', '.join(names)}); did you mean {hint(name)}?"
        for name in sorted(expr.roots - {"@", *names})
    ]
    if "item" in expr.roots and not has_item:
        if where in {"when", "for_each"}:
            problems.append(f"`{expr.source}` reads `item`, which is not set yet when {where} is evaluated")
        else:
            problems.append(f"`{expr.source}` reads `item`, which is only set in rules with for_each")
    return problems


def compile_message(
    raw: dict[str, Any],
    compiler: Compiler,
    *,
    phone: re.Pattern[str],
    has_item: bool,
    rule_id: str = "rule",
    names: tuple[str, ...] = CONTEXT_NAMES,
    partial: bool = False,
) -> tuple[CompiledMessage, list[Problem]]:
    """Compile a rule's `message` mapping; problems are returned, never raised.

    `names`: the context its expressions may read. `partial`: only some fields, laid over a message made
    elsewhere (a digest's summary over the folded messages), so no field is required.
    """
    b = _Builder(compiler, phone, has_item, names)
    constants: dict[str, Any] = {}
    plans: list[FieldPlan] = []
    for key in raw:
        if key not in MESSAGE_KEYS:
            hint = " (msg_key is generated: set idempotency_key on the rule)" if key == "msg_key" else ""
            b.problems.append(((str(key),), f"unknown key{hint}"))
    if "event_type" not in raw and not partial:
        b.problems.append(((), "event_type is required (push_app, mobile_receiver or account_receiver)"))
    for name in ("event_time_millis", "json_data", *TEXT_FIELDS):
        if name not in raw:
            continue
        spec = _spec(b, name, raw[name])
        if spec is None:
            continue
        finish, check = _finisher(name), _text_check(name, phone)
        if isinstance(spec, Const):
            try:
                result = (finish or field_text)(spec.value)
            except RenderError as exc:
                b.problems.append(((name,), exc.reason))
                continue
            if check is not None and result is not None and not check.test(result):
                b.problems.append(((name,), check.reason(result)))
            elif result is not None:
                constants[name] = result
        else:
            plans.append(FieldPlan(name, spec, finish, check))
    _check_constants(b, constants, raw, partial)
    if b.problems:
        return CompiledMessage(constants, (), lambda _ctx: [], None, frozenset(b.roots), ""), b.problems
    # With for_each, what does not read `item` is rendered once per event, the rest once per element.
    per_item = [p for p in plans if has_item and spec_roots(p.spec) & {"item", "@"}]
    per_event = [p for p in plans if p not in per_item]
    render, source = compile_fields(per_event, constants, compiler=compiler, rule_id=rule_id)
    render_item = None
    if per_item:
        render_item, item_source = compile_item_fields(per_item, compiler=compiler, rule_id=rule_id)
        source += "\n\n" + item_source
    rendered = tuple(p.name for p in plans)
    templates = {k: v for p in plans for k, v in spec_templates(p.spec, p.name).items()}
    message = CompiledMessage(constants, rendered, render, render_item, frozenset(b.roots), source, templates)
    return message, b.problems


def _spec(b: _Builder, name: str, value: Any) -> Spec | None:
    if name == "json_data" and isinstance(value, dict | list):
        return _json_tree(b, value, ("json_data",))
    if isinstance(value, str):
        template = b.template(value, (name,))
        if template is None:
            return None
        leading = template.leading_text
        if name == "resource_url" and not template.is_constant and leading and not is_url_prefix(leading):
            b.problems.append(((name,), f"{value[:80]!r} does not start with http:// or https://"))
        return _template_spec(template)
    if value is None or isinstance(value, bool | int | float):
        return Const(value)
    b.problems.append(((name,), f"expected text or a template, got a {type(value).__name__}"))
    return None


def _template_spec(template: Template) -> Spec:
    if template.is_constant:
        return Const(template.source)
    if template.is_single:
        return Single(template.parts[0][0])
    return Text(template.head, template.parts)


def _check_constants(b: _Builder, constants: dict[str, Any], raw: dict[str, Any], partial: bool) -> None:
    event_type = constants.get("event_type")
    if event_type is not None and event_type not in EVENT_TYPES:
        b.problems.append(
            (("event_type",), f"{event_type!r} is not one of account_receiver, mobile_receiver, push_app")
        )
    if event_type == "mobile_receiver" and raw.get("mobile_receiver") in (None, "") and not partial:
        where = ("mobile_receiver",) if "mobile_receiver" in raw else ()
        b.problems.append((where, "mobile_receiver is required when event_type is mobile_receiver"))


def _finisher(name: str) -> Callable[[Any], Any] | None:
    """How a field's rendered value becomes its final value; None for text fields (`field_text`)."""
    if name == "event_time_millis":
        return parse_millis
    if name == "json_data":
        return json_data_text
    return None


def _text_check(name: str, phone: re.Pattern[str]) -> TextCheck | None:
    """What a text field's value must be, beyond being text."""
    if name == "resource_url":
        return TextCheck(URL_RE.fullmatch, lambda v: f"not an absolute http(s) URL: {v[:80]!r}")
    if name == "mobile_receiver":
        return TextCheck(
            phone.fullmatch, lambda v: f"{v[:40]!r} is not a plausible phone number (pattern {phone.pattern})"
        )
    if name == "event_type":
        return TextCheck(
            EVENT_TYPES.__contains__, lambda v: f"{v[:40]!r} is not one of account_receiver, mobile_receiver, push_app"
        )
    return None


def _json_tree(b: _Builder, value: Any, path: tuple[str | int, ...]) -> Spec | None:
    """The spec of a YAML mapping/list whose string leaves may be templates (keys are literal)."""
    if isinstance(value, dict):
        pairs: list[tuple[str, Spec]] = []
        for key, sub in value.items():
            child = _json_tree(b, sub, (*path, str(key)))
            if child is not None:
                pairs.append((str(key), child))
        if all(isinstance(spec, Const) for _, spec in pairs):
            return Const({k: spec.value for k, spec in pairs if isinstance(spec, Const)})
        return Obj(tuple(pairs), dotted(path))
    if isinstance(value, list):
        items = [_json_tree(b, sub, (*path, i)) for i, sub in enumerate(value)]
        specs = [spec for spec in items if spec is not None]
        if all(isinstance(spec, Const) for spec in specs):
            return Const([spec.value for spec in specs if isinstance(spec, Const)])
        return Arr(tuple(specs), dotted(path))
    if isinstance(value, str):
        template = b.template(value, path)
        return None if template is None else _template_spec(template)
    return Const(value)
