"""`bridge config show -c FILE`: the effective config after env expansion, secrets masked, as YAML."""

from __future__ import annotations

import argparse

import yaml

from bridge.cli import add_config_argument
from bridge.settings import config_path, load_settings, masked_dump

NAME = "config"
HELP = "inspect the configuration"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `config show` to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    inner = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = inner.add_parser(
        "show",
        help="print the effective config (env expanded, secrets masked)",
        description=(
            "Print the effective configuration as YAML: the file with ${VAR} references expanded from the "
            "environment and every default filled in; secrets (app_secret, session, sasl_password) are shown as "
            "********. Reads nothing but the file and the environment; exit status 2 for a bad config."
        ),
    )
    add_config_argument(show)
    show.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the masked effective config."""
    settings = load_settings(config_path(args.config))
    print(yaml.safe_dump(masked_dump(settings), sort_keys=False, allow_unicode=True), end="")
    return 0
