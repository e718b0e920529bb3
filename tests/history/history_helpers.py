"""Calendars and builders shared by the history tests."""

from __future__ import annotations

from datetime import datetime

from ingestion.events import Trade
from ingestion.market_session import Session


class AlwaysOpen:
    """The simulator's `always` sessions: the regular session around the clock."""

    def session_at(self, moment: datetime) -> Session:
        return "regular"

    def now(self) -> Session:
        return "regular"


def live_trade(
    symbol: str, second: float, price: float, size: float = 100, exchange: str | None = "ARCA"
) -> Trade:
    received = int(second * 1e9) + 3_000_000
    return Trade(symbol, received, int(second) * 1_000_000_000, price, size, exchange, None, False, False,
                 "tick_by_tick")  # fmt: skip
