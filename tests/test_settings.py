"""The config loader: env expansion, defaults, precise errors, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import config_path, load_settings, masked_dump, parse_settings
from bridge.yamlsrc import dotted, expand_env, parse_yaml

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """\
kafka:
  bootstrap_servers: 127.0.0.1:9092
  topics: [campus.forum.events]
gateway:
  app_key: k
  app_secret: s
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bridge.yaml"
    p.write_text(text)
    return p


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=60,
    )


def test_minimal_config_gets_defaults_for_every_other_section(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), env={})
    assert s.delivery.max_in_flight == 256
    assert s.delivery.ordering == "recipient"
    assert s.delivery.rate_limit.per_second == 100
    assert s.rules.inline == [] and s.rules.rule_files == []
    assert s.metrics.listen == "0.0.0.0:9464"
    assert s.logging.format == "json"
    assert s.kafka.auto_offset_reset == "latest"


def test_env_expansion_with_and_without_default(tmp_path: Path) -> None:
    text = MINIMAL.replace("127.0.0.1:9092", "${BROKERS}").replace("app_key: k", "app_key: ${KEY:-dflt}")
    s = load_settings(write(tmp_path, text), env={"BROKERS": "10.0.0.1:9093"})
    assert s.kafka.bootstrap_servers == "10.0.0.1:9093"
    assert s.gateway.app_key == "dflt"


def test_unset_env_variable_names_key_and_variable(tmp_path: Path) -> None:
    text = MINIMAL.replace("app_secret: s", "app_secret: ${TOP_APP_SECRET}")
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, text), env={})
    (issue,) = ei.value.issues
    assert issue.path == "gateway.app_secret"
    assert "TOP_APP_SECRET" in issue.message
    assert issue.line == 6


def test_dollar_dollar_is_a_literal_dollar() -> None:
    assert expand_env({"a": "cost $$5 ${X:-y}"}, {}) == {"a": "cost $5 y"}


def test_unknown_key_is_one_precise_error(tmp_path: Path) -> None:
    text = MINIMAL + "delivery:\n  max_inflight: 3\n"
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, text), env={})
    (issue,) = ei.value.issues
    assert (issue.path, issue.message, issue.line) == ("delivery.max_inflight", "unknown key", 8)


def test_wrong_type_is_one_precise_error(tmp_path: Path) -> None:
    text = MINIMAL + "delivery:\n  rate_limit:\n    per_second: fast\n"
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, text), env={})
    (issue,) = ei.value.issues
    assert issue.path == "delivery.rate_limit.per_second"
    assert "valid number" in issue.message and "'fast'" in issue.message
    assert issue.line == 9


def test_missing_required_key_is_one_precise_error(tmp_path: Path) -> None:
    text = MINIMAL.replace("  app_key: k\n", "")
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, text), env={})
    (issue,) = ei.value.issues
    assert (issue.path, issue.message) == ("gateway.app_key", "required key is missing")


def test_topics_and_pattern_are_exclusive(tmp_path: Path) -> None:
    text = MINIMAL.replace("  topics: [campus.forum.events]\n", "")
    with pytest.raises(ConfigError, match="exactly one of topics"):
        load_settings(write(tmp_path, text), env={})


def test_secret_from_file_and_masked_everywhere(tmp_path: Path) -> None:
    secret_file = tmp_path / "top-secret"
    secret_file.write_text("hunter2-very-secret\n")
    text = MINIMAL.replace("app_secret: s", f"app_secret_file: {secret_file}")
    s = load_settings(write(tmp_path, text), env={})
    assert s.gateway.secret() == "hunter2-very-secret"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert "hunter2" not in repr(masked_dump(s))
    assert masked_dump(s)["gateway"]["app_secret"] == "********"


def test_secret_value_never_echoed_in_errors() -> None:
    data = parse_yaml(MINIMAL)[0]
    data["gateway"]["app_secret"] = ["hunter2"]
    with pytest.raises(ConfigError) as ei:
        parse_settings(data, env={})
    assert "hunter2" not in str(ei.value)


SASL = """\
  security:
    protocol: SASL_PLAINTEXT
    sasl_mechanism: PLAIN
    sasl_username: bridge
    sasl_password: SASLPW
"""


@pytest.mark.parametrize(
    ("mutation", "path", "secret"),
    [
        (lambda t: t + "  session: 98765432109876\n", "gateway.session", "98765432109876"),
        (
            lambda t: t.replace("gateway:", SASL.replace("SASLPW", "12345678901") + "gateway:"),
            "kafka.security.sasl_password",
            "12345678901",
        ),
        (lambda t: t.replace("app_secret: s", "app_secret: 31415926535"), "gateway.app_secret", "31415926535"),
        (
            lambda t: t + "  url: ftp://gw.example/router/rest?session=sess-in-url-42\n",
            "gateway.url",
            "sess-in-url-42",
        ),
        (
            lambda t: (
                t.replace("app_secret: s", "app_secret: visible-secret-42") + "  url: ftp://gw/?k=visible-secret-42\n"
            ),
            "gateway.url",
            "visible-secret-42",
        ),
    ],
    ids=["session-number", "sasl-password-number", "app-secret-number", "session-in-url", "secret-quoted-elsewhere"],
)
def test_cli_validate_never_echoes_a_secret_value(
    tmp_path: Path, mutation: Callable[[str], str], path: str, secret: str
) -> None:
    r = run_cli("validate", "-c", str(write(tmp_path, mutation(MINIMAL))))
    assert r.returncode == 2
    assert f": {path}: " in r.stderr, r.stderr
    assert secret not in r.stderr + r.stdout


def test_plain_rules_list_is_taken_as_inline() -> None:
    data = parse_yaml(MINIMAL + "rules:\n  - id: a\n")[0]
    assert parse_settings(data, env={}).rules.inline == [{"id": "a"}]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, MINIMAL + "delivery: [unclosed\n"), env={})
    assert ei.value.issues[0].line is not None
    assert "not valid YAML" in ei.value.issues[0].message


def test_config_path_precedence() -> None:
    assert config_path("x.yaml", {"BRIDGE_CONFIG": "y.yaml"}) == Path("x.yaml")
    assert config_path(None, {"BRIDGE_CONFIG": "y.yaml"}) == Path("y.yaml")
    assert config_path(None, {}) == Path("config/bridge.yaml")


def test_dotted_paths() -> None:
    assert dotted(("rules", 3, "message", "when")) == "rules[3].message.when"


def test_cli_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("campus-bridge ")


PRODUCTION_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1.campus.internal:9092",
    "TOP_GATEWAY_URL": "https://eco.taobao.com/router/rest",
    "TOP_APP_KEY": "12345678",
}


@pytest.mark.parametrize(
    ("config", "env"),
    [("config/demo.yaml", {}), ("config/bridge.yaml", {**PRODUCTION_ENV, "TOP_APP_SECRET": "s"})],
    ids=["demo", "production"],
)
def test_cli_validate_shipped_configs_print_ok(config: str, env: dict[str, str]) -> None:
    r = run_cli("validate", "-c", config, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_every_unset_variable_is_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("app_secret: s", "app_secret: ${SECRET_A}").replace("app_key: k", "app_key: ${KEY_B}")
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, text), env={"KEY_B": ""})
    assert [i.message for i in ei.value.issues] == [
        "environment variable KEY_B is empty",
        "environment variable SECRET_A is not set",
    ]


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda t: t + "logging:\n  colour: true\n", "logging.colour: unknown key"),
        (lambda t: t + "delivery:\n  max_in_flight: lots\n", "delivery.max_in_flight: Input should be a valid integer"),
        (lambda t: t.replace("  app_key: k\n", ""), "gateway.app_key: required key is missing"),
    ],
    ids=["unknown-key", "wrong-type", "missing-key"],
)
def test_cli_validate_errors_exit_2_without_traceback(
    tmp_path: Path, mutation: Callable[[str], str], expected: str
) -> None:
    path = write(tmp_path, mutation(MINIMAL))
    r = run_cli("validate", "-c", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert expected in lines[0]
    assert lines[0].startswith(f"error: {path}:")
    assert "Traceback" not in r.stderr


def test_cli_config_show_masks_secrets_and_expands_env() -> None:
    env = {**PRODUCTION_ENV, "TOP_APP_SECRET": "real-secret-xyz"}
    r = run_cli("config", "show", "-c", "config/bridge.yaml", env=env)
    assert r.returncode == 0, r.stderr
    assert "real-secret-xyz" not in r.stdout
    assert "app_secret: '********'" in r.stdout
    assert "bootstrap_servers:" in r.stdout


def test_bridge_config_env_variable_selects_file(tmp_path: Path) -> None:
    r = run_cli("validate", env={"BRIDGE_CONFIG": str(write(tmp_path, MINIMAL))})
    assert r.returncode == 0, r.stderr
