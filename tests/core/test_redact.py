"""Secret redaction: URL parameters and known secret values are scrubbed from every text that leaves the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.kafka.offsets import PartitionOffsets
from bridge.models import RecordMeta
from bridge.redact import MASK, Redactor, redact, register, settings_secrets
from bridge.settings import load_settings, parse_settings
from bridge.work import DeadLetter, PartitionState, RecordRef

# What aiohttp put into the error of a call answered with `HTTP/1.1 2OO OK` (the URL carries session and sign).
AIOHTTP_BAD_STATUS = (
    "retryable protocol: 400, message=\"Bad status line:\\n  Invalid status code:\\n\\n  b'HTTP/1.1 2OO OK'\", "
    "url='http://127.0.0.1:40985/router/rest?method=alibaba.campus.mc.message.sendmessagetomobile&app_key=k"
    "&v=2.0&format=json&sign_method=hmac-sha256&session=98765432109876&partner_id=campus-bridge"
    "&timestamp=2026-12-01+06%3A08%3A58&sign=BD9C16B8C0DF9122508F7818331C28F01591ABA0DBCA9BEE882B8BC521F73E04'"
)


def test_secret_url_parameters_are_scrubbed_whatever_their_value() -> None:
    out = Redactor()(AIOHTTP_BAD_STATUS)
    assert "98765432109876" not in out
    assert "BD9C16B8" not in out
    assert f"&session={MASK}&" in out
    assert f"&sign={MASK}'" in out
    # what is not a credential stays, so the error is still useful
    assert "sign_method=hmac-sha256" in out
    assert "app_key=k&" in out
    assert "Invalid status code" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /x?app_secret=abc HTTP/1.1", f"GET /x?app_secret={MASK} HTTP/1.1"),
        ("password=hunter2 and more", f"password={MASK} and more"),
        ("?SESSION=abc&x=1", f"?SESSION={MASK}&x=1"),
        ("a_session=abc", "a_session=abc"),
        ("sign_method=md5&signature=x", "sign_method=md5&signature=x"),
    ],
    ids=["app-secret", "password", "upper-case", "longer-name", "lookalikes"],
)
def test_which_parameters_count_as_secret(text: str, expected: str) -> None:
    assert Redactor()(text) == expected


def test_known_secret_values_are_scrubbed_as_written_and_url_encoded() -> None:
    scrub = Redactor(["s3cr3t value/+&", None, ""])
    text = "boom: s3cr3t value/+& or s3cr3t+value%2F%2B%26 or s3cr3t%20value%2F%2B%26"
    assert scrub(text) == f"boom: {MASK} or {MASK} or {MASK}"


def test_short_values_are_not_registered() -> None:
    scrub = Redactor(["abc"])
    assert scrub("abc abc") == "abc abc"


def test_a_longer_secret_containing_a_shorter_one_is_replaced_whole() -> None:
    scrub = Redactor(["secret-1", "secret-1-and-more"])
    assert scrub("x secret-1-and-more y") == f"x {MASK} y"


def test_nested_values_are_scrubbed() -> None:
    scrub = Redactor(["nested-secret"])
    value = {"a": ["nested-secret", {"b": ("url?session=1",)}], "n": 3}
    assert scrub.value(value) == {"a": [MASK, {"b": [f"url?session={MASK}"]}], "n": 3}


def test_settings_secrets_are_every_secret_of_a_config() -> None:
    settings = parse_settings(
        {
            "kafka": {
                "bootstrap_servers": "127.0.0.1:9092",
                "topics": ["t"],
                "security": {
                    "protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "PLAIN",
                    "sasl_username": "u",
                    "sasl_password": "kafka-pass-1",
                },
            },
            "gateway": {"app_key": "k", "app_secret": "app-secret-1", "session": "session-1"},
        },
        env={},
    )
    assert sorted(settings_secrets(settings)) == ["app-secret-1", "kafka-pass-1", "session-1"]


def _letter(message: str, extra: dict[str, str]) -> DeadLetter:
    part = PartitionState("t", 0, PartitionOffsets(0))
    ref = RecordRef(part, RecordMeta("t", 0, 5, 1_700_000_000_000), b"{}")
    return DeadLetter(ref, "retries_exhausted", message, extra_headers=extra)


def test_dead_letter_headers_carry_no_secret_but_keep_the_phone_number() -> None:
    register("registered-dlq-secret")
    letter = _letter(AIOHTTP_BAD_STATUS + " to 13800138000", {"bridge.note": "registered-dlq-secret"})
    headers = dict(letter.headers())
    assert b"98765432109876" not in headers["bridge.error"]
    assert b"BD9C16B8" not in headers["bridge.error"]
    assert b"13800138000" in headers["bridge.error"]  # the DLQ holds full numbers (documented)
    assert headers["bridge.note"] == MASK.encode()


def test_loading_a_config_teaches_the_process_redactor_its_secrets(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: '127.0.0.1:9092', topics: [t]}\n"
        "gateway: {app_key: k, app_secret: loaded-app-secret-77, session: loaded-session-77}\n"
    )
    assert redact("x loaded-app-secret-77 loaded-session-77 y") == "x loaded-app-secret-77 loaded-session-77 y"
    load_settings(config, env={})
    assert redact("x loaded-app-secret-77 loaded-session-77 y") == f"x {MASK} {MASK} y"
