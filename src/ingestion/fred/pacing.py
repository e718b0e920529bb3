"""Request pacing for FRED: a per-minute limiter and a capped exponential backoff policy."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[object]]
Clock = Callable[[], float]

WINDOW_SECONDS = 60.0


class RequestLimiter:
    """At most ``per_minute`` requests in any 60-second window.

    A sliding log of the last ``per_minute`` start times rather than a token bucket: a bucket
    refilled at the same rate would allow up to twice the limit across a window boundary, and
    FRED counts requests per key per minute.
    """

    def __init__(self, per_minute: int, *, clock: Clock, sleep: Sleep) -> None:
        if per_minute < 1:
            msg = f"per_minute must be at least 1, got {per_minute}"
            raise ValueError(msg)
        self._per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()

    async def acquire(self) -> None:
        """Wait until one more request fits in the window, then count it."""
        while True:
            now = self._clock()
            while self._starts and now - self._starts[0] >= WINDOW_SECONDS:
                self._starts.popleft()
            if len(self._starts) < self._per_minute:
                self._starts.append(now)
                return
            await self._sleep(self._starts[0] + WINDOW_SECONDS - now)


class Backoff:
    """Capped exponential delays with fresh jitter per attempt (``compute(failures)``).

    >>> Backoff(initial=1.0, maximum=8.0, jitter=0.0).compute(5)
    8.0
    """

    def __init__(
        self,
        *,
        initial: float = 2.0,
        maximum: float = 60.0,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng

    def compute(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures (1-based)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))
        # Jitter only shortens the delay, so the cap stays a true upper bound.
        return base * (1.0 - self.jitter * self._rng())
