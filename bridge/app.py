"""Composition root of `bridge run`: build the parts, start them in order, stop them in reverse.

    status server ─ gateway client ─ delivery engine ─ dead-letter sink ─ pipeline ─ Kafka source
                                           └─ policy stage ─ deferred sink ─ deferred pipeline ─ its Kafka source
The second Kafka source (only with `kafka.deferred_topic`) reads the deferred topic in a consumer group of its
own (`kafka.deferred_group`): see `bridge.policy.deferred_pipeline` and docs/operating.md for why.

Start-up never fails for an outage: the status server answers first (/healthz 200, /readyz 503 with the
reason), then the dead-letter producer and the consumer connect in the background, retrying for as long as
the brokers are away. Only configuration errors end the process (exit 2, before this module runs).

Signals: SIGTERM/SIGINT → stop fetching → let in-flight calls finish within
`delivery.shutdown_timeout_seconds` → commit the finished prefix → close producer, consumer, HTTP session; a
second one exits at once (offsets not committed past what was finished: nothing is lost). SIGHUP reloads the
rules (see `bridge.reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine
from typing import Any

from bridge.delivery import DeliveryEngine, Sender
from bridge.flow.build import build_limiter
from bridge.gateway.client import TopClient
from bridge.kafka.dead_letter import DeadLetterSink
from bridge.kafka.deferred_sink import DeferredSink
from bridge.kafka.source import KafkaSource
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.policy.deferred_pipeline import DeferredPipeline
from bridge.policy.redis_store import build_policy_store
from bridge.policy.stage import PolicyStage
from bridge.reload import RuleReloader
from bridge.rules import RuleSet
from bridge.settings import Settings
from bridge.web import HttpLimits, StatusServer

log = logging.getLogger("bridge.app")


class BridgeApp:
    """One bridge process: Kafka → rules → gateway, with its status server."""

    def __init__(self, settings: Settings, rules: RuleSet, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(enabled=settings.metrics.enabled)
        self.metrics.prime(rules.ids)
        self.client = TopClient(settings.gateway, observer=self.metrics)
        self.dlq = DeadLetterSink(settings.kafka, self.metrics)
        self.limiter = build_limiter(settings, self.metrics)
        self.engine = DeliveryEngine(
            settings=settings.delivery,
            sender=self._sender(),
            dead_letters=self.dlq,
            metrics=self.metrics,
            limiter=self.limiter,
            batch_max=settings.gateway.batch.max_messages,
            batch_wait_seconds=settings.gateway.batch.max_wait_ms / 1000,
            on_pause=self._on_pause,
        )
        # notification hygiene (issue 15): rule policies, and the deferred topic they hold messages on
        self.metrics.prime_policies(rules.policies)
        deferred_topic = settings.kafka.deferred_topic
        self.deferred_sink = DeferredSink(settings.kafka, deferred_topic, self.metrics) if deferred_topic else None
        self.policy_stage = PolicyStage(
            store=build_policy_store(settings, self.metrics),
            engine=self.engine,
            deferred=self.deferred_sink,
            metrics=self.metrics,
        )
        self.pipeline = Pipeline(settings, rules, self.engine, self.metrics, policies=self.policy_stage)
        self.source = KafkaSource(settings, self.pipeline, self.metrics)
        self.deferred: DeferredPipeline | None = None
        self.deferred_source: KafkaSource | None = None
        if deferred_topic:
            self.deferred = DeferredPipeline(settings, lambda: self.pipeline.rules, self.engine, self.metrics)
            self.deferred_source = KafkaSource(
                settings,
                self.deferred,
                self.metrics.for_deferred_source(),
                topic=deferred_topic,
                group_id=settings.kafka.deferred_group,
            )
        self.reloader = RuleReloader(settings, rules, self.pipeline.swap_rules, self.metrics)
        self.status = StatusServer(
            self.metrics.registry,
            self.readiness,
            settings.metrics.listen,
            limits=HttpLimits.from_settings(settings.metrics),
            metrics=self.metrics,
        )
        self._stop = asyncio.Event()
        self._signals = 0
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def rules(self) -> RuleSet:
        """The rules in force (they change with a reload)."""
        return self.pipeline.rules

    def _sender(self) -> Sender:
        return self.client

    def _on_pause(self, reason: str | None) -> None:
        self.source.halt(reason)
        if self.deferred_source is not None:
            self.deferred_source.halt(reason)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when connected to Kafka and in the group, not held, and the dead-letter topic is usable."""
        reasons: list[str] = []
        source = self.source
        servers = self.settings.kafka.bootstrap_servers
        if not source.connected:
            if source.kafka_error:
                reasons.append(f"kafka unreachable ({servers}): {source.kafka_error}")
            else:
                reasons.append(f"connecting to kafka ({servers})")
        elif not source.assigned_once:
            reasons.append("joining the consumer group")
        silent = source.unreachable_for()
        if silent:
            reasons.append(f"kafka unreachable for {silent:.0f} s ({servers}): {source.kafka_error or 'no answer'}")
        hold = self.engine.hold
        if hold is not None and hold.kind == "systemic":
            reasons.append(f"paused: gateway systemic error ({hold.reason})")
        elif hold is not None:
            reasons.append("paused: circuit open, gateway unreachable")
        if self.dlq.problem is not None:
            reasons.append(f"dead-letter topic: {self.dlq.problem}")
        reasons += self._deferred_reasons()
        ok = not reasons
        self.metrics.ready.set(1 if ok else 0)
        detail: dict[str, object] = {
            "partitions": len(source.parts),
            "paused": hold.reason if hold is not None else None,
            "pause_cause": hold.cause if hold is not None else None,
            "cooling_down": self.engine.cooling_down,
            "rate_per_second": round(self.engine.effective_rate, 2),
        }
        if reasons:
            detail["reasons"] = reasons
        return ok, detail

    def _deferred_reasons(self) -> list[str]:
        """Why the deferred topic's side is not ready (nothing when there is no deferred topic)."""
        reasons = []
        if self.deferred_sink is not None and self.deferred_sink.problem is not None:
            reasons.append(f"deferred topic: {self.deferred_sink.problem}")
        source = self.deferred_source
        if source is not None and source.connected and not source.assigned_once:
            reasons.append("joining the deferred topic's consumer group")
        elif source is not None and not source.connected and self.source.connected:
            reasons.append("connecting the deferred topic's consumer")
        return reasons

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what the first signal does)."""
        self._stop.set()

    def _on_signal(self, signame: str) -> None:
        self._signals += 1
        if self._signals > 1:
            log.error("second signal: exiting at once", extra={"ctx": {"signal": signame}})
            os._exit(1)
        log.info("signal received: draining", extra={"ctx": {"signal": signame}})
        self.request_stop()

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading the rules", extra={"ctx": {"config": str(self.settings.source_path)}})
        self._spawn(self.reloader.reload("SIGHUP"), "reload")

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT → graceful stop (a second one → immediate exit); SIGHUP → reload the rules."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task failed", extra={"ctx": {"task": task.get_name(), "error": repr(task.exception())}}
            )

    async def run(self) -> int:
        """Run until asked to stop; return the process exit status."""
        m = self.metrics
        m.set_build_info()
        _warn_without_c_extensions()
        m.ready.set(0)
        if self.settings.metrics.enabled:
            await self.status.start()
        await self.client.start()
        await self.limiter.start()
        await self.engine.start()
        s = self.settings
        log.info(
            "campus-bridge starting",
            extra={
                "ctx": {
                    "topics": list(s.kafka.topics) or s.kafka.topic_pattern,
                    "group_id": s.kafka.group_id,
                    "bootstrap_servers": s.kafka.bootstrap_servers,
                    "rules": len(self.rules),
                    "gateway": s.gateway.url,
                    "metrics": s.metrics.listen if s.metrics.enabled else None,
                }
            },
        )
        self._spawn(self.dlq.run(self._stop), "dead-letter-connect")
        await self.policy_stage.start()
        if self.deferred_sink is not None:
            self._spawn(self.deferred_sink.run(self._stop), "deferred-connect")
        deferred_task: asyncio.Task[None] | None = None
        if self.deferred is not None and self.deferred_source is not None:
            self._spawn(self.deferred.run(), "deferred-due")
            deferred_task = asyncio.create_task(self._run_deferred_source(self.deferred_source), name="deferred")
        if s.rules.watch:
            self._spawn(self.reloader.watch(s.rules.watch_interval_seconds, self._stop), "rules-watch")
        source_task: asyncio.Task[None] | None = None
        try:
            if await self.source.connect(self._stop):
                log.info("campus-bridge running", extra={"ctx": {"group_id": s.kafka.group_id}})
                source_task = asyncio.create_task(self.source.run(), name="kafka-source")
                stop_task = asyncio.create_task(self._stop.wait())
                done, _ = await asyncio.wait({source_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                stop_task.cancel()
                if source_task in done and source_task.exception() is not None:
                    raise source_task.exception()  # type: ignore[misc]
        finally:
            await self._shutdown(source_task, deferred_task)
        return 0

    async def _run_deferred_source(self, source: KafkaSource) -> None:
        """Connect the deferred topic's consumer (retrying for as long as it takes) and fetch until stopped."""
        if await source.connect(self._stop):
            await source.run()

    async def _shutdown(self, *fetching: asyncio.Task[None] | None) -> None:
        started = time.monotonic()
        timeout = self.settings.delivery.shutdown_timeout_seconds
        self._stop.set()
        sources = [s for s in (self.source, self.deferred_source) if s is not None]
        for source in sources:
            source.stop_fetching()
        for task in fetching:
            if task is not None and not task.done():
                try:
                    await asyncio.wait_for(task, timeout=5)
                except (TimeoutError, asyncio.CancelledError):
                    task.cancel()
        deadline = time.monotonic() + timeout
        await self.policy_stage.stop(timeout)  # decisions and deferred writes under way finish first
        clean = await self.engine.stop(max(0.0, deadline - time.monotonic()))
        await self.limiter.stop()
        for source in sources:
            try:
                await source.close()
            except Exception:
                log.exception("closing a consumer failed")
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.dlq.stop()
        if self.deferred_sink is not None:
            await self.deferred_sink.stop()
        await self.client.close()
        await self.status.stop()
        log.info(
            "stopped",
            extra={
                "ctx": {
                    "seconds": round(time.monotonic() - started, 2),
                    "in_flight_finished": clean,
                    "unfinished_left_for_redelivery": self.engine.unfinished,
                }
            },
        )


def _warn_without_c_extensions() -> None:
    """aiokafka without its C extension decodes records ~6x slower: say so once at start."""
    from aiokafka.record import default_records

    if "_crecords" not in default_records.DefaultRecordBatch.__module__:
        log.warning(
            "aiokafka runs without its C extension (pure Python record decoding, several times slower); "
            "install a binary wheel of aiokafka for this platform"
        )
