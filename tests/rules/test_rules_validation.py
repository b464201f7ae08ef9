"""Load-time validation: every problem is a ConfigIssue naming file, key path, rule id and YAML line.

Each case writes a rule file whose line numbers are known, loads it through `load_rules` (as the daemon
does) and checks the exact issue.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.errors import ConfigError, ConfigIssue
from bridge.rules import load_rules
from bridge.settings import load_settings

GOOD = """\
rules:
  - id: good_rule
    when: "event.type == 'x'"
    message:
      event_type: mobile_receiver
      mobile_receiver: "{{ event.phone }}"
"""


def issues_of(
    write_config: Callable[..., Path], tmp_path: Path, files: dict[str, str], **rules: object
) -> list[ConfigIssue]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    config = write_config(rule_files=["*.rules.yaml"], **rules)
    with pytest.raises(ConfigError) as caught:
        load_rules(load_settings(config))
    return caught.value.issues


def one_rule(body: str) -> str:
    """A rule file with one rule; `body` is the rule's YAML without the leading `- `, starting at line 2."""
    lines = textwrap.dedent(body).strip("\n").splitlines()
    return "rules:\n  - " + "\n    ".join(lines) + "\n"


CASES = [
    # (id, rule body, expected path, message fragment, line)
    (
        "unknown-rule-key",
        'id: r1\nwen: "event.a"\nmessage: {event_type: push_app}',
        "rules[0].wen",
        "rule r1: unknown key",
        3,
    ),
    (
        "unknown-message-key",
        "id: r1\nmessage:\n  event_type: push_app\n  mobile: '1'",
        "rules[0].message.mobile",
        "rule r1: unknown key",
        5,
    ),
    (
        "msg-key-hint",
        "id: r1\nmessage:\n  event_type: push_app\n  msg_key: x",
        "rules[0].message.msg_key",
        "set idempotency_key",
        5,
    ),
    (
        "bad-jmespath",
        'id: r1\nwhen: "event.type =="\nmessage: {event_type: push_app}',
        "rules[0].when",
        "rule r1: incomplete JMESPath",
        3,
    ),
    (
        "bad-token",
        'id: r1\nwhen: "event.a ^ 2"\nmessage: {event_type: push_app}',
        "rules[0].when",
        "Unknown token ^",
        3,
    ),
    (
        "unknown-function",
        'id: r1\nwhen: "nope(event.a)"\nmessage: {event_type: push_app}',
        "rules[0].when",
        "unknown function nope()",
        3,
    ),
    (
        "template-in-when",
        'id: r1\nwhen: "{{ event.a }}"\nmessage: {event_type: push_app}',
        "rules[0].when",
        "not a template",
        3,
    ),
    ("not-dot", 'id: r1\nwhen: "!event.a.b"\nmessage: {event_type: push_app}', "rules[0].when", "parentheses", 3),
    (
        "bad-for-each",
        'id: r1\nfor_each: "event.list["\nmessage: {event_type: push_app}',
        "rules[0].for_each",
        "rule r1: incomplete",
        3,
    ),
    (
        "unclosed-template",
        'id: r1\nmessage:\n  event_type: push_app\n  sender: "{{ event.a "',
        "rules[0].message.sender",
        "is not closed",
        5,
    ),
    (
        "bad-template-expression",
        'id: r1\nmessage:\n  event_type: push_app\n  action: "x {{ event. }}"',
        "rules[0].message.action",
        "bad template",
        5,
    ),
    (
        "bad-json-data-template",
        'id: r1\nmessage:\n  event_type: push_app\n  json_data:\n    title: "{{ }}"',
        "rules[0].message.json_data.title",
        "empty",
        6,
    ),
    (
        "event-type-constant",
        "id: r1\nmessage:\n  event_type: sms",
        "rules[0].message.event_type",
        "'sms' is not one of",
        4,
    ),
    ("event-type-missing", "id: r1\nmessage:\n  source: x", "rules[0].message", "event_type is required", 3),
    (
        "mobile-missing",
        "id: r1\nmessage:\n  event_type: mobile_receiver",
        "rules[0].message",
        "mobile_receiver is required",
        3,
    ),
    (
        "mobile-empty",
        "id: r1\nmessage:\n  event_type: mobile_receiver\n  mobile_receiver: ''",
        "rules[0].message.mobile_receiver",
        "required",
        5,
    ),
    (
        "mobile-constant",
        "id: r1\nmessage:\n  event_type: mobile_receiver\n  mobile_receiver: call-me",
        "rules[0].message.mobile_receiver",
        "not a plausible phone number",
        5,
    ),
    (
        "url-constant",
        "id: r1\nmessage:\n  event_type: push_app\n  resource_url: forum.example/x",
        "rules[0].message.resource_url",
        "not an absolute http(s) URL",
        5,
    ),
    (
        "url-constant-ftp",
        "id: r1\nmessage:\n  event_type: push_app\n  resource_url: ftp://x.example/a",
        "rules[0].message.resource_url",
        "not an absolute http(s) URL",
        5,
    ),
    (
        "url-template-prefix",
        'id: r1\nmessage:\n  event_type: push_app\n  resource_url: "htps://x/{{ event.id }}"',
        "rules[0].message.resource_url",
        "does not start with http",
        5,
    ),
    (
        "time-constant",
        "id: r1\nmessage:\n  event_type: push_app\n  event_time_millis: '2024-06-03T10:00:00'",
        "rules[0].message.event_time_millis",
        "without a UTC offset",
        5,
    ),
    (
        "json-data-constant",
        "id: r1\nmessage:\n  event_type: push_app\n  json_data: 'not json'",
        "rules[0].message.json_data",
        "not valid JSON",
        5,
    ),
    (
        "json-data-scalar",
        "id: r1\nmessage:\n  event_type: push_app\n  json_data: 5",
        "rules[0].message.json_data",
        "must be a JSON object or array",
        5,
    ),
    (
        "field-not-text",
        "id: r1\nmessage:\n  event_type: push_app\n  sender: {name: x}",
        "rules[0].message.sender",
        "expected text or a template",
        5,
    ),
    (
        "unknown-root",
        'id: r1\nmessage:\n  event_type: push_app\n  resource_id: "{{ post.id }}"',
        "rules[0].message.resource_id",
        "did you mean event.post",
        5,
    ),
    (
        "item-without-for-each",
        'id: r1\nmessage:\n  event_type: push_app\n  sender: "{{ item.name }}"',
        "rules[0].message.sender",
        "only set in rules with for_each",
        5,
    ),
    (
        "item-in-when",
        'id: r1\nwhen: "item.x"\nfor_each: event.list\nmessage: {event_type: push_app}',
        "rules[0].when",
        "not set yet when when is evaluated",
        3,
    ),
    (
        "idempotency-constant",
        "id: r1\nidempotency_key: fixed\nmessage: {event_type: push_app}",
        "rules[0].idempotency_key",
        "every event would get the same msg_key",
        3,
    ),
    (
        "idempotency-bad",
        'id: r1\nidempotency_key: "{{ event.id"\nmessage: {event_type: push_app}',
        "rules[0].idempotency_key",
        "is not closed",
        3,
    ),
    ("id-missing", 'when: "event.a"\nmessage: {event_type: push_app}', "rules[0]", "rule #0: id is required", 2),
    (
        "id-not-snake-case",
        "id: Comment-On-Post\nmessage: {event_type: push_app}",
        "rules[0].id",
        "rule #0: id must be snake_case",
        2,
    ),
    ("message-missing", 'id: r1\nwhen: "event.a"', "rules[0]", "rule r1: message is required", 2),
    ("message-not-mapping", "id: r1\nmessage: [1]", "rules[0].message", "must be a mapping", 3),
    (
        "topics-not-list",
        "id: r1\ntopics: campus.forum.events\nmessage: {event_type: push_app}",
        "rules[0].topics",
        "expected a list of topic names",
        3,
    ),
    ("topics-empty", "id: r1\ntopics: []\nmessage: {event_type: push_app}", "rules[0].topics", "is empty", 3),
    (
        "topic-not-consumed",
        "id: r1\ntopics: [campus.forun.events]\nmessage: {event_type: push_app}",
        "rules[0].topics",
        "'campus.forun.events' is not consumed",
        2,
    ),
    (
        "when-not-text",
        "id: r1\nwhen: 5\nmessage: {event_type: push_app}",
        "rules[0].when",
        "expected a JMESPath expression",
        3,
    ),
    (
        "description-not-text",
        "id: r1\ndescription: [a]\nmessage: {event_type: push_app}",
        "rules[0].description",
        "expected text",
        3,
    ),
]


@pytest.mark.parametrize("case", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_issue(write_config: Callable[..., Path], tmp_path: Path, case: tuple[str, str, str, int]) -> None:
    body, path, fragment, line = case
    issues = issues_of(write_config, tmp_path, {"a.rules.yaml": one_rule(body)})
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue.file == str(tmp_path / "a.rules.yaml")
    assert issue.path == path
    assert fragment in issue.message
    assert issue.line == line
    assert issue.message.startswith("rule ")


def test_every_issue_in_every_file_is_reported(write_config: Callable[..., Path], tmp_path: Path) -> None:
    files = {
        "a.rules.yaml": one_rule("id: r1\nwen: x\nmessage:\n  event_type: sms"),
        "b.rules.yaml": one_rule('id: r2\nwhen: "a =="\nmessage: {event_type: push_app}'),
    }
    issues = issues_of(write_config, tmp_path, files)
    assert [(Path(i.file).name, i.path) for i in issues] == [
        ("a.rules.yaml", "rules[0].wen"),
        ("a.rules.yaml", "rules[0].message.event_type"),
        ("b.rules.yaml", "rules[0].when"),
    ]


def test_duplicate_ids_across_files(write_config: Callable[..., Path], tmp_path: Path) -> None:
    files = {"a.rules.yaml": GOOD, "b.rules.yaml": "# another file\n\n" + GOOD}
    (issue,) = issues_of(write_config, tmp_path, files)
    assert (Path(issue.file).name, issue.path, issue.line) == ("b.rules.yaml", "rules[0].id", 4)
    assert issue.message == f"rule good_rule: duplicate id (first defined at {tmp_path / 'a.rules.yaml'}:2)"


@pytest.mark.parametrize(
    "case",
    [
        ("tests:\n  - name: x\n", "", "not a rule file: expected a top-level `rules:` list (a `bridge test` file?", 1),
        ("", "", "not a rule file", 1),
        ("rules: {a: 1}\n", "rules", "expected a list of rules", 1),
        ("rules: []\nextra: 1\n", "extra", "unknown key", 2),
        ("rules:\n  - id: [\n", "", "not valid YAML", 3),
        ("rules:\n  - 5\n", "rules[0]", "rule #0: expected a mapping", 2),
    ],
    ids=["test-file", "empty", "rules-not-list", "extra-key", "bad-yaml", "rule-not-mapping"],
)
def test_file_issue(write_config: Callable[..., Path], tmp_path: Path, case: tuple[str, str, str, int]) -> None:
    text, path, fragment, line = case
    (issue,) = issues_of(write_config, tmp_path, {"a.rules.yaml": text})
    assert (issue.path, issue.line) == (path, line)
    assert fragment in issue.message


def test_x_keys_are_allowed_for_anchors(write_config: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "a.rules.yaml").write_text(
        "x-phone: &phone '{{ event.phone }}'\n" + GOOD.replace('"{{ event.phone }}"', "*phone")
    )
    ruleset = load_rules(load_settings(write_config(rule_files=["*.rules.yaml"])))
    assert ruleset.ids == ("good_rule",)


def test_glob_matching_nothing(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(rule_files=["rules/*.yml"])
    with pytest.raises(ConfigError) as caught:
        load_rules(load_settings(config))
    (issue,) = caught.value.issues
    assert (issue.file, issue.path) == (str(config), "rules.rule_files[0]")
    assert "'rules/*.yml' matches no file" in issue.message


def test_inline_rules_name_the_config_file_and_line(write_config: Callable[..., Path]) -> None:
    inline = [{"id": "ok", "message": {"event_type": "push_app"}}, {"id": "bad", "message": {"event_type": "x"}}]
    config = write_config(inline=inline, msg_key="deterministic")
    with pytest.raises(ConfigError) as caught:
        load_rules(load_settings(config))
    (issue,) = caught.value.issues
    assert (issue.file, issue.path) == (str(config), "rules.inline[1].message.event_type")
    assert issue.line == config.read_text().splitlines().index("      event_type: x") + 1


def test_inline_rules_as_a_plain_list(write_config: Callable[..., Path]) -> None:
    config = write_config(inline=[{"id": "bad", "message": {"event_type": "x"}}])
    with pytest.raises(ConfigError) as caught:
        load_rules(load_settings(config))
    assert caught.value.issues[0].path == "rules[0].message.event_type"


def test_inline_and_file_rules_load_together_in_order(write_config: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "a.rules.yaml").write_text(GOOD)
    inline = [{"id": "inline_rule", "message": {"event_type": "push_app"}}]
    ruleset = load_rules(load_settings(write_config(rule_files=["*.rules.yaml"], inline=inline)))
    assert ruleset.ids == ("inline_rule", "good_rule")
    assert len(ruleset) == 2
    assert [r.topics for r in ruleset.rules] == [(), ()]


def test_the_shipped_rules_load(shipped_config: Path) -> None:
    ruleset = load_rules(load_settings(shipped_config))
    assert len(ruleset) >= 8
    assert all(rule.description for rule in ruleset.rules)
