"""The delivery engine: ordered, rate-limited, concurrent sending with retries, cool-downs, pauses and DLQ.

    submit(job) ─► per-key FIFO (recipient / partition / none) ─► ready queue ─► N long-lived workers
                                                                                   │ limiter.acquire()
                                                                                   │ sender.send()
        delivered ─► final ◄── dead-letter sink ◄── rejected / attempts or age exhausted
        retryable ─► back to the ready queue after backoff+jitter (its key stays blocked, others go on)
        throttled ─► shared cool-down on the limiter, job re-queued, not charged an attempt
        systemic  ─► pause: gate closed, on_pause(reason), one probe at a backoff until it passes

Only the head job of a key is ever ready, so messages to one recipient keep their source order. A job is
"final" when delivered, dead-lettered (after the dead letter was written) or skipped; the record's commit
watermark advances only then.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Protocol

from bridge.flow.backoff import backoff_delay, probe_delay
from bridge.flow.limiter import GcraLimiter
from bridge.logs import mask_phone
from bridge.metrics import Metrics
from bridge.models import MobileReceiverMessageEvent, Outcome, Verdict
from bridge.settings import DeliverySettings
from bridge.work import DeadLetter, Job, PartitionState

log = logging.getLogger("bridge.delivery")

DEFAULT_BAN_SECONDS = 1.0


class Sender(Protocol):
    """What the engine needs of the gateway client."""

    async def send(self, message: MobileReceiverMessageEvent) -> Outcome:
        """Send one message; never raises except CancelledError."""
        ...


class DeadLetterPort(Protocol):
    """What the engine needs of the dead-letter sink."""

    async def publish(self, letter: DeadLetter) -> None:
        """Write the letter; retries internally until it succeeds (or is cancelled)."""
        ...


def _ctx(job: Job, **more: object) -> dict[str, object]:
    meta = job.record.meta
    out: dict[str, object] = {
        "topic": meta.topic,
        "partition": meta.partition,
        "offset": meta.offset,
        "rule": job.rule,
        "msg_key": job.message.msg_key,
        "recipient": mask_phone(job.message.mobile_receiver),
        "attempts": job.attempts,
    }
    out.update(more)
    return out


class DeliveryEngine:
    """Delivers submitted jobs; see the module docstring for the state machine."""

    def __init__(
        self,
        *,
        settings: DeliverySettings,
        sender: Sender,
        dead_letters: DeadLetterPort,
        metrics: Metrics,
        limiter: GcraLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        rand: Callable[[], float] = random.random,
        on_pause: Callable[[str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self._sender = sender
        self._dlq = dead_letters
        self._m = metrics
        rl = settings.rate_limit
        self.limiter = limiter or GcraLimiter(rl.per_second, rl.burst, clock=clock)
        self._clock = clock
        self._wall_ms = wall_ms
        self._rand = rand
        self._on_pause = on_pause
        self._ready: asyncio.Queue[Job] = asyncio.Queue()
        self._keyq: dict[Hashable, deque[Job]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._aux: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._parked: list[Job] = []
        self._pause_reason: str | None = None
        self._stopping = False
        self.unfinished = 0  # jobs and dead letters not yet final
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.rate_limit_per_second.set(rl.per_second)
        # read at scrape time: no gauge update on the per-message path
        metrics.in_flight.set_function(lambda: self.in_flight)
        metrics.queued.set_function(lambda: self.unfinished)

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the long-lived workers (once)."""
        if self._workers:
            return
        n = self.settings.max_in_flight
        self._workers = [asyncio.create_task(self._worker(), name=f"sender-{i}") for i in range(n)]

    async def stop(self, timeout: float) -> bool:
        """Stop taking jobs, let in-flight calls finish within `timeout`, then cancel. True if all finished."""
        self._stopping = True
        self._gate.set()  # wake paused workers so they can exit
        deadline = self._clock() + timeout
        while self.in_flight > 0 and self._clock() < deadline:
            await asyncio.sleep(0.02)
        clean = self.in_flight == 0
        for t in [*self._workers, *self._aux]:
            t.cancel()
        await asyncio.gather(*self._workers, *self._aux, return_exceptions=True)
        self._workers.clear()
        self._aux.clear()
        return clean

    @property
    def paused_reason(self) -> str | None:
        """Why delivery is paused on a systemic error, or None."""
        return self._pause_reason

    @property
    def cooling_down(self) -> bool:
        """A gateway ban holds every sender now."""
        return self.limiter.banned_for() > 0

    # ----------------------------------------------------------------- intake
    def submit(self, job: Job) -> None:
        """Accept a job (non-blocking). Its record must already be tracked in the partition's offsets."""
        self._inc_unfinished()
        key = job.key
        if key is None:
            self._ready.put_nowait(job)
            return
        q = self._keyq.get(key)
        if q is None:
            self._keyq[key] = deque((job,))
            self._ready.put_nowait(job)
        else:
            q.append(job)

    def dead_letter(self, letter: DeadLetter) -> None:
        """Write a dead letter in the background; the record's offset waits for it."""
        self._inc_unfinished()
        self._spawn(self._publish_dead_letter(letter, job=None))

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is unfinished; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_partitions_quiet(self, parts: list[PartitionState], timeout: float) -> bool:
        """Wait until no call for these partitions is in flight (on revoke); False on timeout."""
        deadline = self._clock() + timeout
        while any(p.in_flight for p in parts):
            if self._clock() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # ----------------------------------------------------------------- internals
    def _inc_unfinished(self) -> None:
        self.unfinished += 1
        self._idle.clear()

    def _dec_unfinished(self) -> None:
        self.unfinished -= 1
        if self.unfinished == 0:
            self._idle.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._aux.add(task)
        task.add_done_callback(self._aux.discard)

    def _release_key(self, job: Job) -> None:
        """The head job of its key is done (final, dropped or handed to the DLQ): the next one may go."""
        key = job.key
        if key is None:
            return
        q = self._keyq.get(key)
        if q is None:
            return
        if q and q[0] is job:
            q.popleft()
        else:  # defensive: should not happen
            try:
                q.remove(job)
            except ValueError:
                return
        while q:
            head = q[0]
            if head.record.part.revoked:
                q.popleft()
                self._drop(head)
                continue
            self._ready.put_nowait(head)
            return
        del self._keyq[key]

    def _drop(self, job: Job) -> None:
        """A job of a revoked partition: forget it (its record was not committed; the new owner redoes it)."""
        self._dec_unfinished()

    def _finish(self, job: Job, outcome: str) -> None:
        job.record.complete(job.index)
        self._m.message_final(job.rule, outcome)
        self._dec_unfinished()

    def _requeue_later(self, job: Job, delay: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._ready.put_nowait, job)

    async def _worker(self) -> None:
        ready, gate = self._ready, self._gate
        while not self._stopping:
            job = await ready.get()
            if self._discard_if_gone(job):
                continue
            if not gate.is_set():
                await gate.wait()
                if self._discard_if_gone(job):
                    continue
            waited = await self.limiter.acquire()
            self._m.rate_limit_wait.observe(waited)
            if self._pause_reason is not None:
                self._parked.append(job)  # paused while we waited: hold until the probe passes
                continue
            if self._discard_if_gone(job):
                continue
            outcome = await self._call(job)
            await self._handle(job, outcome)

    def _discard_if_gone(self, job: Job) -> bool:
        """Drop a job whose partition was revoked, or any job once stopping; True if dropped."""
        if job.record.part.revoked or self._stopping:
            self._release_key(job)
            self._drop(job)
            return True
        return False

    async def _call(self, job: Job) -> Outcome:
        now_ms = self._wall_ms()
        if job.first_attempt_ms is None:
            job.first_attempt_ms = now_ms
            job.first_attempt_mono = self._clock()
        job.last_attempt_ms = now_ms
        job.attempts += 1
        part = job.record.part
        part.in_flight += 1
        self.in_flight += 1
        try:
            outcome = await self._sender.send(job.message)
        finally:
            part.in_flight -= 1
            self.in_flight -= 1
            job.last_outcome = outcome
        self._m.gateway_call(
            outcome.verdict.value, outcome.code_label, outcome.sub_code_family, outcome.latency_seconds
        )
        return outcome

    async def _handle(self, job: Job, outcome: Outcome) -> None:
        verdict = outcome.verdict
        if verdict is Verdict.DELIVERED:
            self._release_key(job)
            self._m.delivered_after(job.rule, (self._wall_ms() - job.record.meta.timestamp_ms) / 1000.0)
            self._finish(job, "delivered")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("delivered", extra={"ctx": _ctx(job, request_id=outcome.request_id)})
        elif verdict is Verdict.RETRYABLE:
            self._retry_or_give_up(job, outcome)
        elif verdict is Verdict.THROTTLED:
            job.attempts -= 1  # a ban is not the message's fault
            self._throttled(outcome)
            self._m.retries.labels("throttled").inc()
            self._ready.put_nowait(job)
        elif verdict is Verdict.REJECTED:
            log.warning("gateway rejected message", extra={"ctx": _ctx(job, cause=outcome.describe())})
            self._release_key(job)
            # in the background: a slow or unavailable DLQ must not tie up the senders
            self._spawn(self._publish_dead_letter(self._letter(job, "rejected", outcome), job=job))
        else:  # SYSTEMIC
            job.attempts -= 1
            if self._pause_reason is None:
                self._pause(job, outcome)
            else:
                self._parked.append(job)

    def _retry_or_give_up(self, job: Job, outcome: Outcome) -> None:
        r = self.settings.retry
        first = job.first_attempt_mono
        age = 0.0 if first is None else self._clock() - first
        if job.attempts >= r.max_attempts or age >= r.max_age_seconds:
            reason = "retries_exhausted" if job.attempts >= r.max_attempts else "max_age"
            log.warning("giving up on message", extra={"ctx": _ctx(job, reason=reason, cause=outcome.describe())})
            self._release_key(job)
            self._spawn(self._publish_dead_letter(self._letter(job, reason, outcome), job=job))
            return
        delay = backoff_delay(job.attempts, r.initial_backoff_seconds, r.max_backoff_seconds, self._rand)
        self._m.retries.labels(outcome.code_label).inc()
        log.info(
            "retrying message",
            extra={"ctx": _ctx(job, delay_seconds=round(delay, 3), cause=outcome.describe())},
        )
        self._requeue_later(job, delay)

    def _throttled(self, outcome: Outcome) -> None:
        seconds = outcome.ban_seconds if outcome.ban_seconds is not None else DEFAULT_BAN_SECONDS
        was_active = self.limiter.banned_for() > 0
        until = self.limiter.ban(seconds)
        if not was_active:
            self._m.throttle_bans.inc()
            self._m.throttle_active.set(1)
            log.warning(
                "gateway ban: every sender waits",
                extra={"ctx": {"ban_seconds": seconds, "code": outcome.code, "sub_code": outcome.sub_code}},
            )
            self._spawn(self._clear_throttle_flag(until))

    async def _clear_throttle_flag(self, until: float) -> None:
        while (left := self.limiter.banned_for()) > 0:
            await asyncio.sleep(left)
        self._m.throttle_active.set(0)
        log.info("gateway ban over: rate resumes")
        _ = until

    def _pause(self, probe: Job, outcome: Outcome) -> None:
        reason = f"code_{outcome.code}" if outcome.code is not None else "systemic"
        self._pause_reason = reason
        self._gate.clear()
        self._m.set_paused(reason)
        log.error(
            "PAUSED: the gateway refuses this app (fix credentials, clock or permissions); probing with one message",
            extra={"ctx": _ctx(probe, cause=outcome.describe())},
        )
        self._notify_pause(reason)
        self._spawn(self._probe_loop(probe))

    def _notify_pause(self, reason: str | None) -> None:
        if self._on_pause is not None:
            self._on_pause(reason)

    async def _probe_loop(self, job: Job) -> None:
        p = self.settings.pause
        delay: float | None = None
        while True:
            delay = probe_delay(delay, p.initial_probe_seconds, p.max_probe_seconds)
            await asyncio.sleep(delay)
            await self.limiter.acquire()  # a probe honours bans and the rate like every other call
            outcome = await self._call(job)
            if outcome.verdict is Verdict.SYSTEMIC:
                job.attempts -= 1
                log.error("still paused: probe refused", extra={"ctx": _ctx(job, next_probe_seconds=delay * 2)})
                continue
            if outcome.verdict in (Verdict.RETRYABLE, Verdict.THROTTLED):
                job.attempts -= 1
                if outcome.verdict is Verdict.THROTTLED:
                    self._throttled(outcome)
                continue  # not a verdict on the credentials: probe again
            break
        self._pause_reason = None
        self._m.set_paused(None)
        log.warning("RESUMED: probe accepted, delivery continues", extra={"ctx": _ctx(job)})
        parked, self._parked = self._parked, []
        for j in parked:
            self._ready.put_nowait(j)
        self._gate.set()
        self._notify_pause(None)
        await self._handle(job, outcome)

    def _letter(self, job: Job, reason: str, outcome: Outcome) -> DeadLetter:
        return DeadLetter(
            record=job.record,
            reason=reason,
            message=outcome.describe(),
            rule=job.rule,
            code=outcome.code,
            sub_code=outcome.sub_code,
            attempts=job.attempts,
            first_attempt_ms=job.first_attempt_ms,
            last_attempt_ms=job.last_attempt_ms,
            msg_key=job.message.msg_key,
            payload=job.message.to_json(),
            index=job.index,
        )

    async def _publish_dead_letter(self, letter: DeadLetter, job: Job | None) -> None:
        await self._dlq.publish(letter)
        self._m.dead_letters.labels(letter.reason).inc()
        letter.record.complete(letter.index)
        if job is not None:
            self._m.message_final(job.rule, "dead_lettered")
        self._dec_unfinished()
