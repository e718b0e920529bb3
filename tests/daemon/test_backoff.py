"""Reconnect delays: capped exponential backoff with fresh jitter."""

from __future__ import annotations

import random

import pytest

from ingestion.config import BackoffConfig
from ingestion.ibkr.backoff import ExponentialBackoff


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (1000, 10.0)]
)
def test_doubles_from_initial_to_the_cap(failures: int, delay: float) -> None:
    """1, 2, 4, 8, then the 10 s cap forever (no overflow after many failures)."""
    assert ExponentialBackoff(1.0, 10.0, jitter=0).compute(failures) == delay


def test_jitter_is_fresh_each_attempt_and_bounded() -> None:
    """Jitter spreads delays within +/-20 % and never above the cap."""
    backoff = ExponentialBackoff.from_config(BackoffConfig(), random.Random(7))
    delays = [backoff.compute(2) for _ in range(200)]
    assert len(set(delays)) > 100
    assert all(3.2 <= d <= 4.8 for d in delays)
    assert all(backoff.compute(10) <= 10.0 for _ in range(200))
