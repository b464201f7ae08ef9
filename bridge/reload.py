"""Hot reload of the rules (SIGHUP, or `rules.watch`): validate off the hot path, swap atomically, report.

A reload reads the config file again and compiles its rules in a worker thread, so delivery never waits for
it. On any error the rules in force stay, and every problem is logged as `bridge validate` would print it.
On success the new rule set replaces the old one between two records: no rebalance, nothing lost, nothing
re-sent (jobs already mapped keep their messages). Changed keys outside `rules` cannot be applied to a
running process: they are logged as "needs restart" and ignored. Every reload counts in
`bridge_rules_reload_total{result}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from glob import glob
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.rules import RuleSet, load_rules
from bridge.settings import Settings, load_settings

log = logging.getLogger("bridge.reload")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two plain-data trees (dicts compared key by key). Pure."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            out += changed_keys(old.get(key), new.get(key), path)
        return out
    return [] if old == new else [prefix or "(root)"]


def watched_files(settings: Settings) -> list[Path]:
    """The config file and every file its rule globs match now (what `rules.watch` polls)."""
    files: list[Path] = []
    if settings.source_path is not None:
        files.append(settings.source_path)
    for pattern in settings.rules.rule_files:
        full = Path(pattern) if Path(pattern).is_absolute() else settings.base_dir / pattern
        files += sorted(Path(p) for p in glob(str(full), recursive=True) if Path(p).is_file())
    return files


def _stamps(files: Iterable[Path]) -> dict[Path, tuple[int, int] | None]:
    out: dict[Path, tuple[int, int] | None] = {}
    for f in files:
        try:
            st = f.stat()
            out[f] = (st.st_mtime_ns, st.st_size)
        except OSError:
            out[f] = None
    return out


class RuleReloader:
    """Reloads the rules of a running bridge; `apply` swaps them in (the pipeline's `swap_rules`)."""

    def __init__(self, settings: Settings, rules: RuleSet, apply: Callable[[RuleSet], None], metrics: Metrics) -> None:
        self._settings = settings
        self._apply = apply
        self._m = metrics
        self._lock = asyncio.Lock()
        self.rules = rules
        self._rules_section = settings.rules  # the globs may change with a reload: watch the latest ones
        metrics.rules_loaded.set(len(rules))

    def _load(self) -> tuple[Settings, RuleSet]:
        """(the file's new settings, its rules compiled against the running settings) — in a worker thread."""
        path = self._settings.source_path
        if path is None:
            raise ConfigError([])
        fresh = load_settings(path)
        effective = self._settings.model_copy(update={"rules": fresh.rules})
        return fresh, load_rules(effective)

    async def reload(self, trigger: str) -> bool:
        """Reload now (one at a time); True when new rules are in force."""
        async with self._lock:
            try:
                fresh, rules = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                self._m.rules_reloads.labels("failed").inc()
                for issue in exc.issues:
                    log.error(f"error: {issue}", extra={"ctx": {"trigger": trigger}})
                log.error(
                    "rules NOT reloaded: the rules in force stay",
                    extra={"ctx": {"trigger": trigger, "errors": len(exc.issues), "rules": len(self.rules)}},
                )
                return False
            except Exception as exc:  # an unreadable file, a bug: never take the daemon down
                self._m.rules_reloads.labels("failed").inc()
                log.error(
                    "rules NOT reloaded: the rules in force stay",
                    extra={"ctx": {"trigger": trigger, "error": f"{type(exc).__name__}: {exc}"}},
                )
                return False
            old_data = self._settings.model_dump(mode="python", exclude={"source_path", "rules"})
            new_data = fresh.model_dump(mode="python", exclude={"source_path", "rules"})
            restart = changed_keys(old_data, new_data)
            if restart:
                log.warning(
                    "config changes outside `rules` need a restart: ignored until then",
                    extra={"ctx": {"trigger": trigger, "keys": restart}},
                )
            before, after = set(self.rules.ids), set(rules.ids)
            self._apply(rules)
            self.rules = rules
            self._rules_section = fresh.rules
            self._m.rules_reloads.labels("ok").inc()
            self._m.rules_loaded.set(len(rules))
            log.info(
                "rules reloaded",
                extra={
                    "ctx": {
                        "trigger": trigger,
                        "rules": len(rules),
                        "added": sorted(after - before),
                        "removed": sorted(before - after),
                    }
                },
            )
            return True

    async def watch(self, interval: float, stop: asyncio.Event) -> None:
        """Poll the config and rule files' mtimes; reload when one changed, appeared or went away."""
        stamps = _stamps(watched_files(self._settings))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            now = _stamps(watched_files(self._settings.model_copy(update={"rules": self._rules_section})))
            if now != stamps:
                stamps = now
                await self.reload("watch")
