"""Retry backoff (full jitter) and the probe delay while paused."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.flow.backoff import backoff_delay, probe_delay


def top(_: object = None) -> float:
    """The largest value `random.random` can return."""
    return 1.0 - 2**-53


@pytest.mark.parametrize(
    ("attempt", "initial", "maximum", "ceiling"),
    [
        (1, 0.5, 60, 0.5),
        (2, 0.5, 60, 1.0),
        (3, 0.5, 60, 2.0),
        (8, 0.5, 60, 60.0),
        (9, 0.5, 60, 60.0),
        (0, 0.5, 60, 0.5),
        (-4, 0.5, 60, 0.5),
        (10_000, 0.5, 60, 60.0),
        (4, 1.0, 1.0, 1.0),
    ],
    ids=["first", "second", "third", "capped", "past-cap", "zero", "negative", "huge-attempt", "initial-is-max"],
)
def test_full_jitter_ceiling_doubles_per_attempt_up_to_the_cap(
    attempt: int, initial: float, maximum: float, ceiling: float
) -> None:
    assert backoff_delay(attempt, initial, maximum, rand=lambda: 1.0) == pytest.approx(ceiling)
    assert backoff_delay(attempt, initial, maximum, rand=top) < ceiling
    assert backoff_delay(attempt, initial, maximum, rand=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, initial, maximum, rand=lambda: 0.5) == pytest.approx(ceiling / 2)


@given(
    attempt=st.integers(-10, 10**6),
    initial=st.floats(1e-4, 10.0),
    extra=st.floats(0.0, 1_000.0),
    r=st.floats(0.0, 1.0, exclude_max=True),
)
def test_delay_is_uniform_in_zero_to_capped_ceiling(attempt: int, initial: float, extra: float, r: float) -> None:
    maximum = initial + extra
    delay = backoff_delay(attempt, initial, maximum, rand=lambda: r)
    ceiling = min(maximum, initial * 2.0 ** min(max(attempt - 1, 0), 62))
    assert 0.0 <= delay <= maximum
    assert delay == pytest.approx(r * ceiling)


def test_default_randomness_stays_within_bounds_and_spreads() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(3, 0.5, 60, rand=rng.random) for _ in range(2_000)]
    assert all(0 <= d < 2.0 for d in delays)
    assert min(delays) < 0.1 and max(delays) > 1.9  # full jitter: the whole range is used
    assert all(0 <= backoff_delay(5, 0.1, 1.0) < 1.0 for _ in range(200))


def test_probe_delay_starts_at_initial_and_doubles_to_the_maximum() -> None:
    delays, delay = [], None
    for _ in range(8):
        delay = probe_delay(delay, 5.0, 60.0)
        delays.append(delay)
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0]


def test_probe_delay_has_no_jitter() -> None:
    assert {probe_delay(2.0, 1.0, 300.0) for _ in range(20)} == {4.0}
