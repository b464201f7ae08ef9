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
    """Load settings and every rule; a ConfigError propagates to main (printed, exit 2)."""
    from bridge.rules import load_rules

    settings = load_settings(config_path(args.config))
    ruleset = load_rules(settings)
    print(f"ok ({len(ruleset)} rules)")
    return 0
