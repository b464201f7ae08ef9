"""Every Prometheus collector of the bridge, in one container with an injected registry.

Names are `bridge_` prefixed, in base units; labels are bounded (rule ids, outcome classes, top-level codes,
sub_code families, topics and assigned partitions — never a phone number, msg_key or event id). Labelled
children on hot paths are cached. Methods are named after what happened, not after the collector.
"""

from __future__ import annotations

import contextlib
import copy
import platform
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from math import isnan
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bridge import __version__

if TYPE_CHECKING:
    from bridge.rules.policies import RulePolicy

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUOTA_OPS = ("lease", "ban", "beat", "leave", "load")  # round trips of the shared quota to Redis
HTTP_CLOSE_REASONS = ("limit", "request_timeout", "write_timeout", "idle_timeout", "bad_request")
# dead letters of notification hygiene: a deferred-topic record that cannot be read; a message the deferred
# topic refuses as too large (even a digest item without its event)
POLICY_DEAD_LETTER_REASONS = ("invalid_deferred", "deferral_too_large")
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class _Null:
    """Stands in for a collector or a labelled child when metrics are disabled."""

    _metrics: dict[Any, Any] = {}  # noqa: RUF012 - read-only, always empty

    def labels(self, *args: Any, **kwargs: Any) -> _Null:
        return self

    def inc(self, amount: float = 1) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def observe(self, value: float) -> None:
        return None

    def remove(self, *labels: Any) -> None:
        return None

    def set_function(self, f: Any) -> None:
        return None


_NULL: Any = _Null()


class Metrics:
    """The bridge's collectors. Create one per process (or per test, with a fresh registry)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, enabled: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.enabled = enabled
        r = self.registry
        # Hot-path children buffer their updates (see _Tally, _Samples); registered before every collector,
        # this applies them at the start of each collection (scrape, get_sample_value), so readers see all.
        self._buffered: list[_Tally | _Samples] = []
        r.register(_Flush(self._buffered))
        self.build_info = Gauge(
            "bridge_build_info", "Build information (always 1).", ["version", "python", "aiokafka"], registry=r
        )
        self.records_consumed = Counter(
            "bridge_records_consumed_total", "Kafka records fetched, by topic.", ["topic"], registry=r
        )
        self.records_invalid = Counter(
            "bridge_records_invalid_total",
            "Records that could not be decoded into an event object, by reason.",
            ["reason"],
            registry=r,
        )
        self.events_unmatched = Counter(
            "bridge_events_unmatched_total", "Events no rule applied to, by topic.", ["topic"], registry=r
        )
        self.rule_matches = Counter(
            "bridge_rule_matches_total", "Events a rule matched (topic and `when`).", ["rule"], registry=r
        )
        self.fanout_empty = Counter(
            "bridge_fanout_empty_total", "Matched events whose for_each gave no element.", ["rule"], registry=r
        )
        self.mapping_errors = Counter(
            "bridge_mapping_errors_total",
            "Messages a rule could not render, by field.",
            ["rule", "field"],
            registry=r,
        )
        self.messages = Counter(
            "bridge_messages_total",
            "Messages reaching a final state, by rule and outcome (delivered, dead_lettered, skipped_stale).",
            ["rule", "outcome"],
            registry=r,
        )
        self.gateway_requests = Counter(
            "bridge_gateway_requests_total",
            "Gateway calls by outcome class, top-level code and sub_code family.",
            ["verdict", "code", "sub_code_family"],
            registry=r,
        )
        self.gateway_duration = Histogram(
            "bridge_gateway_request_duration_seconds",
            "Gateway call duration, by outcome class.",
            ["verdict"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_delivery = Histogram(
            "bridge_event_to_delivery_seconds",
            "Kafka record timestamp to gateway acceptance, by rule.",
            ["rule"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "bridge_retries_total", "Messages scheduled for another attempt, by reason.", ["reason"], registry=r
        )
        self.dead_letters = Counter(
            "bridge_dead_letters_total",
            "Records written to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.dead_letter_failures = Counter(
            "bridge_dead_letter_publish_failures_total",
            "Failed attempts to write to the dead-letter topic (retried; offsets wait).",
            registry=r,
        )
        self.in_flight = Gauge("bridge_in_flight_messages", "Gateway calls under way.", registry=r)
        self.queued = Gauge("bridge_queued_messages", "Messages accepted from Kafka and not yet final.", registry=r)
        self.rate_limit_wait = Histogram(
            "bridge_rate_limit_wait_seconds",
            "Time a call waited for the rate limiter (and any cool-down).",
            buckets=(0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.rate_limit_per_second = Gauge(
            "bridge_rate_limit_per_second", "Configured gateway call rate (0 = unlimited).", registry=r
        )
        self.rate_limit_effective = Gauge(
            "bridge_rate_limit_effective_per_second",
            "Gateway call rate in force now: below the configured one while recovering from a ban (0 = unlimited).",
            registry=r,
        )
        self.throttle_active = Gauge(
            "bridge_throttle_cooldown_active",
            "1 while a gateway ban (a call-limit answer) holds every sender.",
            registry=r,
        )
        self.throttle_bans = Counter(
            "bridge_throttle_bans_total", "Gateway bans (call-limit answers) seen.", registry=r
        )
        self.paused = Gauge(
            "bridge_paused",
            "1 while delivery is paused on a systemic gateway error, by reason.",
            ["reason"],
            registry=r,
        )
        self.ready = Gauge("bridge_ready", "1 when /readyz answers 200.", registry=r)
        # --- circuit breaker on the gateway (issue 10)
        self.circuit_state = Gauge(
            "bridge_circuit_state",
            "1 while the circuit is open (the gateway is unreachable: delivery paused, probing), else 0.",
            registry=r,
        )
        self.circuit_openings = Counter(
            "bridge_circuit_openings_total", "Times the circuit opened on shared transport failures.", registry=r
        )
        # --- rule reloads (SIGHUP / rules.watch)
        self.rules_reloads = Counter(
            "bridge_rules_reload_total",
            "Rule reloads, by result (ok, failed: the old rules stay).",
            ["result"],
            registry=r,
        )
        self.rules_loaded = Gauge("bridge_rules_loaded", "Rules in force.", registry=r)
        self.gateway_batch_size = Histogram(
            "bridge_gateway_batch_size",
            "Messages per gateway batch request (batching on).",
            buckets=(1, 2, 5, 10, 20, 30, 40, 50),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "bridge_consumer_lag_messages",
            "High watermark minus committed offset, per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.oldest_age = Gauge(
            "bridge_oldest_unfinished_age_seconds",
            "Age (from its Kafka timestamp) of the oldest unfinished record, per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "bridge_committed_offset",
            "Last committed offset, per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.partition_window = Gauge(
            "bridge_partition_pending_records",
            "Records held in the out-of-order window, per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.partition_paused = Gauge(
            "bridge_partition_paused",
            "1 while fetching from a partition is paused for back-pressure.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge("bridge_assigned_partitions", "Partitions this instance holds.", registry=r)
        self.rebalances = Counter(
            "bridge_rebalances_total", "Partition assignments and revocations.", ["kind"], registry=r
        )
        self.commits = Counter("bridge_commits_total", "Offset commits, by result.", ["result"], registry=r)
        # --- shared quota (delivery.rate_limit.shared): one app quota for all instances, through Redis
        self.quota_degraded = Gauge(
            "bridge_shared_quota_degraded",
            "1 while Redis is unreachable and this instance uses its local share of the quota.",
            registry=r,
        )
        self.quota_leases = Counter(
            "bridge_shared_quota_leases_total", "Leases of tokens taken from the shared quota.", registry=r
        )
        self.quota_leased_tokens = Counter(
            "bridge_shared_quota_leased_tokens_total", "Tokens taken from the shared quota.", registry=r
        )
        self.quota_expired_tokens = Counter(
            "bridge_shared_quota_expired_tokens_total",
            "Leased tokens that expired unused (given back to nobody: the slot passed).",
            registry=r,
        )
        self.quota_redis_duration = Histogram(
            "bridge_shared_quota_redis_duration_seconds",
            "Round trips to Redis for the shared quota, by operation (lease, ban, beat = heartbeat, ...).",
            ["op"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.quota_redis_errors = Counter(
            "bridge_shared_quota_redis_errors_total",
            "Failed or timed-out round trips to Redis, by operation.",
            ["op"],
            registry=r,
        )
        self.quota_instances = Gauge(
            "bridge_shared_quota_instances", "Live instances sharing the quota, as last seen in Redis.", registry=r
        )
        self.quota_remote_bans = Counter(
            "bridge_shared_quota_remote_bans_total",
            "Gateway bans started by another instance and honoured here.",
            registry=r,
        )
        # --- restart without re-sending (issue 14): finished records remembered in the commit metadata
        self.records_skipped = Counter(
            "bridge_records_skipped_total",
            "Records not mapped or sent because the commit metadata marked them finished, by reason.",
            ["reason"],
            registry=r,
        )
        self.messages_skipped = Counter(
            "bridge_messages_skipped_total",
            "Fan-out messages not sent again because the commit metadata marked them final, by reason.",
            ["reason"],
            registry=r,
        )
        self.commit_metadata_overflow = Counter(
            "bridge_commit_metadata_overflow_total",
            "Partition commits whose finished-record picture did not fit kafka.commit_metadata_max_bytes "
            "(the part that fits was kept; records left out may be sent again after a restart).",
            registry=r,
        )
        self.commit_metadata_bytes = Gauge(
            "bridge_commit_metadata_bytes",
            "Size of the metadata of the last commit, per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        # Rule authoring aids: templates whose path resolved to missing (typos in optional fields show up here).
        self.template_missing_total = Counter(
            "bridge_template_missing_total",
            "Events mapped with a field whose whole-{{ expr }} template resolved to missing (absent key), by rule"
            " and field (json_data keys as json_data.KEY).",
            ["rule", "field"],
            registry=r,
        )
        # --- gateway HTTP requests vs messages (batch calls, issue 11): one request may carry 1..50 messages
        self.gateway_http_requests = Counter(
            "bridge_gateway_http_requests_total",
            "HTTP requests sent to the gateway, by endpoint (rest: one message, batch: several).",
            ["endpoint"],
            registry=r,
        )
        # HTTP endpoints (issue 10, item 8): connections the status server closed on its own.
        self.http_connections_closed = Counter(
            "bridge_http_connections_closed_total",
            "Connections to /metrics, /healthz, /readyz closed by the bridge, by reason (limit: too many"
            " connections; request_timeout, write_timeout: slow client; idle_timeout; bad_request).",
            ["reason"],
            registry=r,
        )
        # --- notification hygiene (issue 15): rule policies, the deferred topic, the policy state in Redis
        self.policy_outcomes = Counter(
            "bridge_policy_total",
            "Verdicts of rule policies, by rule, policy (dedupe, quiet_hours, limit, digest) and action (pass, drop,"
            " defer, digest, fold; digests when sent: summary, single, fallback).",
            ["rule", "policy", "action"],
            registry=r,
        )
        self.policy_state_degraded = Gauge(
            "bridge_policy_state_degraded",
            "1 while Redis is unusable and policies decide with this instance's own counters and windows.",
            registry=r,
        )
        self.policy_state_errors = Counter(
            "bridge_policy_state_errors_total",
            "Policy decisions Redis failed or did not answer in time (decided in this process instead).",
            registry=r,
        )
        self.deferred_waiting = Gauge(
            "bridge_deferred_waiting_messages",
            "Deferred messages and digest items read from the deferred topic, waiting until they are due.",
            registry=r,
        )
        self.deferred_overdue = Gauge(
            "bridge_deferred_overdue_seconds",
            "How long the most overdue waiting deferred message has been due (0 when none is): stays near 0.",
            registry=r,
        )
        self.deferred_write_failures = Counter(
            "bridge_deferred_write_failures_total",
            "Failed attempts to write to the deferred topic (retried; the source record's offset waits).",
            registry=r,
        )
        self.deferred_assigned_partitions = Gauge(
            "bridge_deferred_assigned_partitions", "Partitions of the deferred topic this instance holds.", registry=r
        )
        if not enabled:  # `metrics.enabled: false`: every collector becomes a no-op (also for benchmarks)
            for name, value in list(vars(self).items()):
                if isinstance(value, Counter | Gauge | Histogram):
                    setattr(self, name, _NULL)
        self._msg_children: dict[tuple[str, str], Any] = {}
        self._gw_children: dict[tuple[str, str, str], Any] = {}
        self._dur_children: dict[str, Any] = {}
        self._e2e_children: dict[str, Any] = {}
        self._consumed_children: dict[str, Any] = {}
        self._match_children: dict[str, Any] = {}
        self._quota_children: dict[str, Any] = {}
        self._missing_children: dict[tuple[str, str], Any] = {}
        self._http_children: dict[str, Any] = {}
        self._policy_children: dict[tuple[str, str, str], Any] = {}
        self._limiter_wait = self._buffer(_Samples(self.rate_limit_wait))

    def _buffer(self, wrapper: _B) -> _B:
        self._buffered.append(wrapper)
        return wrapper

    def prime(self, rules: tuple[str, ...] | list[str]) -> None:
        """Create the known label sets at 0, so the first event of each is visible to rate()/increase()."""
        from bridge.kafka.codec import InvalidReason

        for invalid in InvalidReason:
            self.records_invalid.labels(invalid.value)
            self.dead_letters.labels(invalid.value)
        for reason in ("mapping_error", "rejected", "retries_exhausted", "max_age", *POLICY_DEAD_LETTER_REASONS):
            self.dead_letters.labels(reason)
        for reason in HTTP_CLOSE_REASONS:
            self.http_connections_closed.labels(reason)
        for rule in rules:
            for outcome in ("delivered", "dead_lettered", "skipped_stale", "dropped_by_policy"):
                self.messages.labels(rule, outcome)
            self.rule_matches.labels(rule)
            self.event_to_delivery.labels(rule)
        for kind in ("assigned", "revoked"):
            self.rebalances.labels(kind)
        for result in ("ok", "failed"):
            self.commits.labels(result)
        self.records_skipped.labels("already_finished")
        self.messages_skipped.labels("already_finished")
        self.retries.labels("throttled")
        for endpoint in ("rest", "batch"):
            self.gateway_http_requests.labels(endpoint)
        for result in ("ok", "failed"):
            self.rules_reloads.labels(result)

    def prime_quota(self) -> None:
        """Create the shared quota's per-operation series at 0 (only when the shared quota is in use)."""
        for op in QUOTA_OPS:
            self.quota_redis_duration.labels(op)
            self.quota_redis_errors.labels(op)

    def set_build_info(self) -> None:
        """Publish version, Python and aiokafka versions."""
        try:
            import aiokafka

            akv = str(aiokafka.__version__)
        except ImportError:  # pragma: no cover
            akv = "none"
        self.build_info.labels(__version__, platform.python_version(), akv).set(1)

    def record_consumed(self, topic: str, n: int = 1) -> None:
        """Records fetched from `topic`."""
        child = self._consumed_children.get(topic)
        if child is None:
            child = self._consumed_children[topic] = self.records_consumed.labels(topic)
        child.inc(n)

    def rule_matched(self, rule: str) -> None:
        """An event matched a rule."""
        child = self._match_children.get(rule)
        if child is None:
            child = self._match_children[rule] = self._buffer(_Tally(self.rule_matches.labels(rule)))
        child.inc()

    def template_missing(self, rule: str, field: str) -> None:
        """An event was mapped by `rule` with `field`'s template resolved to missing (`MapResult.missing`)."""
        key = (rule, field)
        child = self._missing_children.get(key)
        if child is None:
            child = self._missing_children[key] = self.template_missing_total.labels(rule, field)
        child.inc()

    def message_final(self, rule: str, outcome: str) -> None:
        """A message reached a final state."""
        self._final(rule, outcome).inc()

    def _final(self, rule: str, outcome: str) -> _Tally:
        key = (rule, outcome)
        child = self._msg_children.get(key)
        if child is None:
            child = self._msg_children[key] = self._buffer(_Tally(self.messages.labels(rule, outcome)))
        return child

    def gateway_call(self, verdict: str, code: str, sub_family: str, seconds: float) -> None:
        """One gateway call finished."""
        calls, durations = self._gateway_children(verdict, code, sub_family)
        calls.inc()
        durations.observe(seconds)

    def _gateway_children(self, verdict: str, code: str, sub_family: str) -> tuple[_Tally, _Samples]:
        key = (verdict, code, sub_family)
        calls = self._gw_children.get(key)
        if calls is None:
            calls = self._gw_children[key] = self._buffer(
                _Tally(self.gateway_requests.labels(verdict, code, sub_family))
            )
        durations = self._dur_children.get(verdict)
        if durations is None:
            durations = self._dur_children[verdict] = self._buffer(_Samples(self.gateway_duration.labels(verdict)))
        return calls, durations

    def gateway_http_request(self, endpoint: str) -> None:
        """One HTTP request to the gateway's `endpoint`: "rest" (one message) or "batch" (several).

        The TopClient calls it for every request it sends (pass the Metrics as its `observer`), so requests
        the client adds on its own (a 400/413 batch halved, a batch of one sent to /router/rest) count too.
        """
        child = self._http_children.get(endpoint)
        if child is None:
            child = self._http_children[endpoint] = self._buffer(_Tally(self.gateway_http_requests.labels(endpoint)))
        child.inc()

    def gateway_batch(self, size: int) -> None:
        """The engine sent a batch of `size` messages (one `send_batch` call)."""
        self.gateway_batch_size.observe(size)

    def delivered_after(self, rule: str, seconds: float) -> None:
        """Event-to-delivery latency of one delivered message."""
        self._e2e(rule).observe(max(0.0, seconds))

    def _e2e(self, rule: str) -> _Samples:
        child = self._e2e_children.get(rule)
        if child is None:
            child = self._e2e_children[rule] = self._buffer(_Samples(self.event_to_delivery.labels(rule)))
        return child

    def limiter_waited(self, seconds: float) -> None:
        """A call (or a batch) waited `seconds` for the rate limiter."""
        self._limiter_wait.observe(seconds)

    def quota_round_trip(self, op: str, seconds: float) -> None:
        """One round trip of the shared quota to Redis succeeded."""
        child = self._quota_children.get(op)
        if child is None:
            child = self._quota_children[op] = self.quota_redis_duration.labels(op)
        child.observe(seconds)

    def quota_round_trip_failed(self, op: str) -> None:
        """A round trip of the shared quota to Redis failed or timed out (not on a hot path)."""
        self.quota_redis_errors.labels(op).inc()

    # --- notification hygiene (issue 15)
    def policy_step(self, rule: str, policy: str, action: str) -> None:
        """A policy of `rule` gave its verdict `action` on a message (or a digest was sent)."""
        key = (rule, policy, action)
        child = self._policy_children.get(key)
        if child is None:
            child = self._policy_children[key] = self.policy_outcomes.labels(rule, policy, action)
        child.inc()

    def prime_policies(self, policies: dict[str, RulePolicy]) -> None:
        """Create each rule's policy verdicts at 0 (so the first one is visible to rate()/increase())."""
        for rule, policy in policies.items():
            for name, actions in policy_actions(policy):
                for action in actions:
                    self.policy_outcomes.labels(rule, name, action)

    def for_deferred_source(self) -> Metrics:
        """The metrics the deferred topic's consumer updates: its partitions are no source lag (records wait
        there until due, on purpose), so the per-partition gauges and rebalance counts are left out, and its
        assigned partitions have a gauge of their own."""
        view = copy.copy(self)
        for name in (
            "consumer_lag",
            "oldest_age",
            "committed_offset",
            "partition_window",
            "partition_paused",
            "commit_metadata_bytes",
            "rebalances",
        ):
            setattr(view, name, _NULL)
        view.assigned_partitions = self.deferred_assigned_partitions
        return view

    def set_paused(self, reason: str | None) -> None:
        """Systemic pause on (with its reason) or off."""
        for labels in list(self.paused._metrics):
            self.paused.labels(*labels).set(0)
        if reason is not None:
            self.paused.labels(reason).set(1)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series when a partition is revoked (keeps label sets bounded)."""
        labels = (topic, str(partition))
        for g in (
            self.consumer_lag,
            self.oldest_age,
            self.committed_offset,
            self.partition_window,
            self.partition_paused,
            self.commit_metadata_bytes,
        ):
            with contextlib.suppress(KeyError):
                g.remove(*labels)


def observe_many(child: Any, values: Sequence[float]) -> None:
    """`child.observe(v)` for every v of `values`, with one increment per touched bucket and one of the sum
    (prometheus_client takes a lock per increment: two per observation). Falls back to `observe` per value
    for anything that is not a prometheus_client histogram child (the disabled-metrics stand-in)."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 2:
        for v in values:
            child.observe(v)
        return
    counts: dict[int, int] = {}
    for v in values:
        if isnan(v):  # Histogram.observe counts it in no bucket
            continue
        i = bisect_left(bounds, v)  # the first bound >= v, as Histogram.observe picks it
        counts[i] = counts.get(i, 0) + 1
    total.inc(sum(values))
    for i, c in counts.items():
        buckets[i].inc(c)


FLUSH_AT = 256  # observations a hot-path histogram child keeps before applying them (also at every collection)


class _Tally:
    """A hot-path counter child: increments are added up here and applied in one `inc` per flush.

    prometheus_client takes a lock per increment; the bridge updates several children per message, all from
    the event loop's thread (scrapes are served by the same loop), so a plain float is enough.
    """

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1) -> None:
        """Count `amount` more."""
        self.pending += amount

    def flush(self) -> None:
        """Apply what was counted since the last flush."""
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.child.inc(amount)


class _Samples:
    """A hot-path histogram child: observations wait in a list and are applied with `observe_many`."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        """Observe one value."""
        pending = self.pending
        pending.append(value)
        if len(pending) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Apply the waiting observations."""
        if self.pending:
            values, self.pending = self.pending, []
            observe_many(self.child, values)


_B = TypeVar("_B", _Tally, _Samples)


class _Flush(Collector):
    """Registered first: every collection of the registry begins by applying the buffered updates."""

    def __init__(self, buffered: list[_Tally | _Samples]) -> None:
        self._buffered = buffered

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        for wrapper in self._buffered:
            wrapper.flush()
        return []


def policy_actions(policy: RulePolicy) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(policy, the verdicts it can give) for each policy a rule has."""
    if policy.dedupe is not None:
        yield "dedupe", ("pass", "drop")
    if policy.quiet_hours is not None:
        yield "quiet_hours", ("pass", policy.quiet_hours.action)
    if policy.limit is not None:
        yield "limit", ("pass", policy.limit.over)
    if policy.digest is not None:
        yield "digest", ("fold", "summary", "single", "fallback")
