"""Writing Python source for JMESPath expressions: straight-line statements instead of nested closure calls.

`Writer` emits statements into a function body. `Writer.value(node, base)` emits the statements computing a
JMESPath AST node against the local named `base` and returns the local holding the result. It covers the
nodes rules use most (fields and paths, comparisons, `&&`, `||`, `!`, literals, `@`) with the semantics
of `jmespath.visitor.TreeInterpreter`; any other node calls its compiled closure from
`bridge.rules.evaluators`. The same field read twice from the same value is read once (per block).

Only literals and keys from validated rules reach the source, through `repr`; values are bound by name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bridge.rules.evaluators import Compiler, equals, ordering
from bridge.rules.jmes import Node

FALSY: tuple[Any, ...] = ("", [], {})  # with None and False: what JMESPath treats as false (0 is true)
TRUTHY_TEST = "not ({v} is None or {v} is False or {v} in _FALSY)"


def _not(value: Any) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return False
    return not value


_ORDER_OPS = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


class Writer:
    """Statements of one generated function, the namespace its names are bound in, and a read cache."""

    def __init__(self, compiler: Compiler, *, indent: int = 1) -> None:
        self.compiler = compiler
        self.lines: list[str] = []
        self.indent = indent
        self.count = 0
        self.reads: dict[tuple[str, str], str] = {}
        self.namespace: dict[str, Any] = {
            "isinstance": isinstance,
            "dict": dict,
            "str": str,
            "_FALSY": FALSY,
            "_equals": equals,
            "_not": _not,
        }

    def emit(self, line: str) -> None:
        """Append one statement at the current indentation."""
        self.lines.append("    " * self.indent + line)

    def bind(self, value: Any, prefix: str) -> str:
        """A new global name of the generated code, bound to `value`."""
        self.count += 1
        name = f"_{prefix}{self.count}"
        self.namespace[name] = value
        return name

    def temp(self) -> str:
        """A new local name."""
        self.count += 1
        return f"_t{self.count}"

    @contextmanager
    def block(self) -> Iterator[None]:
        """Statements inside an `if`: indented; reads made inside are forgotten afterwards."""
        saved = dict(self.reads)
        self.indent += 1
        try:
            yield
        finally:
            self.indent -= 1
            self.reads = saved

    def field(self, base: str, key: str) -> str:
        """The local holding `base.key` (JMESPath field: null unless `base` is an object)."""
        known = self.reads.get((base, key))
        if known is not None:
            return known
        local = self.temp()
        self.emit(f"{local} = {base}.get({key!r}) if isinstance({base}, dict) else None")
        self.reads[(base, key)] = local
        return local

    def value(self, node: Node, base: str) -> str:
        """Emit the statements for `node` evaluated against local `base`; the local with the result."""
        kind = node["type"]
        children: list[Node] = node.get("children", [])
        if kind == "field":
            return self.field(base, node["value"])
        if kind in {"subexpression", "index_expression", "pipe"}:
            for child in children:
                base = self.value(child, base)
            return base
        if kind in {"current", "identity"}:
            return base
        if kind == "literal":
            return self.bind(node["value"], "lit")
        if kind == "comparator":
            return self._comparator(node, base)
        if kind in {"and_expression", "or_expression"}:
            first = self.value(children[0], base)
            result = self.temp()
            self.emit(f"{result} = {first}")
            test = TRUTHY_TEST.format(v=first)
            self.emit(f"if {test}:" if kind == "and_expression" else f"if not {test}:")
            with self.block():
                self.emit(f"{result} = {self.value(children[1], base)}")
            return result
        if kind == "not_expression":
            inner = self.value(children[0], base)
            result = self.temp()
            self.emit(f"{result} = _not({inner})")
            return result
        evaluate = self.bind(self.compiler.compile(node), "e")
        result = self.temp()
        self.emit(f"{result} = {evaluate}({base})")
        return result

    def _comparator(self, node: Node, base: str) -> str:
        op = node["value"]
        left_node, right_node = node["children"]
        left, right = self.value(left_node, base), self.value(right_node, base)
        result = self.temp()
        text_literal = right_node["type"] == "literal" and isinstance(right_node["value"], str)
        if op in {"eq", "ne"}:
            if text_literal:  # no 0/1-versus-boolean special case with text
                self.emit(f"{result} = {left} {'==' if op == 'eq' else '!='} {right}")
            else:
                self.emit(f"{result} = {'' if op == 'eq' else 'not '}_equals({left}, {right})")
        else:
            self.emit(f"{result} = {self.bind(ordering(_ORDER_OPS[op]), 'ord')}({left}, {right})")
        return result


def build(writer: Writer, params: str, body_end: list[str], name: str) -> tuple[Callable[..., Any], str]:
    """Wrap the writer's statements in `def fn(params):`, compile it, and return it with its source."""
    source = "\n".join([f"def fn({params}):", *writer.lines, *body_end])
    code = compile(source, f"<rule {name[:64]!r}>", "exec")
    exec(code, writer.namespace)  # noqa: S102 - generated from validated rule parts only (see module docstring)
    fn: Callable[..., Any] = writer.namespace["fn"]
    return fn, source


def compile_predicate(node: Node, compiler: Compiler, name: str) -> tuple[Callable[[Any], bool], str]:
    """A function `fn(ctx) -> bool`: whether `node` is truthy for the context (exceptions propagate)."""
    w = Writer(compiler)
    w.emit("ctx_ = ctx")
    result = w.value(node, "ctx_")
    return build(w, "ctx", ["    return " + TRUTHY_TEST.format(v=result)], name)


def compile_value(node: Node, compiler: Compiler, name: str) -> tuple[Callable[[Any], Any], str]:
    """A function `fn(value)` evaluating `node` against `value`, as generated code (exceptions propagate)."""
    w = Writer(compiler)
    w.emit("ctx_ = ctx")
    result = w.value(node, "ctx_")
    return build(w, "ctx", [f"    return {result}"], name)
