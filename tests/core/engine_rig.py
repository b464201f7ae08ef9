"""The delivery engine test rig: a scripted fake gateway, a recording dead-letter port, on virtual time."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from virtual_time import VirtualTime

from bridge.delivery import DeliveryEngine
from bridge.kafka.offsets import PartitionOffsets
from bridge.metrics import Metrics
from bridge.models import MobileReceiverMessageEvent, Outcome, RecordMeta, Verdict
from bridge.settings import AdaptiveRate, CircuitSettings, DeliverySettings, PauseSettings, RateLimit, RetrySettings
from bridge.work import DeadLetter, Job, PartitionState, RecordRef

TOPIC = "campus.forum.events"
RULE = "forum-reply"

DELIVERED = Outcome(Verdict.DELIVERED, request_id="req-ok", latency_seconds=0.001)
RETRYABLE = Outcome(Verdict.RETRYABLE, code=15, sub_code="isp.remote-service-timeout", msg="Remote service error")
HTTP_503 = Outcome(Verdict.RETRYABLE, http_status=503, detail="http 503")
REJECTED = Outcome(Verdict.REJECTED, code=15, sub_code="isv.invalid-parameter", msg="Remote service error")
SYSTEMIC = Outcome(Verdict.SYSTEMIC, code=25, msg="Invalid signature")


def throttled(ban_seconds: float | None) -> Outcome:
    return Outcome(
        Verdict.THROTTLED,
        code=7,
        msg="App Call Limited",
        sub_code="accesscontrol.limited-by-app-access-count",
        ban_seconds=ban_seconds,
    )


def phone(n: int) -> str:
    return f"138{n:08d}"


# --------------------------------------------------------------------------- doubles
@dataclass
class Call:
    """One call the fake gateway received."""

    seq: int
    msg_key: str
    recipient: str | None
    start: float
    end: float = float("nan")
    end_seq: int = -1
    outcome: Outcome | None = None
    cancelled: bool = False

    @property
    def verdict(self) -> Verdict | None:
        return None if self.outcome is None else self.outcome.verdict


Latency = float | Callable[[MobileReceiverMessageEvent], float]


class FakeGateway:
    """The engine's Sender: scripted outcomes per msg_key (then `default`), a latency per call, calls recorded."""

    def __init__(self, vt: VirtualTime, seq: itertools.count[int], latency: Latency) -> None:
        self._vt = vt
        self._seq = seq
        self.latency = latency
        self.default: Callable[[MobileReceiverMessageEvent], Outcome] = lambda _: DELIVERED
        self.scripts: dict[str, deque[Outcome]] = {}
        self.calls: list[Call] = []
        self.hold: asyncio.Event | None = None  # when set up, calls answer only once it is set
        self.in_flight = 0
        self.max_in_flight = 0
        self.batches: list[list[str]] = []

    def script(self, job: Job, *outcomes: Outcome) -> None:
        """The next answers for this job's msg_key, in order; afterwards `default`."""
        self.scripts.setdefault(job.message.msg_key, deque()).extend(outcomes)

    async def send(self, message: MobileReceiverMessageEvent) -> Outcome:
        call = Call(next(self._seq), message.msg_key, message.mobile_receiver, self._vt.time())
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency(message) if callable(self.latency) else self.latency
            if delay > 0:
                await asyncio.sleep(delay)
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            self.in_flight -= 1
        script = self.scripts.get(message.msg_key)
        outcome = script.popleft() if script else self.default(message)
        call.end, call.end_seq, call.outcome = self._vt.time(), next(self._seq), outcome
        return outcome

    async def send_batch(self, messages: Sequence[MobileReceiverMessageEvent]) -> list[Outcome]:
        """One request carrying several messages: one latency, one Call per message, answered together."""
        self.batches.append([m.msg_key for m in messages])
        start = self._vt.time()
        calls = [Call(next(self._seq), m.msg_key, m.mobile_receiver, start) for m in messages]
        self.calls.extend(calls)
        n = len(messages)
        self.in_flight += n
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency(messages[0]) if callable(self.latency) else self.latency
            if delay > 0:
                await asyncio.sleep(delay)
            if self.hold is not None:
                await self.hold.wait()
        finally:
            self.in_flight -= n
        outcomes = []
        for message, call in zip(messages, calls, strict=True):
            script = self.scripts.get(message.msg_key)
            outcome = script.popleft() if script else self.default(message)
            call.end, call.end_seq, call.outcome = self._vt.time(), next(self._seq), outcome
            outcomes.append(outcome)
        return outcomes

    def calls_for(self, job: Job) -> list[Call]:
        return [c for c in self.calls if c.msg_key == job.message.msg_key]

    def delivered(self, job: Job) -> bool:
        return any(c.verdict is Verdict.DELIVERED for c in self.calls_for(job))


class FakeDeadLetters:
    """The engine's DeadLetterPort: records letters; `hold` keeps publish waiting (a slow or failing sink)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.hold: asyncio.Event | None = None

    async def publish(self, letter: DeadLetter) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.letters.append(letter)


class Rig:
    """One engine wired to the doubles, plus partitions whose offsets the submitted records are tracked in."""

    def __init__(
        self,
        vt: VirtualTime,
        *,
        ordering: Literal["recipient", "partition", "none"] = "recipient",
        max_in_flight: int = 8,
        max_attempts: int = 5,
        max_age: float = 3600.0,
        initial_backoff: float = 0.01,
        max_backoff: float = 1.0,
        rate: float = 0.0,
        burst: int = 1,
        probe: float = 0.01,
        max_probe: float = 10.0,
        latency: Latency = 0.001,
        rand: Callable[[], float] = lambda: 1.0,
        circuit: CircuitSettings | None = None,
        adaptive: AdaptiveRate | None = None,
        batch_max: int = 1,
        batch_wait: float = 0.0,
    ) -> None:
        self.vt = vt
        self.seq = itertools.count()
        self.ordering = ordering
        self.settings = DeliverySettings(
            max_in_flight=max_in_flight,
            ordering=ordering,
            rate_limit=RateLimit(per_second=rate, burst=burst, adaptive=adaptive or AdaptiveRate()),
            retry=RetrySettings(
                max_attempts=max_attempts,
                initial_backoff_seconds=initial_backoff,
                max_backoff_seconds=max_backoff,
                max_age_seconds=max_age,
            ),
            pause=PauseSettings(initial_probe_seconds=probe, max_probe_seconds=max_probe),
            circuit=circuit or CircuitSettings(),
        )
        self.metrics = Metrics()
        self.gateway = FakeGateway(vt, self.seq, latency)
        self.dlq = FakeDeadLetters()
        self.pauses: list[tuple[int, float, str | None]] = []  # (seq, time, reason)
        self.on_pause_extra: Callable[[str | None], None] = lambda _: None
        self.engine = DeliveryEngine(
            settings=self.settings,
            sender=self.gateway,
            dead_letters=self.dlq,
            metrics=self.metrics,
            batch_max=batch_max,
            batch_wait_seconds=batch_wait,
            clock=vt.time,
            wall_ms=vt.wall_ms,
            rand=rand,
            on_pause=self._on_pause,
        )
        self.parts: dict[int, PartitionState] = {}
        self._next_offset: dict[int, int] = defaultdict(int)
        self._msg_no = itertools.count()

    def _on_pause(self, reason: str | None) -> None:
        self.pauses.append((next(self.seq), self.vt.time(), reason))
        self.on_pause_extra(reason)

    def part(self, partition: int = 0) -> PartitionState:
        if partition not in self.parts:
            self.parts[partition] = PartitionState(TOPIC, partition, PartitionOffsets(10_000))
        return self.parts[partition]

    def record(self, pending: int, partition: int = 0) -> RecordRef:
        """A fetched record with `pending` messages, tracked in its partition's offsets."""
        part = self.part(partition)
        offset = self._next_offset[partition]
        self._next_offset[partition] += 1
        part.offsets.track(offset, pending, self.vt.wall_ms())
        return RecordRef(part, RecordMeta(TOPIC, partition, offset, self.vt.wall_ms()), b"{}")

    def submit_record(self, recipients: list[str], partition: int = 0) -> list[Job]:
        """One record fanning out to one message per recipient; all submitted."""
        ref = self.record(len(recipients), partition)
        jobs = []
        for recipient in recipients:
            message = MobileReceiverMessageEvent(
                msg_key=f"m{next(self._msg_no)}",
                event_time_millis=ref.meta.timestamp_ms,
                event_type="mobile_receiver",
                mobile_receiver=recipient,
            )
            key: Hashable | None = {
                "recipient": message.recipient,
                "partition": (TOPIC, partition),
                "none": None,
            }[self.ordering]
            job = Job(RULE, message, ref, key)
            self.engine.submit(job)
            jobs.append(job)
        return jobs

    def submit(self, recipient: str, partition: int = 0) -> Job:
        return self.submit_record([recipient], partition)[0]

    def records_tracked(self, partition: int = 0) -> int:
        return self._next_offset[partition]

    def committable(self, partition: int = 0) -> int | None:
        return self.part(partition).offsets.commit_point()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def marker(self) -> int:
        """A point in the event sequence (for "everything after this")."""
        return next(self.seq)


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait (virtual time) for a condition the engine will bring about."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.0005)


RigFactory = Callable[..., Awaitable[Rig]]
