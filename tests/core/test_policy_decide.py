"""Rule policies as pure functions of (state, message, now), on a virtual clock (issue 15)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.policy.decide import (
    MAX_DEFER_MS,
    Decision,
    Subject,
    decide,
    dedupe_check,
    digest_fold,
    limit_slot,
    limit_take,
    quiet_end,
    recipient_tag,
)
from bridge.policy.store import MemoryPolicyStore
from bridge.rules import compile_rules
from bridge.rules.policies import RulePolicy

SHANGHAI = ZoneInfo("Asia/Shanghai")
MESSAGE = {"event_type": "mobile_receiver", "mobile_receiver": "{{ event.to }}"}


def at(text: str, zone: ZoneInfo = SHANGHAI) -> int:
    """Epoch ms of a local time, e.g. at('2024-06-03 03:00')."""
    return int(datetime.fromisoformat(text).replace(tzinfo=zone).timestamp() * 1000)


def local(ms: int | None, zone: ZoneInfo = SHANGHAI) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M:%S")


def policy(**keys: Any) -> RulePolicy:
    """The policy of one rule `r` with these policy keys (compiled as at load)."""
    rules = compile_rules([{"id": "r", "when": True, "message": MESSAGE, **keys}])
    return rules.policies["r"]


QUIET = {"from": "22:30", "to": "07:00", "timezone": "Asia/Shanghai", "action": "defer"}


class World:
    """One in-process store on a virtual clock; messages to recipients, each with a fresh msg_key."""

    def __init__(self, p: RulePolicy, now: int) -> None:
        self.policy = p
        self.now = now
        self.store = MemoryPolicyStore()
        self.n = 0

    def send(self, to: str = "13800000001", *, key: str | None = None, dedupe: str | None = None) -> Decision:
        self.n += 1
        subject = Subject("r", recipient_tag(to), key or f"m{self.n}", dedupe)
        return self.store.decide_now(self.policy, subject, self.now)

    def tick(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


# ------------------------------------------------------------------------------------------ quiet hours
@pytest.mark.parametrize(
    ("start", "end", "now", "expected"),
    [
        ("22:30", "07:00", "2024-06-03 03:00", "2024-06-03 07:00:00"),
        ("22:30", "07:00", "2024-06-03 22:30", "2024-06-04 07:00:00"),
        ("22:30", "07:00", "2024-06-03 23:59", "2024-06-04 07:00:00"),
        ("22:30", "07:00", "2024-06-03 00:00", "2024-06-03 07:00:00"),
        ("22:30", "07:00", "2024-06-03 06:59", "2024-06-03 07:00:00"),
        ("22:30", "07:00", "2024-06-03 07:00", None),
        ("22:30", "07:00", "2024-06-03 12:00", None),
        ("22:30", "07:00", "2024-06-03 22:29", None),
        ("12:00", "14:00", "2024-06-03 13:15", "2024-06-03 14:00:00"),
        ("12:00", "14:00", "2024-06-03 14:00", None),
        ("12:00", "14:00", "2024-06-03 11:59", None),
        ("03:00:00", "03:00:10", "2024-06-03 03:00:05", "2024-06-03 03:00:10"),
        ("03:00:00", "03:00:10", "2024-06-03 03:00:10", None),
    ],
    ids=str,
)
def test_quiet_hours_end_when_the_local_window_ends(start: str, end: str, now: str, expected: str | None) -> None:
    p = policy(quiet_hours={**QUIET, "from": start, "to": end})
    assert p.quiet_hours is not None
    assert local(quiet_end(p.quiet_hours, at(now))) == expected


def test_quiet_hours_follow_the_zone_across_a_daylight_saving_change() -> None:
    ny = ZoneInfo("America/New_York")
    p = policy(quiet_hours={**QUIET, "from": "22:00", "to": "07:00", "timezone": "America/New_York"})
    assert p.quiet_hours is not None
    # the night clocks go forward (2024-03-10 02:00 → 03:00): the window still ends at 07:00 local time
    end = quiet_end(p.quiet_hours, at("2024-03-09 23:00", ny))
    assert local(end, ny) == "2024-03-10 07:00:00"
    assert end is not None and end - at("2024-03-09 23:00", ny) == 7 * 3600 * 1000  # one hour shorter


@pytest.mark.parametrize(
    ("now", "action", "expected"),
    [
        ("2024-06-03 03:00", "defer", ("defer", "quiet_hours", "2024-06-03 07:00:00")),
        ("2024-06-03 23:10", "defer", ("defer", "quiet_hours", "2024-06-04 07:00:00")),
        ("2024-06-03 09:00", "defer", ("send", None, None)),
        ("2024-06-03 03:00", "drop", ("drop", "quiet_hours", None)),
        ("2024-06-03 09:00", "drop", ("send", None, None)),
    ],
    ids=str,
)
def test_quiet_hours_defer_or_drop(now: str, action: str, expected: tuple[str, str | None, str | None]) -> None:
    p = policy(quiet_hours={**QUIET, "action": action})
    updates, d = decide(p, {}, Subject("r", "t", "k"), at(now))
    assert updates == {}  # quiet hours keep no state
    assert (d.action, d.by, local(d.until_ms)) == expected


def test_a_3am_fanout_of_300_recipients_is_deferred_to_the_end_of_the_window_each_with_its_msg_key() -> None:
    w = World(policy(quiet_hours=QUIET), at("2024-06-03 03:00"))
    decisions = [w.send(f"1360000{i:04d}", key=f"announcement-{i}") for i in range(300)]
    assert {(d.action, d.by, local(d.until_ms)) for d in decisions} == {("defer", "quiet_hours", "2024-06-03 07:00:00")}
    assert len(w.store) == 0
    w.now = at("2024-06-03 07:00")
    assert w.send("13600000000").action == "send"


# ------------------------------------------------------------------------------------------ dedupe
@pytest.mark.parametrize(
    ("state", "msg_key", "now", "expected"),
    [
        (None, "a", 1000, (False, {"k": "a", "u": 4000})),
        ({"k": "a", "u": 4000}, "b", 3999, (True, None)),
        ({"k": "a", "u": 4000}, "a", 3999, (False, None)),  # the same message again (a record read twice)
        ({"k": "a", "u": 4000}, "b", 4000, (False, {"k": "b", "u": 7000})),  # the window is over
    ],
    ids=["first claims", "duplicate", "same message again", "after the window"],
)
def test_dedupe_check(state: Any, msg_key: str, now: int, expected: tuple[bool, Any]) -> None:
    assert dedupe_check(state, msg_key, now, 3000) == expected


def test_duplicate_events_within_the_window_make_one_message_and_the_same_message_again_is_no_duplicate() -> None:
    w = World(policy(dedupe={"key": "{{ event.post.id }}", "window_seconds": 3600}), at("2024-06-03 10:00"))
    assert w.send(key="m-1", dedupe="p778").action == "send"
    w.tick(60)
    d = w.send(key="m-2", dedupe="p778")
    assert (d.action, d.by, d.steps) == ("drop", "dedupe", (("dedupe", "drop"),))
    assert w.send(key="m-1", dedupe="p778").action == "send"  # consumed again after a crash: still itself
    assert w.send(key="m-3", dedupe="p779").action == "send"  # another key
    assert w.send("13900000000", key="m-4", dedupe="p778").action == "send"  # another recipient
    w.tick(3600)
    assert w.send(key="m-5", dedupe="p778").action == "send"  # the window (from the first) is over


# ------------------------------------------------------------------------------------------ limit
def test_limit_slot_and_take() -> None:
    entries: list[list[Any]] = []
    for t, key in ((0, "a"), (10, "b"), (20, "c")):
        slot, held = limit_slot(entries, key, t, 3, 100)
        assert (slot, held) == (t, False)
        entries = limit_take(entries, slot, key, t - 100)
    assert limit_slot(entries, "d", 30, 3, 100) == (100, False)  # the oldest of the last three + 100
    assert limit_slot(entries, "b", 30, 3, 100) == (10, True)
    assert limit_take(entries, 100, "d", 5) == [[10, "b"], [20, "c"], [100, "d"]]  # "a" is past the window


def test_limit_over_drop_caps_each_recipient_in_any_window() -> None:
    w = World(policy(limit={"per_recipient": 3, "per_seconds": 600}), at("2024-06-03 10:00"))
    sent = []
    for _ in range(20):  # one message a minute for 20 minutes
        d = w.send()
        assert d.action in ("send", "drop")
        if d.action == "send":
            sent.append(w.now)
        w.tick(60)
    assert len(sent) == 6  # at 0, 1, 2 min, then 10, 11, 12 min
    assert all(b - a >= 600_000 for a, b in zip(sent, sent[3:], strict=False))
    assert w.send("13900000000").action == "send"  # the cap is per recipient


def test_limit_over_defer_moves_each_message_to_the_next_free_slot_and_never_beyond_a_day() -> None:
    w = World(policy(limit={"per_recipient": 2, "per_seconds": 60, "over": "defer"}), at("2024-06-03 10:00"))
    t0 = w.now
    decisions = [w.send(key=f"m{i}") for i in range(6)]
    assert [(d.action, d.until_ms) for d in decisions] == [
        ("send", None),
        ("send", None),
        ("defer", t0 + 60_000),
        ("defer", t0 + 60_000),
        ("defer", t0 + 120_000),
        ("defer", t0 + 120_000),
    ]
    assert w.send(key="m3").until_ms == t0 + 60_000  # decided again (a record read twice): the same slot
    crowded = World(policy(limit={"per_recipient": 1, "per_seconds": 3600, "over": "defer"}), t0)
    outcomes = [crowded.send().action for _ in range(30)]
    assert outcomes[:25] == ["send"] + ["defer"] * 24 and set(outcomes[25:]) == {"drop"}
    assert MAX_DEFER_MS >= 24 * 3600 * 1000


def test_a_limit_group_is_one_counter_for_its_rules() -> None:
    rules = compile_rules(
        [
            {
                "id": "a",
                "when": True,
                "message": MESSAGE,
                "limit": {"per_recipient": 2, "per_seconds": 60, "group": "g"},
            },
            {
                "id": "b",
                "when": True,
                "message": MESSAGE,
                "limit": {"per_recipient": 2, "per_seconds": 60, "group": "g"},
            },
        ]
    )
    store = MemoryPolicyStore()
    tag = recipient_tag("13800000001")
    out = [store.decide_now(rules.policies[r], Subject(r, tag, f"{r}{i}"), 0).action for i, r in enumerate("abab")]
    assert out == ["send", "send", "drop", "drop"]


# ------------------------------------------------------------------------------------------ digest
DIGEST = {"window_seconds": 300, "max_items": 50, "message": {"json_data": {"title": "{{ count }} likes"}}}


def test_digest_fold_table() -> None:
    window = {"id": "a", "o": 0, "d": 300_000, "n": 1, "k": ["a"]}
    assert digest_fold(None, "b", 1000, 50) == (None, False)
    assert digest_fold(window, "b", 1000, 50) == ({**window, "n": 2, "k": ["a", "b"]}, False)
    assert digest_fold(window, "a", 1000, 50) == (window, True)
    assert digest_fold(window, "b", 300_000, 50) == (None, False)  # due: a new window
    assert digest_fold({**window, "n": 2, "k": ["a", "x"]}, "b", 1000, 2) == (None, False)  # full


def test_a_digest_folds_everything_within_its_window_and_opens_the_next() -> None:
    w = World(policy(digest=DIGEST), at("2024-06-03 10:00"))
    t0 = w.now
    first = w.send(key="like-0")
    assert (first.action, first.window, first.until_ms) == ("fold", "like-0", t0 + 300_000)
    for i in range(1, 10):
        w.tick(20)
        d = w.send(key=f"like-{i}")
        assert (d.action, d.window, d.until_ms) == ("fold", "like-0", t0 + 300_000)
    w.tick(200)  # t0 + 380 s: the first window is due
    d = w.send(key="like-10")
    assert (d.action, d.window, d.until_ms) == ("fold", "like-10", w.now + 300_000)


def test_a_digest_is_at_most_max_items() -> None:
    w = World(policy(digest={**DIGEST, "max_items": 3}), 0)
    assert [w.send(key=f"k{i}").window for i in range(7)] == ["k0", "k0", "k0", "k3", "k3", "k3", "k6"]


def test_40_likes_in_a_minute_with_limit_and_digest_send_the_cap_and_one_summary_in_the_next_slot() -> None:
    p = policy(limit={"per_recipient": 5, "per_seconds": 600, "over": "digest"}, digest=DIGEST)
    w = World(p, at("2024-06-03 10:00"))
    t0 = w.now
    decisions = []
    for i in range(40):
        decisions.append(w.send(key=f"like-{i}"))
        w.tick(1.5)
    sent = [d for d in decisions if d.action == "send"]
    folded = [d for d in decisions if d.action == "fold"]
    assert len(sent) == 5 and len(folded) == 35
    assert {d.window for d in folded} == {"like-5"} and {d.by for d in folded} == {"limit"}
    # the summary waits for the window (300 s) and for the cap's next free slot (the first send + 600 s)
    assert {d.until_ms for d in folded} == {t0 + 600_000}
    assert [s[1] for s in decisions[5].steps] == ["digest", "fold"]
    # the summary took that slot: at that moment another message is over the cap and opens the next window
    w.now = t0 + 600_000
    d = w.send(key="like-40")
    assert (d.action, d.window) == ("fold", "like-40")


def test_a_digest_in_quiet_hours_is_due_when_they_end_and_takes_the_night_up_to_max_items() -> None:
    w = World(policy(digest=DIGEST, quiet_hours=QUIET), at("2024-06-03 02:00"))
    windows = set()
    for i in range(60):  # one like every 3 minutes from 02:00
        d = w.send(key=f"like-{i}")
        assert d.action == "fold" and local(d.until_ms) == "2024-06-03 07:00:00"
        assert ("quiet_hours", "defer") in d.steps
        windows.add(d.window)
        w.tick(180)
    assert windows == {"like-0", "like-50"}  # 50 items, then a second window


def test_a_duplicate_never_counts_against_the_limit() -> None:
    p = policy(dedupe={"key": "{{ event.id }}", "window_seconds": 600}, limit={"per_recipient": 2, "per_seconds": 600})
    w = World(p, 0)
    assert [w.send(dedupe="e1").action for _ in range(5)] == ["send", "drop", "drop", "drop", "drop"]
    assert w.send(dedupe="e2").action == "send"
    assert w.send(dedupe="e3").action == "drop"
    assert w.send(dedupe="e3").by == "dedupe"


def test_state_expires_so_memory_follows_only_active_recipients() -> None:
    w = World(
        policy(limit={"per_recipient": 2, "per_seconds": 60}, dedupe={"key": "{{ event.id }}", "window_seconds": 30}), 0
    )
    for i in range(100):
        w.send(f"1380000{i:04d}", dedupe="x")
    assert len(w.store) == 200
    w.tick(61)
    w.send("13900000000", dedupe="y")
    assert len(w.store) == 2
