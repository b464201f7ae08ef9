"""`bridge validate -c FILE`: load and check the whole config (and its rules); print `ok` or the errors."""

from __future__ import annotations

import argparse

from bridge.cli import add_config_argument
from bridge.settings import config_path, load_settings

NAME = "validate"
HELP = "check the config file and every rule; print ok or the errors (exit 2)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    add_config_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load settings and rules; ConfigError propagates to main (exit 2)."""
    settings = load_settings(config_path(args.config))
    try:
        from bridge.rules import load_rules
    except ImportError:  # pragma: no cover - only before the rules package exists
        load_rules = None
    if load_rules is not None:
        ruleset = load_rules(settings)
        print(f"ok ({len(ruleset)} rules)")
        return 0
    print("ok")
    return 0
