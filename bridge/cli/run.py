"""`bridge run -c FILE`: the daemon — Kafka → rules → gateway, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from bridge.cli import add_config_argument
from bridge.settings import config_path, load_settings

if TYPE_CHECKING:
    from bridge.rules import RuleSet
    from bridge.settings import Settings

NAME = "run"
# Young-generation size of the cyclic GC once running (CPython's default is 700 allocations). The daemon
# allocates a few objects per message and nearly all of them die by reference counting, so collections at 700
# were frequent work for nothing, and their pauses (gen 1/2: 10-100 ms measured at 5,000 msgs/s) stalled the
# event loop long enough for the rate limiter to lose up to 20 % of its rate.
GC_GEN0_THRESHOLD = 20_000
HELP = "run the daemon: consume, map, deliver, dead-letter, commit"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the CLI."""
    p = sub.add_parser(NAME, help=HELP, description=HELP)
    add_config_argument(p)
    p.add_argument("--log-format", choices=["json", "text"], help="override logging.format")
    p.add_argument("--log-level", help="override logging.level (DEBUG, INFO, WARNING, ERROR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load and check everything, then run the app on uvloop when available."""
    from bridge.logs import setup_logging
    from bridge.rules import load_rules

    settings = load_settings(config_path(args.config))
    rules = load_rules(settings)
    setup_logging((args.log_level or settings.logging.level).upper(), args.log_format or settings.logging.format)
    _quiet_kafka_library_logs()
    return run_loop(_main(settings, rules))


def _quiet_kafka_library_logs() -> None:
    """aiokafka's routine set-up errors and outage floods: see bridge.kafka.logfilter."""
    import logging

    from bridge.kafka.logfilter import install

    for handler in logging.getLogger().handlers:
        install(handler)


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run a coroutine on uvloop if installed, else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        return asyncio.run(coro)
    return int(uvloop.run(coro))


async def _main(settings: Settings, rules: RuleSet) -> int:
    from bridge.app import BridgeApp

    app = BridgeApp(settings, rules)
    app.install_signal_handlers()
    tune_gc()
    return await app.run()


def tune_gc() -> None:
    """Freeze what start-up built (modules, settings, compiled rules: alive for the process's life, so later
    full collections need not walk it again) and make young-generation collections rarer."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
