"""JMESPath for rules: parse once at load, check names and function calls, analyse the AST.

Analysis finds the context names an expression reads (`event`, `item` …), whether it is a plain dotted
path (which the engine reads with direct dict lookups), and the guard of a `when` (`event.type == 'x' && …`)
that lets the engine skip rules with one dict lookup. `bridge.rules.evaluators` turns ASTs into closures.

Bounds (checked by `parse`, so nothing that passes `validate` can exhaust the stack or the memory at run
time): at most `MAX_SOURCE_CHARS` characters, `MAX_DEPTH` levels of nesting, and a result that can be at
most `MAX_GROWTH` times the size of the expression's input plus `MAX_CONSTANT_BYTES` (see `size_bound`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath import exceptions as jmes_errors

from bridge.rules.functions import arity_problem, function_names

Evaluator = Callable[[Any], Any]
Node = dict[str, Any]

# The names an expression starts from.
CONTEXT_NAMES = ("event", "item", "kafka", "headers")

MAX_SOURCE_CHARS = 4096
MAX_DEPTH = 64  # AST levels: evaluation recurses once or twice per level, far below Python's limit
MAX_GROWTH = 64  # a result is at most this many times the size of the expression's input …
MAX_CONSTANT_BYTES = 65_536  # … plus this many bytes made of literals and JSON punctuation


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
    if len(source) > MAX_SOURCE_CHARS:
        raise ExpressionError(f"expression of {len(source):,} characters is too long (at most {MAX_SOURCE_CHARS:,})")
    try:
        parsed: Node = jmespath.compile(source).parsed
    except RecursionError:
        raise ExpressionError(f"expression nested too deeply (at most {MAX_DEPTH} levels)") from None
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
    depth = nesting_depth(parsed)
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression nested {depth} levels deep (at most {MAX_DEPTH})")
    _check_nodes(parsed, source)
    _SizeCheck().check(parsed, (1, 0))
    return parsed


def nesting_depth(node: Node) -> int:
    """Levels of the AST (a lone field is 1); iterative, so any parsed AST can be measured."""
    deepest = 0
    stack: list[tuple[Node, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in current.get("children", ()) if isinstance(c, dict))
    return deepest


# --------------------------------------------------------------------------- size bounds
# A bound `(a, b)` says: the value's compact JSON is at most max(a × (its input's JSON size) + b, 5) bytes
# (5: null, true and false, which any node can produce from anything).
# Why: `[@, @]` doubles its input while the values share memory, so `x | [@, @] | [@, @] …` forty times is a
# few objects in memory whose JSON is 2^40 times the input: writing it crashed the process (orjson cannot
# report the failed allocation; the rule segfaulted `bridge run`). Every node maps the bound of its input to
# a bound of its output; the expression is refused when any node's bound exceeds the limits. A property test
# checks the bounds against real evaluations.
Size = tuple[int, int]

_FLOOR = 5  # len("false")
_SCALAR: Size = (0, 32)  # a number, a boolean or a type name
_PARTS = frozenset({"field", "current", "identity", "index", "slice"})  # a part of the input, or null
_CHAINS = frozenset({"subexpression", "index_expression", "pipe"})
_PROJECTIONS = frozenset({"projection", "value_projection", "filter_projection"})
# Functions whose result is one of the arguments, or a part or a reordering of it.
_NO_LARGER = frozenset({"max", "min", "reverse", "sort", "keys", "values", "not_null", "default"})
_SCALAR_FUNCTIONS = frozenset(
    {"abs", "avg", "ceil", "floor", "sum", "contains", "ends_with", "starts_with", "length", "to_number"}
    | {"to_millis", "type"}
)


def _plus(x: Size, y: Size) -> Size:
    return x[0] + y[0], x[1] + y[1]


def _floored(size: Size) -> Size:
    """The bound as an affine function without the floor (a value embedded in another)."""
    return size[0], max(size[1], _FLOOR)


def _largest(sizes: Sequence[Size]) -> Size:
    return max((s[0] for s in sizes), default=0), max((s[1] for s in sizes), default=0)


def _scaled(k: int, size: Size, extra: int = 0) -> Size:
    return k * size[0], k * size[1] + extra


def _then(first: Size, second: Size) -> Size:
    """The bound of `second` applied to the value of `first` (the floor of `first` passes through too)."""
    a1, b1 = first
    a2, b2 = second
    return a2 * a1, max(a2 * b1, a2 * _FLOOR) + b2


class _SizeCheck:
    """Bounds of every node of one AST; `check` raises ExpressionError where a bound passes the limits."""

    def __init__(self) -> None:
        self._transfers: dict[int, Size] = {}

    def check(self, node: Node, given: Size) -> Size:
        """The bound of `node`'s value when its input is bounded by `given`; checks every node below."""
        out = given if is_part(node) else _then(given, self.transfer(node))
        _within_limits(out)
        kind = node["type"]
        children = [c for c in node.get("children", ()) if isinstance(c, dict)]
        if kind in _CHAINS:
            current = given
            for child in children:
                current = self.check(child, current)
        elif kind in _PROJECTIONS:
            left = self.check(children[0], given)
            for child in children[1:]:  # the right side (and the filter) sees one element of the left
                self.check(child, left)
        elif kind == "function_expression":
            arrays = [self.check(c, given) for c in children if c["type"] != "expref"]
            for child in children:
                if child["type"] == "expref":  # applied to the elements of the array argument
                    self.check(child["children"][0], _largest(arrays))
        else:
            for child in children:
                self.check(child, given)
        return out

    def transfer(self, node: Node) -> Size:
        """`(a, b)`: the node's value is at most max(a × (its input's size) + b, 5) bytes."""
        known = self._transfers.get(id(node))
        if known is None:
            known = self._transfers[id(node)] = self._transfer(node)
        return known

    def _transfer(self, node: Node) -> Size:
        kind = node["type"]
        children: list[Node] = [c for c in node.get("children", ()) if isinstance(c, dict)]
        if kind in _PARTS:
            return 1, 0
        if kind == "literal":
            return 0, len(json.dumps(node["value"], separators=(",", ":")))
        if kind in {"comparator", "not_expression"}:
            return 0, _FLOOR
        if kind in _CHAINS:
            size: Size = (1, 0)
            for child in children:
                if not is_part(child):  # a part of a value is no larger than the value, floor included
                    size = _then(size, self.transfer(child))
            return size
        if kind in _PROJECTIONS:
            right = children[1]
            k = 1 if is_part(right) else _per_element(self.transfer(right))
            return _scaled(k, self.transfer(children[0]))
        if kind in {"flatten", "key_val_pair", "expref"}:
            return self.transfer(children[0])
        if kind in {"and_expression", "or_expression"}:
            return _largest([self.transfer(c) for c in children])
        if kind == "multi_select_list":
            return self._selected(children, 2 + len(children))
        if kind == "multi_select_dict":
            punctuation = 2 + sum(len(json.dumps(c["value"])) + 2 for c in children)
            return self._selected([c["children"][0] for c in children], punctuation)
        if kind == "function_expression":
            return self._function(node["value"], children)
        raise ExpressionError(f"unsupported JMESPath node {kind!r}")  # pragma: no cover - jmespath's AST is closed

    def _selected(self, children: list[Node], punctuation: int) -> Size:
        """`[a, b]` / `{k: a, …}`: the sum of the parts; plain paths none of which contains another read
        disjoint parts of the input (`{id: event.id, name: event.name}` is no larger than `event`)."""
        paths = [p for p in (field_path(c) for c in children) if p is not None]
        overlap = max((sum(1 for q in paths if p[: len(q)] == q) for p in paths), default=0)
        total: Size = (overlap, punctuation + 4 * len(paths))  # 4: a path that is missing is null
        for child in children:
            if field_path(child) is None:
                total = _plus(total, _floored(self.transfer(child)))
        return total

    def _function(self, name: str, children: list[Node]) -> Size:
        args = [_floored(self.transfer(c)) for c in children if c["type"] != "expref"]
        exprefs = [self.transfer(c) for c in children if c["type"] == "expref"]
        if name in _SCALAR_FUNCTIONS:
            return _SCALAR
        if name in _NO_LARGER or name in {"max_by", "min_by", "sort_by"}:
            return _largest(args)
        if name == "merge":
            total: Size = (0, 2)
            for arg in args:
                total = _plus(total, arg)
            return total
        if name == "to_array":
            return _plus(args[0], (0, 2))
        if name in {"lower", "upper"}:  # a few characters change case into up to three (`ΐ`)
            return _scaled(3, args[0])
        if name == "mask":  # at most 11 characters, or the text itself
            return _plus(args[0], (0, 13))
        if name == "to_string":  # JSON text of the value (\uXXXX escapes), its quotes and backslashes escaped
            return _scaled(4, args[0], 2)
        if name == "join":  # the separator comes back between every two elements
            separator, array = args
            if separator[0]:
                raise ExpressionError("join()'s separator must not depend on the event (use a literal text)")
            return _scaled(1 + separator[1], array, 2)
        if name == "map":  # like a projection, but nulls are kept
            return _scaled(_per_element(exprefs[0]), args[0])
        raise ExpressionError(f"no size bound known for function {name}()")  # a new function must say


def _per_element(right: Size) -> int:
    """How many times its input a projection can be, when `right` maps each element. An element takes at
    least two bytes with its separator, so what `right` adds per element (its constant, or a `false` from
    a one-byte element) is at most that many times the array's size."""
    return max(right[0], max(right[1], _FLOOR) + 1)


def is_part(node: Node) -> bool:
    """Whether the node's value is always a part of its input (or null): fields, paths, indexes, slices."""
    kind = node["type"]
    if kind in _PARTS:
        return True
    if kind in _CHAINS or kind == "flatten":
        return all(is_part(c) for c in node["children"] if isinstance(c, dict))
    return False


def _within_limits(size: Size) -> None:
    growth, constant = size
    if growth > MAX_GROWTH:
        raise ExpressionError(
            f"result could be up to {_times(growth)} the size of the event (at most {MAX_GROWTH}×): the"
            " expression copies values too many times over (`[@, @]`, `{a: @, b: @}`, projections, join,"
            " to_string)"
        )
    if constant > MAX_CONSTANT_BYTES:
        raise ExpressionError(
            f"result could hold up to {_times(constant, '')} bytes of literal text (at most {MAX_CONSTANT_BYTES:,})"
        )


def _times(n: int, unit: str = "×") -> str:
    return f"{n:,}{unit}" if n < 10**12 else f"2^{n.bit_length() - 1}{unit} or more"


def size_bound(node: Node) -> Size:
    """`(a, b)`: the expression's value is at most max(a × (size of its input) + b, 5) bytes, as compact JSON."""
    return _SizeCheck().transfer(node)


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
