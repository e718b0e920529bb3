"""RequestLimiter and Backoff, driven by a fake clock whose sleep advances it."""

from __future__ import annotations

import pytest
from fred_fakes import FakeClock, RecordingSleep

from ingestion.fred import Backoff, RequestLimiter


class TestRequestLimiter:
    async def test_requests_within_the_limit_do_not_wait(self) -> None:
        """Up to per_minute requests start at once."""
        clock = FakeClock(0.0)
        sleep = RecordingSleep(clock)
        limiter = RequestLimiter(3, clock=clock, sleep=sleep)
        for _ in range(3):
            await limiter.acquire()

        assert sleep.delays == []

    async def test_one_request_over_the_limit_waits_for_the_window_to_free(self) -> None:
        """The 4th of 3-per-minute, 10 s after the first, waits the 50 s until the first leaves the window."""
        clock = FakeClock(0.0)
        sleep = RecordingSleep(clock)
        limiter = RequestLimiter(3, clock=clock, sleep=sleep)
        await limiter.acquire()
        clock.now = 10.0
        await limiter.acquire()
        await limiter.acquire()
        await limiter.acquire()

        assert sleep.delays == [50.0]

    @pytest.mark.parametrize("per_minute", [1, 5, 120])
    async def test_no_sixty_second_window_holds_more_than_the_limit(self, per_minute: int) -> None:
        """Across three minutes of back-to-back requests, any 60 s holds at most per_minute starts."""
        clock = FakeClock(0.0)
        limiter = RequestLimiter(per_minute, clock=clock, sleep=RecordingSleep(clock))
        starts = []
        for _ in range(per_minute * 3):
            await limiter.acquire()
            starts.append(clock.now)

        assert max(sum(1 for s in starts if t <= s < t + 60) for t in starts) == per_minute


class TestBackoff:
    @pytest.mark.parametrize(
        ("failures", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)]
    )
    def test_delays_double_up_to_the_cap(self, failures: int, delay: float) -> None:
        """Without jitter: initial * multiplier ** (failures - 1), never above maximum."""
        assert Backoff(initial=1.0, maximum=10.0, jitter=0.0).compute(failures) == delay

    def test_jitter_only_shortens_the_delay(self) -> None:
        """With 20% jitter and the largest draw, the delay is 80% of the base, never above it."""
        backoff = Backoff(initial=5.0, maximum=10.0, jitter=0.2, rng=lambda: 1.0)
        assert backoff.compute(1) == pytest.approx(4.0)
