"""The rule engine: apply every matching rule to one event, producing messages or mapping failures.

`RuleSet.map` never raises: whatever goes wrong with one record (a RecursionError on a freak event, a
MemoryError, a bug of ours) becomes a MappingFailure of that record, dead-lettered, never a crash. The
context expressions see is `{"event", "item", "kafka", "headers"}`; rules are applied in order; within one
rule's fan-out a recipient (phone number, or the whole message when there is none) gets one message.
Problems are `MappingFailure(rule, field, reason)` values.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from bridge.models import Mapped, MappingFailure, MapResult, MobileReceiverMessageEvent, RecordMeta
from bridge.rules.codegen import SLOTS
from bridge.rules.coerce import RenderError, describe_exception, field_text, type_name
from bridge.rules.evaluators import Compiler
from bridge.rules.keys import idempotency_key, record_key
from bridge.rules.policies import RulePolicy
from bridge.rules.pygen import Writer, build
from bridge.rules.schema import Rule

_NO_RESULT = MapResult()
_KEY, _TIME, _EVENT_TYPE, _MOBILE = (
    SLOTS[f] for f in ("msg_key", "event_time_millis", "event_type", "mobile_receiver")
)
_MAX_TOPIC_CACHE = 4096
# The rule named by a failure that happened before any rule was looked at (never a rule id: ids are snake_case).
ANY_RULE = "*"


class RuleSet:
    """Compiled rules in order; `map(event, meta)` applies them. Built by `load_rules` / `compile_rules`."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        msg_key: Literal["deterministic", "random"] = "deterministic",
        random_uuid: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.ids: tuple[str, ...] = tuple(r.id for r in self.rules)
        # rule id -> its policies, for the rules that have any (empty: no record pays for policies)
        self.policies: dict[str, RulePolicy] = {r.id: r.policy for r in self.rules if r.policy is not None}
        self.msg_key = msg_key
        self._random_uuid = random_uuid
        self._plans: dict[str, _Plan] = {}
        self._compiler = Compiler()
        roots = frozenset().union(*(r.roots for r in self.rules))
        self._needs_kafka = bool(roots & {"kafka", "@"})
        self._needs_headers = bool(roots & {"headers", "@"})

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet({', '.join(self.ids)})"

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, or None."""
        return next((r for r in self.rules if r.id == rule_id), None)

    def for_topic(self, topic: str) -> tuple[Rule, ...]:
        """The rules that apply to records of `topic`."""
        return self._plan(topic).rules

    def _plan(self, topic: str) -> _Plan:
        plan = self._plans.get(topic)
        if plan is None:
            plan = _Plan(tuple(r for r in self.rules if not r.topics or topic in r.topics), self._compiler)
            if len(self._plans) < _MAX_TOPIC_CACHE:
                self._plans[topic] = plan
        return plan

    def context(self, event: Any, meta: RecordMeta) -> dict[str, Any]:
        """What expressions see: `event`, `item` (None until a fan-out sets it), `kafka` and `headers` (each
        None unless some rule reads it)."""
        ctx: dict[str, Any] = {"event": event, "item": None, "kafka": None, "headers": None}
        if self._needs_kafka:
            ctx["kafka"] = {
                "topic": meta.topic,
                "partition": meta.partition,
                "offset": meta.offset,
                "key": meta.key_text(),
                "timestamp_ms": meta.timestamp_ms,
            }
        if self._needs_headers:
            ctx["headers"] = meta.headers_text()
        return ctx

    def map(self, event: Any, meta: RecordMeta) -> MapResult:
        """Everything the rules make of one decoded record value. Never raises, whatever `event` is.

        `items`: a `Mapped` per message and a `MappingFailure` per problem, in rule order (fan-out in element
        order). `matched`: the rules whose topic and `when` held, or whose `when` failed (its failure is in
        `items`). `empty_fanout`: matched rules whose `for_each` gave no element. `missing`: (rule, field) of
        messages made with a whole-`{{ expr }}` field that resolved to missing.
        """
        try:
            return self._map(event, meta)
        except Exception as exc:  # outside any one rule (the rules' own failures are caught per rule)
            return MapResult((MappingFailure(ANY_RULE, "$", _internal(exc)),))

    def _map(self, event: Any, meta: RecordMeta) -> MapResult:
        plan = self._plans.get(meta.topic) or self._plan(meta.topic)
        ctx = self.context(event, meta)
        rules = plan.candidates(ctx)
        if not rules:
            return _NO_RESULT
        items: list[Mapped | MappingFailure] = []
        matched: list[str] = []
        empty: list[str] = []
        missing: list[tuple[str, str]] = []
        for rule in rules:
            try:
                # A guarded rule is only a candidate once its guard held: the rest of `when` decides.
                check = rule.check
                if check is not None:
                    try:
                        holds = check(ctx)
                    except Exception as exc:
                        matched.append(rule.id)
                        items.append(MappingFailure(rule.id, "when", describe_exception(exc)))
                        continue
                    if not holds:
                        continue
                matched.append(rule.id)
                if rule.for_each is None:
                    items.append(self._render(rule, ctx, meta, None, missing))
                else:
                    self._fan_out(rule, ctx, meta, items, empty, missing=missing)
            except Exception as exc:  # a bug of ours must not stop the other rules
                if rule.id not in matched:
                    matched.append(rule.id)
                items.append(MappingFailure(rule.id, "$", _internal(exc)))
                ctx["item"] = None
        if not matched:
            return _NO_RESULT
        if missing:
            return MapResult(tuple(items), tuple(matched), tuple(empty), tuple(dict.fromkeys(missing)))
        return MapResult(tuple(items), tuple(matched), tuple(empty))

    def _fan_out(
        self,
        rule: Rule,
        ctx: dict[str, Any],
        meta: RecordMeta,
        items: list[Mapped | MappingFailure],
        empty: list[str],
        *,
        missing: list[tuple[str, str]],
    ) -> None:
        assert rule.for_each is not None
        try:
            elements = rule.for_each(ctx)
        except Exception as exc:
            items.append(MappingFailure(rule.id, "for_each", describe_exception(exc)))
            return
        if elements is None or elements == []:
            empty.append(rule.id)
            return
        if not isinstance(elements, list):
            reason = f"expected an array to fan out over, got {type_name(elements)}"
            items.append(MappingFailure(rule.id, "for_each", reason))
            return
        try:  # the fields that do not read `item` are the same for every element: rendered once
            base = rule.message.render(ctx)
        except RenderError as exc:
            items.append(MappingFailure(rule.id, exc.field or "message", exc.reason))
            return
        seen: set[Any] = set()
        try:
            for index, element in enumerate(elements):
                ctx["item"] = element
                result = self._render(rule, ctx, meta, (index, base), missing)
                if isinstance(result, Mapped):
                    recipient = _recipient(result.message)
                    if recipient in seen:
                        continue
                    seen.add(recipient)
                items.append(result)
        finally:
            ctx["item"] = None

    def _render(
        self,
        rule: Rule,
        ctx: dict[str, Any],
        meta: RecordMeta,
        element: tuple[int, list[Any]] | None,
        missing: list[tuple[str, str]],
    ) -> Mapped | MappingFailure:
        """One message; `element` is (index, fields rendered once for the event) inside a fan-out.

        The fields whose template resolved to missing are added to `missing` (when the message is made).
        """
        field = "message"
        try:
            if element is None:
                values = rule.message.render(ctx)
            elif rule.message.render_item is not None:
                values = rule.message.render_item(ctx, element[1])
            else:
                values = element[1].copy()
            absent = values.pop()  # the MISSING slot
            field = "event_type"
            event_type = values[_EVENT_TYPE]
            if event_type is None:
                raise RenderError("is required but rendered null or empty")
            mobile = values[_MOBILE]
            if mobile is None and event_type == "mobile_receiver":
                field = "mobile_receiver"
                raise RenderError("is required when event_type is mobile_receiver, but rendered null or empty")
            if values[_TIME] is None:
                field = "event_time_millis"
                if meta.timestamp_ms < 0:
                    raise RenderError("the rule does not set it and the record has no timestamp")
                values[_TIME] = meta.timestamp_ms
            part = "" if element is None else (mobile or f"#{element[0]}")
            if rule.idempotency_key is not None:
                field = "idempotency_key"
                key = field_text(rule.idempotency_key(ctx))
                if key is None:
                    raise RenderError("rendered null or empty")
                values[_KEY] = idempotency_key(key, rule.id, part)
            elif self.msg_key == "random":
                values[_KEY] = str(self._random_uuid())
            else:
                values[_KEY] = record_key(meta.topic, meta.partition, meta.offset, rule.id, part)
            if absent is not None:
                missing.extend((rule.id, label) for label in absent)
            return Mapped(rule.id, MobileReceiverMessageEvent(*values))
        except RenderError as exc:
            return MappingFailure(rule.id, exc.field or field, exc.reason)
        except Exception as exc:  # expression errors: function argument types, text compared with numbers
            return MappingFailure(rule.id, field, describe_exception(exc))


class _Plan:
    """The rules of one topic, with their guards indexed: which rules can match is decided by a few lookups.

    A rule whose `when` starts with `path == 'text' && …` cannot match unless the value at `path` is that
    text. A generated function reads every guarded path once per event; the texts found (or None) are the
    key of a small cache of the candidate rules, in rule order.
    """

    def __init__(self, rules: tuple[Rule, ...], compiler: Compiler) -> None:
        self.rules = rules
        tables: dict[tuple[str, ...], dict[str, set[int]]] = {}
        for i, rule in enumerate(rules):
            if rule.guard is not None:
                keys, text = rule.guard
                tables.setdefault(keys, {}).setdefault(text, set()).add(i)
        self._tables = tuple(tables.values())
        self._unguarded = frozenset(i for i, r in enumerate(rules) if r.guard is None)
        self._cache: dict[tuple[str | None, ...], tuple[Rule, ...]] = {}
        self._read = _guard_reader(list(tables.items()), compiler) if tables else None

    def candidates(self, ctx: dict[str, Any]) -> tuple[Rule, ...]:
        """The rules worth evaluating for this context, in rule order."""
        if self._read is None:
            return self.rules
        key = self._read(ctx)
        rules = self._cache.get(key)
        if rules is None:
            admitted = set(self._unguarded)
            for text, table in zip(key, self._tables, strict=True):
                if text is not None:
                    admitted |= table[text]
            rules = self._cache[key] = tuple(self.rules[i] for i in sorted(admitted))
        return rules


def _guard_reader(
    tables: list[tuple[tuple[str, ...], dict[str, set[int]]]], compiler: Compiler
) -> Callable[[Any], tuple[str | None, ...]]:
    """`fn(ctx)`: for each guarded path, its value if it is one of the texts guarded for, else None."""
    w = Writer(compiler)
    results = []
    for keys, table in tables:
        local = "ctx"
        for key in keys:
            local = w.field(local, key)
        texts = w.bind(frozenset(table), "texts")
        results.append(f"({local} if {local}.__class__ is str and {local} in {texts} else None)")
    read, _source = build(w, "ctx", [f"    return ({', '.join(results)},)"], "guards")
    return read


def _internal(exc: BaseException) -> str:
    """The reason of a failure that is not the rule's (RecursionError, MemoryError, a bug), one line, bounded."""
    return f"internal error: {type(exc).__name__}: {describe_exception(exc).removeprefix('expression failed: ')}"


def _recipient(message: MobileReceiverMessageEvent) -> Any:
    if message.mobile_receiver:
        return message.mobile_receiver
    return (
        message.event_type,
        message.event_time_millis,
        message.json_data,
        message.source,
        message.action,
        message.resource_id,
        message.resource_url,
        message.company_id,
        message.sender,
        message.corp_id,
    )
