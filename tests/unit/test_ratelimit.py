"""filtermail.ratelimit: GCRA per sender, with an injected clock; memory stays bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtermail.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.mark.parametrize("burst", [1, 2, 10])
def test_a_burst_passes_at_once_and_the_next_message_is_refused(clock, burst):
    limiter = RateLimiter(per_minute=60, burst=burst, clock=clock)
    assert all(limiter.allow("a@x") for _ in range(burst))
    assert not limiter.allow("a@x")


def test_one_more_message_per_interval_after_the_burst(clock):
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.allow("a@x") for _ in range(4)] == [True, True, True, False]
    clock.now += 0.999
    assert not limiter.allow("a@x")
    clock.now += 0.001
    assert limiter.allow("a@x")
    assert not limiter.allow("a@x")
    clock.now += 3.0  # three intervals idle: three messages again, not more
    assert [limiter.allow("a@x") for _ in range(4)] == [True, True, True, False]


def test_refused_messages_do_not_push_the_limit_further(clock):
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.allow("a@x")
    for _ in range(100):
        assert not limiter.allow("a@x")
    clock.now += 1.0
    assert limiter.allow("a@x")


def test_senders_are_counted_apart(clock):
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.allow("a@x")
    assert limiter.allow("b@x")
    assert not limiter.allow("a@x")


def test_retry_after_says_when(clock):
    limiter = RateLimiter(per_minute=30, burst=2, clock=clock)
    assert limiter.retry_after("a@x") == 0
    limiter.allow("a@x")
    limiter.allow("a@x")
    assert limiter.retry_after("a@x") == pytest.approx(2.0)


def test_idle_senders_are_forgotten(clock):
    limiter = RateLimiter(per_minute=60, burst=10, clock=clock)
    for n in range(1000):
        limiter.allow(f"user{n}@x")
    assert len(limiter) == 1000
    clock.now += 1.0  # every TAT was now + 1 s
    limiter.allow("late@x")
    assert len(limiter) == 1


def test_a_flood_of_distinct_senders_stays_under_the_cap(clock):
    limiter = RateLimiter(per_minute=60, burst=10, clock=clock, max_entries=100)
    for n in range(10_000):
        assert limiter.allow(f"user{n}@x")
    assert len(limiter) == 100


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (1, 0)])
def test_nonsense_limits_are_refused(per_minute, burst):
    with pytest.raises(ValueError):
        RateLimiter(per_minute=per_minute, burst=burst)


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5)), max_size=200),
    st.integers(1, 5),
)
def test_never_more_than_the_burst_plus_the_rate(events, burst):
    clock = Clock()
    start = clock.now
    limiter = RateLimiter(per_minute=60, burst=burst, clock=clock)
    passed: dict[str, int] = {}
    for key, step in events:
        clock.now += step
        if limiter.allow(key):
            passed[key] = passed.get(key, 0) + 1
    elapsed = clock.now - start
    for count in passed.values():
        assert count <= burst + int(elapsed) + 1
