"""`bridge map --now` and `bridge test` show what rule policies would do for given events and a given clock."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "config" / "demo.yaml"
SAMPLES = REPO_ROOT / "config" / "examples" / "events.jsonl"
POST = {
    "id": "p778",
    "title": "图书馆自习室占座问题",
    "like_count": 41,
    "author": {"id": "u1001", "name": "王芳", "mobile": "13800138000"},
}
TENANT = {"company_id": "10086", "corp_id": "ding5f2c8a9e3b7d41a0"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err


def likes(n: int) -> str:
    events = [
        {"type": "post.liked", "occurred_at": 1717387200000 + i, "tenant": TENANT, "post": POST,
         "actor": {"id": f"u30{i:02d}", "name": f"同学{i}"}}
        for i in range(n)
    ]  # fmt: skip
    return "\n".join(orjson.dumps(e).decode() for e in events) + "\n"


def test_map_at_3am_holds_the_announcement_until_7_and_sends_the_comment(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(
        capsys, "map", "-c", str(DEMO), "--input", str(SAMPLES), "--now", "2024-06-03T03:00:00+08:00"
    )
    assert (code, err) == (0, "")
    announcement = [line for line in lines if line.get("rule") == "course_announcement"]
    assert len(announcement) == 2
    assert {orjson.dumps(line["policy"]) for line in announcement} == {
        orjson.dumps({"action": "defer", "by": "quiet_hours", "until": "2024-06-03T07:00:00+08:00"})
    }
    comment = next(line for line in lines if line.get("rule") == "comment_on_post")
    assert "policy" not in comment  # a rule without policies: its lines are as before
    like = next(line for line in lines if line.get("rule") == "post_liked")
    assert like["policy"] == {"action": "send"}


def test_map_shows_a_like_storm_capped_and_its_digest_after_the_last_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = tmp_path / "likes.jsonl"
    events.write_text(likes(8), encoding="utf-8")
    now = "2024-06-03T12:00:00+08:00"
    code, lines, err = run(
        capsys, "map", "-c", str(DEMO), "--input", str(events), "--topic", "campus.forum.events", "--now", now
    )
    assert (code, err) == (0, "")
    actions = [line["policy"]["action"] for line in lines if "policy" in line]
    assert actions == ["send"] * 3 + ["fold"] * 5
    assert {line["policy"]["until"] for line in lines[3:8]} == {"2024-06-03T12:10:00+08:00"}
    digest = lines[-1]
    assert digest["line"] == 8 and digest["rule"] == "post_liked"
    assert digest["digest"] == {"count": 5, "lines": [4, 5, 6, 7, 8], "due": "2024-06-03T12:10:00+08:00"}
    assert orjson.loads(digest["message"]["json_data"])["title"] == "同学7 等 5 人赞了你的帖子"
    assert digest["message"]["mobile_receiver"] == "13800138000"


def test_map_rejects_a_now_without_an_offset(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "map", "-c", str(DEMO), "--input", str(SAMPLES), "--now", "2024-06-03T03:00:00")
    assert (code, lines) == (2, [])
    assert err.startswith("error: --now:") and "offset" in err


def test_a_rule_test_that_expects_a_send_at_3am_fails_naming_the_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tests = tmp_path / "night.yaml"
    tests.write_text(
        textwrap.dedent(
            """\
            x-night: &night
              type: course.announcement.published
              occurred_at: "2024-06-03T03:00:00+08:00"
              tenant: {company_id: "10086", corp_id: c}
              course: {id: CS101, name: 数据结构, teacher: {id: t1, name: 张老师}}
              announcement: {id: a1, title: t, body: b, pinned: false}
              students: [{id: s1, name: 孙悦, mobile: "13600136001"}]
            tests:
              - name: at night
                topic: campus.course.events
                now: "2024-06-03T03:00:00+08:00"
                event: *night
                expect:
                  - rule: course_announcement
                    message: {mobile_receiver: "13600136001"}
              - name: a wrong due time
                topic: campus.course.events
                now: "2024-06-03T03:00:00+08:00"
                event: *night
                expect:
                  - rule: course_announcement
                    message: {mobile_receiver: "13600136001"}
                    policy: {action: defer, until: "2024-06-03T08:00:00+08:00"}
            """
        ),
        encoding="utf-8",
    )
    code = main(["test", "-c", str(DEMO), str(tests)])
    out = capsys.readouterr().out
    assert code == 1
    assert "policy decided defer by quiet_hours (expect it with policy: {action: defer})" in out
    assert "policy until is 2024-06-02T23:00:00Z, expected 2024-06-03T08:00:00+08:00" in out
    assert "0 passed, 2 failed" in out
