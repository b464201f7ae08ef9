"""Rule policies are checked at load like everything else: each problem names file, key path, rule and line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.errors import ConfigError, ConfigIssue
from bridge.rules import RuleSet, load_rules
from bridge.settings import load_settings

TOPICS = ["campus.forum.events"]


def load(tmp_path: Path, body: str, *, deferred_topic: str | None = "campus-bridge.deferred") -> RuleSet:
    """Load one rule file (`rules:` + the rule body, which starts on line 2) through a config, as the daemon does."""
    lines = textwrap.dedent(body).strip("\n").splitlines()
    (tmp_path / "p.rules.yaml").write_text("rules:\n  - " + "\n    ".join(lines) + "\n", encoding="utf-8")
    kafka: dict[str, Any] = {"bootstrap_servers": "127.0.0.1:9092", "topics": TOPICS}
    if deferred_topic is not None:
        kafka["deferred_topic"] = deferred_topic
    config = {"kafka": kafka, "gateway": {"app_key": "k", "app_secret": "s"}, "rules": {"rule_files": ["*.rules.yaml"]}}
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return load_rules(load_settings(path))


def issues(tmp_path: Path, body: str, **kw: Any) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body, **kw)
    return caught.value.issues


HEAD = "id: likes\nmessage: {event_type: mobile_receiver, mobile_receiver: '{{ event.to }}'}\n"

CASES = [
    # (id, policy YAML (starts on line 4), key path, message fragment, line)
    ("quiet-unquoted-time", "quiet_hours: {from: 22:30, to: '07:00', timezone: Asia/Shanghai}",
     "rules[0].quiet_hours.from", 'in quotes, "HH:MM" (YAML read an unquoted time as the number 1350)', 4),
    ("quiet-bad-time", "quiet_hours: {from: '25:00', to: '07:00', timezone: Asia/Shanghai}",
     "rules[0].quiet_hours.from", "expected a time \"HH:MM\" (00:00 to 23:59) or \"HH:MM:SS\", got '25:00'", 4),
    ("quiet-no-zone", "quiet_hours: {from: '22:30', to: '07:00'}",
     "rules[0].quiet_hours", "timezone is required", 4),
    ("quiet-bad-zone", "quiet_hours: {from: '22:30', to: '07:00', timezone: Asia/Beijing}",
     "rules[0].quiet_hours.timezone", "not an IANA time zone name", 4),
    ("quiet-empty", "quiet_hours: {from: '07:00', to: '07:00', timezone: UTC}",
     "rules[0].quiet_hours.to", "is the same time as from", 4),
    ("quiet-bad-action", "quiet_hours: {from: '22:30', to: '07:00', timezone: UTC, action: delay}",
     "rules[0].quiet_hours.action", "expected one of defer, drop, got 'delay'", 4),
    ("quiet-unknown-key", "quiet_hours: {from: '22:30', to: '07:00', timezone: UTC, until: x}",
     "rules[0].quiet_hours.until", "unknown key (allowed: action, from, timezone, to)", 4),
    ("limit-not-mapping", "limit: 5", "rules[0].limit", "expected a mapping, e.g.", 4),
    ("limit-missing", "limit: {per_recipient: 5}", "rules[0].limit", "per_seconds is required", 4),
    ("limit-zero", "limit: {per_recipient: 0, per_seconds: 60}",
     "rules[0].limit.per_recipient", "must be from 1 to 10000, got 0", 4),
    ("limit-float-cap", "limit: {per_recipient: 2.5, per_seconds: 60}",
     "rules[0].limit.per_recipient", "expected an integer", 4),
    ("limit-bad-over", "limit: {per_recipient: 5, per_seconds: 60, over: queue}",
     "rules[0].limit.over", "expected one of drop, defer, digest", 4),
    ("limit-digest-without-digest", "limit: {per_recipient: 5, per_seconds: 60, over: digest}",
     "rules[0].limit.over", "over: digest needs a digest block", 4),
    ("limit-bad-group", "limit: {per_recipient: 5, per_seconds: 60, group: Social}",
     "rules[0].limit.group", "a group name is snake_case", 4),
    ("dedupe-constant", "dedupe: {key: same, window_seconds: 60}", "rules[0].dedupe.key", "is constant", 4),
    ("dedupe-bad-template", "dedupe: {key: '{{ event.id', window_seconds: 60}",
     "rules[0].dedupe.key", "is not closed", 4),
    ("dedupe-unknown-root", "dedupe: {key: '{{ post.id }}', window_seconds: 60}",
     "rules[0].dedupe.key", "did you mean event.post?", 4),
    ("dedupe-reads-item", "dedupe: {key: '{{ item.id }}', window_seconds: 60}",
     "rules[0].dedupe.key", "not read by dedupe.key", 4),
    ("dedupe-no-window", "dedupe: {key: '{{ event.id }}'}", "rules[0].dedupe", "window_seconds is required", 4),
    ("digest-window-too-long", "digest: {window_seconds: 900, message: {json_data: {n: '{{ count }}'}}}",
     "rules[0].digest.window_seconds", "must be from 1 to 600, got 900", 4),
    ("digest-no-message", "digest: {window_seconds: 300}", "rules[0].digest", "message is required", 4),
    ("digest-event-root", "digest: {window_seconds: 300, message: {json_data: {t: '{{ event.title }}'}}}",
     "rules[0].digest.message.json_data.t", "not in the context (items, count); did you mean items[0].event?", 4),
    ("digest-max-items", "digest: {window_seconds: 300, max_items: 1, message: {sender: x}}",
     "rules[0].digest.max_items", "must be from 2 to 1000", 4),
    ("digest-bad-field", "digest: {window_seconds: 300, message: {mobile_receiver: 'call me'}}",
     "rules[0].digest.message.mobile_receiver", "not a plausible phone number", 4),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_policy_issue(tmp_path: Path, case: tuple[str, str, str, str, int]) -> None:
    _, policy, path, fragment, line = case
    found = issues(tmp_path, HEAD + policy)
    assert [(i.path, i.line) for i in found] == [(path, line)], found
    assert fragment in found[0].message
    assert found[0].message.startswith("rule likes: ")
    assert found[0].file.endswith("p.rules.yaml")


def test_a_policy_that_defers_needs_the_deferred_topic(tmp_path: Path) -> None:
    body = HEAD + "quiet_hours: {from: '22:30', to: '07:00', timezone: Asia/Shanghai}"
    [issue] = issues(tmp_path, body, deferred_topic=None)
    assert issue.path == "rules[0].quiet_hours.action"
    assert "holds messages on kafka.deferred_topic, which is not set" in issue.message
    dropping = HEAD + "quiet_hours: {from: '22:30', to: '07:00', timezone: Asia/Shanghai, action: drop}"
    assert load(tmp_path, dropping, deferred_topic=None).policies["likes"].defers is None


def test_rules_of_one_limit_group_must_agree_on_the_cap(tmp_path: Path) -> None:
    message = "{event_type: push_app}"
    (tmp_path / "p.rules.yaml").write_text(
        "rules:\n"
        f"  - {{id: a, message: {message}, limit: {{per_recipient: 5, per_seconds: 60, group: social}}}}\n"
        f"  - {{id: b, message: {message}, limit: {{per_recipient: 6, per_seconds: 60, group: social}}}}\n",
        encoding="utf-8",
    )
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": TOPICS},
        "gateway": {"app_key": "k", "app_secret": "s"},
        "rules": {"rule_files": ["*.rules.yaml"]},
    }
    (tmp_path / "bridge.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(load_settings(tmp_path / "bridge.yaml"))
    [issue] = caught.value.issues
    assert (issue.path, issue.line) == ("rules[1].limit", 3)
    assert "limit group 'social' is 5 per 60 s in rule a" in issue.message


def test_a_rule_with_every_policy_loads_and_shows_them(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        HEAD
        + textwrap.dedent(
            """\
            quiet_hours: {from: "22:30", to: "07:00", timezone: Asia/Shanghai, action: defer}
            limit: {per_recipient: 5, per_seconds: 600, over: digest, group: social}
            dedupe: {key: "{{ event.post.id }}/{{ event.actor.id }}", window_seconds: 3600}
            digest:
              window_seconds: 300
              max_items: 50
              message:
                json_data: {title: "{{ items[0].event.actor.name }} and {{ count }} others"}
            """
        ),
    )
    p = rules.policies["likes"]
    assert p.quiet_hours is not None and (p.quiet_hours.start, p.quiet_hours.end) == (81_000, 25_200)
    assert p.limit is not None and (p.limit.scope, p.limit.over) == ("social", "digest")
    assert p.dedupe is not None and p.dedupe.window_seconds == 3600
    assert p.digest is not None and p.digest.max_items == 50
    assert p.stateful and not p.folds_all and p.defers == "quiet_hours.action"
    assert list(rules.policies) == ["likes"]


def test_rules_without_policies_cost_nothing_per_record(tmp_path: Path) -> None:
    assert load(tmp_path, HEAD, deferred_topic=None).policies == {}
