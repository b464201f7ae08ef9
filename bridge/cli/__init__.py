"""argv -> command. Each command is a small module in this package; this is the only exit point.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`. Heavy imports
(aiokafka, aiohttp) happen inside `run`, so `bridge --version` and `bridge validate` stay fast.

Exit status: 0 done, 1 failed (one line on stderr: `error: …`), 2 bad configuration or usage (one line per
problem, naming file, key and line), 130 interrupted. A traceback is logged only at DEBUG level
(`bridge run --log-level DEBUG`, or `logging.level: DEBUG`); everywhere else a failure is one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from bridge import __version__
from bridge.errors import BridgeError, ConfigError

log = logging.getLogger("bridge.cli")

# Order shown in `bridge --help`.
COMMAND_MODULES = (
    "validate",
    "check",
    "config_show",
    "map",
    "test",
    "send",
    "gateway_sim",
    "run",
    "demo",
    "dlq",
)


def _load_commands() -> list[ModuleType]:
    mods = []
    for name in COMMAND_MODULES:
        try:
            mods.append(importlib.import_module(f"bridge.cli.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"bridge.cli.{name}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available command."""
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="campus-bridge: Kafka campus events -> alibaba.campus.mc.message.sendmessagetomobile",
    )
    parser.add_argument("--version", action="version", version=f"campus-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _load_commands():
        mod.register(sub)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The -c/--config option every config-reading command shares."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $BRIDGE_CONFIG, else config/bridge.yaml)",
    )


def print_config_error(exc: ConfigError) -> None:
    """Config problems go to stderr, one line each, no traceback, secrets scrubbed."""
    from bridge.redact import redact

    for issue in exc.issues:
        print(f"error: {redact(str(issue))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bridge` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print_config_error(exc)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # every other fatal path: one line; the traceback only at DEBUG
        from bridge.redact import redact

        log.debug("%s failed", args.command, exc_info=True)
        print(f"error: {redact(fatal_line(exc))}", file=sys.stderr)
        return 1
    return code


def fatal_line(exc: BaseException) -> str:
    """One line saying what failed: the exception's own words (they name the file, key or address), with
    the exceptions it was raised from, and its type when the words alone would not say it. The bridge's
    own errors are complete sentences: their text alone."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 3:
        text = " ".join(str(seen).split())
        name = type(seen).__name__
        plain = not text or isinstance(seen, BridgeError) or text.startswith(name)  # aiokafka names itself
        parts.append(text if plain and text else f"{name}: {text}" if text else name)
        seen = None if isinstance(seen, BridgeError) else seen.__cause__  # ours say all there is to say
    return ": caused by ".join(parts)[:1000]
