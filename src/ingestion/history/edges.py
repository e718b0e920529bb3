"""Which of IB's historical trades the live stream did not store, and the rows they become.

A gap's window runs from the last second in which live trades arrived before the gap to a second by
which the live stream is complete again, both included. IB's historical trades carry whole seconds,
so at the two edge seconds (and anywhere live trades did arrive inside the window) some of IB's trades
were stored live and some were not. The rule, applied to the whole window:

1. every live trade stored for the window is matched against IB's trades, as a multiset: first on
   (second, price, size, exchange), then, for live trades without an exchange (RTVolume), on
   (second, price, size);
2. IB's trades left unmatched are the missing ones, and only they are stored, with ``source='backfill'``;
3. a missing trade's designated timestamp is derived from IB's answer alone: its second, plus its
   position among IB's trades of that second, in microseconds (moved by whole milliseconds past any
   stored live row of the same symbol that holds that microsecond). Filling the same window again
   gives the same rows with the same timestamps, which DEDUP UPSERT KEYS(timestamp, symbol) stores once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class TapeTrade:
    """One trade as both the live stream and IB's history describe it."""

    second: int
    price: float
    size: float | None
    exchange: str | None = None


@dataclass(frozen=True, slots=True)
class StoredTrade:
    """A trade already in time_and_sales (live, or an earlier backfill): its trade and its row's time."""

    trade: TapeTrade
    timestamp_us: int


def _exact(trade: TapeTrade) -> tuple[int, float, float | None, str | None]:
    return (trade.second, round(trade.price, 6), trade.size, trade.exchange)


def _loose(trade: TapeTrade) -> tuple[int, float, float | None]:
    return (trade.second, round(trade.price, 6), trade.size)


def missing_indices(history: Sequence[TapeTrade], stored: Iterable[TapeTrade]) -> list[int]:
    """Indices into ``history`` of the trades no stored trade accounts for, in IB's order."""
    stored = list(stored)
    exact = Counter(_exact(t) for t in stored if t.exchange is not None)
    unmatched: list[int] = []
    for index, trade in enumerate(history):
        key = _exact(trade)
        if exact[key] > 0:
            exact[key] -= 1
        else:
            unmatched.append(index)
    # Live trades without an exchange, and those whose exchange IB spells differently, match loosely.
    loose = Counter(_loose(t) for t in stored if t.exchange is None)
    for (second, price, size, _), left in exact.items():
        if left > 0:
            loose[(second, price, size)] += left
    missing = []
    for index in unmatched:
        key = _loose(history[index])
        if loose[key] > 0:
            loose[key] -= 1
        else:
            missing.append(index)
    return missing


def backfill_timestamps(
    history: Sequence[TapeTrade], indices: Sequence[int], taken_us: set[int]
) -> list[int]:
    """Designated timestamps (microseconds) for ``history[i]`` of each of ``indices``; see the module doc."""
    position: dict[int, int] = {}
    within: list[int] = []
    for trade in history:
        n = position.get(trade.second, 0)
        within.append(n)
        position[trade.second] = n + 1
    used = set(taken_us)
    stamps = []
    for index in indices:
        base = history[index].second * MICROS + within[index]
        candidate = base
        while candidate in used:
            candidate += 1000
        used.add(candidate)
        stamps.append(candidate)
    return stamps
