"""`bridge map` and `bridge test` end to end (in process through `bridge.cli.main`, and once as a subprocess),
and the shipped rule tests (config/rules/tests/*.yaml) run through the real `bridge test`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.cli import main
from bridge.rules import record_key

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "config" / "examples" / "events.jsonl"
SHIPPED_TESTS = sorted(str(p) for p in (REPO_ROOT / "config" / "rules" / "tests").glob("*.yaml"))
SHIPPED_CONFIG = REPO_ROOT / "config" / "demo.yaml"

RULES = """\
rules:
  - id: ping
    topics: [campus.forum.events]
    when: "event.type == 'ping'"
    message:
      event_type: mobile_receiver
      mobile_receiver: "{{ event.phone }}"
      action: "{{ default(headers.action, '') }}"  # optional: no warning when absent
  - id: fan
    when: "event.type == 'fan'"
    for_each: event.people
    message: {event_type: mobile_receiver, mobile_receiver: "{{ item }}"}
"""


@pytest.fixture
def config(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    (tmp_path / "ping.yaml").write_text(RULES, encoding="utf-8")
    return write_config(rule_files=["ping.yaml"])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err


def run_text(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ bridge map
def test_map_the_shipped_samples(capsys: pytest.CaptureFixture[str], shipped_config: Path) -> None:
    code, lines, err = run(capsys, "map", "-c", str(shipped_config), "--input", str(SAMPLES), "--offset", "100")
    assert (code, err) == (0, "")
    by_line: dict[int, list[Any]] = {}
    for line in lines:
        by_line.setdefault(line["line"], []).append(line)
    assert len(by_line) == len(SAMPLES.read_text().splitlines())
    assert [n for n, out in by_line.items() if out == [{"line": n, "unmatched": True}]] == [2, 6, 11]
    rules = {n: sorted({o["rule"] for o in out if "rule" in o}) for n, out in by_line.items()}
    assert set().union(*rules.values()) == {
        "comment_on_post", "reply_to_comment", "post_liked", "new_follower", "course_announcement",
        "facility_booking_reminder", "facility_closure_notice", "library_loan_due",
    }  # fmt: skip
    assert len(by_line[7]) == 2  # the announcement: two students with phones, one listed twice
    first = by_line[1][0]
    assert first["message"]["msg_key"] == record_key("campus.forum.events", 0, 100, "comment_on_post", "")
    assert orjson.loads(first["message"]["json_data"])["title"] == "李明 评论了你的帖子《图书馆自习室占座问题》"


def test_map_errors_and_exit_status(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "ping", "phone": "13800138000"}\n'
        "\n"
        "{not json\n"
        "[1, 2]\n"
        '{"type": "ping", "phone": "oops"}\n'
        '{"type": "fan", "people": []}\n'
        '{"type": "other"}\n',
        encoding="utf-8",
    )
    code, lines, _ = run(capsys, "map", "-c", str(config), "-i", str(events), "--timestamp-ms", "5")
    assert code == 1
    assert lines[0]["rule"] == "ping" and lines[0]["message"]["event_time_millis"] == 5
    assert lines[0]["message"]["msg_key"] == record_key("campus.forum.events", 0, 0, "ping", "")
    assert lines[1]["line"] == 3 and lines[1]["error"]["field"] == "$"
    assert lines[1]["error"]["reason"].startswith("not JSON: ")
    assert lines[2] == {"line": 4, "error": {"field": "$", "reason": "not a JSON object: got array"}}
    assert lines[3]["line"] == 5 and lines[3]["rule"] == "ping" and lines[3]["error"]["field"] == "mobile_receiver"
    assert lines[4] == {"line": 6, "rule": "fan", "empty_fanout": True}
    assert lines[5] == {"line": 7, "unmatched": True}
    assert len(lines) == 6


def test_map_options(capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"type": "ping", "phone": "13800138000"}\n'))
    code, lines, _ = run(
        capsys, "map", "-c", str(config), "--partition", "3", "--offset", "41", "--header", "action=comment"
    )
    assert code == 0
    assert lines[0]["message"]["action"] == "comment"
    assert lines[0]["message"]["msg_key"] == record_key("campus.forum.events", 3, 41, "ping", "")
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"type": "ping", "phone": "13800138000"}\n'))
    code, lines, _ = run(capsys, "map", "-c", str(config), "--topic", "campus.course.events")
    assert (code, lines) == (0, [{"line": 1, "unmatched": True}])


def test_map_usage_errors(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    code, out, err = run_text(capsys, "map", "-c", str(config), "-i", str(tmp_path / "nope.jsonl"))
    assert (code, out) == (2, "")
    assert "cannot read" in err
    code, out, err = run_text(capsys, "map", "-c", str(config), "--header", "novalue", "-i", str(SAMPLES))
    assert code == 2 and "NAME=VALUE" in err


def test_map_reports_rule_errors(
    capsys: pytest.CaptureFixture[str], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: x\n    message: {event_type: sms}\n", encoding="utf-8")
    code, out, err = run_text(capsys, "map", "-c", str(write_config(rule_files=["bad.yaml"])), "-i", str(SAMPLES))
    assert (code, out) == (2, "")
    reason = "rule x: 'sms' is not one of account_receiver, mobile_receiver, push_app"
    assert err == f"error: {tmp_path / 'bad.yaml'}:3: rules[0].message.event_type: {reason}\n"


TYPO_RULES = """\
rules:
  - id: note
    topics: [campus.forum.events]
    when: "event.type == 'note' && event.to"
    message:
      event_type: mobile_receiver
      mobile_receiver: "{{ event.to }}"
      company_id: "{{ event.tenant.companyid }}"
      corp_id: "{{ event.tenant.corp_id }}"
      json_data: {term: "{{ event.trem }}", term_ok: "{{ event.term }}"}
"""
NOTE = '{"type": "note", "to": "13800138000", "term": "spring", "tenant": {"company_id": "c1", "corp_id": "d1"}}'


@pytest.fixture
def typo_config(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    (tmp_path / "typo.yaml").write_text(TYPO_RULES, encoding="utf-8")
    return write_config(rule_files=["typo.yaml"])


def test_map_warns_per_rule_and_field_when_a_template_path_resolved_to_missing(
    capsys: pytest.CaptureFixture[str], typo_config: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(NOTE + "\n" + NOTE.replace('"term": "spring", ', '"trem": "x", ') + "\n", encoding="utf-8")
    code, lines, err = run(capsys, "map", "-c", str(typo_config), "-i", str(events))
    assert code == 0  # warnings do not fail the dry run
    message = lines[0]["message"]
    assert "company_id" not in message  # the typo drops the field, as the daemon would
    assert orjson.loads(message["json_data"]) == {"term": None, "term_ok": "spring"}
    assert err.splitlines() == [
        "warning: line 1: rule note: json_data.term: {{ event.trem }}: event has no key 'trem';"
        " it renders null in json_data",
        "warning: line 1: rule note: company_id: {{ event.tenant.companyid }}: event.tenant has no key 'companyid';"
        " the field is left out",
        "warning: line 2: rule note: json_data.term_ok: {{ event.term }}: event has no key 'term';"
        " it renders null in json_data",
        "warning: line 2: rule note: company_id: {{ event.tenant.companyid }}: event.tenant has no key 'companyid';"
        " the field is left out",
    ]


def test_map_explain_says_per_rule_why_it_matched_or_not(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"type": "ping", "phone": "13800138000"}\n'))
    code, lines, _ = run(capsys, "map", "-c", str(config), "--explain")
    assert code == 0
    ping, fan, result = lines
    assert ping == {
        "line": 1,
        "rule": "ping",
        "explain": {
            "matched": True,
            "why": "`when` holds",
            "when": {
                "source": "event.type == 'ping'",
                "holds": True,
                "terms": [{"expr": "event.type == 'ping'", "value": True, "left": "ping", "right": "ping"}],
            },
        },
    }
    assert fan["rule"] == "fan" and fan["explain"]["matched"] is False
    assert fan["explain"]["why"] == "`when` is false"
    assert result["rule"] == "ping" and "message" in result

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"type": "ping", "phone": "13800138000"}\n'))
    code, lines, _ = run(capsys, "map", "-c", str(config), "--explain", "--topic", "campus.other.events")
    not_consumed = (
        "topic campus.other.events is not consumed"
        " (kafka.topics: campus.forum.events, campus.course.events, campus.facility.events)"
    )
    assert [(line["rule"], line["explain"]["why"]) for line in lines if "explain" in line] == [
        ("ping", "applies to campus.forum.events only, not campus.other.events"),
        ("fan", not_consumed),
    ]


# ----------------------------------------------------------------------------------------------- bridge test
def write_tests(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ping_test.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def test_rule_tests_pass(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    tests = write_tests(
        tmp_path,
        """\
        tests:
          - name: ping notifies
            event: {type: ping, phone: "13800138000"}
            expect:
              - rule: ping
                message: {mobile_receiver: 13800138000, event_type: mobile_receiver, event_time_millis: 1717372800000}
          - name: fan out in any order, with an error
            topic: campus.course.events
            event: {type: fan, people: ["13600000002", "x", "13600000001"]}
            expect:
              - {rule: fan, message: {mobile_receiver: "13600000001"}}
              - {rule: fan, error: {field: mobile_receiver, reason: plausible}}
              - {rule: fan, message: {mobile_receiver: "13600000002"}}
          - name: ping on another topic notifies nobody
            topic: campus.course.events
            event: {type: ping, phone: "13800138000"}
            expect: []
        """,
    )
    code, out, err = run_text(capsys, "test", "-c", str(config), tests)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"PASS {tests}:2 ping notifies",
        f"PASS {tests}:7 fan out in any order, with an error",
        f"PASS {tests}:14 ping on another topic notifies nobody",
        "3 passed, 0 failed",
    ]


def test_rule_tests_fail(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    tests = write_tests(
        tmp_path,
        """\
        tests:
          - name: wrong phone
            event: {type: ping, phone: "13800138000"}
            expect: [{rule: ping, message: {mobile_receiver: "13900000000"}}]
          - name: expects nothing
            event: {type: ping, phone: "13800138000"}
            expect: []
          - name: expects an error
            event: {type: ping, phone: "13800138000"}
            expect: [{rule: ping, error: {field: mobile_receiver}}]
        """,
    )
    code, out, _ = run_text(capsys, "test", "-c", str(config), "-q", tests)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"FAIL {tests}:2 wrong phone"
    assert "mobile_receiver is '13800138000', expected '13900000000'" in lines[1]
    assert lines[3] == f"FAIL {tests}:5 expects nothing"
    assert lines[4].startswith("    unexpected ping message")
    assert lines[5] == f"FAIL {tests}:8 expects an error"
    assert "got a message instead of an error" in lines[6]
    assert lines[-2:] == ["0 passed, 3 failed", "note: no test expects a message from: fan"]


def test_bad_test_files(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    tests = write_tests(
        tmp_path,
        """\
        tests:
          - name: bad
            evnt: {}
            expect:
              - {rule: pong, message: {mobile: "1"}}
              - {rule: ping}
        """,
    )
    code, out, err = run_text(capsys, "test", "-c", str(config), tests, str(tmp_path / "ping.yaml"))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {tests}:3: tests[0].evnt: unknown key",
        f"error: {tests}:2: tests[0]: event is required",
        f"error: {tests}:5: tests[0].expect[0]: unknown rule 'pong' (rules: ping, fan)",
        f"error: {tests}:5: tests[0].expect[0]: message.mobile: not an API field",
        f"error: {tests}:6: tests[0].expect[1]: give exactly one of message, error or digest",
        f"error: {tmp_path / 'ping.yaml'}:1: not a test file: expected a top-level `tests:` list"
        " (a rule file? it has `rules:`)",
    ]


def test_rule_tests_warn_when_a_template_path_resolved_to_missing(
    capsys: pytest.CaptureFixture[str], typo_config: Path, tmp_path: Path
) -> None:
    tests = write_tests(
        tmp_path,
        f"""\
        tests:
          - name: a note
            event: {NOTE}
            expect: [{{rule: note, message: {{mobile_receiver: "13800138000"}}}}]
        """,
    )
    code, out, err = run_text(capsys, "test", "-c", str(typo_config), tests)
    assert code == 0  # the case passes: it does not look at company_id...
    assert out.splitlines()[0] == f"PASS {tests}:2 a note"
    assert err.splitlines() == [  # ...but the typo is reported
        f"warning: {tests}:2 a note: rule note: json_data.term: {{{{ event.trem }}}}: event has no key 'trem';"
        " it renders null in json_data",
        f"warning: {tests}:2 a note: rule note: company_id: {{{{ event.tenant.companyid }}}}:"
        " event.tenant has no key 'companyid'; the field is left out",
    ]


def test_rule_tests_are_discovered_next_to_the_rule_files(
    capsys: pytest.CaptureFixture[str], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "rules" / "tests" / "deep").mkdir(parents=True)
    (tmp_path / "rules" / "ping.yaml").write_text(RULES, encoding="utf-8")
    case = 'tests:\n  - {name: NAME, event: {type: ping, phone: "13800138000"}, expect: [{rule: ping, message: {}}]}\n'
    (tmp_path / "rules" / "tests" / "a.yaml").write_text(case.replace("NAME", "first"), encoding="utf-8")
    (tmp_path / "rules" / "tests" / "deep" / "b.yml").write_text(case.replace("NAME", "second"), encoding="utf-8")
    (tmp_path / "rules" / "tests" / "notes.txt").write_text("not a test", encoding="utf-8")
    config = write_config(rule_files=["rules/*.yaml"])
    code, out, err = run_text(capsys, "test", "-c", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines()[:3] == [
        f"PASS {tmp_path / 'rules' / 'tests' / 'a.yaml'}:2 first",
        f"PASS {tmp_path / 'rules' / 'tests' / 'deep' / 'b.yml'}:2 second",
        "2 passed, 0 failed",
    ]


def test_rule_tests_without_files_and_none_found_exit_2(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = run_text(capsys, "test", "-c", str(config))
    assert (code, out) == (2, "")
    assert err.startswith("error: no TESTFILE given and no *.yaml test file found under ")
    assert str(config.parent / "rules" / "tests") in err


# ------------------------------------------------------------------------------------- the shipped rules
def test_shipped_rule_tests_pass(capsys: pytest.CaptureFixture[str], shipped_config: Path) -> None:
    assert SHIPPED_TESTS, "config/rules/tests/*.yaml is missing"
    code, out, err = run_text(capsys, "test", "-c", str(shipped_config), *SHIPPED_TESTS)
    assert code == 0, out
    assert err == "", "the shipped tests' events carry every field the rules read"
    assert "FAIL" not in out
    assert "note:" not in out, "every shipped rule needs a test expecting a message from it"


def test_shipped_config_as_a_subprocess() -> None:
    """The commands the docs show, exactly as a user runs them (from the repo root)."""
    for argv in (
        ["test", "-c", "config/demo.yaml", *SHIPPED_TESTS],
        ["test", "-c", "config/demo.yaml"],  # discovers config/rules/tests/**
        ["map", "-c", "config/demo.yaml", "--input", "config/examples/events.jsonl"],
        ["validate", "-c", "config/demo.yaml"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bridge", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        assert done.stderr == ""


# ------------------------------------------------------------------------------------- the documentation
DOC = REPO_ROOT / "docs" / "rules.md"


def doc_blocks(kind: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return [block.split("```", 1)[0].strip() for block in text.split(f"```{kind}\n")[1:]]


def test_every_command_in_the_docs_works() -> None:
    commands = doc_blocks("sh")
    assert len(commands) >= 3
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs = []
    for command in commands:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs.append(done.stdout)
    worked_example = outputs[0].strip()
    assert worked_example in doc_blocks("json"), "the worked example's output in the docs is out of date"
