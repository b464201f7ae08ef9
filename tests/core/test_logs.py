"""Log formatting: phone numbers masked, context fields carried, one JSON object a line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator

import orjson
import pytest

from bridge.logs import JsonFormatter, TextFormatter, mask_phone, mask_text, setup_logging


def make_record(msg: str, *args: object, ctx: object = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("gateway said no to 13812345678")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("bridge.delivery", logging.WARNING, __file__, 1, msg, args, exc_info)
    if ctx is not None:
        record.ctx = ctx
    return record


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+8613812345678", "+86****5678"),
        ("12345678", "123****5678"),
        ("1234567", "*******"),
        ("123", "***"),
        ("", ""),
        (None, None),
    ],
    ids=["mobile", "with-country-code", "eight-chars", "seven-chars", "short", "empty", "none"],
)
def test_mask_phone(value: str | None, masked: str | None) -> None:
    assert mask_phone(value) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("send to 13812345678 failed", "send to 138****5678 failed"),
        ("13812345678,13987654321", "138****5678,139****4321"),
        ("phone=13812345678&x=1", "phone=138****5678&x=1"),
        ("partition 3 offset 42 port 9092", "partition 3 offset 42 port 9092"),
        ("id 12345678", "id 12345678"),
        ("code 15 sub_code isv.invalid-parameter", "code 15 sub_code isv.invalid-parameter"),
    ],
    ids=["in-sentence", "two-numbers", "query-string", "small-numbers", "eight-digits", "no-digits"],
)
def test_mask_text_masks_every_phone_number_and_leaves_short_numbers(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_mask_text_hides_the_middle_of_a_number_with_country_code() -> None:
    masked = mask_text("tel:+8613812345678.")
    assert "13812345678" not in masked
    assert masked.startswith("tel:+86")
    assert masked.endswith("****5678.")


def test_json_formatter_writes_one_object_with_context_and_a_masked_message() -> None:
    ctx = {"topic": "campus.forum.events", "partition": 2, "offset": 17, "rule": "r1", "msg_key": "k-1"}
    line = JsonFormatter().format(make_record("rejected %s for %s", "message", "13812345678", ctx=ctx))
    assert "\n" not in line
    out = orjson.loads(line)
    assert out["msg"] == "rejected message for 138****5678"
    assert out["level"] == "warning"
    assert out["logger"] == "bridge.delivery"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["ts"])
    assert {k: out[k] for k in ctx} == ctx
    assert "13812345678" not in line


def test_json_formatter_renders_values_it_cannot_serialise_as_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    out = orjson.loads(JsonFormatter().format(make_record("x", ctx={"thing": Opaque()})))
    assert out["thing"] == "opaque!"


def test_json_formatter_ignores_a_context_that_is_not_a_mapping() -> None:
    out = orjson.loads(JsonFormatter().format(make_record("x", ctx="not a dict")))
    assert set(out) == {"ts", "level", "logger", "msg"}


def test_json_formatter_masks_phone_numbers_in_tracebacks() -> None:
    line = JsonFormatter().format(make_record("boom", exc=True))
    out = orjson.loads(line)
    assert "RuntimeError: gateway said no to 138****5678" in out["exc"]
    assert "13812345678" not in line


def test_text_formatter_masks_the_message_and_appends_context() -> None:
    line = TextFormatter().format(make_record("call to %s", "13812345678", ctx={"rule": "r1", "attempts": 2}))
    assert "WARNING" in line
    assert "bridge.delivery: call to 138****5678" in line
    assert line.endswith(" rule=r1 attempts=2")


@pytest.fixture
def restore_root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    aiokafka_level = logging.getLogger("aiokafka").level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("aiokafka").setLevel(aiokafka_level)


@pytest.mark.parametrize(("fmt", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)], ids=["json", "text"])
def test_setup_logging_installs_exactly_one_handler_with_the_chosen_format(
    restore_root_logger: logging.Logger, fmt: str, formatter: type[logging.Formatter]
) -> None:
    setup_logging("DEBUG", fmt)
    setup_logging("INFO", fmt)
    root = restore_root_logger
    assert len(root.handlers) == 1
    assert isinstance(root.handlers[0].formatter, formatter)
    assert root.level == logging.INFO
    assert logging.getLogger("aiokafka").level == logging.WARNING
