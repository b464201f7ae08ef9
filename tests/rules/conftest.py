"""Fixtures for the rule tests: compile rules from YAML text, record metadata, a config using the shipped rules.

- ``compile_yaml(text, **options)``: a RuleSet from a YAML list of rules (or ``rules:`` mapping), with line numbers.
- ``meta``: a RecordMeta factory (defaults: topic campus.forum.events, partition 0, offset 7, a fixed timestamp).
- ``write_config(rules_globs=..., inline=..., extra=...)``: writes a config file in tmp_path, returns its path.
- ``shipped_config``: a config in tmp_path whose rule_files is the absolute glob of config/rules/*.yaml.
- ``samples``: the decoded events of config/examples/events.jsonl.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bridge.models import RecordMeta
from bridge.rules import RuleSet, compile_rules
from bridge.settings import RulesSettings
from bridge.yamlsrc import Locator, parse_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RULES = REPO_ROOT / "config" / "rules"
SAMPLES = REPO_ROOT / "config" / "examples" / "events.jsonl"
TOPICS = ["campus.forum.events", "campus.course.events", "campus.facility.events"]
FIXED_TS = 1_717_372_800_000  # 2024-06-03T00:00:00Z


@pytest.fixture
def compile_yaml() -> Callable[..., RuleSet]:
    """Compile rules written as YAML (a list, or a mapping with `rules:`); options go to RulesSettings."""

    def build(text: str, *, file: str = "rules.yaml", **options: Any) -> RuleSet:
        data, locator = parse_yaml(text)
        prefix: tuple[str, ...] = ("rules",)
        raw = data["rules"] if isinstance(data, dict) else data
        if not isinstance(data, dict):
            locator = Locator({("rules", *k): v for k, v in locator.lines.items()})
        return compile_rules(raw, file=file, locator=locator, options=RulesSettings(**options), path_prefix=prefix)

    return build


@pytest.fixture
def meta() -> Callable[..., RecordMeta]:
    """RecordMeta with test defaults; override any field by keyword."""

    def make(**kw: Any) -> RecordMeta:
        values: dict[str, Any] = {"topic": TOPICS[0], "partition": 0, "offset": 7, "timestamp_ms": FIXED_TS}
        values.update(kw)
        return RecordMeta(**values)

    return make


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a minimal valid config (plus `rules` settings) into tmp_path; returns its path."""

    def write(*, rule_files: list[str] | None = None, inline: Any = None, **rules: Any) -> Path:
        section: Any = dict(rules)
        if rule_files is not None:
            section["rule_files"] = rule_files
        if inline is not None:
            section = inline if isinstance(inline, list) and not section else {**section, "inline": inline}
        config = {
            "kafka": {
                "bootstrap_servers": "127.0.0.1:9092",
                "topics": TOPICS,
                "deferred_topic": "campus-bridge.deferred",
            },
            "gateway": {"app_key": "k", "app_secret": "s"},
            "rules": section,
        }
        path = tmp_path / "bridge.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def shipped_config(write_config: Callable[..., Path]) -> Path:
    """A config whose rules are exactly the shipped config/rules/*.yaml."""
    return write_config(rule_files=[str(SHIPPED_RULES / "*.yaml")])


@pytest.fixture
def samples() -> list[Any]:
    """The sample events shipped in config/examples/events.jsonl."""
    return [orjson.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
