"""Reconnect delays: capped exponential backoff with jitter drawn fresh on every attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ingestion.config import BackoffConfig


@dataclass(slots=True)
class ExponentialBackoff:
    """``compute(n)`` is the delay before attempt ``n + 1`` after ``n`` failures.

    >>> backoff = ExponentialBackoff(initial=1.0, maximum=10.0, jitter=0.0)
    >>> [backoff.compute(n) for n in range(6)]
    [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    """

    initial: float
    maximum: float
    multiplier: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_config(cls, config: BackoffConfig, rng: random.Random | None = None) -> ExponentialBackoff:
        return cls(
            config.initial_seconds,
            config.max_seconds,
            config.multiplier,
            config.jitter,
            rng or random.Random(),
        )

    def compute(self, failures: int) -> float:
        # min() before the power would overflow for large n; cap the exponent instead.
        base = min(self.maximum, self.initial * self.multiplier ** min(failures, 64))
        if not self.jitter:
            return base
        spread = base * self.jitter
        return max(0.0, min(self.maximum, base + self.rng.uniform(-spread, spread)))
