"""Compiling JMESPath ASTs into Python closures: the same results as jmespath's interpreter, ~10x faster.

jmespath's own interpreter walks the AST for every evaluation (about 13 µs for a two-comparison `when`);
the closures built here do the same work in about 1 µs. They follow `jmespath.visitor.TreeInterpreter`
exactly (truthiness, equality, ordering, projections, null propagation), which a differential property test
checks; the only node compiled by delegating to that interpreter is a function call that takes `&expr`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from jmespath.visitor import Options, TreeInterpreter

from bridge.rules.functions import RuleFunctions
from bridge.rules.jmes import (
    Evaluator,
    Expression,
    Node,
    equality_guard,
    field_path,
    is_true,
    parse,
    root_names,
)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def equals(x: Any, y: Any) -> bool:
    """JMESPath `==`: Python equality, except that 0 and 1 never equal false and true."""
    if _is_number(x) and x in (0, 1):
        if isinstance(y, bool):
            return False
    elif _is_number(y) and y in (0, 1) and isinstance(x, bool):
        return False
    return bool(x == y)


def _comparable(x: Any) -> bool:
    return _is_number(x) or isinstance(x, str)


def ordering(compare: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """JMESPath `<`, `<=`, `>`, `>=`: null unless both sides are numbers or both are text."""

    def ordered(a: Any, b: Any) -> Any:
        if not (_comparable(a) and _comparable(b)):
            return None
        return compare(a, b)

    return ordered


_ORDERING: dict[str, Callable[[Any, Any], Any]] = {
    "lt": operator.lt,
    "gt": operator.gt,
    "lte": operator.le,
    "gte": operator.ge,
}


class Compiler:
    """Builds evaluators from ASTs; one per rule set (it owns the function table and the fallback)."""

    def __init__(self) -> None:
        self.functions = RuleFunctions()
        self._interpreter = TreeInterpreter(Options(custom_functions=self.functions))

    def expression(self, source: str) -> Expression:
        """Parse, check and compile `source`; ExpressionError if it is not a valid expression."""
        node = parse(source)
        return Expression(source, root_names(node), self.compile(node), node, field_path(node), equality_guard(node))

    def compile(self, node: Node) -> Evaluator:
        """An evaluator equivalent to jmespath's interpreter on `node`."""
        method: Callable[[Node], Evaluator] | None = getattr(self, f"_c_{node['type']}", None)
        if method is None:
            return self._fallback(node)
        return method(node)

    def _fallback(self, node: Node) -> Evaluator:
        visit = self._interpreter.visit
        return lambda value: visit(node, value)

    def _c_field(self, node: Node) -> Evaluator:
        key = node["value"]
        return lambda v: v.get(key) if isinstance(v, dict) else None

    def _c_subexpression(self, node: Node) -> Evaluator:
        keys = field_path(node)
        if keys is not None:
            return _path(keys)
        return _chain([self.compile(c) for c in node["children"]])

    _c_index_expression = _c_subexpression
    _c_pipe = _c_subexpression

    def _c_literal(self, node: Node) -> Evaluator:
        value = node["value"]
        return lambda _v: value

    def _c_current(self, node: Node) -> Evaluator:
        return lambda v: v

    _c_identity = _c_current

    def _c_comparator(self, node: Node) -> Evaluator:
        op = node["value"]
        left_node, right_node = node["children"]
        left, right = self.compile(left_node), self.compile(right_node)
        if op in {"eq", "ne"}:
            lit = right_node.get("value") if right_node["type"] == "literal" else None
            if isinstance(lit, str):  # no 0/1-vs-boolean special case with text
                if op == "eq":
                    return lambda v: left(v) == lit
                return lambda v: left(v) != lit
            if op == "eq":
                return lambda v: equals(left(v), right(v))
            return lambda v: not equals(left(v), right(v))
        ordered = ordering(_ORDERING[op])
        return lambda v: ordered(left(v), right(v))

    def _c_and_expression(self, node: Node) -> Evaluator:
        left, right = (self.compile(c) for c in node["children"])

        def both(v: Any) -> Any:
            first = left(v)
            return right(v) if is_true(first) else first

        return both

    def _c_or_expression(self, node: Node) -> Evaluator:
        left, right = (self.compile(c) for c in node["children"])

        def either(v: Any) -> Any:
            first = left(v)
            return first if is_true(first) else right(v)

        return either

    def _c_not_expression(self, node: Node) -> Evaluator:
        inner = self.compile(node["children"][0])

        def negate(v: Any) -> bool:
            result = inner(v)
            if _is_number(result) and result == 0:
                return False
            return not result

        return negate

    def _c_index(self, node: Node) -> Evaluator:
        index: int = node["value"]

        def at(v: Any) -> Any:
            if not isinstance(v, list) or not -len(v) <= index < len(v):
                return None
            return v[index]

        return at

    def _c_slice(self, node: Node) -> Evaluator:
        bounds = slice(*node["children"])
        return lambda v: v[bounds] if isinstance(v, list) else None

    def _c_key_val_pair(self, node: Node) -> Evaluator:
        return self.compile(node["children"][0])

    def _c_multi_select_dict(self, node: Node) -> Evaluator:
        pairs = [(c["value"], self.compile(c)) for c in node["children"]]
        return lambda v: None if v is None else {k: fn(v) for k, fn in pairs}

    def _c_multi_select_list(self, node: Node) -> Evaluator:
        items = [self.compile(c) for c in node["children"]]
        return lambda v: None if v is None else [fn(v) for fn in items]

    def _c_projection(self, node: Node) -> Evaluator:
        base, right = (self.compile(c) for c in node["children"])

        def project(v: Any) -> Any:
            values = base(v)
            if not isinstance(values, list):
                return None
            return [r for r in map(right, values) if r is not None]

        return project

    def _c_value_projection(self, node: Node) -> Evaluator:
        base, right = (self.compile(c) for c in node["children"])

        def project(v: Any) -> Any:
            values = base(v)
            if not isinstance(values, dict):
                return None
            return [r for r in map(right, values.values()) if r is not None]

        return project

    def _c_filter_projection(self, node: Node) -> Evaluator:
        base, right, condition = (self.compile(c) for c in node["children"])

        def project(v: Any) -> Any:
            values = base(v)
            if not isinstance(values, list):
                return None
            out = []
            for element in values:
                if is_true(condition(element)):
                    r = right(element)
                    if r is not None:
                        out.append(r)
            return out

        return project

    def _c_flatten(self, node: Node) -> Evaluator:
        base = self.compile(node["children"][0])

        def flatten(v: Any) -> Any:
            values = base(v)
            if not isinstance(values, list):
                return None
            out: list[Any] = []
            for element in values:
                if isinstance(element, list):
                    out.extend(element)
                else:
                    out.append(element)
            return out

        return flatten

    def _c_function_expression(self, node: Node) -> Evaluator:
        if any(c["type"] == "expref" for c in node["children"]):
            return self._fallback(node)
        name = node["value"]
        args = [self.compile(c) for c in node["children"]]
        call = self.functions.call_function
        return lambda v: call(name, [a(v) for a in args])


def path_evaluator(keys: tuple[str, ...]) -> Evaluator:
    """An evaluator for a plain dotted path: direct dict lookups."""
    return _path(keys)


def _path(keys: tuple[str, ...]) -> Evaluator:
    """A plain dotted path (`event.post.author.id`) as direct dict lookups."""
    if len(keys) == 1:
        k = keys[0]
        return lambda v: v.get(k) if isinstance(v, dict) else None
    if len(keys) == 2:
        k1, k2 = keys

        def path2(v: Any) -> Any:
            if isinstance(v, dict):
                v = v.get(k1)
                if isinstance(v, dict):
                    return v.get(k2)
            return None

        return path2
    if len(keys) == 3:
        k1, k2, k3 = keys

        def path3(v: Any) -> Any:
            if isinstance(v, dict):
                v = v.get(k1)
                if isinstance(v, dict):
                    v = v.get(k2)
                    if isinstance(v, dict):
                        return v.get(k3)
            return None

        return path3

    def path(v: Any) -> Any:
        for key in keys:
            if not isinstance(v, dict):
                return None
            v = v.get(key)
        return v

    return path


def _chain(steps: list[Evaluator]) -> Evaluator:
    def chain(v: Any) -> Any:
        for step in steps:
            v = step(v)
        return v

    return chain
