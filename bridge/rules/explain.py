"""Rule authoring aids (pure): why each rule matched an event or not, and where a missing template path broke.

`explain_rules` gives, per rule, whether it matched the event and why: a topic the config does not consume,
a topic the rule does not apply to, or its `when` with the value of each `&&`/`||` term (and of both sides of
a comparison, the operand of a `!`). `missing_detail` says why a whole-`{{ expr }}` template resolved to
missing (which key is absent where). Both serve `bridge map` / `bridge test`; the daemon never calls them.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from bridge.models import RecordMeta
from bridge.rules.evaluators import Compiler
from bridge.rules.jmes import Node, is_true
from bridge.rules.ruleset import RuleSet
from bridge.rules.schema import Rule

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS: Final = {"eq": "==", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
# jmespath's binding powers: a lower one binds looser (`a || b && c == d` is `a || (b && (c == d))`).
_BINDING: Final = {"pipe": 1, "or_expression": 2, "and_expression": 3, "comparator": 5, "not_expression": 45}
_MAX_TEXT: Final = 80


def node_text(node: Node) -> str:
    """JMESPath text of an AST node (the common node kinds; others shown as `<expression>`)."""
    kind = node["type"]
    children: list[Node] = [c for c in node.get("children", ()) if isinstance(c, dict)]
    if kind == "field":
        name = str(node["value"])
        return name if _IDENTIFIER.fullmatch(name) else orjson.dumps(name).decode()
    if kind == "subexpression":
        return ".".join(node_text(c) for c in children)
    if kind == "index_expression":
        return "".join(node_text(c) for c in children)
    if kind == "index":
        return f"[{node['value']}]"
    if kind in {"current", "identity"}:
        return "@"
    if kind == "literal":
        value = node["value"]
        if isinstance(value, str):
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return f"`{orjson.dumps(value).decode()}`"
    if kind == "comparator":
        left, right = children
        return f"{_operand(left, kind, False)} {_OPERATORS[node['value']]} {_operand(right, kind, True)}"
    if kind in {"and_expression", "or_expression", "pipe"}:
        op = {"and_expression": " && ", "or_expression": " || ", "pipe": " | "}[kind]
        left, right = children
        return f"{_operand(left, kind, False)}{op}{_operand(right, kind, True)}"
    if kind == "not_expression":
        inner = children[0]
        text = node_text(inner)
        # `!a.b` would read as `(!a).b`: only single names, literals and calls go without parentheses.
        bare = {"field", "literal", "current", "function_expression", "not_expression"}
        return f"!{text}" if inner["type"] in bare else f"!({text})"
    if kind == "function_expression":
        return f"{node['value']}({', '.join(node_text(c) for c in children)})"
    return "<expression>"


def _operand(node: Node, parent: str, right: bool) -> str:
    """An operand's text, in parentheses when it binds looser than its operator (or as tight, on the right:
    the binary operators group to the left)."""
    text = node_text(node)
    inner = _BINDING.get(node["type"])
    if inner is None:
        return text
    outer = _BINDING[parent]
    return f"({text})" if inner < outer or (right and inner == outer) else text


def _shown(value: Any) -> Any:
    """A value as JSON data for the explanation, long texts cut."""
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[: _MAX_TEXT - 1] + "…"
    if isinstance(value, dict | list):
        text = orjson.dumps(value, default=str).decode()
        return value if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
    return value


def _terms(node: Node) -> list[Node]:
    """The terms of a top-level `&&` chain or `||` chain (the node itself when it is neither)."""
    kind = node["type"]
    if kind not in {"and_expression", "or_expression"}:
        return [node]
    out: list[Node] = []
    for child in node["children"]:
        out += _terms(child) if child["type"] == kind else [child]
    return out


def _term(node: Node, ctx: dict[str, Any], compiler: Compiler) -> dict[str, Any]:
    out: dict[str, Any] = {"expr": node_text(node)}
    try:
        out["value"] = _shown(compiler.compile(node)(ctx))
    except Exception as exc:  # a failing term is part of the explanation
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    children = [c for c in node.get("children", ()) if isinstance(c, dict)]
    # The parts of a term that evaluated cannot fail: comparisons and `!` only read their operands.
    if node["type"] == "comparator":
        out["left"], out["right"] = (_shown(compiler.compile(c)(ctx)) for c in children)
    elif node["type"] == "not_expression":
        out["operand"] = _shown(compiler.compile(children[0])(ctx))
    return out


def explain_when(rule: Rule, ctx: dict[str, Any], compiler: Compiler) -> dict[str, Any]:
    """`when` of `rule` against `ctx`: its text, its truth and each term's value."""
    expr = rule.when_expr
    if expr is None:
        return {"source": None, "holds": True}
    out: dict[str, Any] = {"source": expr.source}
    try:
        out["holds"] = is_true(expr.evaluate(ctx))
    except Exception as exc:
        out["holds"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
    if expr.node["type"] != "literal":
        out["terms"] = [_term(t, ctx, compiler) for t in _terms(expr.node)]
    return out


def _why_false(when: dict[str, Any], node: Node) -> str:
    """`when` is false, and in an `&&` chain the first term that made it so."""
    terms = when.get("terms") or []
    if node["type"] == "and_expression":
        for term in terms:
            if "value" in term and not is_true(term["value"]):
                return f"`when` is false: `{term['expr']}` is {orjson.dumps(term['value']).decode()}"
    return "`when` is false"


def explain_rules(ruleset: RuleSet, event: Any, meta: RecordMeta, *, not_consumed: str | None) -> list[dict[str, Any]]:
    """Per rule, in order: `{"rule", "matched", "why", "when"?}`. `not_consumed` is the reason the daemon
    would never see this record's topic (None when it consumes it)."""
    ctx = ruleset.context(event, meta)
    compiler = Compiler()
    out: list[dict[str, Any]] = []
    for rule in ruleset:
        entry: dict[str, Any] = {"rule": rule.id}
        if rule.topics and meta.topic not in rule.topics:
            entry |= {"matched": False, "why": f"applies to {', '.join(rule.topics)} only, not {meta.topic}"}
            out.append(entry)
            continue
        when = explain_when(rule, ctx, compiler)
        if "error" in when:
            entry |= {"matched": True, "why": "`when` failed: the event is dead-lettered (mapping_error)"}
        elif when["holds"]:
            entry |= {"matched": True, "why": "no `when`" if when["source"] is None else "`when` holds"}
        else:
            assert rule.when_expr is not None
            entry |= {"matched": False, "why": _why_false(when, rule.when_expr.node)}
        if not_consumed is not None:
            entry |= {"matched": False, "why": not_consumed}
        if when["source"] is not None:
            entry["when"] = when
        out.append(entry)
    return out


def missing_detail(rule: Rule, field: str, event: Any, meta: RecordMeta, ruleset: RuleSet) -> str:
    """Why the template of `field` in `rule` resolved to missing for this event, in words."""
    expr = rule.message.templates.get(field)
    if expr is None:
        return "resolved to missing"
    template = f"{{{{ {expr.source} }}}}"
    if expr.path is None:
        return f"{template} gave null"
    if expr.path[0] == "item":
        return f"{template}: an element of for_each has no {'.'.join(expr.path[1:]) or 'value'}"
    value: Any = ruleset.context(event, meta)
    for depth, key in enumerate(expr.path):
        where = ".".join(expr.path[:depth]) or "the context"
        if not isinstance(value, dict):
            kind = "null" if value is None else type(value).__name__
            return f"{template}: {where} is {kind}, not an object"
        if key not in value:
            return f"{template}: {where} has no key {key!r}"
        value = value[key]
    return f"{template} gave null"


def missing_effect(field: str) -> str:
    """What a missing value does to the message."""
    if field.startswith("json_data"):
        return "it renders null in json_data"
    return "the field is left out"
