"""`bridge check`'s Kafka probes: the brokers answer, the source topics exist and may be read, the consumer group
can be described (and joined), the dead-letter topic exists and may be written, and (with `deferred_topic`) the
deferred topic exists and may be written and read, and its consumer group joined. Nothing is consumed or written.

Permissions are read, not tried: a Metadata request v8 (KIP-430) asks the broker which operations this
client's principal may perform on each topic (READ on the sources, WRITE on the dead-letter topic), and
DescribeGroups v3+ does the same for the group. A broker without an authorizer reports every operation as
allowed; one too old for these versions leaves them unknown, which the checks say. The metadata requests never
create a topic (`allow_auto_topic_creation` false). Protocol error codes are named as Kafka names them
(`UNKNOWN_TOPIC_OR_PARTITION`, `TOPIC_AUTHORIZATION_FAILED`, `GROUP_AUTHORIZATION_FAILED` …).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.metadata import MetadataRequest_v5
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from bridge.checks import Check, Status
from bridge.kafka.client_options import connection_options
from bridge.redact import redact
from bridge.settings import KafkaSettings

# ACL operations (org.apache.kafka.common.acl.AclOperation codes), as bits of an "authorized operations" field.
READ: Final = 3
WRITE: Final = 4
DESCRIBE: Final = 8
UNKNOWN_OPERATIONS: Final = -(2**31)  # the field's value when the broker did not (or could not) fill it in
OK_CODE: Final = 0
UNKNOWN_TOPIC: Final = 3
TOPIC_AUTHORIZATION_FAILED: Final = 29
GROUP_AUTHORIZATION_FAILED: Final = 30
RETRY_SECONDS: Final = 0.2


class _MetadataResponseV8(Response):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class AuthorizedMetadata(Request[MetadataRequest_v5 | _MetadataRequestV8]):  # type: ignore[misc]
    """Metadata of `topics` (None: all) with the operations this client may perform on each; never creates one.

    Sent as v8 when the broker supports it, else v5 (then without authorized operations).
    """

    API_KEY = 3

    def __init__(self, topics: list[str] | None) -> None:
        self._topics = topics

    def build(self, request_struct_class: Any) -> Any:
        """The request struct of the negotiated version."""
        if request_struct_class.API_VERSION >= 8:
            return request_struct_class(self._topics, False, False, True)
        return request_struct_class(self._topics, False)


class _DescribeGroupsRequestV3(RequestStruct):  # type: ignore[misc]  # aiokafka ships no type information
    # aiokafka's own v3 struct decodes the answer as v2 and so drops `authorized_operations`.
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class AuthorizedDescribeGroups(Request[_DescribeGroupsRequestV3]):  # type: ignore[misc]
    """DescribeGroups v3 with the operations this client may perform on each group."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: Any) -> Any:
        """The request struct (v3 only: brokers from Kafka 2.3 on)."""
        return request_struct_class(self._groups, True)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """One topic's metadata as the probes need it."""

    name: str
    error_code: int
    partitions: int
    internal: bool
    operations: int = UNKNOWN_OPERATIONS


def error_name(code: int) -> str:
    """Kafka's name of a protocol error code (`UNKNOWN_TOPIC_OR_PARTITION`)."""
    return str(getattr(for_code(code), "message", f"error {code}"))


def allows(operations: int, operation: int) -> bool | None:
    """Whether an authorized-operations field allows `operation`; None when the broker did not say."""
    if operations == UNKNOWN_OPERATIONS:
        return None
    return bool(operations & (1 << operation))


def topics_of(response: Any) -> list[TopicInfo]:
    """The topics of a metadata response (v5 or v8)."""
    out = []
    for t in response.to_object()["topics"]:
        out.append(
            TopicInfo(
                name=t["topic"],
                error_code=t["error_code"],
                partitions=len(t["partitions"]),
                internal=bool(t["is_internal"]),
                operations=t.get("topic_authorized_operations", UNKNOWN_OPERATIONS),
            )
        )
    return out


def _permission(operations: int, operation: int, what: str) -> tuple[Status, str]:
    allowed = allows(operations, operation)
    if allowed is None:
        return Status.OK, f"{what} permission not reported by the broker"
    return (Status.OK, f"{what} allowed") if allowed else (Status.FAIL, f"{what} NOT allowed")


def _assess_topic(name: str, info: TopicInfo, operation: int, what: str, missing: str) -> Check:
    """A topic the bridge uses: it exists (else `missing`), and this principal may do `operation` on it."""
    if info.error_code == UNKNOWN_TOPIC:
        return Check(name, Status.FAIL, f"does not exist ({error_name(info.error_code)}){missing}")
    if info.error_code == TOPIC_AUTHORIZATION_FAILED:
        reason = f"not authorized ({error_name(info.error_code)}): grant DESCRIBE and {what} on it"
        return Check(name, Status.FAIL, reason)
    if info.error_code != OK_CODE:
        return Check(name, Status.FAIL, f"metadata error {error_name(info.error_code)}")
    status, permission = _permission(info.operations, operation, what)
    detail = f"{info.partitions} partition{'s' if info.partitions != 1 else ''}, {permission}"
    return Check(name, status, detail + ("" if status is Status.OK else f": grant {what} on the topic"))


def assess_source(info: TopicInfo) -> Check:
    """A consumed topic: it exists and this principal may read it (pure)."""
    return _assess_topic(f"kafka topic {info.name}", info, READ, "READ", "")


def assess_pattern(pattern: str, topics: Sequence[TopicInfo]) -> list[Check]:
    """`topic_pattern`: the topics it matches now, as aiokafka matches them (`re.match`, internal topics out)."""
    regex = re.compile(pattern)
    matched = [t for t in topics if not t.internal and regex.match(t.name)]
    if not matched:
        return [Check(f"kafka topic_pattern {pattern}", Status.FAIL, "matches no topic this principal can see")]
    names = ", ".join(t.name for t in matched[:5]) + (" …" if len(matched) > 5 else "")
    checks = [Check(f"kafka topic_pattern {pattern}", Status.OK, f"matches {len(matched)}: {names}")]
    return checks + [c for c in map(assess_source, matched) if c.status is not Status.OK]


def assess_dead_letter(info: TopicInfo, auto_create: bool | None) -> Check:
    """The dead-letter topic: it exists and this principal may write it (pure).

    `auto_create` is the broker's `auto.create.topics.enable` (None: could not be read).
    """
    name = f"kafka dead-letter topic {info.name}"
    if info.error_code == UNKNOWN_TOPIC and auto_create:
        return Check(
            name,
            Status.WARN,
            "does not exist yet: the broker will create it on the first dead letter, with its default"
            " partitions and retention; better create it yourself",
        )
    return _assess_topic(name, info, WRITE, "WRITE", ": create it")


def assess_deferred(info: TopicInfo) -> Check:
    """The deferred topic (rule policies hold messages there): it exists, and this principal may write and read
    it (pure). A missing one is a failure even where the broker would create it: its retention must outlast the
    longest hold, which a broker default may not."""
    name = f"kafka deferred topic {info.name}"
    for operation, what in ((WRITE, "WRITE"), (READ, "READ")):
        check = _assess_topic(name, info, operation, what, ": create it (docs/deployment.md, 'The deferred topic')")
        if check.status is not Status.OK:
            return check
    partitions = f"{info.partitions} partition{'s' if info.partitions != 1 else ''}"
    reported = allows(info.operations, WRITE) is not None
    return Check(
        name,
        Status.OK,
        f"{partitions}, " + ("WRITE and READ allowed" if reported else "permissions not reported by the broker"),
    )


def assess_group(group_id: str, described: dict[str, Any] | None, error: str | None) -> Check:
    """The consumer group: it can be described, and joined (READ) (pure)."""
    name = f"kafka group {group_id}"
    if error is not None:
        return Check(name, Status.FAIL, f"cannot be described: {error}")
    assert described is not None
    code = described["error_code"]
    if code == GROUP_AUTHORIZATION_FAILED:
        return Check(name, Status.FAIL, f"not authorized ({error_name(code)}): grant READ on the group")
    if code != OK_CODE:
        return Check(name, Status.FAIL, f"cannot be described ({error_name(code)})")
    state, members = described["state"], len(described["members"])
    plural = "s" if members != 1 else ""
    what = "new (no offsets yet)" if state == "Dead" else f"state {state}, {members} member{plural}"
    status, permission = _permission(described.get("authorized_operations", UNKNOWN_OPERATIONS), READ, "READ")
    return Check(name, status, f"{what}, {permission}" + ("" if status is Status.OK else ": grant READ on the group"))


def _failure(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact(text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}")


async def probe(settings: KafkaSettings, *, timeout_seconds: float = 10.0) -> list[Check]:
    """Every Kafka probe for this config, in order; never raises (except CancelledError)."""
    options = connection_options(settings)
    timeout_ms = int(timeout_seconds * 1000)
    client = AIOKafkaClient(**options, request_timeout_ms=timeout_ms)
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=timeout_ms)
    checks: list[Check] = []
    try:
        try:
            async with asyncio.timeout(timeout_seconds):
                await client.bootstrap()
                await admin.start()
        except Exception as exc:
            where = settings.bootstrap_servers
            checks.append(Check("kafka connection", Status.FAIL, f"{where}: {_failure(exc)}"))
            return [*checks, Check("kafka topics, group, dead-letter topic", Status.SKIP, "no connection")]
        brokers = client.cluster.brokers()
        checks.append(
            Check("kafka connection", Status.OK, f"{settings.bootstrap_servers} ({len(brokers)} broker(s) in metadata)")
        )
        async with asyncio.timeout(timeout_seconds * 3):
            checks += await _topics(client, settings)
            checks.append(await _group(client, admin, settings.group_id))
            checks.append(await _dead_letter(client, admin, settings.dead_letter_topic))
            if settings.deferred_topic is not None:
                checks.append(await _deferred(client, settings.deferred_topic))
                checks.append(await _group(client, admin, settings.deferred_group))
    except TimeoutError:
        checks.append(Check("kafka", Status.FAIL, f"no answer within {timeout_seconds:g} s"))
    finally:
        await asyncio.gather(client.close(), admin.close(), return_exceptions=True)
    return checks


async def _metadata(client: AIOKafkaClient, topics: list[str] | None) -> list[TopicInfo]:
    return topics_of(await client.send(client.get_random_node(), AuthorizedMetadata(topics)))


async def _topics(client: AIOKafkaClient, settings: KafkaSettings) -> list[Check]:
    try:
        if settings.topic_pattern:
            return assess_pattern(settings.topic_pattern, await _metadata(client, None))
        return [assess_source(info) for info in await _metadata(client, list(settings.topics))]
    except Exception as exc:
        return [Check("kafka topics", Status.FAIL, f"metadata request failed: {_failure(exc)}")]


async def _group(client: AIOKafkaClient, admin: AIOKafkaAdminClient, group_id: str) -> Check:
    """Describe the group at its coordinator; a coordinator still starting up (a fresh cluster creates its
    offsets topic on the first request) is asked again until the probe's deadline."""
    while True:
        try:
            node_id = await admin.find_coordinator(group_id)
            response = await client.send(node_id, AuthorizedDescribeGroups([group_id]))
            groups = [g for g in response.to_object()["groups"] if g["group"] == group_id]
            if groups and not _retriable(groups[0]["error_code"]):
                return assess_group(group_id, groups[0], None)
        except Exception as exc:
            if not getattr(exc, "retriable", False):
                return assess_group(group_id, None, _failure(exc))
        await asyncio.sleep(RETRY_SECONDS)


def _retriable(code: int) -> bool:
    return code != OK_CODE and bool(getattr(for_code(code), "retriable", False))


async def _dead_letter(client: AIOKafkaClient, admin: AIOKafkaAdminClient, topic: str) -> Check:
    try:
        (info,) = await _metadata(client, [topic])
    except Exception as exc:
        return Check(f"kafka dead-letter topic {topic}", Status.FAIL, f"metadata request failed: {_failure(exc)}")
    auto_create = None
    if info.error_code == UNKNOWN_TOPIC:
        auto_create = await _broker_auto_creates(admin, client.get_random_node())
    return assess_dead_letter(info, auto_create)


async def _deferred(client: AIOKafkaClient, topic: str) -> Check:
    try:
        (info,) = await _metadata(client, [topic])
    except Exception as exc:
        return Check(f"kafka deferred topic {topic}", Status.FAIL, f"metadata request failed: {_failure(exc)}")
    return assess_deferred(info)


async def _broker_auto_creates(admin: AIOKafkaAdminClient, node_id: int) -> bool | None:
    """The broker's `auto.create.topics.enable`, or None when it cannot be read (no DESCRIBE_CONFIGS)."""
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(node_id))])
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "auto.create.topics.enable":
                    return str(entry["config_value"]).lower() == "true"
    except Exception:  # no permission or an old broker: the check says "does not exist" without the hint
        return None
    return None
