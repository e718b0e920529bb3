"""Fill one gap of time_and_sales from IB's historical TRADES ticks.

For each open part of the gap's window, ticks are read forward from its first second, 1,000 at a time
(IB completes the last second of each answer), until the window's last second is covered or IB has no
more; one request per step, so that one long gap does not hold up the others. The edge rule of edges.py
then picks the trades the live stream did not store; they go to QuestDB as ``source='backfill'`` rows.
A tick with missing or garbage fields is logged and skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingestion.events import Trade
from ingestion.history.client import TICKS_PER_REQUEST, HistoryClient
from ingestion.history.edges import TapeTrade, backfill_timestamps, missing_indices
from ingestion.history.gaps import Gap
from ingestion.history.windows import Calendar, open_intervals
from ingestion.logging import get_logger

log = get_logger("history")


@dataclass(frozen=True, slots=True)
class HistoricalTrade:
    """One parsed historical tick."""

    tape: TapeTrade
    conditions: str | None
    past_limit: bool
    unreported: bool


@dataclass(slots=True)
class GapFill:
    """A gap being read from IB, one request at a time: where the next request starts, and what came."""

    gap: Gap
    intervals: list[tuple[int, int]]  # the open parts of the window, (first, last) seconds
    index: int = 0
    cursor: int | None = None  # the next request's first second, within intervals[index]
    history: list[HistoricalTrade] = field(default_factory=list)
    requests: int = 0
    skipped: int = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.intervals)

    def advance(self, start: int) -> None:
        """The next request starts at ``start``, or in the next open interval if past this one."""
        if start > self.intervals[self.index][1]:
            self.index += 1
            self.cursor = None
        else:
            self.cursor = start


def parse_tick(tick: Any) -> HistoricalTrade | None:
    """ib_async's HistoricalTickLast as a trade; None for missing or garbage fields."""
    try:
        moment = tick.time
        second = int(moment.timestamp()) if isinstance(moment, datetime) else int(moment)
        price = float(tick.price)
        size = float(tick.size)
        attrib = tick.tickAttribLast
        past_limit = bool(getattr(attrib, "pastLimit", False))
        unreported = bool(getattr(attrib, "unreported", False))
        exchange = str(tick.exchange or "") or None
        conditions = str(tick.specialConditions or "") or None
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(price) and price > 0 and math.isfinite(size) and size >= 0 and second > 0):
        return None
    return HistoricalTrade(TapeTrade(second, price, size, exchange), conditions, past_limit, unreported)


class Backfiller:
    """Reads a gap's window from IB and returns the rows it was missing."""

    def __init__(self, client: HistoryClient, calendar: Calendar, *, on_request: Callable[[], None]) -> None:
        self._client = client
        self._calendar = calendar
        self._on_request = on_request

    def begin(self, gap: Gap) -> GapFill:
        """The reading of ``gap``'s window: its open parts only (no request for closed-market time)."""
        assert gap.start_s is not None
        end = gap.end_s
        assert end is not None
        return GapFill(gap, open_intervals(self._calendar, gap.start_s, end))

    async def step(self, fill: GapFill) -> None:
        """One request; raises the client's errors, leaving ``fill`` where it was (the caller retries)."""
        first, last = fill.intervals[fill.index]
        start = first if fill.cursor is None else fill.cursor
        ticks = await self._client.trade_ticks(fill.gap.symbol, start)
        fill.requests += 1
        self._on_request()
        parsed = [parse_tick(t) for t in ticks]
        good = [p for p in parsed if p is not None]
        if len(good) < len(parsed):
            fill.skipped += len(parsed) - len(good)
            log.warning(
                "historical ticks with missing or garbage fields skipped",
                symbol=fill.gap.symbol,
                skipped=len(parsed) - len(good),
            )
        fill.history.extend(p for p in good if first <= p.tape.second <= last)
        if len(ticks) < TICKS_PER_REQUEST or not good:
            fill.advance(last + 1)  # IB has no more in this interval
        else:
            # IB completes the last second of an answer, so the next request starts after it.
            fill.advance(max(max(p.tape.second for p in good) + 1, start + 1))

    def rows(self, fill: GapFill) -> list[Trade]:
        """The trades of ``fill`` that live did not store, as backfill rows (see edges.py)."""
        return self._rows(fill.gap, fill.history)

    def _rows(self, gap: Gap, history: Sequence[HistoricalTrade]) -> list[Trade]:
        assert gap.start_s is not None
        end = gap.end_s
        assert end is not None
        tape = [h.tape for h in history]
        stored = gap.stored()
        in_window = [s.trade for s in stored if gap.start_s <= s.trade.second <= end]
        indices = missing_indices(tape, in_window)
        stamps = backfill_timestamps(tape, indices, {s.timestamp_us for s in stored})
        rows = []
        for index, stamp in zip(indices, stamps, strict=True):
            item = history[index]
            trade = item.tape
            rows.append(
                Trade(
                    gap.symbol,
                    stamp * 1000,
                    trade.second * 1_000_000_000,
                    trade.price,
                    trade.size,
                    trade.exchange,
                    item.conditions,
                    item.past_limit,
                    item.unreported,
                    "backfill",
                )
            )
        return rows
