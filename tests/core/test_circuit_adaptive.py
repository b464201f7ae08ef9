"""The pure decision makers of flow control: the circuit breaker's window and the adaptive rate after a ban."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.flow.adaptive import RateSetting, Recovery
from bridge.flow.circuit import CircuitBreaker


def breaker(**over: float) -> CircuitBreaker:
    options = {"window_seconds": 30, "min_calls": 20, "failure_ratio": 0.8, "consecutive_failures": 5}
    options.update(over)
    return CircuitBreaker(
        window_seconds=options["window_seconds"],
        min_calls=int(options["min_calls"]),
        failure_ratio=options["failure_ratio"],
        consecutive_failures=int(options["consecutive_failures"]),
    )


# --------------------------------------------------------------------------- circuit breaker
def test_consecutive_transport_failures_trip_it_whatever_the_volume() -> None:
    b = breaker()
    trips = [b.record(True, 100.0 + i * 7) for i in range(5)]  # one call every 7 s: never 20 in the window
    assert trips[:4] == [None] * 4
    assert trips[4] is not None
    assert trips[4].consecutive == 5


def test_an_answer_between_failures_resets_the_run() -> None:
    b = breaker()
    for i in range(12):
        assert b.record(i % 4 == 3, 100.0 + i) is None  # every 4th call fails: never 5 in a row, ratio 25 %


def test_the_ratio_trips_once_min_calls_are_in_the_window() -> None:
    b = breaker(consecutive_failures=1000)
    results = []
    for i in range(25):  # 4 failures of every 5 calls
        results.append(b.record(i % 5 != 0, 100.0 + i * 0.01))
    first = next(i for i, r in enumerate(results) if r is not None)
    assert first == 19  # the 20th call: 16 failures of 20 = 80 %
    trip = results[first]
    assert trip is not None
    assert (trip.calls, trip.failures) == (20, 16)
    assert "16 of 20" in trip.describe()


def test_calls_older_than_the_window_are_forgotten() -> None:
    b = breaker(consecutive_failures=1000, window_seconds=10)
    for i in range(15):
        b.record(True, 100.0 + i * 0.01)
    assert b.counts(105.0) == (15, 15)
    assert b.counts(111.0) == (0, 0)
    for i in range(19):  # 19 fresh calls all failing: below min_calls, no trip
        assert b.record(True, 111.0 + i * 0.01) is None


def test_reset_forgets_the_outage() -> None:
    b = breaker()
    for i in range(4):
        b.record(True, 100.0 + i)
    b.reset()
    assert b.record(True, 105.0) is None
    assert b.counts(105.0) == (1, 1)


@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0, max_value=3)), max_size=200))
def test_window_counts_equal_a_brute_force_count(calls: list[tuple[bool, float]]) -> None:
    b = breaker(consecutive_failures=10_000, min_calls=10_000, window_seconds=5)
    now = 1000.0
    history: list[tuple[float, bool]] = []
    for failed, gap in calls:
        now += gap
        b.record(failed, now)
        history.append((now, failed))
        # buckets are whole seconds: the window holds the current second and the 4 before it
        first_second = int(now) - 4
        inside = [f for t, f in history if int(t) >= first_second]
        assert b.counts(now) == (len(inside), sum(inside))


# --------------------------------------------------------------------------- adaptive rate
def test_a_ban_halves_the_rate_with_burst_one_then_steps_back_per_interval() -> None:
    r = Recovery(100, 20, decrease=0.5, step_fraction=0.1, interval_seconds=10)
    assert r.on_ban(0.0, observed_rate=100) == RateSetting(50, 1)
    assert r.on_tick(9.9) is None
    rates = []
    t = 0.0
    while r.recovering:
        t += 10
        setting = r.on_tick(t)
        assert setting is not None
        rates.append((setting.rate, setting.burst))
    assert rates == [(60, 1), (70, 1), (80, 1), (90, 1), (100, 1), (100, 20)]


def test_bans_during_recovery_halve_the_current_rate_never_below_the_minimum() -> None:
    r = Recovery(8, 20, min_rate=1)
    assert r.on_ban(0, 8).rate == 4
    assert r.on_ban(1, 4).rate == 2
    assert r.on_ban(2, 2).rate == 1
    assert r.on_ban(3, 1).rate == 1


def test_unlimited_halves_the_observed_rate_and_goes_back_to_unlimited() -> None:
    r = Recovery(0, 20, step_fraction=0.5, interval_seconds=1)
    assert r.on_ban(0, observed_rate=400) == RateSetting(200, 1)
    assert r.on_tick(1) == RateSetting(400, 1)
    assert r.on_tick(2) == RateSetting(0, 20)
    assert not r.recovering


def test_a_rate_below_the_quota_converges_without_another_ban() -> None:
    """The ban loop of the issue: quota 10/s, rate 8, burst 20 — the burst trips the ban, the recovery must not."""
    quota = 10
    r = Recovery(8, 20, interval_seconds=10)
    setting = r.on_ban(0, observed_rate=20)
    t = 0.0
    while r.recovering:
        # while recovering the burst is 1, so the most calls in any second is the rate (rounded up)
        assert setting.burst == 1 or setting == RateSetting(8, 20)
        assert setting.rate <= quota
        t += 10
        new = r.on_tick(t)
        if new is not None:
            setting = new
    assert setting == RateSetting(8, 20)


@pytest.mark.parametrize("decrease", [0.25, 0.5, 0.9])
def test_the_rate_never_exceeds_the_configured_one(decrease: float) -> None:
    r = Recovery(50, 5, decrease=decrease, step_fraction=0.3, interval_seconds=1)
    r.on_ban(0, 50)
    t = 0
    while r.recovering:
        t += 1
        setting = r.on_tick(t)
        assert setting is None or setting.rate <= 50
