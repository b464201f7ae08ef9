"""Rule policies on a fixed clock for `bridge map --now` and `bridge test`: what the daemon would do. Pure.

The same decisions as the daemon (`bridge.policy.decide`, state in memory), taken in input order at one
instant: events given together count against limits, dedupe windows and digests as a burst would. Deferred
messages are reported with their due time; digests are reported when the input ends, as the daemon would
send them when they are due (the summary, or the one folded message as it was).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.models import Mapped, MobileReceiverMessageEvent, RecordMeta
from bridge.policy.decide import Decision, subject_of
from bridge.policy.digest import summarize
from bridge.policy.store import MemoryPolicyStore
from bridge.rules.coerce import RenderError
from bridge.rules.ruleset import RuleSet


@dataclass(frozen=True, slots=True)
class DigestOut:
    """A digest the daemon would send when due: its summary (or the one message), or why it cannot be made."""

    rule: str
    window: str
    due_ms: int
    count: int
    tags: tuple[Any, ...]  # what the caller passed along with each folded message (line numbers, …)
    message: MobileReceiverMessageEvent | None
    error: str | None = None


class DryRun:
    """Decides for the messages of one input, in order, at `now_ms`."""

    def __init__(self, rules: RuleSet, now_ms: int) -> None:
        self.rules = rules
        self.now_ms = now_ms
        self._store = MemoryPolicyStore()
        self._windows: dict[tuple[str, str], list[tuple[MobileReceiverMessageEvent, dict[str, Any], Any, int]]] = {}

    def decide(self, item: Mapped, event: Any, meta: RecordMeta, tag: Any = None) -> Decision | None:
        """The decision on one mapped message (None when its rule has no policy); `tag` comes back in digests."""
        policy = self.rules.policies.get(item.rule)
        if policy is None:
            return None
        subject = subject_of(policy, item.rule, item.message, self.rules.context(event, meta))
        decision = self._store.decide_now(policy, subject, self.now_ms)
        if decision.action == "fold" and decision.window is not None and decision.until_ms is not None:
            kafka = {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}
            context = {"event": event, "kafka": {**kafka, "timestamp_ms": meta.timestamp_ms}}
            folded = self._windows.setdefault((item.rule, decision.window), [])
            folded.append((item.message, context, tag, decision.until_ms))
        return decision

    def digests(self) -> list[DigestOut]:
        """Every digest folded so far, in the order their windows opened."""
        out = []
        for (rule_id, window), folded in self._windows.items():
            tags = tuple(tag for _, _, tag, _ in folded)
            due = folded[0][3]
            if len(folded) == 1:
                out.append(DigestOut(rule_id, window, due, 1, tags, folded[0][0]))
                continue
            rule = self.rules.get(rule_id)
            digest = rule.policy.digest if rule is not None and rule.policy is not None else None
            assert digest is not None  # only rules with a digest fold
            try:
                summary = summarize(rule_id, digest, window, [(m, c) for m, c, _, _ in folded])
            except RenderError as exc:
                error = f"{exc.field or 'digest.message'}: {exc.reason} (each message would be sent on its own)"
                out.append(DigestOut(rule_id, window, due, len(folded), tags, None, error))
                continue
            out.append(DigestOut(rule_id, window, due, len(folded), tags, summary))
        return out
