"""Composition root of `bridge run`: build the parts, start them in order, stop them in reverse.

    status server ─ gateway client ─ dead-letter sink ─ delivery engine ─ Kafka source
Shutdown (first SIGTERM/SIGINT): stop fetching → let in-flight calls finish within
`delivery.shutdown_timeout_seconds` → commit the finished prefix → close producer, consumer, HTTP session.
A second signal exits at once (offsets not committed past what was finished: nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from bridge.delivery import DeliveryEngine, Sender
from bridge.gateway.client import TopClient
from bridge.kafka.dead_letter import DeadLetterSink
from bridge.kafka.source import KafkaSource
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.rules import RuleSet
from bridge.settings import Settings
from bridge.web import StatusServer

log = logging.getLogger("bridge.app")


class BridgeApp:
    """One bridge process: Kafka → rules → gateway, with its status server."""

    def __init__(self, settings: Settings, rules: RuleSet, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics or Metrics(enabled=settings.metrics.enabled)
        self.metrics.prime(rules.ids)
        self.client = TopClient(settings.gateway)
        self.dlq = DeadLetterSink(settings.kafka, self.metrics)
        self.engine = DeliveryEngine(
            settings=settings.delivery,
            sender=self._sender(),
            dead_letters=self.dlq,
            metrics=self.metrics,
            on_pause=self._on_pause,
        )
        self.pipeline = Pipeline(settings, rules, self.engine, self.metrics)
        self.source = KafkaSource(settings, self.pipeline, self.metrics)
        self.status = StatusServer(self.metrics.registry, self.readiness, settings.metrics.listen)
        self._stop = asyncio.Event()
        self._signals = 0
        self._started = False

    def _sender(self) -> Sender:
        return self.client

    def _on_pause(self, reason: str | None) -> None:
        self.source.halt(reason)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when consuming normally, not paused on a systemic error, and the DLQ producer is up."""
        reasons: list[str] = []
        if not self._started:
            reasons.append("starting")
        hold = self.engine.hold
        if hold is not None and hold.kind == "systemic":
            reasons.append(f"paused: gateway systemic error ({hold.reason}): {hold.cause}")
        elif hold is not None:
            reasons.append(f"paused: circuit open, gateway unreachable ({hold.cause})")
        if not self.dlq.healthy:
            reasons.append("dead-letter producer not connected")
        if self._started and not self.source.fetch_ok and not self.source.assigned_once:
            reasons.append("consumer not connected")
        ok = not reasons
        self.metrics.ready.set(1 if ok else 0)
        detail: dict[str, object] = {
            "partitions": len(self.source.parts),
            "paused": hold.reason if hold is not None else None,
            "cooling_down": self.engine.cooling_down,
            "rate_per_second": round(self.engine.effective_rate, 2),
        }
        if reasons:
            detail["reasons"] = reasons
        return ok, detail

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

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT → graceful stop; a second one → immediate exit."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig.name)

    async def run(self) -> int:
        """Run until asked to stop; return the process exit status."""
        m = self.metrics
        m.set_build_info()
        _warn_without_c_extensions()
        m.ready.set(0)
        if self.settings.metrics.enabled:
            await self.status.start()
        await self.client.start()
        source_task: asyncio.Task[None] | None = None
        try:
            await self.dlq.start()
            await self.engine.start()
            await self.source.start()
            self._started = True
            log.info(
                "campus-bridge running",
                extra={
                    "ctx": {
                        "topics": list(self.settings.kafka.topics) or self.settings.kafka.topic_pattern,
                        "group_id": self.settings.kafka.group_id,
                        "rules": len(self.rules),
                        "gateway": self.settings.gateway.url,
                        "metrics": self.settings.metrics.listen if self.settings.metrics.enabled else None,
                    }
                },
            )
            source_task = asyncio.create_task(self.source.run(), name="kafka-source")
            stop_task = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({source_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            if source_task in done and source_task.exception() is not None:
                raise source_task.exception()  # type: ignore[misc]
        finally:
            await self._shutdown(source_task)
        return 0

    async def _shutdown(self, source_task: asyncio.Task[None] | None) -> None:
        started = time.monotonic()
        timeout = self.settings.delivery.shutdown_timeout_seconds
        self.source.stop_fetching()
        if source_task is not None and not source_task.done():
            try:
                await asyncio.wait_for(source_task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                source_task.cancel()
        clean = await self.engine.stop(timeout)
        try:
            await self.source.close()
        except Exception:
            log.exception("closing the consumer failed")
        await self.dlq.stop()
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
