"""JMESPath for rules: parse once at load, check names and function calls, analyse the AST.

Analysis finds the context names an expression reads (`event`, `item` …), whether it is a plain dotted
path (which the engine reads with direct dict lookups), and the guard of a `when` (`event.type == 'x' && …`)
that lets the engine skip rules with one dict lookup. `bridge.rules.evaluators` turns ASTs into closures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath import exceptions as jmes_errors

from bridge.rules.functions import arity_problem, function_names

Evaluator = Callable[[Any], Any]
Node = dict[str, Any]

# The names an expression starts from.
CONTEXT_NAMES = ("event", "item", "kafka", "headers")


class ExpressionError(Exception):
    """An expression does not parse, or calls a function wrongly; `reason` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# `path == 'text'`: the expression can only be truthy when the value at `path` is that text.
Guard = tuple[tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression: its source, the context names it reads, the evaluator, and its guard."""

    source: str
    roots: frozenset[str]
    evaluate: Evaluator
    node: Node
    path: tuple[str, ...] | None = None  # the keys, when the expression is a plain dotted path
    guard: Guard | None = None


def is_true(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty text, empty array and empty object are false; 0 is true."""
    if value is True:
        return True
    return not (value is None or value is False or value in ("", [], {}))


def parse(source: str) -> Node:
    """The AST of `source`, or ExpressionError with a one-line reason."""
    if not source.strip():
        raise ExpressionError("empty expression")
    try:
        parsed: Node = jmespath.compile(source).parsed
    except jmes_errors.IncompleteExpressionError:
        raise ExpressionError(f"incomplete JMESPath expression {source!r}") from None
    except jmes_errors.LexerError as exc:
        raise ExpressionError(f"invalid JMESPath {source!r} at column {exc.lexer_position}: {exc.message}") from None
    except jmes_errors.ParseError as exc:
        raise ExpressionError(
            f"invalid JMESPath {source!r} at column {exc.lex_position}: unexpected {exc.token_value!r}"
        ) from None
    except jmes_errors.JMESPathError as exc:
        raise ExpressionError(f"invalid JMESPath {source!r}: {exc}") from None
    _check_nodes(parsed, source)
    return parsed


def _check_nodes(node: Node, source: str) -> None:
    kind = node.get("type")
    children = node.get("children", ())
    if kind in {"subexpression", "index_expression"} and children and children[0].get("type") == "not_expression":
        raise ExpressionError(
            f"in {source!r}, `!` applies before the `.`/`[]` that follows it (`(!a).b` is always null):"
            " put the path in parentheses, e.g. `!(event.comment.parent)`"
        )
    if kind == "function_expression":
        name = node["value"]
        if name not in function_names():
            raise ExpressionError(f"unknown function {name}()")
        problem = arity_problem(name, len(node["children"]))
        if problem:
            raise ExpressionError(problem)
    for child in children:
        if isinstance(child, dict):
            _check_nodes(child, source)


def root_names(node: Node) -> frozenset[str]:
    """The names an expression looks up in the context it is evaluated against (`@` for the whole)."""
    kind = node["type"]
    children = [c for c in node.get("children", ()) if isinstance(c, dict)]
    if kind == "field":
        return frozenset({node["value"]})
    if kind in {"current", "identity"}:
        return frozenset({"@"})
    if kind in {"literal", "index", "slice", "expref"}:
        return frozenset()
    if kind in {
        "subexpression",
        "index_expression",
        "pipe",
        "projection",
        "value_projection",
        "flatten",
        "filter_projection",
        "key_val_pair",
    }:
        return root_names(children[0]) if children else frozenset()
    names: frozenset[str] = frozenset()
    for child in children:
        names |= root_names(child)
    return names


def equality_guard(node: Node) -> Guard | None:
    """The guard of `a.b == 'x' && …` (the leftmost term of an `&&` chain), or None.

    If the leftmost term of an `&&` chain is false, the whole chain is that false value, so an engine may
    skip the expression whenever the value at the path is not that text.
    """
    while node["type"] == "and_expression":
        node = node["children"][0]
    if node["type"] != "comparator" or node["value"] != "eq":
        return None
    for path_node, lit_node in (node["children"], node["children"][::-1]):
        if lit_node["type"] == "literal" and isinstance(lit_node["value"], str):
            keys = field_path(path_node)
            if keys is not None:
                return keys, lit_node["value"]
    return None


def without_leftmost(node: Node) -> Node | None:
    """`A && B && C` without A (`B && C`); None for A alone. Equivalent to the whole once A is true."""
    if node["type"] != "and_expression":
        return None
    left: Node = node["children"][0]
    right: Node = node["children"][1]
    rest = without_leftmost(left)
    if rest is None:
        return right
    return {"type": "and_expression", "children": [rest, right]}


def field_path(node: Node) -> tuple[str, ...] | None:
    """The keys of a plain dotted path (`event.post.id`), or None for anything else."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression" and all(c["type"] == "field" for c in node["children"]):
        return tuple(c["value"] for c in node["children"])
    return None
