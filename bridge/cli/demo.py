"""`bridge demo`: the main job on local defaults — local broker, simulated gateway, generated campus events."""

from __future__ import annotations

import argparse
import sys

from bridge.settings import config_path, load_settings

NAME = "demo"
DEMO_CONFIG = "config/demo.yaml"
HELP = "run the bridge on local defaults: local Kafka + simulated gateway + generated campus events"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=DEMO_CONFIG,
        help=f"a config that sends to the simulator (default: {DEMO_CONFIG})",
    )
    p.add_argument("--events", type=int, help="produce this many records, then stop producing (default: no end)")
    p.add_argument("--rate", type=float, default=20.0, help="records per second (default 20)")
    p.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit 0 once every expected message is delivered and malformed records dead-lettered",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="with --exit-when-done: give up after N s")
    p.add_argument("--seed", type=int, default=42, help="seed of the event generator")
    p.add_argument(
        "--produce-only",
        action="store_true",
        help="only feed generated events into the config's Kafka (the topics must exist); start nothing else. "
        "docker-compose's demo-events service runs this",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the config and rules, then run the demo."""
    from bridge.cli.run import run_loop
    from bridge.demo.runner import run_demo, sends_only_to_the_simulator
    from bridge.rules import load_rules

    path = config_path(args.config)
    settings = load_settings(path)
    problem = sends_only_to_the_simulator(path)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.produce_only:
        from bridge.demo.runner import run_producer

        return run_loop(run_producer(settings, events=args.events, rate=args.rate, seed=args.seed))
    rules = load_rules(settings)
    return run_loop(
        run_demo(
            path,
            settings,
            rules,
            events=args.events,
            rate=args.rate,
            exit_when_done=args.exit_when_done,
            timeout=args.timeout,
            seed=args.seed,
        )
    )
