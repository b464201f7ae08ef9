"""The leak guard (tests/leakguard.py) catches a planted secret in every kind of output it watches.

A small suite with one clean test and one planted leak per channel runs in a fresh pytest process with the
plugin: each leaking test must fail at teardown naming the channel, the clean one must pass, the session must
fail, and the report itself must not print the secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

PLANTED = """
import logging
import subprocess
import sys

import leakguard

SECRET = "test-secret"  # one of leakguard.SECRETS


def test_clean(tmp_path):
    print("nothing to see here")
    (tmp_path / "bridge.log").write_text('{"msg": "delivered"}\\n')
    logging.getLogger("bridge.delivery").warning("gateway rejected message", extra={"ctx": {"code": 15}})


def test_printed():
    print("the secret is", SECRET)


def test_read_through_capsys(capsys):
    print("cause:", SECRET)
    assert SECRET in capsys.readouterr().out


def test_logged_in_a_nested_value():
    leakguard.learn("planted-log-secret")  # a secret the bridge's redactor does not know in this process
    logging.getLogger("bridge.delivery").warning("x", extra={"ctx": {"cause": {"url": ["planted-log-secret"]}}})


def test_printed_by_a_subprocess():
    subprocess.run([sys.executable, "-c", "print('test-secret')"], capture_output=True, check=True)


def test_in_a_daemon_log_file(tmp_path):
    (tmp_path / "bridge.log").write_text('{"msg": "retrying", "cause": "url=...&x=test-secret"}\\n')


def test_secret_of_a_written_config_in_a_log_file(tmp_path):
    (tmp_path / "bridge.yaml").write_text("gateway: {app_key: k, session: config-session-1234}\\n")
    (tmp_path / "bridge.log").write_text("error session config-session-1234\\n")


def test_in_a_dead_letter_header():
    leakguard.record("dead-letter header bridge.error", b"retryable protocol url=...test-secret")
"""

LEAKING = {
    "test_printed": "captured stdout call",
    "test_read_through_capsys": "output read through capsys/capfd",
    "test_logged_in_a_nested_value": "log record of bridge.delivery",
    "test_printed_by_a_subprocess": "output of subprocess",
    "test_in_a_daemon_log_file": "log file bridge.log",
    "test_secret_of_a_written_config_in_a_log_file": "log file bridge.log",
    "test_in_a_dead_letter_header": "dead-letter header bridge.error",
}


def test_the_leak_guard_fails_every_test_that_leaks_and_only_those(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makepyfile(test_planted=PLANTED)
    result = pytester.runpytest_subprocess(
        "-p",
        "leakguard",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "--show-capture=no",
    )
    result.assert_outcomes(passed=1 + len(LEAKING), errors=len(LEAKING))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    summary = {line.split(": secret ")[0]: line for line in result.stdout.lines if ": secret " in line}
    for test, channel in LEAKING.items():
        assert f"leaked in {channel}" in summary[f"test_planted.py::{test}"], test
    assert "test_planted.py::test_clean: secret" not in out
    assert "secret leaks" in out  # the session summary
    for secret in ("test-secret", "planted-log-secret", "config-session-1234"):
        assert secret not in out + result.stderr.str()  # the report names the leak, never the secret
