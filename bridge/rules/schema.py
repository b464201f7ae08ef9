"""Validating and compiling raw rule mappings (from YAML) into `Rule`s, collecting every problem found.

Each problem becomes a ConfigIssue naming the file, the key path (`rules[2].message.resource_url`), the rule
(`rule comment_on_post: …`, or `rule #2` while the id is unknown) and the YAML line when there is a locator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import ConfigIssue
from bridge.rules.evaluators import Compiler
from bridge.rules.fields import CompiledMessage, compile_message, root_problems
from bridge.rules.jmes import (
    MAX_CONSTANT_BYTES,
    Evaluator,
    Expression,
    ExpressionError,
    Guard,
    parse,
    size_bound,
    without_leftmost,
)
from bridge.rules.policies import POLICY_KEYS, RulePolicy, compile_policy
from bridge.rules.pygen import compile_predicate
from bridge.rules.template import Render, TemplateError, parse_template, split_template
from bridge.topics import topic_name_problem
from bridge.yamlsrc import Locator, PathKey, dotted

Predicate = Callable[[Any], bool]
RULE_KEYS = frozenset({"id", "description", "topics", "when", "for_each", "idempotency_key", "message", *POLICY_KEYS})
ID_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# All the expressions of one message together (each is bounded by `bridge.rules.jmes`).
MAX_MESSAGE_GROWTH = 256
MAX_MESSAGE_CONSTANT_BYTES = 16 * MAX_CONSTANT_BYTES


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled rule. `topics` empty means every consumed topic; `when`/`for_each` None means absent."""

    id: str
    description: str
    topics: tuple[str, ...]
    file: str
    path: str  # where in the file, e.g. `rules[2]`
    line: int | None
    when: Evaluator | None
    guard: Guard | None  # from `when`: the rule can only match when the value at this path is this text
    check: Predicate | None  # generated: `when` (or what remains of it once the guard held); None: holds
    for_each: Evaluator | None
    idempotency_key: Render | None
    message: CompiledMessage
    roots: frozenset[str]
    when_expr: Expression | None = None  # the parsed `when`, for `bridge map --explain`
    policy: RulePolicy | None = None  # quiet hours, limit, dedupe, digest (bridge.rules.policies)


class _Issues:
    def __init__(self, file: str, locator: Locator, path: PathKey) -> None:
        self.file, self.locator, self.path = file, locator, path
        self.label = f"rule #{path[-1]}"
        self.found: list[ConfigIssue] = []

    def add(self, sub: PathKey, message: str) -> None:
        full = (*self.path, *sub)
        self.found.append(ConfigIssue(self.file, dotted(full), f"{self.label}: {message}", self.locator.line(full)))


def compile_rule_list(
    raw: Any,
    *,
    compiler: Compiler,
    phone: re.Pattern[str],
    file: str,
    locator: Locator | None = None,
    path_prefix: PathKey = ("rules",),
) -> tuple[list[Rule], list[ConfigIssue]]:
    """Compile a list of raw rules; returns the good rules and every issue (duplicate ids not checked here)."""
    locator = locator or Locator()
    if not isinstance(raw, list):
        where = dotted(path_prefix)
        line = locator.line(path_prefix)
        return [], [ConfigIssue(file, where, "expected a list of rules", line)]
    rules: list[Rule] = []
    issues: list[ConfigIssue] = []
    for index, entry in enumerate(raw):
        path = (*path_prefix, index)
        try:
            rule, found = compile_rule(entry, compiler=compiler, phone=phone, file=file, locator=locator, path=path)
        except Exception as exc:  # a bug of ours must still name the rule, not end in a traceback
            rule_id = entry.get("id") if isinstance(entry, dict) else None
            label = f"rule {rule_id}" if isinstance(rule_id, str) else f"rule #{index}"
            reason = f"{label}: cannot be compiled ({type(exc).__name__}: {str(exc)[:200]})"
            rule, found = None, [ConfigIssue(file, dotted(path), reason, locator.line(path))]
        issues.extend(found)
        if rule is not None:
            rules.append(rule)
    return rules, issues


def compile_rule(
    entry: Any, *, compiler: Compiler, phone: re.Pattern[str], file: str, locator: Locator, path: PathKey
) -> tuple[Rule | None, list[ConfigIssue]]:
    """Compile one raw rule; the Rule is None when any issue was found."""
    out = _Issues(file, locator, path)
    if not isinstance(entry, dict):
        out.add((), "expected a mapping with id, when and message")
        return None, out.found
    rule_id = entry.get("id")
    if isinstance(rule_id, str) and ID_RE.fullmatch(rule_id):
        out.label = f"rule {rule_id}"
    elif "id" not in entry:
        out.add((), "id is required (snake_case, e.g. comment_on_post)")
    else:
        out.add(("id",), f"id must be snake_case ([a-z][a-z0-9_]*, at most 64 characters), got {rule_id!r}")
    for key in entry:
        if key not in RULE_KEYS:
            out.add((str(key),), "unknown key")
    description = entry.get("description") or ""
    if not isinstance(description, str):
        out.add(("description",), "expected text")
    topics = _topics(entry.get("topics"), "topics" in entry, out)
    has_item = entry.get("for_each") is not None
    when = _expression(entry, "when", compiler, out, has_item=False)
    for_each = _expression(entry, "for_each", compiler, out, has_item=False)
    idempotency_key = _idempotency_key(entry.get("idempotency_key"), compiler, out, has_item=has_item)
    raw_message = entry.get("message")
    message: CompiledMessage | None = None
    if not isinstance(raw_message, dict):
        what = "is required" if raw_message is None else "must be a mapping of API fields"
        out.add(("message",) if "message" in entry else (), f"message {what}")
    else:
        message, problems = compile_message(
            raw_message, compiler, phone=phone, has_item=has_item, rule_id=out.label.removeprefix("rule ")
        )
        for sub, reason in problems:
            out.add(("message", *sub), reason)
    policy, policy_roots, problems = compile_policy(entry, out.label.removeprefix("rule "), compiler, phone)
    for sub, reason in problems:
        out.add(sub, reason)
    if out.found or message is None:
        return None, out.found
    _check_message_size(raw_message, entry.get("idempotency_key"), out)
    if isinstance(entry.get("digest"), dict):
        _check_message_size(entry["digest"].get("message"), None, out, ("digest", "message"))
    if out.found:
        return None, out.found
    roots: set[str] = set(message.roots)
    for part in (when, for_each):
        if part is not None:
            roots |= part.roots
    if idempotency_key is not None:
        roots |= idempotency_key[1]
    roots |= policy_roots
    return Rule(
        id=str(rule_id),
        description=str(description),
        topics=topics,
        file=file,
        path=dotted(path),
        line=locator.line(path),
        when=when.evaluate if when else None,
        guard=when.guard if when else None,
        check=_check(when, compiler, str(rule_id)),
        for_each=for_each.evaluate if for_each else None,
        idempotency_key=idempotency_key[0] if idempotency_key else None,
        message=message,
        roots=frozenset(roots),
        when_expr=when,
        policy=policy,
    ), []


def _check_message_size(
    raw_message: Any, idempotency_key: Any, out: _Issues, where: tuple[str, ...] = ("message",)
) -> None:
    """A message is as large as all its expressions together: bound the sum, not only each one (a
    json_data of ten thousand `{{ event }}` leaves, cheap to write with YAML aliases, is each time the event)."""
    growth, constant = 0, 0
    for text in _template_texts([raw_message, idempotency_key]):
        for piece in split_template(text):
            if isinstance(piece, tuple):
                a, b = size_bound(parse(piece[0]))
                growth, constant = growth + a, constant + b
    if growth > MAX_MESSAGE_GROWTH:
        out.add(
            where,
            f"the message's expressions together could be up to {growth:,}× the size of the event"
            f" (at most {MAX_MESSAGE_GROWTH}×): fewer fields copying the event, please",
        )
    if constant > MAX_MESSAGE_CONSTANT_BYTES:
        out.add(
            where,
            f"the message's expressions together could hold {constant:,} bytes of literals"
            f" (at most {MAX_MESSAGE_CONSTANT_BYTES:,})",
        )


def _template_texts(value: Any) -> list[str]:
    """Every text inside nested lists and mappings (iteratively: YAML depth is bounded, but be plain)."""
    texts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return texts


def _check(when: Expression | None, compiler: Compiler, rule_id: str) -> Predicate | None:
    if when is None:
        return None
    node = without_leftmost(when.node) if when.guard is not None else when.node
    if node is None:
        return None
    predicate, _source = compile_predicate(node, compiler, rule_id)
    return predicate


def _topics(value: Any, given: bool, out: _Issues) -> tuple[str, ...]:
    if not given:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        out.add(("topics",), "expected a list of topic names (leave topics out to match every topic)")
        return ()
    if not value:
        out.add(("topics",), "is empty (leave topics out to match every topic)")
    for index, name in enumerate(value):
        problem = topic_name_problem(name)
        if problem:
            out.add(("topics", index), problem)
    return tuple(dict.fromkeys(value))


def _expression(
    entry: dict[str, Any], key: str, compiler: Compiler, out: _Issues, *, has_item: bool
) -> Expression | None:
    value = entry.get(key)
    if value is None:
        return None
    if key == "when" and isinstance(value, bool):
        literal = {"type": "literal", "value": value, "children": []}
        return Expression(str(value).lower(), frozenset(), lambda _ctx: value, literal)
    if not isinstance(value, str):
        out.add((key,), "expected a JMESPath expression (text)")
        return None
    if "{{" in value:
        out.add((key,), f"{key} is a JMESPath expression, not a template: drop the {{{{ }}}}")
        return None
    try:
        expr = compiler.expression(value)
    except ExpressionError as exc:
        out.add((key,), exc.reason)
        return None
    for reason in root_problems(expr, has_item=has_item, where=key):
        out.add((key,), reason)
    return expr


def _idempotency_key(
    value: Any, compiler: Compiler, out: _Issues, *, has_item: bool
) -> tuple[Render, frozenset[str]] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        out.add(("idempotency_key",), "expected a template, e.g. '{{ event.id }}'")
        return None
    try:
        template = parse_template(value, compiler)
    except TemplateError as exc:
        out.add(("idempotency_key",), f"bad template {value[:80]!r}: {exc.reason}")
        return None
    if template.is_constant:
        out.add(("idempotency_key",), "is constant: every event would get the same msg_key")
        return None
    roots: set[str] = set()
    for expr in template.expressions:
        roots |= expr.roots
        for reason in root_problems(expr, has_item=has_item, where="idempotency_key"):
            out.add(("idempotency_key",), reason)
    return template.render, frozenset(roots)


def duplicate_ids(rules: Sequence[Rule]) -> list[ConfigIssue]:
    """An issue for every rule whose id was already used (by an earlier rule, in any file)."""
    first: dict[str, Rule] = {}
    issues: list[ConfigIssue] = []
    for rule in rules:
        seen = first.setdefault(rule.id, rule)
        if seen is not rule:
            where = f"{seen.file}:{seen.line}" if seen.line else f"{seen.file} {seen.path}"
            message = f"rule {rule.id}: duplicate id (first defined at {where})"
            issues.append(ConfigIssue(rule.file, f"{rule.path}.id", message, rule.line))
    return issues
