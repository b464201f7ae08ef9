"""A generator of realistic campus events for the shipped rules, plus some stale and malformed records. Pure.

Each `Generated` says which topic it goes to, the record value (bytes), an optional record timestamp (for
stale events) and what the demo should expect of it ("deliver", "stale", "malformed", "unmatched").

With `bursts` (the default) the stream starts with what the rules' policies are for: a course announcement
to a whole year (`NIGHT_STUDENTS` students, published at night: held by quiet hours), a like storm
(`STORM_LIKES` likes on one student's post within a minute, some sent twice by the source system: capped,
digested, de-duplicated), then the usual mix.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

FORUM = "campus.forum.events"
COURSE = "campus.course.events"
FACILITY = "campus.facility.events"
TOPICS = (FORUM, COURSE, FACILITY)

_CN = timezone(timedelta(hours=8))
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "杰", "婷", "浩", "雪", "晨", "悦", "宇", "欣"]
_POSTS = ["图书馆自习室占座问题", "食堂新窗口测评", "二手教材交换", "校园跑打卡攻略", "期末复习资料汇总"]
_COMMENTS = ["同意，建议实行预约制。", "周末也有同样的问题。", "求资料，谢谢！", "已收藏。", "楼主辛苦了"]
_COURSES = [("CS101", "数据结构"), ("MA201", "线性代数"), ("PH110", "大学物理"), ("EN120", "学术英语")]
_FACILITIES = [("gym-court-3", "体育馆3号羽毛球场"), ("pool-1", "游泳馆"), ("lib-room-204", "图书馆研讨室204")]
_TENANT = {"company_id": "10086", "corp_id": "ding5f2c8a9e3b7d41a0"}
NIGHT_STUDENTS = 300  # the night-time announcement's fan-out
STORM_LIKES = 40  # likes in the like storm (every fifth one emitted twice by the source system)


@dataclass(frozen=True, slots=True)
class Generated:
    """One record to produce and what to expect of it."""

    topic: str
    value: bytes
    kind: str  # deliver | stale | malformed | unmatched
    timestamp_ms: int | None = None


class CampusEventGenerator:
    """Seeded, so a demo run is reproducible. `stale_share` and `malformed_share` are per-event probabilities."""

    def __init__(
        self,
        seed: int = 42,
        *,
        users: int = 400,
        stale_share: float = 0.02,
        malformed_share: float = 0.02,
        unmatched_share: float = 0.05,
        clock: Any = time.time,
        bursts: bool = True,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.stale_share = stale_share
        self.malformed_share = malformed_share
        self.unmatched_share = unmatched_share
        self.users = [self._user(i) for i in range(users)]
        self._seq = 0
        self._scripted: list[Generated] = self.night_burst() + self.like_storm() if bursts else []

    def _user(self, i: int) -> dict[str, Any]:
        name = self.rng.choice(_SURNAMES) + self.rng.choice(_GIVEN) + self.rng.choice(["", *_GIVEN])
        mobile = f"1{self.rng.choice('3456789')}{self.rng.randrange(10**9):09d}"
        return {"id": f"u{1000 + i}", "name": name, "mobile": mobile}

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self._seq:07d}"

    def _now_iso(self) -> str:
        return datetime.fromtimestamp(self.clock(), _CN).isoformat(timespec="seconds")

    def _two(self) -> tuple[dict[str, Any], dict[str, Any]]:
        a, b = self.rng.sample(self.users, 2)
        return a, b

    # ------------------------------------------------------------------ event kinds
    def comment(self, reply: bool) -> dict[str, Any]:
        """A comment on a post, or a reply to another comment."""
        actor, author = self._two()
        post = {"id": self._id("p"), "title": self.rng.choice(_POSTS), "author": author}
        parent = None
        if reply:
            parent_author = self.rng.choice([u for u in self.users[:50] if u["id"] != actor["id"]])
            parent = {"id": self._id("c"), "text": self.rng.choice(_COMMENTS), "author": parent_author}
        return {
            "id": self._id("evt"),
            "type": "comment.created",
            "occurred_at": self._now_iso(),
            "tenant": _TENANT,
            "actor": actor,
            "post": post,
            "comment": {"id": self._id("c"), "text": self.rng.choice(_COMMENTS), "parent": parent},
        }

    def like(self) -> dict[str, Any]:
        """Someone liked a post."""
        actor, author = self._two()
        return {
            "id": self._id("evt"),
            "type": "post.liked",
            "occurred_at": int(self.clock() * 1000),
            "tenant": _TENANT,
            "actor": actor,
            "post": {"id": self._id("p"), "title": self.rng.choice(_POSTS), "author": author},
        }

    def follow(self) -> dict[str, Any]:
        """Someone followed someone."""
        actor, followee = self._two()
        return {
            "id": self._id("evt"),
            "type": "user.followed",
            "occurred_at": int(self.clock() * 1000),
            "tenant": _TENANT,
            "actor": actor,
            "followee": followee,
        }

    def announcement(self) -> dict[str, Any]:
        """A course announcement to 3–12 students (some without a phone, one listed twice)."""
        cid, cname = self.rng.choice(_COURSES)
        students = [dict(u) for u in self.rng.sample(self.users, self.rng.randint(3, 12))]
        students[0].pop("mobile")
        students.append(dict(students[-1]))
        return {
            "id": self._id("evt"),
            "type": "course.announcement.published",
            "occurred_at": self._now_iso(),
            "tenant": _TENANT,
            "course": {"id": cid, "name": cname, "teacher": {"id": "t301", "name": "张老师"}},
            "announcement": {
                "id": self._id("a"),
                "title": "作业提交时间调整",
                "body": "本周作业延期至周五晚 22:00 提交。",
                "pinned": self.rng.random() < 0.3,
            },
            "students": students,
        }

    def booking_reminder(self) -> dict[str, Any]:
        """A facility booking starts soon."""
        fid, fname = self.rng.choice(_FACILITIES)
        booker = self.rng.choice(self.users)
        starts = datetime.fromtimestamp(self.clock() + 1800, _CN)
        return {
            "id": self._id("evt"),
            "type": "facility.booking.reminder",
            "occurred_at": int(self.clock()),
            "minutes_before": 30,
            "tenant": _TENANT,
            "booking": {
                "id": self._id("bk"),
                "starts_at": starts.isoformat(timespec="seconds"),
                "ends_at": (starts + timedelta(hours=1)).isoformat(timespec="seconds"),
                "check_in_code": f"{self.rng.randrange(10000):04d}",
                "facility": {"id": fid, "name": fname},
                "booker": booker,
            },
        }

    def loan_due(self) -> dict[str, Any]:
        """A CloudEvents envelope from the library."""
        reader = self.rng.choice(self.users)
        loan = self._id("L")
        return {
            "specversion": "1.0",
            "type": "edu.campus.library.loan.due",
            "source": "/library/circulation",
            "id": self._id("ce"),
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "subject": f"loan/{loan}",
            "datacontenttype": "application/json",
            "campustenant": "10086",
            "data": {
                "loan_id": loan,
                "due_date": "2026-12-01",
                "renewals_left": 1,
                "reader": reader,
                "book": {"title": "算法导论", "isbn": "978711140701x"},
            },
        }

    # ------------------------------------------------------------------ bursts the policies are for
    def night_burst(self) -> list[Generated]:
        """One announcement to a whole year of students, published at night (quiet hours hold it)."""
        event = self.announcement()
        event["announcement"]["title"] = "明早8点实验楼停电，实验课改到下午"
        event["students"] = [dict(u) for u in self.users[:NIGHT_STUDENTS]]
        return [Generated(COURSE, orjson.dumps(event), "deliver")]

    def like_storm(self) -> list[Generated]:
        """`STORM_LIKES` likes on one student's post in a minute; every fifth one the source emits twice."""
        author = self.users[-1]
        post = {"id": self._id("p"), "title": "期末复习资料汇总（持续更新）", "like_count": 0, "author": author}
        out = []
        for i in range(STORM_LIKES):
            actor = self.users[i % (len(self.users) - 1)]
            post = {**post, "like_count": i + 1}
            event = {
                "id": self._id("evt"),
                "type": "post.liked",
                "occurred_at": int(self.clock() * 1000),
                "tenant": _TENANT,
                "actor": actor,
                "post": post,
            }
            out.append(Generated(FORUM, orjson.dumps(event), "deliver"))
            if i % 5 == 4:
                out.append(Generated(FORUM, orjson.dumps(event), "deliver"))  # the same event again
        return out

    # ------------------------------------------------------------------ the stream
    def next(self) -> Generated:
        """The next record."""
        if self._scripted:
            return self._scripted.pop(0)
        u = self.rng.random()
        if u < self.malformed_share:
            bad = self.rng.choice([b"{not json", b"[1, 2, 3]", b"\xff\xfe not utf-8", b'"just a string"'])
            return Generated(FORUM, bad, "malformed")
        if u < self.malformed_share + self.unmatched_share:
            event = {"id": self._id("evt"), "type": "post.viewed", "actor": self.rng.choice(self.users)}
            return Generated(FORUM, orjson.dumps(event), "unmatched")
        pick = self.rng.random()
        if pick < 0.30:
            topic, event = FORUM, self.comment(reply=self.rng.random() < 0.4)
        elif pick < 0.50:
            topic, event = FORUM, self.like()
        elif pick < 0.62:
            topic, event = FORUM, self.follow()
        elif pick < 0.75:
            topic, event = COURSE, self.announcement()
        elif pick < 0.90:
            topic, event = FACILITY, self.booking_reminder()
        else:
            topic, event = FACILITY, self.loan_due()
        if self.rng.random() < self.stale_share:
            two_days_ago = int((self.clock() - 2 * 86400) * 1000)
            return Generated(topic, orjson.dumps(event), "stale", timestamp_ms=two_days_ago)
        return Generated(topic, orjson.dumps(event), "deliver")
