"""`bridge check`'s Kafka findings, decided by pure functions: every metadata and ACL answer named (the
integration tests reach a real broker, which has no authorizer, so the refusals are tested here)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.checks import Status
from bridge.kafka.check import (
    READ,
    UNKNOWN_OPERATIONS,
    WRITE,
    TopicInfo,
    allows,
    assess_dead_letter,
    assess_deferred,
    assess_group,
    assess_pattern,
    assess_source,
)

ALL = (1 << READ) | (1 << WRITE) | (1 << 8)
NO_READ = (1 << WRITE) | (1 << 8)
NO_WRITE = (1 << READ) | (1 << 8)


@pytest.mark.parametrize(
    ("info", "status", "words"),
    [
        (TopicInfo("a", 0, 3, False, ALL), Status.OK, "3 partitions, READ allowed"),
        (TopicInfo("a", 0, 1, False, UNKNOWN_OPERATIONS), Status.OK, "READ permission not reported"),
        (TopicInfo("a", 0, 1, False, NO_READ), Status.FAIL, "READ NOT allowed: grant READ on the topic"),
        (TopicInfo("a", 3, 0, False), Status.FAIL, "does not exist (UNKNOWN_TOPIC_OR_PARTITION)"),
        (TopicInfo("a", 29, 0, False), Status.FAIL, "not authorized (TOPIC_AUTHORIZATION_FAILED)"),
        (TopicInfo("a", 5, 0, False), Status.FAIL, "metadata error LEADER_NOT_AVAILABLE"),
    ],
    ids=["readable", "not-reported", "no-read-acl", "missing", "no-describe-acl", "other-error"],
)
def test_source_topics(info: TopicInfo, status: Status, words: str) -> None:
    check = assess_source(info)
    assert check.name == "kafka topic a"
    assert check.status is status
    assert words in check.detail


@pytest.mark.parametrize(
    ("info", "auto_create", "status", "words"),
    [
        (TopicInfo("d", 0, 1, False, ALL), None, Status.OK, "1 partition, WRITE allowed"),
        (TopicInfo("d", 0, 1, False, NO_WRITE), None, Status.FAIL, "WRITE NOT allowed: grant WRITE on the topic"),
        (TopicInfo("d", 3, 0, False), True, Status.WARN, "the broker will create it on the first dead letter"),
        (TopicInfo("d", 3, 0, False), False, Status.FAIL, "does not exist (UNKNOWN_TOPIC_OR_PARTITION): create it"),
        (TopicInfo("d", 3, 0, False), None, Status.FAIL, "does not exist"),
        (TopicInfo("d", 29, 0, False), None, Status.FAIL, "TOPIC_AUTHORIZATION_FAILED): grant DESCRIBE and WRITE"),
    ],
    ids=["writable", "no-write-acl", "missing-auto-created", "missing", "missing-config-unreadable", "no-describe"],
)
def test_dead_letter_topic(info: TopicInfo, auto_create: bool | None, status: Status, words: str) -> None:
    check = assess_dead_letter(info, auto_create)
    assert check.name == "kafka dead-letter topic d"
    assert check.status is status
    assert words in check.detail


def group(code: int = 0, state: str = "Stable", members: int = 2, ops: int = ALL) -> dict[str, Any]:
    return {"error_code": code, "state": state, "members": [{}] * members, "authorized_operations": ops}


@pytest.mark.parametrize(
    ("described", "error", "status", "words"),
    [
        (group(), None, Status.OK, "state Stable, 2 members, READ allowed"),
        (group(state="Dead", members=0), None, Status.OK, "new (no offsets yet)"),
        (group(ops=NO_READ), None, Status.FAIL, "READ NOT allowed: grant READ on the group"),
        (group(code=30), None, Status.FAIL, "not authorized (GROUP_AUTHORIZATION_FAILED)"),
        (group(code=15), None, Status.FAIL, "COORDINATOR_NOT_AVAILABLE"),
        (None, "[Error 30] GroupAuthorizationFailedError", Status.FAIL, "cannot be described: [Error 30]"),
    ],
    ids=["stable", "new", "no-read-acl", "no-describe-acl", "no-coordinator", "refused-at-find-coordinator"],
)
def test_consumer_group(described: dict[str, Any] | None, error: str | None, status: Status, words: str) -> None:
    check = assess_group("g", described, error)
    assert check.name == "kafka group g"
    assert check.status is status
    assert words in check.detail


def test_topic_pattern_matches_like_the_consumer_and_flags_unreadable_matches() -> None:
    topics = [
        TopicInfo("campus.forum.events", 0, 3, False, ALL),
        TopicInfo("campus.course.events", 0, 3, False, NO_READ),
        TopicInfo("x.campus.events", 0, 1, False, ALL),  # re.match anchors at the start only
        TopicInfo("__consumer_offsets", 0, 1, True, ALL),
    ]
    checks = assess_pattern(r"campus\..*|__.*", topics)
    assert [(c.status, c.name) for c in checks] == [
        (Status.OK, r"kafka topic_pattern campus\..*|__.*"),
        (Status.FAIL, "kafka topic campus.course.events"),
    ]
    assert "matches 2: campus.forum.events, campus.course.events" in checks[0].detail
    assert assess_pattern("nothing", topics)[0].status is Status.FAIL


def test_allows_reads_the_bit_field() -> None:
    assert allows(ALL, WRITE) is True
    assert allows(NO_WRITE, WRITE) is False
    assert allows(UNKNOWN_OPERATIONS, WRITE) is None


@pytest.mark.parametrize(
    ("info", "status", "words"),
    [
        (TopicInfo("q", 0, 3, False, ALL), Status.OK, "3 partitions, WRITE and READ allowed"),
        (TopicInfo("q", 0, 1, False, UNKNOWN_OPERATIONS), Status.OK, "1 partition, permissions not reported"),
        (TopicInfo("q", 0, 1, False, NO_WRITE), Status.FAIL, "WRITE NOT allowed: grant WRITE on the topic"),
        (TopicInfo("q", 0, 1, False, NO_READ), Status.FAIL, "READ NOT allowed: grant READ on the topic"),
        (TopicInfo("q", 3, 0, False), Status.FAIL, "does not exist (UNKNOWN_TOPIC_OR_PARTITION): create it"),
        (TopicInfo("q", 29, 0, False), Status.FAIL, "TOPIC_AUTHORIZATION_FAILED): grant DESCRIBE and WRITE"),
    ],
    ids=["usable", "not-reported", "no-write-acl", "no-read-acl", "missing", "no-describe"],
)
def test_deferred_topic(info: TopicInfo, status: Status, words: str) -> None:
    check = assess_deferred(info)
    assert check.name == "kafka deferred topic q"
    assert (check.status, words in check.detail) == (status, True), check.detail
