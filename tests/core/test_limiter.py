"""GcraLimiter: exact long-run rate, bounded bursts, shared cool-downs, unlimited mode."""

from __future__ import annotations

import asyncio
import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st
from virtual_time import VirtualTime

from bridge.flow.limiter import GcraLimiter

EPS = 1e-9


class SteppingClock:
    """A clock whose `sleep` just moves it forward: enough for one acquirer at a time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def stepping_limiter(rate: float, burst: int, start: float = 0.0) -> tuple[GcraLimiter, SteppingClock]:
    clock = SteppingClock(start)
    return GcraLimiter(rate, burst, clock=clock, sleep=clock.sleep), clock


def max_in_window(times: list[float], width: float) -> int:
    """Most events inside any half-open window [t, t + width) starting at an event."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + width - EPS) - i for i, t in enumerate(ordered)), default=0)


async def run_acquirers(limiter: GcraLimiter, vt: VirtualTime, tasks: int, until: float) -> list[float]:
    """`tasks` concurrent callers acquiring in a loop until virtual time `until`; the grant times."""
    grants: list[float] = []

    async def caller() -> None:
        while True:
            await limiter.acquire()
            if vt.time() > until + EPS:
                return
            grants.append(vt.time())

    await asyncio.gather(*(caller() for _ in range(tasks)))
    return grants


# --------------------------------------------------------------------------- reserve(): the pure math
def test_first_burst_goes_at_once_then_one_slot_per_interval() -> None:
    limiter = GcraLimiter(10, burst=5)
    waits = [limiter.reserve(100.0) for _ in range(8)]
    assert waits == pytest.approx([0, 0, 0, 0, 0, 0.1, 0.2, 0.3])


def test_an_idle_limiter_allows_a_full_burst_again() -> None:
    limiter = GcraLimiter(10, burst=3)
    for _ in range(10):
        limiter.reserve(0.0)
    later = 60.0
    assert [limiter.reserve(later) for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_idle_time_does_not_bank_more_than_one_burst() -> None:
    limiter = GcraLimiter(100, burst=2)
    limiter.reserve(0.0)
    waits = [limiter.reserve(1_000.0) for _ in range(3)]
    assert waits == pytest.approx([0, 0, 0.01])


@pytest.mark.parametrize("burst", [0, -3], ids=["zero", "negative"])
def test_burst_below_one_means_one(burst: int) -> None:
    limiter = GcraLimiter(10, burst=burst)
    assert limiter.burst == 1
    assert [limiter.reserve(0.0) for _ in range(2)] == pytest.approx([0, 0.1])


@given(
    rate=st.sampled_from([1.0, 7.0, 100.0, 200.0, 5_000.0]),
    burst=st.integers(1, 30),
    gaps=st.lists(st.floats(0, 0.05, allow_nan=False) | st.just(0.0), min_size=1, max_size=300),
)
def test_reserved_slots_respect_the_gcra_envelope(rate: float, burst: int, gaps: list[float]) -> None:
    """For any arrivals: slots never before arrival, in order, and at most burst + rate·w within any span w."""
    limiter = GcraLimiter(rate, burst)
    now, grants = 10.0, []
    for gap in gaps:
        now += gap
        wait = limiter.reserve(now)
        assert wait >= 0
        grants.append(now + wait)
    assert grants == sorted(grants)
    for i in range(len(grants)):
        for j in range(i + 1, min(len(grants), i + burst + 2 * int(rate) + 2)):
            assert j - i + 1 <= burst + (grants[j] - grants[i]) * rate + 1e-6


@given(rate=st.sampled_from([3.0, 50.0, 200.0]), burst=st.integers(1, 20), n=st.integers(1, 400))
def test_simultaneous_arrivals_get_back_to_back_slots(rate: float, burst: int, n: int) -> None:
    limiter = GcraLimiter(rate, burst)
    waits = [limiter.reserve(5.0) for _ in range(n)]
    assert waits == pytest.approx([max(0, k - burst + 1) / rate for k in range(n)], abs=1e-9)


# --------------------------------------------------------------------------- acquire(): one caller at a time
@pytest.mark.parametrize(
    ("rate", "burst"),
    [(100, 1), (200, 1), (200, 20), (1_000, 10), (5_000, 50)],
    ids=["100/s", "200/s", "200/s-burst20", "1k/s-burst10", "5k/s-burst50"],
)
def test_long_run_rate_is_exact_to_one_slot(rate: int, burst: int) -> None:
    limiter, clock = stepping_limiter(rate, burst)

    async def drive() -> float:
        total = 0.0
        for _ in range(10_000):
            total += await limiter.acquire()
        return total

    waited = asyncio.run(drive())
    ideal = 10_000 / rate
    assert abs(clock.now - ideal) <= burst / rate + EPS  # the first burst is free, nothing else
    assert clock.now == pytest.approx((10_000 - burst) / rate)
    assert waited == pytest.approx(clock.now)


def test_sixty_seconds_at_200_per_second_passes_exactly_rate_times_time_plus_burst() -> None:
    limiter, clock = stepping_limiter(200, 20)

    async def count_for(seconds: float) -> int:
        n = 0
        while True:
            await limiter.acquire()
            if clock.now > seconds + EPS:
                return n
            n += 1

    passed = asyncio.run(count_for(60.0))
    assert passed == 200 * 60 + 20
    assert abs(passed / 60 - 200) / 200 < 0.02


def test_acquire_returns_zero_within_the_burst_and_the_slot_time_after() -> None:
    limiter, clock = stepping_limiter(4, 2)

    async def drive() -> list[float]:
        return [await limiter.acquire() for _ in range(4)]

    assert asyncio.run(drive()) == pytest.approx([0, 0, 0.25, 0.25])
    assert clock.sleeps == pytest.approx([0.25, 0.25])


# --------------------------------------------------------------------------- acquire(): concurrent callers
async def test_many_concurrent_callers_hold_the_rate_and_the_burst(vtime: VirtualTime) -> None:
    rate, burst = 200, 20
    limiter = GcraLimiter(rate, burst, clock=vtime.time, sleep=asyncio.sleep)
    t0 = vtime.time()
    grants = await run_acquirers(limiter, vtime, tasks=64, until=t0 + 10.0)
    assert grants.count(t0) == burst  # the first burst goes at once, no more
    assert len(grants) == rate * 10 + burst  # exact over 10 s
    assert max_in_window(grants, 1.0) <= rate + burst
    steady = [t for t in grants if t > t0]
    assert max_in_window(steady, 1.0) <= rate + 1  # once the burst is spent: the rate, to one slot


async def test_a_stalled_event_loop_releases_at_most_a_burst_not_every_waiter(vtime: VirtualTime) -> None:
    """Waiters must not pre-reserve slots: if the loop is held up, they would all fire together when it frees."""
    rate, burst = 1000, 20
    limiter = GcraLimiter(rate, burst, clock=vtime.time, sleep=asyncio.sleep)
    t0 = vtime.time()

    async def stall() -> None:
        await asyncio.sleep(2.0)
        vtime.now += 0.26  # a 260 ms hold-up of the event loop (GC, a long batch): time passes, nobody runs

    stall_task = asyncio.create_task(stall())
    grants = await run_acquirers(limiter, vtime, tasks=128, until=t0 + 5.0)
    await stall_task
    assert max_in_window(grants, 1.0) <= rate * 1.02 + burst
    after = [t for t in grants if t0 + 2.0 < t <= t0 + 2.3]
    assert max_in_window(after, 0.001) <= burst  # at most a burst at the end of the stall


@pytest.mark.parametrize("rate", [1_000, 5_000])
async def test_a_busy_event_loop_still_gets_the_full_rate(vtime: VirtualTime, rate: int) -> None:
    """Every loop iteration costs 1 ms (a loaded daemon): waiters that conform are admitted together, not one
    per iteration, so 5,000/s holds where one-per-iteration would top out at 1,000/s."""
    burst = 20
    limiter = GcraLimiter(rate, burst, clock=vtime.time, sleep=asyncio.sleep)
    t0 = vtime.time()
    done = False

    async def busy_loop() -> None:
        while not done:
            vtime.now += 0.001
            await asyncio.sleep(0)

    busy = asyncio.create_task(busy_loop())
    grants = await run_acquirers(limiter, vtime, tasks=256, until=t0 + 5.0)
    done = True
    await busy
    assert abs(len(grants) / 5.0 - rate) / rate < 0.02
    assert max_in_window(grants, 1.0) <= rate * 1.02 + burst


async def test_concurrent_waiters_each_get_their_own_slot(vtime: VirtualTime) -> None:
    limiter = GcraLimiter(10, 1, clock=vtime.time, sleep=asyncio.sleep)
    t0 = vtime.time()
    waited = await asyncio.gather(*(limiter.acquire() for _ in range(5)))
    assert sorted(waited) == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert vtime.time() == pytest.approx(t0 + 0.4)


# --------------------------------------------------------------------------- bans
async def test_ban_holds_everybody_then_lets_at_most_a_burst_through(vtime: VirtualTime) -> None:
    rate, burst = 10, 3
    limiter = GcraLimiter(rate, burst, clock=vtime.time, sleep=asyncio.sleep)
    t0 = vtime.time()
    assert limiter.ban(2.0) == pytest.approx(t0 + 2.0)
    assert limiter.banned_for() == pytest.approx(2.0)
    grants: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        grants.append(vtime.time())

    await asyncio.gather(*(caller() for _ in range(20)))
    assert min(grants) == pytest.approx(t0 + 2.0)
    assert sum(1 for t in grants if t == pytest.approx(t0 + 2.0)) == burst
    expected = [t0 + 2.0 + max(0, k - burst + 1) / rate for k in range(20)]
    assert sorted(grants) == pytest.approx(expected)
    assert limiter.banned_for() == 0
    assert limiter.bans == 1


async def test_ban_during_waits_stops_callers_that_already_reserved_a_slot(vtime: VirtualTime) -> None:
    rate, burst = 10, 2
    limiter = GcraLimiter(rate, burst, clock=vtime.time, sleep=asyncio.sleep)
    t0 = vtime.time()
    grants: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        grants.append(vtime.time())

    async def ban_later() -> None:
        await asyncio.sleep(0.55)
        limiter.ban(1.0)

    await asyncio.gather(ban_later(), *(caller() for _ in range(30)))
    ban_start, ban_end = t0 + 0.55, t0 + 1.55
    assert not [t for t in grants if ban_start < t < ban_end - EPS]
    assert sum(1 for t in grants if t == pytest.approx(ban_end)) <= burst
    assert max_in_window(grants, 1.0) <= rate + burst
    assert len(grants) == 30


def test_a_shorter_ban_does_not_cut_a_longer_one_and_is_not_counted() -> None:
    limiter, _ = stepping_limiter(10, 1, start=50.0)
    limiter.ban(5.0)
    assert limiter.ban(1.0) == pytest.approx(55.0)
    assert limiter.bans == 1
    assert limiter.ban(10.0) == pytest.approx(60.0)
    assert limiter.bans == 2
    assert limiter.banned_for() == pytest.approx(10.0)


def test_negative_ban_is_no_ban() -> None:
    limiter, _ = stepping_limiter(10, 1, start=50.0)
    limiter.ban(-3.0)
    assert limiter.banned_for() == 0


def test_acquire_after_a_ban_waits_it_out_then_resumes_with_the_burst() -> None:
    limiter, clock = stepping_limiter(10, 2)

    async def drive() -> list[float]:
        limiter.ban(5.0)
        return [await limiter.acquire() for _ in range(3)]

    assert asyncio.run(drive()) == pytest.approx([5.0, 0, 0.1])
    assert clock.now == pytest.approx(5.1)


# --------------------------------------------------------------------------- unlimited
def test_unlimited_never_waits() -> None:
    limiter, clock = stepping_limiter(0, 1)
    assert limiter.unlimited

    async def drive() -> float:
        return sum([await limiter.acquire() for _ in range(1_000)])

    assert asyncio.run(drive()) == 0
    assert clock.sleeps == []
    assert clock.now == 0


def test_unlimited_reserve_only_reports_the_ban() -> None:
    limiter = GcraLimiter(0)
    limiter.ban(3.0, now=10.0)
    assert limiter.reserve(11.0) == pytest.approx(2.0)
    assert limiter.reserve(13.0) == 0


async def test_unlimited_callers_wait_for_a_ban_then_all_go_at_its_end(vtime: VirtualTime) -> None:
    limiter = GcraLimiter(0, clock=vtime.time, sleep=asyncio.sleep)
    t0 = vtime.time()
    limiter.ban(3.0)
    waited = await asyncio.gather(*(limiter.acquire() for _ in range(50)))
    assert waited == pytest.approx([3.0] * 50)
    assert vtime.time() == pytest.approx(t0 + 3.0)
    assert await limiter.acquire() == 0


# --------------------------------------------------------------------------- acquire(n): batches
async def test_a_batch_takes_n_slots_and_the_long_run_rate_holds() -> None:
    limiter, clock = stepping_limiter(100, burst=10, start=50.0)
    for _ in range(100):
        await limiter.acquire(5)
    # 500 messages at 100/s: the first burst of 10 is free, the other 490 take 4.9 s (to within one batch)
    assert clock.now - 50.0 == pytest.approx(4.9, abs=0.05)


async def test_a_batch_larger_than_the_burst_goes_when_the_schedule_caught_up() -> None:
    limiter, clock = stepping_limiter(10, burst=2, start=0.0)
    assert await limiter.acquire(5) == 0.0  # idle: the whole batch goes, the schedule moves 0.5 s ahead
    waited = await limiter.acquire(5)
    assert waited == pytest.approx(0.5)
    assert clock.now == pytest.approx(0.5)


def test_set_rate_keeps_the_schedule_taken() -> None:
    limiter = GcraLimiter(10, burst=1)
    assert [limiter.reserve(0.0) for _ in range(3)] == pytest.approx([0, 0.1, 0.2])
    limiter.set_rate(5, 1, now=0.0)
    assert limiter.reserve(0.0) == pytest.approx(0.3)  # already-scheduled slots are not given back
    assert limiter.reserve(0.0) == pytest.approx(0.5)


def test_raising_the_burst_of_a_busy_limiter_creates_no_burst() -> None:
    limiter = GcraLimiter(8, burst=1)
    now = 100.0
    for i in range(40):  # a backlog at exactly the rate: each call at its slot, no credit left
        assert limiter.reserve(now + i / 8) == 0.0
    now += 40 / 8
    limiter.set_rate(8, 20, now=now)
    waits = [limiter.reserve(now) for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.125, 0.25])  # still one slot per interval
    # idle time builds the new burst up again
    assert [limiter.reserve(now + 60) for _ in range(20)] == pytest.approx([0.0] * 20)


def test_raising_the_burst_during_a_ban_keeps_the_ban() -> None:
    limiter = GcraLimiter(8, burst=1)
    limiter.ban(30, now=0.0)
    limiter.set_rate(8, 20, now=1.0)
    assert limiter.banned_for(now=1.0) == pytest.approx(29)
    assert limiter.reserve(1.0) >= 29 - 19 / 8
