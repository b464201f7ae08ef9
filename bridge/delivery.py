"""The delivery engine: ordered, rate-limited, concurrent sending with retries, bans, pauses and the DLQ.

    submit(job) ─► per-key FIFO (recipient / partition / none) ─► ready queue ─► N long-lived workers
                                                                                  │ limiter.acquire(n)
                                                                                  │ sender.send() / send_batch()
        delivered ─► final ◄── dead-letter sink ◄── rejected / attempts or age exhausted
        retryable ─► back to the ready queue after backoff+jitter (its key stays blocked, others go on)
        throttled ─► shared cool-down on the limiter, rate halved and climbing back; re-queued, not charged
        systemic  ─► HOLD: gate closed, sources halted, one probe at a doubling interval until it passes
        transport ─► counted by the circuit breaker; when shared (ratio over a window, or N in a row): HOLD

While held (systemic pause or open circuit) nothing is charged: calls that come back failing are parked with
their attempt refunded, and the held time counts against no message's `max_age_seconds`. The first answer a
probe gets that is not a failure of the same kind releases the hold, and delivery resumes from a small number
of calls in flight, doubling per round trip (slow start).

Only the head job of a key is ever ready, so messages to one recipient keep their source order (and a batch
never carries two messages of one key). A job is "final" when delivered, dead-lettered (after the dead letter
was written) or skipped; the record's commit watermark advances only then.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bridge.flow.adaptive import Recovery
from bridge.flow.backoff import backoff_delay, probe_delay
from bridge.flow.circuit import CircuitBreaker, Trip
from bridge.flow.limiter import GcraLimiter, Limiter
from bridge.logs import mask_phone
from bridge.metrics import Metrics
from bridge.models import MobileReceiverMessageEvent, Outcome, Verdict
from bridge.settings import DeliverySettings
from bridge.work import DeadLetter, Job, PartitionState

log = logging.getLogger("bridge.delivery")

DEFAULT_BAN_SECONDS = 1.0
RATE_WINDOW = 5  # seconds of call counts kept for the observed rate


class Sender(Protocol):
    """What the engine needs of the gateway client."""

    async def send(self, message: MobileReceiverMessageEvent) -> Outcome:
        """Send one message; never raises except CancelledError."""
        ...


class BatchSender(Sender, Protocol):
    """A sender that can also put several messages in one gateway request."""

    async def send_batch(self, messages: Sequence[MobileReceiverMessageEvent]) -> list[Outcome]:
        """One outcome per message, in order; never raises except CancelledError."""
        ...


class DeadLetterPort(Protocol):
    """What the engine needs of the dead-letter sink."""

    async def publish(self, letter: DeadLetter) -> None:
        """Write the letter; retries internally until it succeeds (or is cancelled). Never raises otherwise."""
        ...


HoldKind = Literal["systemic", "circuit"]


@dataclass(slots=True)
class Hold:
    """Why delivery is held: a systemic gateway error or an open circuit."""

    kind: HoldKind
    reason: str  # bounded label: code_25, systemic, circuit_open
    cause: str  # one human-readable line
    since: float  # monotonic


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
        limiter: Limiter | None = None,
        batch_max: int = 1,
        batch_wait_seconds: float = 0.0,
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
        self.limiter: Limiter = limiter or GcraLimiter(rl.per_second, rl.burst, clock=clock)
        self._clock = clock
        self._wall_ms = wall_ms
        self._rand = rand
        self._on_pause = on_pause
        if batch_max > 1 and not hasattr(sender, "send_batch"):
            raise TypeError("batching needs a sender with send_batch()")
        self._batch_max = batch_max
        self._batch_wait = batch_wait_seconds
        self._ready: asyncio.Queue[Job] = asyncio.Queue()
        self._keyq: dict[Hashable, deque[Job]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._aux: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._parked: list[Job] = []
        self._hold: Hold | None = None
        self._held_total = 0.0  # seconds held before the current hold
        self._stopping = False
        self.unfinished = 0  # jobs and dead letters not yet final
        self.in_flight = 0
        self._letters_in_flight = 0  # dead letters being written (shutdown and revoke wait for them too)
        self._idle = asyncio.Event()
        self._idle.set()
        # slow start after a hold: calls in flight may not exceed the cap; it doubles per round trip
        self._cap = settings.max_in_flight
        self._room = asyncio.Event()
        self._room.set()
        c = settings.circuit
        self._breaker = (
            CircuitBreaker(
                window_seconds=c.window_seconds,
                min_calls=c.min_calls,
                failure_ratio=c.failure_ratio,
                consecutive_failures=c.consecutive_failures,
            )
            if c.enabled
            else None
        )
        a = rl.adaptive
        self._recovery = (
            Recovery(
                rl.per_second,
                rl.burst,
                decrease=a.decrease,
                step_fraction=a.step_fraction,
                interval_seconds=a.interval_seconds,
                min_rate=a.min_per_second,
            )
            if a.enabled
            else None
        )
        self._recovery_task: asyncio.Task[None] | None = None
        # calls started in each of the last RATE_WINDOW whole seconds: the rate a ban refused, when unlimited
        self._second = -1
        self._rate_buckets = [0] * RATE_WINDOW
        self._first_call: float | None = None
        metrics.rate_limit_per_second.set(rl.per_second)
        metrics.rate_limit_effective.set(rl.per_second)
        metrics.circuit_state.set(0)
        # read at scrape time: no gauge update on the per-message path
        metrics.in_flight.set_function(lambda: self.in_flight)
        metrics.queued.set_function(lambda: self.unfinished)

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the long-lived workers (once)."""
        if self._workers:
            return
        n = self.settings.max_in_flight
        if self._batch_max > 1:  # each worker carries up to batch_max messages: fewer workers, same in flight
            n = max(1, math.ceil(n / self._batch_max))
        self._workers = [asyncio.create_task(self._worker(), name=f"sender-{i}") for i in range(n)]

    async def stop(self, timeout: float) -> bool:
        """Stop taking jobs, let in-flight calls finish within `timeout`, then cancel. True if all finished."""
        self._stopping = True
        self._gate.set()  # wake held workers so they can exit
        self._room.set()
        deadline = self._clock() + timeout
        while (self.in_flight > 0 or self._letters_in_flight > 0) and self._clock() < deadline:
            await asyncio.sleep(0.02)
        clean = self.in_flight == 0 and self._letters_in_flight == 0
        tasks = [*self._workers, *self._aux]
        if self._recovery_task is not None:
            tasks.append(self._recovery_task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._aux.clear()
        self._recovery_task = None
        return clean

    @property
    def paused_reason(self) -> str | None:
        """Why delivery is held on a systemic error, or None (an open circuit is `circuit_open`)."""
        return self._hold.reason if self._hold is not None and self._hold.kind == "systemic" else None

    @property
    def hold(self) -> Hold | None:
        """The current hold (systemic pause or open circuit), or None."""
        return self._hold

    @property
    def cooling_down(self) -> bool:
        """A gateway ban holds every sender now."""
        return self.limiter.banned_for() > 0

    @property
    def effective_rate(self) -> float:
        """The rate the limiter runs at now (below the configured one while recovering from a ban)."""
        return self.limiter.rate

    def held_seconds(self) -> float:
        """Total time delivery has been held (systemic pauses and open circuits), the current hold included."""
        if self._hold is None:
            return self._held_total
        return self._held_total + (self._clock() - self._hold.since)

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

    # ----------------------------------------------------------------- bookkeeping
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

    def _discard_if_gone(self, job: Job) -> bool:
        """Drop a job whose partition was revoked, or any job once stopping; True if dropped."""
        if job.record.part.revoked or self._stopping:
            self._release_key(job)
            self._drop(job)
            return True
        return False

    # ----------------------------------------------------------------- workers
    async def _worker(self) -> None:
        ready, gate = self._ready, self._gate
        batching = self._batch_max > 1
        while not self._stopping:
            job = await ready.get()
            if self._discard_if_gone(job):
                continue
            if not gate.is_set():
                await gate.wait()
                if self._discard_if_gone(job):
                    continue
            if self.in_flight >= self._cap:
                await self._wait_room()
                if self._discard_if_gone(job):
                    continue
            if batching:
                await self._run_batch(await self._gather(job))
                continue
            waited = await self.limiter.acquire()
            self._m.rate_limit_wait.observe(waited)
            if self._hold is not None:
                self._parked.append(job)  # held while we waited: keep until the hold is released
                continue
            if self._discard_if_gone(job):
                continue
            outcome = await self._call(job)
            await self._handle(job, outcome)

    async def _wait_room(self) -> None:
        while self.in_flight >= self._cap and not self._stopping:
            self._room.clear()
            await self._room.wait()

    async def _gather(self, first: Job) -> list[Job]:
        """Up to `batch_max` ready jobs, waiting at most `batch_wait` for more; one per recipient."""
        batch = [first]
        recipients = {first.message.recipient}
        room = min(self._batch_max, max(1, self._cap - self.in_flight))
        self._take_ready(batch, recipients, room)
        if len(batch) < room and self._batch_wait > 0 and not self._stopping:
            await asyncio.sleep(self._batch_wait)
            self._take_ready(batch, recipients, room)
        return batch

    def _take_ready(self, batch: list[Job], recipients: set[str], room: int) -> None:
        ready = self._ready
        deferred: list[Job] = []
        while len(batch) < room and not ready.empty():
            job = ready.get_nowait()
            if self._discard_if_gone(job):
                continue
            recipient = job.message.recipient
            if recipient in recipients:  # only with ordering none/partition: the gateway may run calls in parallel
                deferred.append(job)
                continue
            recipients.add(recipient)
            batch.append(job)
        for job in deferred:
            ready.put_nowait(job)

    async def _run_batch(self, batch: list[Job]) -> None:
        waited = await self.limiter.acquire(len(batch))
        self._m.rate_limit_wait.observe(waited)
        if self._hold is not None:
            self._parked.extend(batch)
            return
        batch = [j for j in batch if not self._discard_if_gone(j)]
        if not batch:
            return
        if len(batch) == 1:
            outcomes = [await self._call(batch[0])]
        else:
            outcomes = await self._call_batch(batch)
        for job, outcome in zip(batch, outcomes, strict=True):
            await self._handle(job, outcome)

    def _begin(self, job: Job, now_ms: int) -> None:
        if job.first_attempt_ms is None:
            job.first_attempt_ms = now_ms
            job.first_attempt_mono = self._clock()
            job.held_mark = self.held_seconds()
        job.last_attempt_ms = now_ms
        job.attempts += 1
        job.record.part.in_flight += 1

    def _count_call(self, n: int) -> float:
        now = self._clock()
        second = int(now)
        if second != self._second:
            for s in range(max(self._second + 1, second - RATE_WINDOW + 1), second + 1):
                self._rate_buckets[s % RATE_WINDOW] = 0
            self._second = second
            if self._first_call is None:
                self._first_call = now
        self._rate_buckets[second % RATE_WINDOW] += n
        return now

    def _observed_rate(self) -> float:
        """Calls per second started over the last few seconds (since the first call, if more recent)."""
        now = self._count_call(0)
        first = self._first_call if self._first_call is not None else now
        window = min(now - int(now) + RATE_WINDOW - 1, now - first)
        return sum(self._rate_buckets) / max(window, 0.1)

    def _end_calls(self, n: int) -> None:
        self.in_flight -= n
        if not self._room.is_set() and self.in_flight < self._cap:
            self._room.set()

    async def _call(self, job: Job) -> Outcome:
        self._begin(job, self._wall_ms())
        self.in_flight += 1
        self._count_call(1)
        try:
            outcome = await self._sender.send(job.message)
        finally:
            job.record.part.in_flight -= 1
            self._end_calls(1)
        job.last_outcome = outcome
        self._m.gateway_call(
            outcome.verdict.value, outcome.code_label, outcome.sub_code_family, outcome.latency_seconds
        )
        return outcome

    async def _call_batch(self, jobs: list[Job]) -> list[Outcome]:
        now_ms = self._wall_ms()
        for job in jobs:
            self._begin(job, now_ms)
        n = len(jobs)
        self.in_flight += n
        self._count_call(n)
        sender: BatchSender = self._sender  # type: ignore[assignment]  # checked in __init__
        try:
            outcomes = await sender.send_batch([j.message for j in jobs])
        finally:
            for job in jobs:
                job.record.part.in_flight -= 1
            self._end_calls(n)
        self._m.gateway_batch(n)
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.last_outcome = outcome
            self._m.gateway_call(
                outcome.verdict.value, outcome.code_label, outcome.sub_code_family, outcome.latency_seconds
            )
        return outcomes

    # ----------------------------------------------------------------- outcomes
    async def _handle(self, job: Job, outcome: Outcome) -> None:
        verdict = outcome.verdict
        breaker = self._breaker
        if breaker is not None and self._hold is None:
            trip = breaker.record(outcome.is_transport_failure, self._clock())
            if trip is not None:
                self._open_circuit(trip, outcome)
        if verdict is Verdict.DELIVERED:
            self._release_key(job)
            self._m.delivered_after(job.rule, (self._wall_ms() - job.record.meta.timestamp_ms) / 1000.0)
            self._finish(job, "delivered")
            if self._cap < self.settings.max_in_flight:
                self._cap = min(self.settings.max_in_flight, self._cap + 1)  # slow start: doubles per round trip
            if log.isEnabledFor(logging.DEBUG):
                log.debug("delivered", extra={"ctx": _ctx(job, request_id=outcome.request_id)})
            return
        if verdict is Verdict.REJECTED:
            log.warning("gateway rejected message", extra={"ctx": _ctx(job, cause=outcome.describe())})
            self._release_key(job)
            # in the background: a slow or unavailable DLQ must not tie up the senders
            self._spawn(self._publish_dead_letter(self._letter(job, "rejected", outcome), job=job))
            return
        if verdict is Verdict.THROTTLED:
            job.attempts -= 1  # a ban is not the message's fault
            self._throttled(outcome)
            self._m.retries.labels("throttled").inc()
            if self._hold is not None:
                self._parked.append(job)
            else:
                self._ready.put_nowait(job)
            return
        if verdict is Verdict.SYSTEMIC:
            job.attempts -= 1
            if self._hold is None or self._hold.kind == "circuit":
                self._hold_on("systemic", _systemic_reason(outcome), outcome.describe(), source=job)
            self._parked.append(job)
            return
        # RETRYABLE
        if self._hold is not None:  # failed because of what holds everyone: not this message's fault
            job.attempts -= 1
            self._parked.append(job)
            return
        self._retry_or_give_up(job, outcome)

    def _retry_or_give_up(self, job: Job, outcome: Outcome) -> None:
        r = self.settings.retry
        first = job.first_attempt_mono
        age = 0.0 if first is None else self._clock() - first - (self.held_seconds() - job.held_mark)
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

    # ----------------------------------------------------------------- bans and adaptive rate
    def _throttled(self, outcome: Outcome) -> None:
        seconds = outcome.ban_seconds if outcome.ban_seconds is not None else DEFAULT_BAN_SECONDS
        was_active = self.limiter.banned_for() > 0
        until = self.limiter.ban(seconds)
        if was_active:
            return
        self._m.throttle_bans.inc()
        self._m.throttle_active.set(1)
        ctx: dict[str, object] = {"ban_seconds": seconds, "code": outcome.code, "sub_code": outcome.sub_code}
        if self._recovery is not None:
            setting = self._recovery.on_ban(self._clock(), self._observed_rate())
            self._apply_rate(setting.rate, setting.burst)
            ctx["resume_per_second"] = round(setting.rate, 2)
            ctx["resume_burst"] = setting.burst
            if self._recovery_task is None or self._recovery_task.done():
                self._recovery_task = asyncio.create_task(self._recover(), name="rate-recovery")
        log.warning("gateway ban: every sender waits", extra={"ctx": ctx})
        self._spawn(self._clear_throttle_flag(until))

    def _apply_rate(self, rate: float, burst: int) -> None:
        self.limiter.set_rate(rate, burst)
        self._m.rate_limit_effective.set(rate)

    async def _recover(self) -> None:
        recovery = self._recovery
        assert recovery is not None
        while recovery.recovering:
            await asyncio.sleep(recovery.interval)
            setting = recovery.on_tick(self._clock())
            if setting is not None:
                self._apply_rate(setting.rate, setting.burst)
                if setting == recovery.configured:
                    log.info(
                        "rate recovered after ban",
                        extra={"ctx": {"per_second": setting.rate, "burst": setting.burst}},
                    )

    async def _clear_throttle_flag(self, until: float) -> None:
        while (left := self.limiter.banned_for()) > 0:
            await asyncio.sleep(left)
        self._m.throttle_active.set(0)
        log.info("gateway ban over: rate resumes", extra={"ctx": {"per_second": round(self.limiter.rate, 2)}})
        _ = until

    # ----------------------------------------------------------------- holds (systemic pause, open circuit)
    def _open_circuit(self, trip: Trip, outcome: Outcome) -> None:
        self._m.circuit_openings.inc()
        self._hold_on("circuit", "circuit_open", f"{outcome.describe()}; {trip.describe()}")

    def _hold_on(self, kind: HoldKind, reason: str, cause: str, source: Job | None = None) -> None:
        now = self._clock()
        previous = self._hold
        if previous is not None:  # circuit -> systemic: the gateway answered, and what it said stops us
            self._held_total += now - previous.since
            self._m.circuit_state.set(0)
        self._hold = Hold(kind, reason, cause, now)
        self._gate.clear()
        if kind == "systemic":
            self._m.set_paused(reason)
            ctx = _ctx(source, cause=cause) if source is not None else {"cause": cause}
            log.error(
                "PAUSED: the gateway refuses this app (fix credentials, clock or permissions); probing with one "
                "message",
                extra={"ctx": ctx},
            )
        else:
            self._m.circuit_state.set(1)
            log.error(
                "CIRCUIT OPEN: the gateway is unreachable; delivery paused (nothing is dead-lettered for it, retry "
                "clocks stopped), probing with one message",
                extra={"ctx": {"cause": cause, "gateway_failures": "transport"}},
            )
        self._notify_pause(reason)
        if previous is None:
            self._spawn(self._probe_loop())

    def _release_hold(self) -> None:
        hold = self._hold
        assert hold is not None
        duration = self._clock() - hold.since
        self._held_total += duration
        self._hold = None
        if hold.kind == "systemic":
            self._m.set_paused(None)
            log.warning(
                "RESUMED: probe accepted, delivery continues",
                extra={"ctx": {"paused_seconds": round(duration, 1), "cause": hold.cause}},
            )
        else:
            self._m.circuit_state.set(0)
            log.info(
                "CIRCUIT CLOSED: the gateway answers again, delivery resumes",
                extra={"ctx": {"open_seconds": round(duration, 1), "cause": hold.cause}},
            )
        if self._breaker is not None:
            self._breaker.reset()
        self._cap = min(self.settings.circuit.resume_in_flight, self.settings.max_in_flight)
        parked, self._parked = self._parked, []
        for j in parked:
            self._ready.put_nowait(j)
        self._gate.set()
        self._notify_pause(None)

    def _notify_pause(self, reason: str | None) -> None:
        if self._on_pause is not None:
            self._on_pause(reason)

    def _take_probe(self) -> Job | None:
        """The oldest parked job still worth sending (revoked ones are dropped on the way)."""
        while self._parked:
            job = self._parked.pop(0)
            if not self._discard_if_gone(job):
                return job
        return None

    def _probe_intervals(self) -> tuple[float, float]:
        hold = self._hold
        if hold is not None and hold.kind == "circuit":
            c = self.settings.circuit
            return c.initial_probe_interval_seconds, c.max_probe_interval_seconds
        p = self.settings.pause
        return p.initial_probe_seconds, p.max_probe_seconds

    async def _probe_loop(self) -> None:
        delay: float | None = None
        while self._hold is not None and not self._stopping:
            initial, maximum = self._probe_intervals()
            delay = probe_delay(delay, initial, maximum)
            await asyncio.sleep(delay)
            job = self._take_probe()
            if job is None:
                delay = None  # nothing to probe with yet: look again soon
                continue
            await self.limiter.acquire()  # a probe honours bans and the rate like every other call
            outcome = await self._call(job)
            hold = self.hold  # (a property: the await above may have changed it)
            if hold is None:  # defensive: released meanwhile
                await self._handle(job, outcome)
                return
            verdict = outcome.verdict
            if hold.kind == "systemic":  # only an answer on the message itself says the credentials pass
                failed = verdict not in (Verdict.DELIVERED, Verdict.REJECTED)
            else:  # any gateway answer says it is reachable again
                failed = verdict in (Verdict.SYSTEMIC, Verdict.THROTTLED) or outcome.is_transport_failure
            if failed:
                job.attempts -= 1
                if verdict is Verdict.THROTTLED:
                    self._throttled(outcome)
                elif verdict is Verdict.SYSTEMIC and hold.kind == "circuit":
                    self._hold_on("systemic", _systemic_reason(outcome), outcome.describe(), source=job)
                    delay = None
                self._parked.insert(0, job)
                log.warning(
                    "still held: probe failed",
                    extra={"ctx": _ctx(job, hold=self._hold.reason if self._hold else None, cause=outcome.describe())},
                )
                continue
            self._release_hold()
            await self._handle(job, outcome)
            return

    # ----------------------------------------------------------------- dead letters
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
        # a letter being written counts as in flight for its partition (revoke waits for it) and for shutdown
        part = letter.record.part
        part.in_flight += 1
        self._letters_in_flight += 1
        try:
            await self._dlq.publish(letter)
        finally:
            part.in_flight -= 1
            self._letters_in_flight -= 1
        self._m.dead_letters.labels(letter.reason).inc()
        letter.record.complete(letter.index)
        if job is not None:
            self._m.message_final(job.rule, "dead_lettered")
        self._dec_unfinished()


def _systemic_reason(outcome: Outcome) -> str:
    return f"code_{outcome.code}" if outcome.code is not None else "systemic"
