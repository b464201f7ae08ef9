"""What a rule's policies decide for one message: pure functions of (state, message, now). No I/O.

A message of a rule with policies passes them in this order; the first that stops it decides:

    dedupe       the same key for the same recipient within window_seconds ─► drop (a duplicate)
    quiet_hours  now is inside the window ─► drop, or hold it until the window ends (defer)
    limit        per_recipient reached in per_seconds ─► drop | defer to the next free slot | digest
    digest       every message (or only limit's overflow) ─► fold into the recipient's open window
    otherwise    send now (or at the end of the quiet hours: defer)

A digest is due when its window ends (later if that falls in quiet hours or, for limit's overflow, not before
the limit's next free slot, which the summary takes: the cap holds for the summary too). A window takes
messages until it is due or holds `max_items`; the next message opens a new one.

State is plain JSON, one value per key, so a dict in this process and Redis hold it alike:

    dedupe/<rule>/<recipient>/<key hash>   {"k": msg_key that claimed the key, "u": until (ms)}
    limit/<scope>/<recipient>              [[t (ms), msg_key or "w:"+window], …]  the last per_recipient sends
    digest/<rule>/<recipient>              {"id", "o": opened, "d": due, "n": count, "k": [msg_keys]}

Each decision is idempotent per msg_key: a record consumed again after a crash gets the answer it got before
(it is not a duplicate of itself, takes no second slot, is not folded twice).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock_time
from typing import Any, Literal

from bridge.models import MobileReceiverMessageEvent
from bridge.rules.coerce import field_text
from bridge.rules.policies import QuietHours, RulePolicy

Action = Literal["send", "drop", "defer", "fold"]
MAX_DEFER_MS = 24 * 3600 * 1000  # `limit.over: defer` never holds a message longer: beyond, it is dropped
Update = tuple[Any, int]  # a key's new value and when it expires (epoch ms)


@dataclass(frozen=True, slots=True)
class Subject:
    """The message a decision is about: its rule, recipient (a stable tag), msg_key and rendered dedupe key."""

    rule: str
    recipient: str
    msg_key: str
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to the message, which policy decided, and each policy's own verdict (for metrics)."""

    action: Action
    by: str | None = None  # the policy that stopped the message (None: sent)
    until_ms: int | None = None  # defer: when it is due; fold: when its digest is due
    window: str | None = None  # fold: the digest window's id
    steps: tuple[tuple[str, str], ...] = ()  # (policy, verdict): pass, drop, defer, digest, fold


@dataclass(frozen=True, slots=True)
class Keys:
    """The state keys one decision reads and writes (None: the rule has no such policy)."""

    tag: str  # the recipient's tag: every key of one decision shares it (one Redis hash slot)
    dedupe: str | None = None
    limit: str | None = None
    digest: str | None = None

    def all(self) -> list[str]:
        """The keys in use, in a fixed order."""
        return [k for k in (self.dedupe, self.limit, self.digest) if k is not None]


def recipient_tag(recipient: str) -> str:
    """A short stable tag of a recipient: state keys never hold a phone number."""
    return hashlib.blake2b(recipient.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def subject_of(policy: RulePolicy, rule: str, message: MobileReceiverMessageEvent, ctx: dict[str, Any]) -> Subject:
    """The subject of a decision on `message`; `ctx` is what the rule's templates saw (for the dedupe key).

    A dedupe key that renders null or fails leaves `dedupe_key` None: the message is not de-duplicated (never
    lost for want of a key).
    """
    key = None
    if policy.dedupe is not None:
        try:
            key = field_text(policy.dedupe.key(ctx))
        except Exception:  # an expression error in the key
            key = None
    return Subject(rule, recipient_tag(message.recipient), message.msg_key, key)


def state_keys(policy: RulePolicy, subject: Subject) -> Keys:
    """The keys of `subject`'s state under `policy`."""
    tag = subject.recipient
    dedupe = None
    if policy.dedupe is not None and subject.dedupe_key is not None:
        dedupe = f"dedupe/{policy.rule}/{tag}/{recipient_tag(subject.dedupe_key)}"
    limit = f"limit/{policy.limit.scope}/{tag}" if policy.limit is not None else None
    digest = f"digest/{policy.rule}/{tag}" if policy.digest is not None else None
    return Keys(tag, dedupe, limit, digest)


# ------------------------------------------------------------------------------------------ the policies
def quiet_end(quiet: QuietHours, now_ms: int) -> int | None:
    """When the quiet hours around `now_ms` end (epoch ms), or None when `now_ms` is outside them."""
    local = datetime.fromtimestamp(now_ms / 1000, quiet.zone)
    second = local.hour * 3600 + local.minute * 60 + local.second
    day = local.date()
    if quiet.start < quiet.end:
        if not quiet.start <= second < quiet.end:
            return None
    elif second >= quiet.start:
        day += timedelta(days=1)
    elif second >= quiet.end:
        return None
    hour, rest = divmod(quiet.end, 3600)
    end = datetime.combine(day, clock_time(hour, rest // 60, rest % 60), tzinfo=quiet.zone)
    end_ms = int(end.timestamp() * 1000)
    return end_ms if end_ms > now_ms else None


def outside_quiet(quiet: QuietHours | None, t_ms: int) -> int:
    """The first moment at or after `t_ms` outside the quiet hours."""
    if quiet is None:
        return t_ms
    end = quiet_end(quiet, t_ms)
    return t_ms if end is None else end


def dedupe_check(state: Any, msg_key: str, now_ms: int, window_ms: int) -> tuple[bool, Any | None]:
    """(is it a duplicate, the new state or None when unchanged): the first message claims the key."""
    if state is not None and now_ms < state["u"]:
        return state["k"] != msg_key, None
    return False, {"k": msg_key, "u": now_ms + window_ms}


def limit_slot(entries: list[list[Any]], msg_key: str, at_ms: int, cap: int, per_ms: int) -> tuple[int, bool]:
    """(the earliest time at or after `at_ms` another message fits under the cap, whether `msg_key` already
    holds a slot — then its time)."""
    for t, key in entries:
        if key == msg_key:
            return int(t), True
    if len(entries) < cap:
        return at_ms, False
    return max(at_ms, int(entries[-cap][0]) + per_ms), False


def limit_take(entries: list[list[Any]], t_ms: int, key: str, horizon_ms: int) -> list[list[Any]]:
    """The entries with a slot at `t_ms` taken by `key`, sorted; those at or before `horizon_ms` (now minus the
    window: no slot from now on depends on them) are dropped."""
    out = [list(e) for e in entries if int(e[0]) > horizon_ms]
    bisect.insort(out, [t_ms, key], key=lambda e: int(e[0]))
    return out


def digest_fold(window: Any, msg_key: str, now_ms: int, max_items: int) -> tuple[Any | None, bool]:
    """(`window` with `msg_key` folded in — None when it is due, full or absent: open a new one —, whether
    `msg_key` was in it already)."""
    if window is None:
        return None, False
    if msg_key in window["k"]:
        return window, True
    if now_ms < window["d"] and window["n"] < max_items:
        return {**window, "n": window["n"] + 1, "k": [*window["k"], msg_key]}, False
    return None, False


def digest_open(msg_key: str, now_ms: int, due_ms: int) -> dict[str, Any]:
    """A new window opened by `msg_key` (its id: a record mapped again opens the same window)."""
    return {"id": msg_key, "o": now_ms, "d": due_ms, "n": 1, "k": [msg_key]}


# ------------------------------------------------------------------------------------------ all together
def decide(
    policy: RulePolicy, states: Mapping[str, Any], subject: Subject, now_ms: int
) -> tuple[dict[str, Update], Decision]:
    """The decision for `subject` at `now_ms` and the state updates it makes (key -> (value, expires ms))."""
    keys = state_keys(policy, subject)
    updates: dict[str, Update] = {}
    steps: list[tuple[str, str]] = []
    msg_key = subject.msg_key
    if policy.dedupe is not None and keys.dedupe is not None:
        window_ms = int(policy.dedupe.window_seconds * 1000)
        duplicate, claim = dedupe_check(states.get(keys.dedupe), msg_key, now_ms, window_ms)
        if duplicate:
            return updates, Decision("drop", "dedupe", steps=(("dedupe", "drop"),))
        if claim is not None:
            updates[keys.dedupe] = (claim, claim["u"])
        steps.append(("dedupe", "pass"))
    quiet = policy.quiet_hours
    quiet_until = quiet_end(quiet, now_ms) if quiet is not None else None
    if quiet is not None and quiet_until is not None and quiet.action == "drop":
        return updates, Decision("drop", "quiet_hours", steps=(*steps, ("quiet_hours", "drop")))
    at = quiet_until or now_ms  # the earliest the message may go
    slot: int | None = None  # limit's overflow into a digest: the slot the summary takes
    limit = policy.limit
    if limit is not None and keys.limit is not None:
        per_ms = int(limit.per_seconds * 1000)
        entries: list[list[Any]] = list(states.get(keys.limit) or [])
        t, held = limit_slot(entries, msg_key, at, limit.per_recipient, per_ms)
        t = outside_quiet(quiet, t)
        if held or t <= at:
            if not held:
                taken = limit_take(entries, t, msg_key, now_ms - per_ms)
                updates[keys.limit] = (taken, _limit_expiry(taken, per_ms))
            steps.append(("limit", "pass"))
            at = max(at, t)
        elif limit.over == "drop" or (limit.over == "defer" and t - now_ms > MAX_DEFER_MS):
            return updates, Decision("drop", "limit", steps=(*steps, ("limit", "drop")))
        elif limit.over == "defer":
            taken = limit_take(entries, t, msg_key, now_ms - per_ms)
            updates[keys.limit] = (taken, _limit_expiry(taken, per_ms))
            return updates, Decision("defer", "limit", t, steps=(*steps, ("limit", "defer")))
        else:
            steps.append(("limit", "digest"))
            slot = t
    if quiet_until is not None:
        steps.append(("quiet_hours", "defer"))
    elif quiet is not None:
        steps.append(("quiet_hours", "pass"))
    digest = policy.digest
    if digest is not None and keys.digest is not None and (slot is not None or policy.folds_all):
        current = states.get(keys.digest)
        folded: Any = digest_fold(current, msg_key, now_ms, digest.max_items)[0]
        if folded is None:
            due = outside_quiet(quiet, max(now_ms + int(digest.window_seconds * 1000), slot or 0))
            folded = digest_open(msg_key, now_ms, due)
            if slot is not None and limit is not None and keys.limit is not None:  # the summary takes the slot
                per_ms = int(limit.per_seconds * 1000)
                entries = list(states.get(keys.limit) or [])
                taken = limit_take(entries, due, f"w:{folded['id']}", now_ms - per_ms)
                updates[keys.limit] = (taken, _limit_expiry(taken, per_ms))
        if folded is not current:
            updates[keys.digest] = (folded, int(folded["d"]))
        by = "limit" if slot is not None else "digest"
        return updates, Decision("fold", by, int(folded["d"]), str(folded["id"]), (*steps, ("digest", "fold")))
    if at > now_ms:
        by = "quiet_hours" if quiet_until is not None and at == quiet_until else "limit"
        return updates, Decision("defer", by, at, steps=tuple(steps))
    return updates, Decision("send", steps=tuple(steps))


def _limit_expiry(entries: list[list[Any]], per_ms: int) -> int:
    """A limit's entries matter until the latest of them is `per_ms` old."""
    return int(entries[-1][0]) + per_ms
