"""Calendars and builders shared by the history tests."""

from __future__ import annotations

from ingestion.events import Trade
from ingestion.history.windows import AlwaysOpen

__all__ = ["AlwaysOpen", "live_trade"]


def live_trade(
    symbol: str, second: float, price: float, size: float = 100, exchange: str | None = "ARCA"
) -> Trade:
    received = int(second * 1e9) + 3_000_000
    return Trade(symbol, received, int(second) * 1_000_000_000, price, size, exchange, None, False, False,
                 "tick_by_tick")  # fmt: skip
