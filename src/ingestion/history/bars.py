"""Bars into market_data_historical, incrementally from the newest bar stored.

Only complete bars are stored (an intraday bar whose end has passed, a daily bar whose session has
closed), so the newest stored bar is never one that will still change, and the next request starts
right after it: a restart asks only for bars that completed since.

Requests per bar size (IB's rules for durations, TWS API "Historical Data Limitations"):

- ``1 day``: the whole look-back (``2 Y``) the first time; then ``N D`` for the N trading days that
  completed since the newest stored day (plus today's, still open, when today trades: dropped).
- intraday: ``N S`` ending at the last complete bar boundary, at most one day (86,400 s) per request,
  and never for closed-market time; N at least the shortest duration IB allows for the bar size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ingestion.config import BAR_SIZES, BarSeriesConfig
from ingestion.events import HistoricalBar
from ingestion.history.client import HistoryClient
from ingestion.history.windows import (
    Calendar,
    open_intervals,
    trading_day,
    trading_days_back,
    trading_days_between,
)
from ingestion.logging import get_logger
from ingestion.market_session import NEW_YORK

log = get_logger("history")

MAX_SECONDS_PER_REQUEST = 86400
# The shortest "N S" duration IB accepts for a bar size (its table of durations and bar sizes).
_MIN_SECONDS = ((60, 60), (120, 120), (1800, 1800), (3600, 3600), (10800, 14400), (28800, 28800))
LOOKBACK_DAYS = {"D": 1, "W": 7, "M": 31, "Y": 366}


def min_duration_seconds(bar_seconds: int) -> int:
    return next((duration for size, duration in _MIN_SECONDS if bar_seconds <= size), MAX_SECONDS_PER_REQUEST)


@dataclass(frozen=True, slots=True)
class BarRequest:
    end: datetime | None
    duration: str
    keep_after_ns: int  # only bars starting at or after this (ns) are new
    keep_until_ns: int  # only bars ending at or before this (ns) are complete


def parse_bar(bar: Any, symbol: str, bar_size: str) -> HistoricalBar | None:
    """ib_async's BarData as a row; None for missing or garbage fields."""
    try:
        moment = bar.date
        if isinstance(moment, datetime):
            start_ns = int(moment.timestamp()) * 1_000_000_000
        elif isinstance(moment, date):
            start_ns = int(datetime.combine(moment, time(0), UTC).timestamp()) * 1_000_000_000
        else:
            return None
        prices = [float(bar.open), float(bar.high), float(bar.low), float(bar.close)]
        volume = float(bar.volume)
        wap = float(bar.average)
        count = int(bar.barCount)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None
    if not all(math.isfinite(p) and p > 0 for p in prices) or prices[2] > prices[1]:
        return None
    return HistoricalBar(
        symbol,
        start_ns,
        bar_size,
        *prices,
        volume if math.isfinite(volume) and volume >= 0 else None,
        wap if math.isfinite(wap) and wap > 0 else None,
        count if count >= 0 else None,
    )


class BarPlanner:
    """What to ask IB for one symbol and bar size, given the newest bar stored."""

    def __init__(self, calendar: Calendar, now: Callable[[], float]) -> None:
        self._calendar = calendar
        self._now = now

    def plan(self, series: BarSeriesConfig, newest_ns: int | None) -> list[BarRequest]:
        if series.bar_size == "1 day":
            return self._daily(series, newest_ns)
        return self._intraday(series, newest_ns)

    def _today(self) -> tuple[datetime, date, bool]:
        now = datetime.fromtimestamp(self._now(), UTC)
        today = now.astimezone(NEW_YORK).date()
        session = self._calendar.session_at(now)
        closed_for_the_day = now.astimezone(NEW_YORK).hour >= 12 and session in ("after", "closed")
        return now, today, closed_for_the_day

    def _daily(self, series: BarSeriesConfig, newest_ns: int | None) -> list[BarRequest]:
        _, today, closed = self._today()
        today_open = trading_day(self._calendar, today) and not closed
        last_complete = (
            today - timedelta(days=1) if today_open or not trading_day(self._calendar, today) else today
        )
        until_ns = int(datetime.combine(last_complete + timedelta(days=1), time(0), UTC).timestamp()) * 10**9
        if newest_ns is None:
            return [BarRequest(None, series.lookback, 0, until_ns)]
        newest = datetime.fromtimestamp(newest_ns / 1e9, UTC).date()
        missing = trading_days_between(self._calendar, newest, last_complete)
        if missing <= 0:
            return []
        after_ns = int(datetime.combine(newest + timedelta(days=1), time(0), UTC).timestamp()) * 10**9
        return [BarRequest(None, f"{missing + today_open} D", after_ns, until_ns)]

    def _intraday(self, series: BarSeriesConfig, newest_ns: int | None) -> list[BarRequest]:
        size = BAR_SIZES[series.bar_size]
        now = int(self._now())
        complete_until = now // size * size
        if newest_ns is None:
            first = self._lookback_start(series.lookback, now)
        else:
            first = newest_ns // 1_000_000_000 + size
        if complete_until - first < size:
            return []
        requests = []
        for open_first, open_last in open_intervals(
            self._calendar, first, complete_until - 1, cut_days=False
        ):
            start = open_first // size * size
            stop = min(complete_until, (open_last // size + 1) * size)
            while stop - start >= size:
                piece_end = min(stop, start + MAX_SECONDS_PER_REQUEST)
                seconds = max(piece_end - start, min_duration_seconds(size))
                requests.append(
                    BarRequest(
                        datetime.fromtimestamp(piece_end, UTC),
                        f"{seconds} S",
                        max(start, first) * 1_000_000_000,
                        complete_until * 1_000_000_000,
                    )
                )
                start = piece_end
        return requests

    def _lookback_start(self, lookback: str, now: int) -> int:
        count, unit = int(lookback.split()[0]), lookback.split()[1]
        today = datetime.fromtimestamp(now, UTC).astimezone(NEW_YORK).date()
        if unit == "D":
            first_day = trading_days_back(self._calendar, today, count)
        else:
            first_day = today - timedelta(days=count * LOOKBACK_DAYS[unit])
        return int(datetime.combine(first_day, time(0), NEW_YORK).timestamp())


class BarSync:
    """Runs the plan of one symbol and bar size; returns the new complete bars."""

    def __init__(
        self,
        client: HistoryClient,
        planner: BarPlanner,
        *,
        what_to_show: str,
        use_rth: bool,
        on_request: Callable[[], None],
    ) -> None:
        self._client = client
        self._planner = planner
        self._what = what_to_show
        self._use_rth = use_rth
        self._on_request = on_request

    def plan(self, series: BarSeriesConfig, newest_ns: int | None) -> list[BarRequest]:
        return self._planner.plan(series, newest_ns)

    async def fetch(self, symbol: str, series: BarSeriesConfig, request: BarRequest) -> list[HistoricalBar]:
        raw = await self._client.bars(
            symbol, request.end, request.duration, series.bar_size, self._what, self._use_rth
        )
        self._on_request()
        size_ns = BAR_SIZES[series.bar_size] * 1_000_000_000
        bars = []
        skipped = 0
        for item in raw:
            bar = parse_bar(item, symbol, series.bar_size)
            if bar is None:
                skipped += 1
                continue
            if (
                request.keep_after_ns <= bar.timestamp_ns
                and bar.timestamp_ns + size_ns <= request.keep_until_ns
            ):
                bars.append(bar)
        if skipped:
            log.warning("bars with missing or garbage fields skipped", symbol=symbol, skipped=skipped)
        return bars
