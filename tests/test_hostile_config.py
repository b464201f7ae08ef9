"""Hostile or broken configs end in one clear line and exit 2 (or 1 for a failure at start), never a crash.

The cases measured in issue 10: a rule that segfaulted `bridge run` (rc 139) on its first matching event,
JMESPath nested thousands deep (RecursionError traceback, exit 1), a billion-laughs YAML (MemoryError after
25 s at 3.1 GB), referenced files that only failed once the daemon used them, and tracebacks on fatal paths.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from bridge.errors import ConfigError
from bridge.settings import load_settings
from bridge.yamlsrc import MAX_BYTES, MAX_DEPTH, YamlLoadError, parse_yaml

BASE = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["campus.forum.events"]},
    "gateway": {"url": "http://127.0.0.1:9/router/rest", "app_key": "k", "app_secret": "s"},
}
DEEP_TEMPLATE = "{{ event.title" + " | [@, @]" * 40 + " }}"


def write(tmp_path: Path, data: dict[str, object] | str, name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, width=10**6), encoding="utf-8")
    return path


def config_with(tmp_path: Path, **sections: object) -> Path:
    data: dict[str, object] = {k: dict(v) for k, v in BASE.items()}  # type: ignore[call-overload]
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # type: ignore[dict-item]
        else:
            data[key] = value
    return write(tmp_path, data)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`bridge …` as its own process: a crash shows as a signal exit status, not as a test failure."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return [str(i) for i in caught.value.issues]


# ------------------------------------------------------------------------------------------- rules
DEEP_RULE = [{"id": "deep", "message": {"event_type": "push_app", "json_data": {"title": DEEP_TEMPLATE}}}]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_the_deep_rule_exits_2_at_load(tmp_path: Path, command: str) -> None:
    """`validate` refuses it, and `bridge run` exits 2 before consuming anything (it used to segfault)."""
    config = config_with(tmp_path, rules=DEEP_RULE)
    done = cli(command, "-c", str(config))
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {config}:")
    assert "rules[0].message.json_data.title: rule deep: bad template" in line
    assert "the size of the event (at most 64×)" in line


def test_jmespath_nested_thousands_deep_is_one_line(tmp_path: Path) -> None:
    deep = "(" * 2000 + "event.a" + ")" * 2000
    config = config_with(tmp_path, rules=[{"id": "r", "when": deep, "message": {"event_type": "push_app"}}])
    done = cli("validate", "-c", str(config))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "rules[0].when: rule r: expression nested too deeply" in line


# ------------------------------------------------------------------------------------------- YAML bounds
LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)


def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    config = write(tmp_path, LAUGHS + yaml.safe_dump(BASE))
    started = time.monotonic()
    done = cli("validate", "-c", str(config))
    assert time.monotonic() - started < 20  # was a MemoryError after 25 s at 3.1 GB; it is the start-up cost
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line == f"error: {config}:6: aliases expand the document past 200,000 nodes or 16,777,216 bytes (at *e)"


def test_billion_laughs_in_a_rule_file(tmp_path: Path) -> None:
    write(tmp_path, "x-laughs:\n" + "".join("  " + line + "\n" for line in LAUGHS.splitlines()), "r.rules.yaml")
    config = config_with(tmp_path, rules={"rule_files": ["*.rules.yaml"]})
    done = cli("validate", "-c", str(config))
    assert done.returncode == 2
    assert "r.rules.yaml:7: aliases expand the document past" in done.stderr


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", f"nested more than {MAX_DEPTH} levels", 1),
        ("a: [" + ", ".join(["1"] * 200_001) + "]\n", "document of more than 200,000 nodes", None),
        ("big: '" + "x" * MAX_BYTES + "'\n", "is too large for a config (at most 4,194,304)", None),
        ("s: &s '" + "x" * 100_000 + "'\nl: [" + ", ".join(["*s"] * 200) + "]\n", "past 200,000 nodes", 2),
    ],
    ids=["depth", "nodes", "bytes", "expanded-bytes"],
)
def test_yaml_bounds(text: str, message: str, line: int | None) -> None:
    with pytest.raises(YamlLoadError) as caught:
        parse_yaml(text)
    assert message in caught.value.message
    assert caught.value.line == line


def test_aliases_within_bounds_still_work() -> None:
    data, locator = parse_yaml("base: &b {x: 1, y: [1, 2]}\nother: *b\nmerged: {<<: *b, x: 2}\n")
    assert data == {"base": {"x": 1, "y": [1, 2]}, "other": {"x": 1, "y": [1, 2]}, "merged": {"x": 2, "y": [1, 2]}}
    assert locator.line(("merged", "x")) == 3


# ------------------------------------------------------------------------------------------- referenced files
def test_missing_and_unusable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    config = config_with(
        tmp_path,
        kafka={
            "security": {
                "protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password_file": str(tmp_path / "nope.txt"),
                "ssl_cafile": "relative/ca.pem",
            }
        },
        gateway={"app_secret": None, "app_secret_file": str(tmp_path / "adir")},
    )
    found = errors_of(config)
    cwd = Path.cwd()
    assert any(f"kafka.security.sasl_password_file: file {tmp_path / 'nope.txt'} does not exist" in e for e in found), (
        found
    )
    assert any(
        f"kafka.security.ssl_cafile: file relative/ca.pem does not exist (relative to the working directory {cwd})" in e
        for e in found
    ), found
    assert any(f"gateway.app_secret_file: {tmp_path / 'adir'} is a directory, not a file" in e for e in found)


def test_a_garbage_ca_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    config = config_with(tmp_path, kafka={"security": {"protocol": "SSL", "ssl_cafile": str(tmp_path / "ca.pem")}})
    (found,) = errors_of(config)
    assert f"kafka.security: ssl_cafile {tmp_path / 'ca.pem'} is not a PEM CA bundle" in found


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate with a plain key and an encrypted copy of the key (openssl)."""
    where = tmp_path_factory.mktemp("certs")
    key, cert, encrypted = (str(where / n) for n in ("key.pem", "cert.pem", "encrypted.pem"))
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=t"]
    subprocess.run([*request, "-keyout", key, "-out", cert], check=True, capture_output=True)
    encrypt = ["openssl", "pkey", "-in", key, "-aes256", "-passout", "pass:secret", "-out", encrypted]
    subprocess.run(encrypt, check=True, capture_output=True)
    return where


def test_usable_tls_files_pass(tmp_path: Path, certs: Path) -> None:
    security = {
        "protocol": "SSL",
        "ssl_cafile": str(certs / "cert.pem"),
        "ssl_certfile": str(certs / "cert.pem"),
        "ssl_keyfile": str(certs / "key.pem"),
    }
    settings = load_settings(config_with(tmp_path, kafka={"security": security}))
    assert settings.kafka.security.ssl_keyfile == certs / "key.pem"


def test_an_encrypted_key_is_refused_instead_of_prompting(tmp_path: Path, certs: Path) -> None:
    """The daemon has no way to ask for a key's password (OpenSSL would prompt on a terminal, or fail)."""
    security = {"protocol": "SSL", "ssl_certfile": str(certs / "cert.pem"), "ssl_keyfile": str(certs / "encrypted.pem")}
    config = config_with(tmp_path, kafka={"security": security})
    done = cli("validate", "-c", str(config))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert f"kafka.security: ssl_certfile {certs / 'cert.pem'} / ssl_keyfile {certs / 'encrypted.pem'}" in line
    assert "not a usable PEM certificate and unencrypted key" in line


# ------------------------------------------------------------------------------------------- fatal paths
@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_listen_address_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    config = config_with(tmp_path, metrics={"listen": f"127.0.0.1:{busy_port}"})
    done = cli("run", "-c", str(config), "--log-format", "text")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "aiokafka runs without its C extension" not in line]
    assert lines == [f"error: cannot listen on 127.0.0.1:{busy_port} (metrics.listen): Address already in use"]


def test_the_traceback_is_there_at_debug(tmp_path: Path, busy_port: int) -> None:
    config = config_with(tmp_path, metrics={"listen": f"127.0.0.1:{busy_port}"})
    done = cli("run", "-c", str(config), "--log-format", "text", "--log-level", "DEBUG")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith(
        f"error: cannot listen on 127.0.0.1:{busy_port} (metrics.listen): Address already in use"
    )


def test_an_unexpected_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a command lets out: `error: Type: words` (with what it was raised from), exit 1."""
    import bridge.cli.validate

    def fail(_args: object) -> int:
        try:
            open(tmp_path / "missing.pem")  # noqa: SIM115 - the point is the error
        except OSError as exc:
            raise RuntimeError("loading the CA failed") from exc
        return 0

    monkeypatch.setattr(bridge.cli.validate, "run", fail)
    assert main(["validate", "-c", str(config_with(tmp_path))]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "error: RuntimeError: loading the CA failed: caused by FileNotFoundError: [Errno 2] No such file or"
        f" directory: '{tmp_path / 'missing.pem'}'"
    )


def test_the_fatal_line_never_shows_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.cli.validate
    from bridge.redact import register

    register("hostile-config-secret-7Qx")

    def fail(_args: object) -> int:
        raise RuntimeError("login failed with password hostile-config-secret-7Qx")

    monkeypatch.setattr(bridge.cli.validate, "run", fail)
    assert main(["validate", "-c", str(config_with(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert "hostile-config-secret-7Qx" not in err
    assert err.startswith("error: RuntimeError: login failed with password ")
