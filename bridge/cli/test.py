"""`bridge test -c FILE TESTFILE…`: run rule tests (like `rpk connect test`); a line per case and a summary.

Prints `PASS file:line name` or `FAIL file:line name` followed by the differences, then
`N passed, M failed`, and a note naming rules that no test expects. Exit status 1 on any failure,
2 for a bad config, rule or test file (every problem listed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bridge.cli import add_config_argument
from bridge.errors import ConfigError, ConfigIssue
from bridge.settings import config_path, load_settings
from bridge.yamlsrc import YamlLoadError, load_yaml

NAME = "test"
HELP = "run rule tests: events and the messages (or errors) the rules must produce"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    add_config_argument(p)
    p.add_argument("test_files", nargs="+", metavar="TESTFILE", help="YAML files with a top-level `tests:` list")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the rules and every test file, run all cases; 1 if any case fails."""
    from bridge.rules import load_rules
    from bridge.rules.testcases import Case, parse_cases, run_case

    settings = load_settings(config_path(args.config))
    ruleset = load_rules(settings)
    default_topic = settings.kafka.topics[0] if settings.kafka.topics else ""
    cases: list[Case] = []
    issues: list[ConfigIssue] = []
    for name in args.test_files:
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
