"""Units of work: a record's completion reaches its partition's watermark; dead-letter headers."""

from __future__ import annotations

from bridge.kafka.offsets import PartitionOffsets
from bridge.models import RecordMeta
from bridge.work import DeadLetter, PartitionState, RecordRef

ORIGINAL = (("trace-id", b"abc"), ("content-type", b"application/json"), ("trace-id", b"repeated"))


def record(headers: tuple[tuple[str, bytes], ...] = ORIGINAL) -> RecordRef:
    offsets = PartitionOffsets(100)
    offsets.track(41, 2)
    part = PartitionState("campus.forum.events", 3, offsets)
    meta = RecordMeta("campus.forum.events", 3, 41, 1_700_000_000_123, key=b"k", headers=headers)
    return RecordRef(part, meta, b'{"a": 1}')


def test_record_completion_advances_the_partition_watermark() -> None:
    ref = record()
    ref.complete()
    assert ref.part.offsets.commit_point() == 41
    ref.complete()
    assert ref.part.offsets.commit_point() == 42


def test_dead_letter_headers_keep_the_originals_first_then_every_bridge_field() -> None:
    letter = DeadLetter(
        record=record(),
        reason="retries_exhausted",
        message="retryable http=503",
        rule="forum-reply",
        code=15,
        sub_code="isp.remote-service-error",
        attempts=12,
        first_attempt_ms=1_700_000_000_500,
        last_attempt_ms=1_700_000_060_000,
        msg_key="9c1f-uuid",
        payload=b'{"msg_key":"9c1f-uuid"}',
    )
    headers = letter.headers()
    assert tuple(headers[: len(ORIGINAL)]) == ORIGINAL
    assert headers[len(ORIGINAL) :] == [
        ("bridge.reason", b"retries_exhausted"),
        ("bridge.error", b"retryable http=503"),
        ("bridge.rule", b"forum-reply"),
        ("bridge.code", b"15"),
        ("bridge.sub_code", b"isp.remote-service-error"),
        ("bridge.attempts", b"12"),
        ("bridge.first_attempt_ms", b"1700000000500"),
        ("bridge.last_attempt_ms", b"1700000060000"),
        ("bridge.msg_key", b"9c1f-uuid"),
        ("bridge.source_topic", b"campus.forum.events"),
        ("bridge.source_partition", b"3"),
        ("bridge.source_offset", b"41"),
        ("bridge.source_timestamp_ms", b"1700000000123"),
        ("bridge.message", b'{"msg_key":"9c1f-uuid"}'),
    ]


def test_dead_letter_of_an_invalid_record_omits_the_fields_it_does_not_have() -> None:
    headers = DeadLetter(record(headers=()), "not_json", "not JSON: unexpected character").headers()
    assert dict(headers) == {
        "bridge.reason": b"not_json",
        "bridge.error": b"not JSON: unexpected character",
        "bridge.attempts": b"0",
        "bridge.source_topic": b"campus.forum.events",
        "bridge.source_partition": b"3",
        "bridge.source_offset": b"41",
        "bridge.source_timestamp_ms": b"1700000000123",
    }
    assert len(headers) == len(dict(headers))


def test_mapping_error_dead_letter_names_rule_and_field() -> None:
    headers = dict(DeadLetter(record(()), "mapping_error", "bad", rule="r7", field="mobile_receiver").headers())
    assert headers["bridge.rule"] == b"r7"
    assert headers["bridge.field"] == b"mobile_receiver"
    assert "bridge.code" not in headers


def test_code_zero_is_kept_not_treated_as_missing() -> None:
    headers = dict(DeadLetter(record(()), "rejected", "x", code=0, attempts=1).headers())
    assert headers["bridge.code"] == b"0"


def test_extra_headers_are_added_with_the_bridge_fields() -> None:
    letter = DeadLetter(record(()), "rejected", "x", extra_headers={"bridge.replay_count": "2"})
    headers = letter.headers()
    assert ("bridge.replay_count", b"2") in headers
    assert headers[-1] == ("bridge.replay_count", b"2")  # no payload: nothing after it
