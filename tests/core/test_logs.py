"""Log formatting: phone numbers masked, context fields carried, one JSON object a line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.logs import JsonFormatter, TextFormatter, mask_phone, mask_text, setup_logging
from bridge.redact import register


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


# ------------------------------------------------------------------ mainland mobile numbers in any writing
@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("dead letter: 138 0013 8000 refused", "dead letter: 138****8000 refused"),
        ("138-0013-8000", "138****8000"),
        ("138.0013.8000", "138****8000"),
        ("+86 138 0013 8000", "+86 138****8000"),
        ("+86-13800138000", "+86-138****8000"),
        ("0086 138-0013-8000", "0086 138****8000"),
        ("(+86) 138 0013 8000", "(+86) 138****8000"),
        ("tel:+8613800138000;", "tel:+86138****8000;"),
        ("1 3 8 0 0 1 3 8 0 0 0", "138****8000"),
        ("138 - 0013 - 8000", "138****8000"),
        ("手机138 0013 8000。", "手机138****8000。"),
        ("192.168.113.138 port 9092", "192.168.113.138 port 9092"),
        ("2026-12-01 06:08:58", "2026-12-01 06:08:58"),
        ("12 0013 8000", "12 0013 8000"),
    ],
    ids=[
        "spaces",
        "dashes",
        "dots",
        "plus86-spaces",
        "plus86-dash",
        "0086",
        "parenthesised-86",
        "plus86-glued",
        "every-digit-apart",
        "spaced-dashes",
        "chinese-text",
        "ip-address",
        "timestamp",
        "ten-digits",
    ],
)
def test_mask_text_masks_mainland_mobiles_written_with_separators_and_prefixes(text: str, masked: str) -> None:
    assert mask_text(text) == masked


MOBILES = st.builds(
    lambda second, rest: f"1{second}{rest}",
    st.sampled_from("3456789"),
    st.text(alphabet="0123456789", min_size=9, max_size=9),
)
PREFIXES = st.sampled_from(["", "+86", "+86 ", "+86-", "0086", "0086 ", "0086-", "(+86) ", "(86)"])
SEPARATORS = st.sampled_from(["", " ", "-", ".", "  ", " - "])


@st.composite
def written_mobiles(draw: st.DrawFn) -> tuple[str, str, str]:
    """(digits, prefix, the number as written): grouped 3-4-4, or with a separator between any digits."""
    digits = draw(MOBILES)
    prefix = draw(PREFIXES)
    if draw(st.booleans()):
        sep = draw(SEPARATORS)
        body = sep.join((digits[:3], digits[3:7], digits[7:]))
    else:
        body = digits[0] + "".join(draw(st.sampled_from(["", " ", "-", "."])) + d for d in digits[1:])
    return digits, prefix, prefix + body


NO_DIGITS = st.text(alphabet=st.characters(exclude_categories=("Nd", "Cs")), max_size=30)
EDGE = st.characters(exclude_categories=("Nd", "Cs"))


@settings(max_examples=300, deadline=None)
@given(mobile=written_mobiles(), before=NO_DIGITS, after=NO_DIGITS)
def test_property_a_mobile_in_text_without_other_digits_is_masked_exactly(
    mobile: tuple[str, str, str], before: str, after: str
) -> None:
    digits, prefix, written = mobile
    assert mask_text(before + written + after) == f"{before}{prefix}{digits[:3]}****{digits[-4:]}{after}"


@settings(max_examples=300, deadline=None)
@given(
    mobile=written_mobiles(),
    before=st.tuples(st.text(max_size=20), EDGE).map("".join),
    after=st.tuples(EDGE, st.text(max_size=20)).map("".join),
    depth=st.integers(min_value=0, max_value=3),
    as_exception=st.booleans(),
)
def test_property_no_mobile_survives_in_any_log_field_or_nesting(
    mobile: tuple[str, str, str], before: str, after: str, depth: int, as_exception: bool
) -> None:
    digits, _prefix, written = mobile
    text = before + written + after
    value: object = text
    for level in range(depth):
        value = {"level": level, "items": [value]} if level % 2 else [value]
    record = make_record("gateway answered: %s", text, ctx={"error": text, "cause": value, "msg_key": "k"})
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert written not in line
        assert digits not in line
        assert digits[3:7] + digits[7:] not in line.replace(" ", "").replace("-", "").replace(".", "")
    if as_exception:
        try:
            raise RuntimeError(text)
        except RuntimeError:
            record = make_record("boom")
            record.exc_info = sys.exc_info()
        assert written not in JsonFormatter().format(record)


def test_nested_integers_that_are_mobiles_are_masked_but_top_level_numbers_stay() -> None:
    ctx = {"offset": 13800138000, "event": {"phone": 13800138000, "count": 3, "ok": True}}
    out = orjson.loads(JsonFormatter().format(make_record("x", ctx=ctx)))
    assert out["offset"] == 13800138000  # our own coordinates are numbers, not free text
    assert out["event"] == {"phone": "138****8000", "count": 3, "ok": True}


def test_log_lines_carry_no_secret_from_error_texts_or_urls() -> None:
    register("log-line-secret-1")
    url = "http://gw/router/rest?app_key=k&session=98765432109876&sign=ABCDEF0123"
    ctx = {"cause": f"protocol error, url='{url}'", "nested": {"e": ["log-line-secret-1"]}}
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(make_record("call failed: %s", url, ctx=ctx))
        assert "98765432109876" not in line
        assert "ABCDEF0123" not in line
        assert "log-line-secret-1" not in line
        assert "app_key=k" in line
