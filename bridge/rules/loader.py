"""Loading rules: inline rules from the config plus every rule file, compiled and checked all at once.

A rule file is YAML with a top-level `rules:` list (keys starting with `x-` are ignored, for YAML anchors).
`rule_files` globs are relative to the config file's folder. Every problem in every file is collected
before raising one ConfigError. This is the only module of `bridge.rules` that reads files.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from glob import glob
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError, ConfigIssue
from bridge.rules.evaluators import Compiler
from bridge.rules.ruleset import RuleSet
from bridge.rules.schema import Rule, compile_rule_list, duplicate_ids
from bridge.settings import RulesSettings, Settings
from bridge.topics import consumed_by
from bridge.yamlsrc import Locator, PathKey, YamlLoadError, load_yaml


def compile_rules(
    raw: Sequence[Any],
    *,
    file: str = "<rules>",
    locator: Locator | None = None,
    options: RulesSettings | None = None,
    path_prefix: PathKey = ("rules",),
    random_uuid: Callable[[], uuid.UUID] = uuid.uuid4,
) -> RuleSet:
    """Compile raw rule mappings (as parsed from YAML) into a RuleSet, or raise ConfigError with every issue."""
    options = options or RulesSettings()
    compiler = Compiler()
    rules, issues = compile_rule_list(
        raw,
        compiler=compiler,
        phone=re.compile(options.mobile_receiver_pattern),
        file=file,
        locator=locator,
        path_prefix=path_prefix,
    )
    issues += duplicate_ids(rules)
    issues += limit_group_issues(rules)
    if issues:
        raise ConfigError(issues)
    return RuleSet(rules, msg_key=options.msg_key, random_uuid=random_uuid)


def load_rules(settings: Settings, *, random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> RuleSet:
    """All rules of a config (inline first, then the files in glob order), or ConfigError with every issue."""
    options = settings.rules
    compiler = Compiler()
    phone = re.compile(options.mobile_receiver_pattern)
    rules: list[Rule] = []
    issues: list[ConfigIssue] = []
    if options.inline:
        file, locator, prefix = _inline_origin(settings)
        found, problems = compile_rule_list(
            options.inline, compiler=compiler, phone=phone, file=file, locator=locator, path_prefix=prefix
        )
        rules += found
        issues += problems
    for path in _rule_paths(settings, issues):
        try:
            data, locator = load_yaml(path)
        except YamlLoadError as exc:
            issues.append(ConfigIssue(str(path), "", exc.message, exc.line))
            continue
        if not _is_rule_file(data, str(path), locator, issues):
            continue
        found, problems = compile_rule_list(
            data["rules"], compiler=compiler, phone=phone, file=str(path), locator=locator
        )
        rules += found
        issues += problems
    issues += duplicate_ids(rules)
    issues += _unconsumed_topics(settings, rules)
    issues += limit_group_issues(rules)
    issues += _deferral_needs_a_topic(settings, rules)
    if issues:
        raise ConfigError(issues)
    return RuleSet(rules, msg_key=options.msg_key, random_uuid=random_uuid)


def _inline_origin(settings: Settings) -> tuple[str, Locator, PathKey]:
    """Where inline rules are written, for error lines: `rules.inline[i]`, or `rules[i]` (list form)."""
    if settings.source_path is None:
        return "<config>", Locator(), ("rules", "inline")
    try:
        data, locator = load_yaml(settings.source_path)
    except YamlLoadError:
        return str(settings.source_path), Locator(), ("rules", "inline")
    section = data.get("rules") if isinstance(data, dict) else None
    prefix: PathKey = ("rules",) if isinstance(section, list) else ("rules", "inline")
    return str(settings.source_path), locator, prefix


def _rule_paths(settings: Settings, issues: list[ConfigIssue]) -> list[Path]:
    """Every file the globs match, once each (a file matched twice is loaded once), as the glob named it."""
    paths: dict[Path, Path] = {}
    config = str(settings.source_path) if settings.source_path else "<config>"
    for index, pattern in enumerate(settings.rules.rule_files):
        full = Path(pattern) if Path(pattern).is_absolute() else settings.base_dir / pattern
        matches = sorted(Path(p) for p in glob(str(full), recursive=True) if Path(p).is_file())
        if not matches:
            issues.append(
                ConfigIssue(config, f"rules.rule_files[{index}]", f"{pattern!r} matches no file (looked in {full})")
            )
        for match in matches:
            paths.setdefault(match.resolve(), match)
    return list(paths.values())


def _is_rule_file(data: Any, file: str, locator: Locator, issues: list[ConfigIssue]) -> bool:
    if not isinstance(data, dict) or "rules" not in data:
        hint = " (a `bridge test` file? it has `tests:`)" if isinstance(data, dict) and "tests" in data else ""
        issues.append(ConfigIssue(file, "", f"not a rule file: expected a top-level `rules:` list{hint}", 1))
        return False
    ok = True
    for key in data:
        if key != "rules" and not str(key).startswith("x-"):
            issues.append(
                ConfigIssue(file, str(key), "unknown key (only `rules` and `x-…` keys)", locator.line((key,)))
            )
            ok = False
    return ok


def _unconsumed_topics(settings: Settings, rules: list[Rule]) -> list[ConfigIssue]:
    """A rule that names a topic the bridge does not consume would never fire: almost surely a typo."""
    k = settings.kafka
    issues = []
    for rule in rules:
        for topic in rule.topics:
            if consumed_by(topic, k.topics, k.topic_pattern) is not None:
                continue
            listed = ", ".join(sorted(k.topics)) or f"pattern {k.topic_pattern}"
            message = f"rule {rule.id}: topic {topic!r} is not consumed (kafka.topics: {listed})"
            issues.append(ConfigIssue(rule.file, f"{rule.path}.topics", message, rule.line))
    return issues


def limit_group_issues(rules: Sequence[Rule]) -> list[ConfigIssue]:
    """Rules sharing a `limit.group` share one counter: they must agree on per_recipient and per_seconds."""
    first: dict[str, Rule] = {}
    issues = []
    for rule in rules:
        limit = rule.policy.limit if rule.policy is not None else None
        if limit is None or limit.group is None:
            continue
        seen = first.setdefault(limit.group, rule)
        other = seen.policy.limit if seen.policy is not None else None
        if other is None or seen is rule:
            continue
        if (other.per_recipient, other.per_seconds) != (limit.per_recipient, limit.per_seconds):
            message = (
                f"rule {rule.id}: limit group {limit.group!r} is {other.per_recipient} per {other.per_seconds:g} s"
                f" in rule {seen.id}: every rule of a group must set the same per_recipient and per_seconds"
            )
            issues.append(ConfigIssue(rule.file, f"{rule.path}.limit", message, rule.line))
    return issues


def _deferral_needs_a_topic(settings: Settings, rules: list[Rule]) -> list[ConfigIssue]:
    """A policy that defers or digests writes to `kafka.deferred_topic`: it must be set."""
    if settings.kafka.deferred_topic is not None:
        return []
    issues = []
    for rule in rules:
        key = rule.policy.defers if rule.policy is not None else None
        if key is not None:
            message = (
                f"rule {rule.id}: {key} holds messages on kafka.deferred_topic, which is not set"
                " (set it, e.g. campus-bridge.deferred, and create the topic: docs/deployment.md, 'The deferred topic')"
            )
            issues.append(ConfigIssue(rule.file, f"{rule.path}.{key}", message, rule.line))
    return issues
