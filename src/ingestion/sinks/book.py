"""A Level 2 book rebuilt from IB's position-addressed depth messages, for the Valkey cache.

IB describes a book as rows by position on each side: *insert* at a position shifts the rows from there
down, *delete* at a position shifts the rows below it up, *update* replaces the row at a position.
"""

from __future__ import annotations

from typing import Any

from ingestion.events import DepthUpdate

# IB serves at most 50 rows a side (LimitsConfig.depth_rows caps at 50); more can only be garbage.
MAX_ROWS = 50

Level = list[Any]  # [price, size, market_maker]


class DepthBook:
    """One symbol's book: ``bids`` and ``asks`` as lists of ``[price, size, market_maker]``."""

    __slots__ = ("asks", "bids", "max_rows", "timestamp_ns")

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.bids: list[Level] = []
        self.asks: list[Level] = []
        self.max_rows = max_rows
        self.timestamp_ns = 0

    def apply(self, update: DepthUpdate) -> None:
        rows = self.bids if update.side == "bid" else self.asks
        position = update.position
        level = [update.price, update.size, update.market_maker]
        if update.operation == "insert":
            rows.insert(min(position, len(rows)), level)
            del rows[self.max_rows :]
        elif update.operation == "update":
            if position < len(rows):
                rows[position] = level
            elif position < self.max_rows:
                # An update for a row we never saw (we joined mid-stream): the closest truth is to add it.
                rows.append(level)
        elif position < len(rows):  # delete
            del rows[position]
        self.timestamp_ns = update.timestamp_ns

    def snapshot(self, symbol: str) -> dict[str, Any]:
        """The ``market:l2:<SYMBOL>`` JSON body of CONTRACTS.md."""
        return {"symbol": symbol, "timestamp": self.timestamp_ns, "bids": self.bids, "asks": self.asks}
