"""Compiling a rule's `message:` block into one Python function (source generated and exec'd once, at load).

Why: rendering a message through nested closures costs ~30 Python calls. The generated function is
straight-line code instead: each plain dotted path (`event.post.author.id`) becomes inline dict lookups,
read once and shared by every field; expressions are written by `bridge.rules.pygen`; text parts are
concatenated; each field is finished (coerced, checked) by the helpers of `bridge.rules.coerce`.

The function takes the context and returns the message's constructor arguments as a list (constants in
place, None where unset; see `SLOTS`) followed by one more item, `MISSING`: None, or the fields (`company_id`,
`json_data.title`) whose template is a whole `{{ expr }}` that resolved to missing (`note_missing`). It
raises RenderError whose `field` names the field (or the key inside json_data, `json_data.title`).
`CompiledMessage.source` shows the generated code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.models import MobileReceiverMessageEvent
from bridge.rules.coerce import RenderError, describe_exception, field_text
from bridge.rules.evaluators import Compiler
from bridge.rules.jmes import Expression
from bridge.rules.pygen import Writer, build
from bridge.rules.template import interpolate

FieldsRender = Callable[[dict[str, Any]], list[Any]]
ItemRender = Callable[[dict[str, Any], list[Any]], list[Any]]

# Positions of MobileReceiverMessageEvent's constructor arguments: messages are built positionally.
SLOTS = {f.name: i for i, f in enumerate(dataclasses.fields(MobileReceiverMessageEvent))}
# One more slot after them: None, or the fields whose template resolved to missing (see `note_missing`).
MISSING = len(SLOTS)


def present(ctx: Any, keys: tuple[str, ...]) -> bool:
    """Whether the plain path `keys` exists in `ctx` (its last key present, even with a null value)."""
    for key in keys[:-1]:
        if not isinstance(ctx, dict):
            return False
        ctx = ctx.get(key)
    return isinstance(ctx, dict) and keys[-1] in ctx


def note_missing(values: list[Any], label: str, ctx: Any, keys: tuple[str, ...] | None) -> None:
    """A template that is one whole `{{ expr }}` gave null for the field `label`: note it in the MISSING slot.

    A plain path whose last key is there with an explicit null is not missing (the event says "none"); an
    absent key on the way is (a typo, or an event without it). Any other expression giving null is missing.
    Called by generated code only when a value is null, so a complete event pays nothing but the test.
    """
    if keys is not None and present(ctx, keys):
        return
    seen = values[MISSING]
    values[MISSING] = (label,) if seen is None else (*seen, label)


@dataclass(frozen=True, slots=True)
class Const:
    """A value known at load."""

    value: Any


@dataclass(frozen=True, slots=True)
class Single:
    """Exactly one `{{ expr }}`: the value keeps the expression's type."""

    expr: Expression


@dataclass(frozen=True, slots=True)
class Text:
    """Literal `head`, then each expression's value as text followed by its literal tail."""

    head: str
    parts: tuple[tuple[Expression, str], ...]


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object whose values are specs (json_data)."""

    items: tuple[tuple[str, Spec], ...]
    path: str


@dataclass(frozen=True, slots=True)
class Arr:
    """A JSON array whose elements are specs (json_data)."""

    items: tuple[Spec, ...]
    path: str


Spec = Const | Single | Text | Obj | Arr


@dataclass(frozen=True, slots=True)
class TextCheck:
    """What a text field must be: `test(text)` is truthy when it is; `reason(text)` says why it is not."""

    test: Callable[[str], Any]
    reason: Callable[[str], str]


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """How to render one field: its spec, then `finish` (None: a text field, made text inline and checked)."""

    name: str
    spec: Spec
    finish: Callable[[Any], Any] | None
    check: TextCheck | None = None


class _MessageWriter(Writer):
    """A Writer that also tracks which field is being rendered (`f`), for failure reports."""

    def __init__(self, compiler: Compiler) -> None:
        super().__init__(compiler, indent=2)
        self.namespace |= {
            "_RenderError": RenderError,
            "_describe": describe_exception,
            "_field_text": field_text,
            "_interpolate": interpolate,
            "_missing": note_missing,
        }
        self.label = ""

    def at(self, label: str) -> None:
        """The field named if the next statements fail."""
        if label != self.label:
            self.emit(f"f = {label!r}")
            self.label = label

    def expression(self, expr: Expression, label: str) -> str:
        if expr.path is None:  # paths cannot fail; anything else may (function argument types …)
            self.at(label)
        return self.value(expr.node, "ctx")

    def note_missing(self, spec: Single, label: str) -> str:
        """The statement noting that `spec` (a whole `{{ expr }}`) of the field `label` resolved to null."""
        keys = self.bind(spec.expr.path, "path") if spec.expr.path is not None else "None"
        return f"_missing(values, {label!r}, ctx, {keys})"

    def spec(self, spec: Spec, label: str, *, note_null: bool = True) -> str:
        """Python source of an expression with the spec's value (statements it needs are emitted first).

        A whole `{{ expr }}` that gives null is noted (`note_missing`) unless `note_null` is false: the caller
        then does it where it already tests the value.
        """
        if isinstance(spec, Const):
            return self.bind(spec.value, "c")
        if isinstance(spec, Single):
            value = self.expression(spec.expr, label)
            if note_null:
                self.emit(f"if {value} is None:")
                self.emit(f"    {self.note_missing(spec, label)}")
            return value
        if isinstance(spec, Text):
            pieces = [repr(spec.head)] if spec.head else []
            for expr, tail in spec.parts:
                raw = self.expression(expr, label)
                self.at(label)
                text = self.temp()
                source = repr(expr.source)
                self.emit(f"{text} = {raw} if {raw}.__class__ is str else _interpolate({raw}, {source})")
                pieces.append(text)
                if tail:
                    pieces.append(repr(tail))
            return "(" + " + ".join(pieces) + ")"
        if isinstance(spec, Obj):
            items = [f"{key!r}: {self.spec(sub, f'{spec.path}.{key}')}" for key, sub in spec.items]
            return "{" + ", ".join(items) + "}"
        elements = [self.spec(sub, f"{spec.path}[{i}]") for i, sub in enumerate(spec.items)]
        return "[" + ", ".join(elements) + "]"


def spec_roots(spec: Spec) -> frozenset[str]:
    """The context names a spec reads (`@` for the whole context)."""
    if isinstance(spec, Single):
        return spec.expr.roots
    if isinstance(spec, Text):
        return frozenset().union(*(expr.roots for expr, _ in spec.parts))
    if isinstance(spec, Obj):
        return frozenset().union(*(spec_roots(sub) for _, sub in spec.items))
    if isinstance(spec, Arr):
        return frozenset().union(*(spec_roots(sub) for sub in spec.items))
    return frozenset()


def spec_templates(spec: Spec, label: str) -> dict[str, Expression]:
    """The whole-`{{ expr }}` templates of a spec by the label a missing value is reported under."""
    if isinstance(spec, Single):
        return {label: spec.expr}
    if isinstance(spec, Obj):
        return {k: v for key, sub in spec.items for k, v in spec_templates(sub, f"{spec.path}.{key}").items()}
    if isinstance(spec, Arr):
        return {k: v for i, sub in enumerate(spec.items) for k, v in spec_templates(sub, f"{spec.path}[{i}]").items()}
    return {}


def compile_fields(
    plans: list[FieldPlan], constants: dict[str, Any], *, compiler: Compiler, rule_id: str
) -> tuple[FieldsRender, str]:
    """`fn(ctx)`: every planned field rendered into a list in `SLOTS` order (None: unset), the constants in
    place. Returns it and its source."""
    initial: list[Any] = [None] * (len(SLOTS) + 1)  # the fields, then MISSING
    for name, value in constants.items():
        initial[SLOTS[name]] = value
    w = _MessageWriter(compiler)
    w.emit(f"values = {w.bind(initial, 'consts')}.copy()")
    return _finish(w, plans, "ctx", rule_id)


def compile_item_fields(plans: list[FieldPlan], *, compiler: Compiler, rule_id: str) -> tuple[ItemRender, str]:
    """`fn(ctx, base)`: a copy of `base` (the fields rendered once per event) with the fields that read
    `item` rendered for the current element. Returns it and its source."""
    w = _MessageWriter(compiler)
    w.emit("values = base.copy()")
    return _finish(w, plans, "ctx, base", f"{rule_id} (per item)")


def _finish(w: _MessageWriter, plans: list[FieldPlan], params: str, name: str) -> tuple[Any, str]:
    for plan in plans:
        single = plan.spec if isinstance(plan.spec, Single) else None
        # A text field tests its value's type anyway: a null is noted in that (rare) branch, for free. A null
        # event_time_millis is a mapping failure, never a silent omission: nothing to note.
        note_null = single is None or (plan.finish is not None and plan.name != "event_time_millis")
        value = w.spec(plan.spec, plan.name, note_null=note_null)
        w.at(plan.name)
        slot = SLOTS[plan.name]
        if plan.finish is None:
            w.emit(f"v = {value}")
            w.emit("if v.__class__ is not str or not v.isascii():")
            if single is not None:
                w.emit("    if v is None:")
                w.emit(f"        {w.note_missing(single, plan.name)}")
            w.emit("    v = _field_text(v)")
            if plan.check is not None:
                test, reason = w.bind(plan.check.test, "test"), w.bind(plan.check.reason, "reason")
                w.emit(f"if v and not {test}(v):")
                w.emit(f"    raise _RenderError({reason}(v))")
            w.emit(f"values[{slot}] = v or None  # {plan.name}")
        else:
            w.emit(f"values[{slot}] = {w.bind(plan.finish, 'finish')}({value})  # {plan.name}")
    w.emit("return values")
    w.lines[:0] = ["    f = 'message'", "    try:"]
    ending = [
        "    except _RenderError as exc:",
        "        if exc.field is None:",
        "            exc.field = f",
        "        raise",
        "    except Exception as exc:",
        "        raise _RenderError(_describe(exc), field=f) from None",
    ]
    return build(w, params, ending, name)
