"""The typed configuration (pydantic, frozen, extra=forbid) and its loader; the only reader of the environment.

A config file has the sections `kafka`, `gateway`, `delivery`, `rules`, `metrics` and `logging`. Only `kafka`
and `gateway` are required. String values may use `${VAR}` / `${VAR:-default}`. Secrets (`gateway.app_secret`,
`gateway.session`, `kafka.security.sasl_password`, `delivery.rate_limit.shared.password`) come from the
environment or from a `*_file` path and are masked in every repr, log line and `bridge config show`.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.errors import ConfigError, ConfigIssue
from bridge.redact import Redactor, redact, register, settings_secrets
from bridge.topics import consumed_by, topic_name_problem
from bridge.yamlsrc import Locator, MissingEnvError, YamlLoadError, dotted, expand_env, load_yaml

DEFAULT_CONFIG = "config/bridge.yaml"
CONFIG_ENV = "BRIDGE_CONFIG"

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


def _topic_name(value: str) -> str:
    problem = topic_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


TopicName = Annotated[str, AfterValidator(_topic_name)]

# The keys of the topics the bridge writes to. None may be a topic the bridge consumes (it would read its own
# output: one bad record in a consumed DLQ becomes a dead letter of a dead letter, forever). Add a key here when
# the bridge writes to a new topic; declare its field after `topics` and `topic_pattern`.
WRITTEN_TOPIC_KEYS = ("dead_letter_topic", "deferred_topic")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)


def readable_file(path: Path) -> Path:
    """`path` if it is a file this process can read; ValueError saying what is wrong otherwise.

    Relative paths are read from the working directory (as the daemon reads them), which the message says.
    """
    where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
    if not path.exists():
        raise ValueError(f"file {path} does not exist{where}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a file{where}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}{where}") from None
    return path


ReadableFile = Annotated[Path, AfterValidator(readable_file)]


def _read_secret_file(path: Path, key: str) -> SecretStr:
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ValueError(f"cannot read {key} from {path}: {exc.strerror or exc}") from exc


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class KafkaSecurity(_Model):
    """How to reach the brokers: plain, TLS, SASL (PLAIN / SCRAM) or both."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Transport security to the brokers."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism (required with SASL_*)."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password (secret; prefer `sasl_password_file` or `${VAR}`)."""
    sasl_password_file: ReadableFile | None = None
    """File holding the SASL password."""
    ssl_cafile: ReadableFile | None = None
    """CA bundle (PEM) to verify the brokers (default: system CAs)."""
    ssl_certfile: ReadableFile | None = None
    """Client certificate (PEM) for mutual TLS."""
    ssl_keyfile: ReadableFile | None = None
    """Private key (PEM, not encrypted) of the client certificate."""
    ssl_check_hostname: bool = True
    """Verify the broker's host name against its certificate."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.sasl_password_file is not None:
            if self.sasl_password is not None:
                raise ValueError("set sasl_password or sasl_password_file, not both")
            object.__setattr__(self, "sasl_password", _read_secret_file(self.sasl_password_file, "sasl_password"))
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"protocol {self.protocol} needs sasl_mechanism")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"protocol {self.protocol} needs sasl_username and sasl_password")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile is set without ssl_certfile")
        if self.protocol.endswith("SSL"):
            _check_tls_files(self)
        return self


def _check_tls_files(sec: KafkaSecurity) -> None:
    """Load the CA bundle and the client certificate and key as the daemon will: a bad file fails here."""
    context = ssl.create_default_context()
    if sec.ssl_cafile is not None:
        try:
            context.load_verify_locations(cafile=str(sec.ssl_cafile))
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"ssl_cafile {sec.ssl_cafile} is not a PEM CA bundle: {exc}") from None
    if sec.ssl_certfile is not None:
        key = str(sec.ssl_keyfile) if sec.ssl_keyfile else None
        try:  # a password prompt would hang a daemon: an encrypted key fails (the empty password is wrong)
            context.load_cert_chain(str(sec.ssl_certfile), key, password=b"")
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"ssl_certfile {sec.ssl_certfile} / ssl_keyfile {sec.ssl_keyfile or '(in the certfile)'}:"
                f" not a usable PEM certificate and unencrypted key: {exc}"
            ) from None


class KafkaSettings(_Model):
    """The source topics, the consumer group and the dead-letter topic."""

    bootstrap_servers: str
    """Comma-separated `host:port` list of brokers."""
    topics: list[TopicName] = Field(default_factory=list)
    """Topics to consume (or use `topic_pattern`)."""
    topic_pattern: str | None = None
    """Regular expression of topics to consume (instead of `topics`)."""
    group_id: str = "campus-bridge"
    """Consumer group; run more instances with the same id to scale out."""
    group_instance_id: str | None = None
    """Static membership id (unique per instance) for restarts without rebalance."""
    client_id: str = "campus-bridge"
    """Client id shown in broker logs and quotas."""
    auto_offset_reset: Literal["latest", "earliest"] = "latest"
    """Where a NEW group starts; `latest` avoids replaying history at users."""
    dead_letter_topic: TopicName = "campus-bridge.dlq"
    """Topic for records and messages that cannot be delivered."""
    deferred_topic: TopicName | None = None
    """Topic holding messages that rule policies deferred (quiet hours, limits) or gathered into digests until
    they are due; the bridge writes and reads it. Required by rules whose policies defer; null = none."""
    deferred_group_id: str | None = None
    """Consumer group that reads `deferred_topic` (default `<group_id>.deferred`): its own group, so rebalances
    of the source topics never move the deferred messages waiting in memory, and the other way round."""
    max_record_bytes: PositiveInt = 1_048_576
    """Records with a larger value are dead-lettered as `oversized`."""
    fetch_max_records: PositiveInt = 500
    """Records per `getmany()` batch."""
    max_pending_per_partition: PositiveInt = 10_000
    """Out-of-order window: unfinished records per partition before that partition is paused."""
    commit_interval_seconds: PositiveFloat = 1.0
    """How often finished offsets are committed."""
    commit_every_messages: Annotated[int, Field(ge=0, le=10_000_000)] = 1000
    """Also commit as soon as this many messages (or message-less records) became final since the last commit,
    at most every 0.1 s — so at high rates a crash re-sends at most about this many finished messages, not a
    whole interval's worth. 0 = commit on the interval only."""
    commit_metadata_max_bytes: Annotated[int, Field(ge=0, le=1_048_576)] = 4000
    """Byte budget of the commit metadata that lists finished records (and fan-out messages) above the
    committed offset, so a restart, rebalance or other instance skips them instead of sending again. Keep it
    at or below the brokers' `offset.metadata.max.bytes` (default 4096); what does not fit is left out and
    counted (`bridge_commit_metadata_overflow_total`). 0 = commit the offset alone."""
    session_timeout_ms: PositiveInt = 45_000
    """Group session timeout."""
    heartbeat_interval_ms: PositiveInt = 3_000
    """Group heartbeat interval."""
    max_poll_interval_ms: PositiveInt = 300_000
    """Longest gap between polls before the group evicts the member."""
    rebalance_drain_timeout_seconds: PositiveFloat = 10.0
    """On revoke, how long in-flight calls of those partitions may finish before commit."""
    connect_timeout_seconds: PositiveFloat = 15.0
    """Deadline of one attempt to reach the brokers; failed attempts are retried with capped backoff, forever."""
    unreachable_after_seconds: PositiveFloat = 15.0
    """Not ready (`/readyz` 503 "kafka unreachable") when no broker round trip succeeded for this long."""
    security: KafkaSecurity = KafkaSecurity()
    """TLS / SASL settings."""

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        for part in v.split(","):
            _host_port(part.strip())
        return v

    @field_validator("topic_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return v

    @field_validator(*WRITTEN_TOPIC_KEYS)
    @classmethod
    def _not_consumed(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if info.field_name == "deferred_topic" and v == info.data.get("dead_letter_topic"):
            raise ValueError("is the dead-letter topic: the deferred messages need a topic of their own")
        how = consumed_by(v, info.data.get("topics") or (), info.data.get("topic_pattern"))
        if how is not None:
            raise ValueError(
                f"the bridge writes to {v!r} and would also consume it: {how}; choose a name the consumed"
                " topics do not cover"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("set exactly one of topics (a list) or topic_pattern (a regex)")
        return self

    @property
    def deferred_group(self) -> str:
        """The consumer group of the deferred topic."""
        return self.deferred_group_id or f"{self.group_id}.deferred"


class BatchSettings(_Model):
    """TOP batch calls (`/router/batch`): several messages in one HTTP request, one result per message."""

    max_messages: int = Field(default=1, ge=1, le=50)
    """Messages per gateway request; 1 sends each message on its own (`/router/rest`), 2-50 use `/router/batch`."""
    max_wait_ms: float = Field(default=10.0, ge=0, le=10_000)
    """How long a batch that is not full may wait for more ready messages before it is sent."""


class GatewaySettings(_Model):
    """The TOP gateway: where to send, the app's credentials, how to sign."""

    url: str = "https://eco.taobao.com/router/rest"
    """TOP gateway endpoint (the simulator's URL for local runs)."""
    app_key: str = Field(min_length=1)
    """The TOP app key."""
    app_secret: SecretStr | None = None
    """The TOP app secret (secret: from `${VAR}`), or use `app_secret_file`."""
    app_secret_file: ReadableFile | None = None
    """File holding the app secret."""
    sign_method: Literal["md5", "hmac", "hmac-sha256"] = "hmac-sha256"
    """Signature method."""
    session: SecretStr | None = None
    """User session, only if the app needs one for this API."""
    partner_id: str | None = "campus-bridge"
    """`partner_id` system parameter (SDK identification)."""
    simplify: bool = False
    """Ask for the simplified (unwrapped) success envelope."""
    timeout_seconds: PositiveFloat = 5.0
    """Per-call timeout on the wire (connect, request, response; not the wait for a connection); retried."""
    max_connections: PositiveInt = 64
    """Pooled keep-alive HTTP connections to the gateway; calls beyond it wait for one (not timed)."""
    ssl_cafile: Path | None = None
    """CA bundle to verify the gateway's HTTPS certificate (default: the system CAs)."""
    batch: BatchSettings = BatchSettings()
    """Batch calls; the batch endpoint is `url` with its trailing `/router/rest` replaced by `/router/batch`."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"expected an absolute http(s) URL, got {v!r}")
        if "@" in v.split("/", 3)[2]:
            raise ValueError("credentials in the URL are not supported")
        return v

    @model_validator(mode="after")
    def _secret(self) -> Self:
        if self.app_secret_file is not None:
            if self.app_secret is not None:
                raise ValueError("set app_secret or app_secret_file, not both")
            object.__setattr__(self, "app_secret", _read_secret_file(self.app_secret_file, "app_secret"))
        if self.app_secret is None or not self.app_secret.get_secret_value():
            raise ValueError("app_secret is required (from the environment or app_secret_file)")
        return self

    @model_validator(mode="after")
    def _batch_endpoint(self) -> Self:
        if self.batch.max_messages > 1 and not self.url.split("?", 1)[0].endswith("/router/rest"):
            raise ValueError("batch.max_messages > 1 needs a url whose path ends with /router/rest")
        return self

    def secret(self) -> str:
        """The app secret in clear, for signing only."""
        assert self.app_secret is not None
        return self.app_secret.get_secret_value()


class AdaptiveRate(_Model):
    """How the rate recovers after a gateway ban (code 7): halve, then climb back step by step."""

    enabled: bool = True
    """Resume below the rate after a ban and climb back (off: resume at the configured rate and burst)."""
    decrease: float = Field(default=0.5, gt=0, lt=1)
    """Factor applied to the current rate on each ban."""
    step_fraction: float = Field(default=0.1, gt=0, le=1)
    """Share of the configured rate added back per ban-free interval."""
    interval_seconds: PositiveFloat = 10.0
    """Ban-free time between two steps up."""
    min_per_second: PositiveFloat = 1.0
    """The rate never drops below this."""


class RedisConnection(_Model):
    """How to reach a Redis server."""

    redis_url: str
    """`redis://host:port/db` or `rediss://` (TLS); the password goes in `password`, not in the URL."""
    username: str | None = None
    """Redis ACL user name (Redis 6+), if the server uses ACLs."""
    password: SecretStr | None = None
    """Redis password (secret: from `${VAR}`), or use `password_file`."""
    password_file: Path | None = None
    """File holding the Redis password."""
    ssl_cafile: Path | None = None
    """CA bundle to verify the server with `rediss://` (default: system CAs)."""

    @field_validator("redis_url")
    @classmethod
    def _url(cls, v: str) -> str:
        m = re.match(r"^(rediss?)://(?:([^@/]*)@)?([^/?#\s]+)", v)
        if not m:
            raise ValueError("expected redis://host:port[/db] or rediss://host:port[/db]")
        if m.group(2) is not None and ":" in m.group(2):
            raise ValueError("put the password in `password` (from ${VAR}) or `password_file`, not in redis_url")
        return v

    @model_validator(mode="after")
    def _password(self) -> Self:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("set password or password_file, not both")
            object.__setattr__(self, "password", _read_secret_file(self.password_file, "password"))
        return self


class SharedQuotaSettings(RedisConnection):
    """One gateway quota shared by every instance through Redis (GCRA in a Lua script, leases, shared bans)."""

    key_prefix: str | None = Field(default=None, min_length=1)
    """Prefix of the Redis keys; instances with the same prefix share one quota. Default `campus-bridge:<app key>`."""
    lease: int = Field(default=5, ge=1, le=1000)
    """Tokens taken per Redis round trip; unused ones expire after their slot (`lease / per_second`)."""
    timeout_ms: int = Field(default=250, ge=1, le=60_000)
    """Longest wait for one Redis round trip before falling back to the local limit (degraded mode)."""
    expected_instances: int | None = Field(default=None, ge=1)
    """Divisor of `per_second` in degraded mode; default: the live-instance count last seen in Redis."""


class PolicyStateSettings(_Model):
    """Where the rules' policies keep their counters, de-duplication keys and digest windows (docs/rules.md)."""

    store: Literal["memory", "redis"] = "memory"
    """`memory`: in this process (one instance, lost on restart); `redis`: shared by every instance with the same
    `key_prefix`, kept across restarts — use it when several instances may notify the same recipient."""
    redis: RedisConnection | None = None
    """The Redis server of `store: redis`; default: the connection of `delivery.rate_limit.shared`."""
    key_prefix: str | None = Field(default=None, min_length=1)
    """Prefix of the Redis keys; instances with the same prefix share caps, dedupe keys and digest windows.
    Default `campus-bridge:<kafka.group_id>:policy`."""
    timeout_ms: int = Field(default=250, ge=1, le=60_000)
    """Longest wait for one Redis decision before deciding with this process's own state (degraded mode)."""


class RateLimit(_Model):
    """Calls per second to the gateway: for this process, or for the whole app key when `shared` is set."""

    per_second: float = Field(default=100.0, ge=0)
    """Gateway calls per second (0 = unlimited): this process's, or all instances' together with `shared`."""
    burst: int = Field(default=20, ge=1)
    """Calls allowed at once above the steady rate."""
    adaptive: AdaptiveRate = AdaptiveRate()
    """Recovery after a ban: the burst is 1 and the rate climbs back from half (see the gauge
    `bridge_rate_limit_effective_per_second`)."""
    shared: SharedQuotaSettings | None = None
    """Share `per_second` and gateway bans among all instances through Redis (null = a per-process limit)."""


class RetrySettings(_Model):
    """Exponential backoff with full jitter for transient failures."""

    max_attempts: PositiveInt = 12
    """Attempts before a transiently failing message is dead-lettered."""
    initial_backoff_seconds: PositiveFloat = 0.5
    """First retry delay ceiling (full jitter)."""
    max_backoff_seconds: PositiveFloat = 60.0
    """Largest retry delay ceiling."""
    max_age_seconds: PositiveFloat = 3600.0
    """Dead-letter a message still failing this long after its first attempt."""

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must be >= initial_backoff_seconds")
        return self


class PauseSettings(_Model):
    """Probing while paused on a systemic gateway error (bad credentials, clock, permissions)."""

    initial_probe_seconds: PositiveFloat = 5.0
    """First delay between probes while paused on a systemic error."""
    max_probe_seconds: PositiveFloat = 300.0
    """Largest delay between probes."""


class CircuitSettings(_Model):
    """The circuit breaker on the gateway as a whole: shared transport failures pause delivery, not the DLQ."""

    enabled: bool = True
    """Pause (and probe) when the gateway is unreachable instead of retrying every message to exhaustion."""
    window_seconds: PositiveFloat = 30.0
    """Sliding window the failure ratio is computed over."""
    min_calls: PositiveInt = 20
    """Calls needed in the window before the ratio may open the circuit."""
    failure_ratio: float = Field(default=0.8, gt=0, le=1)
    """Share of transport failures (connection, DNS, TLS, timeout, HTTP 5xx, bad body) that opens it."""
    consecutive_failures: PositiveInt = 5
    """Transport failures in a row (nothing answered in between) that open it, whatever the volume."""
    initial_probe_interval_seconds: PositiveFloat = 1.0
    """First wait before probing the gateway with one message while open."""
    max_probe_interval_seconds: PositiveFloat = 60.0
    """Probe interval cap (it doubles after each failed probe)."""
    resume_in_flight: PositiveInt = 4
    """After the circuit closes (or a systemic pause ends), calls in flight start here and double per round
    trip up to `max_in_flight`: delivery resumes from a small burst."""

    @model_validator(mode="after")
    def _probe_order(self) -> Self:
        if self.max_probe_interval_seconds < self.initial_probe_interval_seconds:
            raise ValueError("max_probe_interval_seconds must be >= initial_probe_interval_seconds")
        return self


class DeliverySettings(_Model):
    """Concurrency, ordering, rate limit, retries and shutdown of delivery."""

    max_in_flight: PositiveInt = 256
    """Gateway calls under way at once, all partitions together."""
    ordering: Literal["recipient", "partition", "none"] = "recipient"
    """Keep source order per recipient, per partition, or not at all."""
    rate_limit: RateLimit = RateLimit()
    """Client-side rate limit (GCRA), per process or shared by all instances through Redis."""
    retry: RetrySettings = RetrySettings()
    """Retries of transient failures."""
    pause: PauseSettings = PauseSettings()
    """Probing while paused."""
    circuit: CircuitSettings = CircuitSettings()
    """Circuit breaker: pause on a gateway outage; time while open counts against no retry budget."""
    skip_older_than_seconds: float | None = Field(default=86400.0, ge=0)
    """Events older than this (Kafka timestamp) are skipped and counted; null = never."""
    shutdown_timeout_seconds: PositiveFloat = 30.0
    """On SIGTERM, how long in-flight calls may finish."""
    policy_state: PolicyStateSettings = PolicyStateSettings()
    """Where rule policies (quiet hours, limit, dedupe, digest) keep their state."""

    @model_validator(mode="after")
    def _policy_redis(self) -> Self:
        if self.policy_state.store == "redis" and self.policy_state.redis is None and self.rate_limit.shared is None:
            raise ValueError(
                "policy_state.store: redis needs policy_state.redis (redis_url …) or delivery.rate_limit.shared"
            )
        return self


class RulesSettings(_Model):
    """Where the mapping rules are, and rule-wide options. A plain list is taken as `inline`."""

    rule_files: list[str] = Field(default_factory=list)
    """Globs of rule files, relative to the config file."""
    inline: list[dict[str, Any]] = Field(default_factory=list)
    """Rules written in the config itself."""
    msg_key: Literal["deterministic", "random"] = "deterministic"
    """`deterministic`: UUIDv5 of record and rule (redeliveries de-duplicate); `random`: UUIDv4."""
    mobile_receiver_pattern: str = r"^\+?[0-9]{5,20}$"
    """A rendered `mobile_receiver` must match this."""
    watch: bool = False
    """Reload the rules when the config file or a rule file changes (mtime polling); SIGHUP always reloads."""
    watch_interval_seconds: PositiveFloat = 5.0
    """How often `watch` looks at the files."""

    @model_validator(mode="before")
    @classmethod
    def _list_is_inline(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"inline": data}
        return data

    @field_validator("mobile_receiver_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return v


class MetricsSettings(_Model):
    """The daemon's HTTP endpoints: /metrics, /healthz, /readyz."""

    enabled: bool = True
    """Serve the endpoints and count metrics."""
    listen: str = "0.0.0.0:9464"
    """Address of /metrics, /healthz, /readyz."""
    max_connections: PositiveInt = 100
    """Connections at once; beyond that, the one idle longest is closed (scrape floods cannot starve delivery)."""
    request_timeout_seconds: PositiveFloat = 5.0
    """A request must arrive, and its response be read, within this time (slow clients are cut off)."""
    idle_timeout_seconds: PositiveFloat = 60.0
    """An idle keep-alive connection is closed after this time (keep it above the scrape interval)."""
    cache_seconds: float = Field(default=0.25, ge=0)
    """/metrics is rendered at most once per this interval; scrapes in between get the same text."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return _host_port(v)


class LoggingSettings(_Model):
    """Log level and format (one JSON object a line, or text for humans)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    format: Literal["json", "text"] = "json"
    """One JSON object a line, or text."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class Settings(_Model):
    """The whole configuration of one bridge process."""

    kafka: KafkaSettings
    """Source topics, consumer group, dead-letter topic."""
    gateway: GatewaySettings
    """The TOP gateway and credentials."""
    delivery: DeliverySettings = DeliverySettings()
    """Concurrency, ordering, rate limit, retries, shutdown."""
    rules: RulesSettings = RulesSettings()
    """Mapping rules (a plain list is taken as `inline`)."""
    metrics: MetricsSettings = MetricsSettings()
    """HTTP endpoints."""
    logging: LoggingSettings = LoggingSettings()
    """Logging."""

    # Where the file was; rule_files globs are relative to its folder. Not a config key.
    source_path: Path | None = Field(default=None, exclude=True, repr=False)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the config are resolved against."""
        return self.source_path.parent if self.source_path is not None else Path.cwd()


def _secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Key paths of every secret field (typed SecretStr) of `model` and of the sections inside it."""
    found: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        args = get_args(info.annotation) or (info.annotation,)
        if SecretStr in args:
            found.add((*prefix, name))
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found |= _secret_paths(arg, (*prefix, name))
    return found


# Key paths of the secret fields: their inputs are never echoed in errors, their values scrubbed from output.
SECRET_PATHS = frozenset(_secret_paths(Settings))


def config_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """-c/--config wins, then $BRIDGE_CONFIG, then config/bridge.yaml."""
    env = os.environ if env is None else env
    return Path(explicit or env.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _secret_inputs(data: Any) -> list[str]:
    """The values given for secret fields in raw config data, whatever their type (to scrub from errors)."""
    found = []
    for path in SECRET_PATHS:
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, dict | list):
            found.append(str(value))
    return found


def _issues_from_validation(file: str, exc: ValidationError, locator: Locator) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        if err["type"] not in {"missing", "extra_forbidden"} and "input" in err:
            given = err["input"]
            # a secret, or a URL that may carry one
            secret = any(loc[: len(path)] == path for path in SECRET_PATHS) or loc[-1:] == ("redis_url",)
            if not isinstance(given, dict | list) and len(repr(given)) < 60 and not secret and f"{given!r}" not in msg:
                msg = f"{msg} (got {given!r})"
        issues.append(ConfigIssue(file, dotted(loc), msg, locator.line(loc)))
    return issues


def parse_settings(
    data: Any, *, file: str = "<config>", locator: Locator | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Validate already-parsed YAML data (env expansion included) into Settings, or raise ConfigError."""
    locator = locator or Locator()
    env = os.environ if env is None else env
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(file, "", "the config must be a YAML mapping with sections", 1)])
    try:
        expanded = expand_env(data, env)
    except MissingEnvError as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    file,
                    dotted(path),
                    f"environment variable {name} is {'empty' if name in env else 'not set'}",
                    locator.line(path),
                )
                for name, path in exc.missing
            ]
        ) from None
    source = Path(file) if file != "<config>" else None
    try:
        return Settings.model_validate({**expanded, "source_path": source})
    except ValidationError as exc:
        scrub = Redactor(_secret_inputs(expanded))
        issues = _issues_from_validation(file, exc, locator)
        raise ConfigError([replace(i, message=redact(scrub(i.message))) for i in issues]) from None


def load_settings(path: Path | str, env: Mapping[str, str] | None = None) -> Settings:
    """Read, expand and validate a config file; raise ConfigError naming file, key path and line."""
    path = Path(path)
    try:
        data, locator = load_yaml(path)
    except YamlLoadError as exc:
        raise ConfigError([ConfigIssue(str(path), "", exc.message, exc.line)]) from None
    if isinstance(data, dict) and "source_path" in data:
        raise ConfigError([ConfigIssue(str(path), "source_path", "unknown key", locator.line(("source_path",)))])
    settings = parse_settings(data, file=str(path), locator=locator, env=env)
    register(*settings_secrets(settings))  # every output boundary scrubs them from now on (bridge.redact)
    return settings


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced by `********`."""

    def mask(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "********"
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    raw = settings.model_dump(mode="python", exclude={"source_path"})
    return {k: mask(v) for k, v in raw.items()}
