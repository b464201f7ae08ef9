"""`bridge test -c FILE [TESTFILE…]`: run rule tests (like `rpk connect test`); a line per case and a summary.

Without TESTFILEs it runs every `*.yaml` / `*.yml` under the `tests/` folder next to the rule files (for the
shipped config: `config/rules/tests/**`), like `rpk connect test ./...`. Prints `PASS file:line name` or
`FAIL file:line name` followed by the differences, then `N passed, M failed`, and a note naming rules that no
test expects. A case whose rendering left a field out because its `{{ expr }}` resolved to missing gets a
`warning:` line on stderr (per rule and field; a typo in an optional field). Exit status 1 on any failure,
2 for a bad config, rule or test file (every problem listed), or when no test file is found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.cli import add_config_argument
from bridge.errors import ConfigError, ConfigIssue
from bridge.settings import config_path, load_settings
from bridge.yamlsrc import YamlLoadError, load_yaml

if TYPE_CHECKING:
    from bridge.settings import Settings

NAME = "test"
HELP = "run rule tests: events and the messages (or errors) the rules must produce"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    add_config_argument(p)
    p.add_argument(
        "test_files",
        nargs="*",
        metavar="TESTFILE",
        help="YAML files with a top-level `tests:` list (default: every one under tests/ next to the rule files)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the rules and every test file, run all cases; 1 if any case fails."""
    from bridge.rules import load_rules
    from bridge.rules.explain import missing_detail, missing_effect
    from bridge.rules.testcases import Case, parse_cases, run_case

    settings = load_settings(config_path(args.config))
    ruleset = load_rules(settings)
    default_topic = settings.kafka.topics[0] if settings.kafka.topics else ""
    test_files = args.test_files or [str(p) for p in discover(settings)]
    if not test_files:
        where = ", ".join(str(d) for d in test_dirs(settings))
        print(f"error: no TESTFILE given and no *.yaml test file found under {where}", file=sys.stderr)
        return 2
    cases: list[Case] = []
    issues: list[ConfigIssue] = []
    for name in test_files:
        try:
            data, locator = load_yaml(Path(name))
        except YamlLoadError as exc:
            issues.append(ConfigIssue(name, "", exc.message, exc.line))
            continue
        found, problems = parse_cases(data, file=name, locator=locator, ruleset=ruleset, default_topic=default_topic)
        cases += found
        issues += problems
    if issues:
        raise ConfigError(issues)
    failed = 0
    covered: set[str] = set()
    for case in cases:
        covered.update(str(e["rule"]) for e in case.expect if "message" in e)
        result = run_case(ruleset, case)
        where = f"{case.file}:{case.line}" if case.line else case.file
        for rule_id, field in result.missing:
            rule = ruleset.get(rule_id)
            assert rule is not None
            detail = missing_detail(rule, field, case.event, case.meta, ruleset)
            warning = f"{where} {case.name}: rule {rule_id}: {field}: {detail}; {missing_effect(field)}"
            print(f"warning: {warning}", file=sys.stderr)
        if result.passed:
            if not args.quiet:
                print(f"PASS {where} {case.name}")
            continue
        failed += 1
        print(f"FAIL {where} {case.name}")
        for problem in result.problems:
            print(f"    {problem}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    untested = [rule_id for rule_id in ruleset.ids if rule_id not in covered]
    if untested:
        print(f"note: no test expects a message from: {', '.join(untested)}")
    return 1 if failed else 0


def test_dirs(settings: Settings) -> list[Path]:
    """Where tests are looked for: `tests/` in the folder of each `rules.rule_files` glob, and `rules/tests/`
    next to the config file."""
    dirs = [settings.base_dir / "rules" / "tests"]
    for pattern in settings.rules.rule_files:
        folder = Path(pattern).parent
        while any(c in str(folder) for c in "*?["):  # the fixed part of the glob
            folder = folder.parent
        dirs.append((folder if folder.is_absolute() else settings.base_dir / folder) / "tests")
    return list(dict.fromkeys(d.resolve() for d in dirs))


def discover(settings: Settings) -> list[Path]:
    """Every `*.yaml` / `*.yml` under the test folders (recursively), sorted, each once."""
    found: dict[Path, None] = {}
    for folder in test_dirs(settings):
        for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
            found.setdefault(path, None)
    cwd = Path.cwd()
    return [p.relative_to(cwd) if p.is_relative_to(cwd) else p for p in found]
