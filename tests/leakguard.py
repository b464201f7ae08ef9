"""pytest plugin: no test secret may appear in anything the suite's runs print, log or dead-letter.

For every test it gathers what left the code under test:
- the captured stdout/stderr of each phase, and whatever a test read through `capsys` / `capfd`;
- every log record emitted in the test process, formatted by the bridge's own `JsonFormatter` (what the
  daemon writes), at INFO and above;
- stdout/stderr of `subprocess.run` calls that capture them (the CLI run as a process);
- every `*.log` file under the test's `tmp_path` (the daemon and simulator processes of the harness);
- anything handed to `record(source, text)` (the dead-letter headers the daemon tests read).

When the test ends, all of it is searched for the secrets: `SECRETS` (the suite's fixed credentials), the
values given to `learn()`, and every secret found in a config file under the test's `tmp_path`
(`gateway.app_secret`, `gateway.session`, `kafka.security.sasl_password`, and the files `*_file` names).
A test whose outputs hold one fails at teardown, naming where (the secret itself is never printed); the
session's summary lists every leak. `tests/test_leakguard.py` plants leaks to show that it catches them.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.logs import JsonFormatter

# The suite's fixed credentials (config files under tmp_path are read for the others).
SECRETS = frozenset(
    {
        "test-secret",
        "wrong-secret",
        "obs-secret",
        "bridge-wrong-secret",
        "hunter2-very-secret",
        "real-secret-xyz",
        "local-simulator-secret",
        "98765432109876",
    }
)
MIN_LENGTH = 6
_SECRET_KEYS = (("gateway", "app_secret"), ("gateway", "session"), ("kafka", "security", "sasl_password"))
_FILE_KEYS = (("gateway", "app_secret_file"), ("kafka", "security", "sasl_password_file"))
_COLLECTOR = pytest.StashKey["Collector"]()
_LEAKS = pytest.StashKey[list[str]]()
_current: Collector | None = None


class Collector:
    """The outputs of one test and the secrets to look for in them."""

    def __init__(self) -> None:
        self.secrets = set(SECRETS)
        self.outputs: list[tuple[str, str]] = []
        self.configs: list[Path] = []

    def add(self, source: str, text: str | bytes | None) -> None:
        """Keep one output for the search at the end of the test."""
        if text is None:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if text:
            self.outputs.append((source, text))

    def learn(self, secret: Any) -> None:
        """Search for this value too (long enough values only, like the bridge's redactor)."""
        if secret is not None and not isinstance(secret, dict | list) and len(str(secret)) >= MIN_LENGTH:
            self.secrets.add(str(secret))

    def learn_config(self, path: Path) -> None:
        """Every secret a bridge config file gives (inline or through a `*_file`)."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return
        for keys in _SECRET_KEYS:
            value = _dig(data, keys)
            if not (isinstance(value, str) and "${" in value):
                self.learn(value)
        for keys in _FILE_KEYS:
            file = _dig(data, keys)
            if isinstance(file, str):
                with contextlib.suppress(OSError):
                    self.learn(Path(file).read_text(encoding="utf-8").strip())

    def leaks(self) -> list[str]:
        """One line per (output, secret) found: where, which secret (masked) and the text around it."""
        found = []
        for source, text in self.outputs:
            for secret in sorted(self.secrets):
                at = text.find(secret)
                if at >= 0:
                    around = text[max(0, at - 60) : at + len(secret) + 60]
                    hint = f"{secret[:2]}… ({len(secret)} characters)"
                    found.append(f"secret {hint} leaked in {source}: …{around!r}…".replace(secret, "<SECRET>"))
        return found


def _dig(data: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def record(source: str, text: str | bytes | None) -> None:
    """Hand an output to the running test's search (e.g. a dead-letter header a test read)."""
    if _current is not None:
        _current.add(source, text)


def learn(secret: str) -> None:
    """Make the running test's search look for this secret too."""
    if _current is not None:
        _current.learn(secret)


class _LogHandler(logging.Handler):
    """Formats every record as the daemon would write it, for the search."""

    def __init__(self, collector: Collector) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.collector = collector

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.collector.add(f"log record of {record.name}", self.format(record))
        except Exception:  # a record that cannot be formatted is the logging module's problem, not a leak
            self.handleError(record)


@pytest.fixture(autouse=True)
def _leak_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    """Gather the test's outputs (see the module docstring); they are searched when the test ends."""
    global _current
    collector = Collector()
    request.node.stash[_COLLECTOR] = collector
    tmp_path: Path | None = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None

    original_readouterr = pytest.CaptureFixture.readouterr

    def readouterr(self: pytest.CaptureFixture[Any]) -> Any:
        result = original_readouterr(self)
        collector.add("output read through capsys/capfd", result.out)
        collector.add("output read through capsys/capfd", result.err)
        return result

    original_run = subprocess.run

    def run(*args: Any, **kwargs: Any) -> Any:
        result = original_run(*args, **kwargs)
        argv = result.args if isinstance(result.args, list | tuple) else [result.args]
        source = f"output of subprocess {Path(str(argv[0])).name} {' '.join(map(str, argv[1:3]))[:40]}"
        collector.add(source, result.stdout)
        collector.add(source, result.stderr)
        return result

    monkeypatch.setattr(pytest.CaptureFixture, "readouterr", readouterr)
    monkeypatch.setattr(subprocess, "run", run)
    root = logging.getLogger()
    handler = _LogHandler(collector)
    root.addHandler(handler)
    level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    previous, _current = _current, collector
    try:
        yield collector
    finally:
        _current = previous
        root.removeHandler(handler)
        root.setLevel(level)
        if tmp_path is not None:
            for path in sorted(tmp_path.rglob("*.y*ml")):
                collector.learn_config(path)
            for path in sorted(tmp_path.rglob("*.log")):
                collector.add(f"log file {path.name}", path.read_bytes())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """At the end of a test: search its outputs; a leak turns the teardown into a failure naming it."""
    report: pytest.TestReport = yield
    collector = item.stash.get(_COLLECTOR, None)
    if report.when != "teardown" or collector is None:
        return report
    for name, content in report.sections:
        if name.startswith(("Captured stdout", "Captured stderr")):
            collector.add(name.lower(), content)
    leaks = collector.leaks()
    if leaks:
        item.config.stash.setdefault(_LEAKS, []).extend(f"{item.nodeid}: {leak}" for leak in leaks)
        report.outcome = "failed"
        report.longrepr = "a secret left the code under test:\n" + "\n".join(leaks)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """List every leak of the session at the end."""
    leaks = config.stash.get(_LEAKS, [])
    if leaks:
        terminalreporter.section("secret leaks", red=True)
        for leak in leaks:
            terminalreporter.write_line(leak)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A session with a leak fails, whatever else happened."""
    if session.config.stash.get(_LEAKS, []) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
