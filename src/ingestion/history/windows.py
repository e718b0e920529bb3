"""Market time: which parts of a window the market was open, and which days it traded.

Requests for closed-market time are never sent. Session boundaries (04:00, 09:30, 16:00, 20:00 New York,
early closes) fall on whole minutes, so a minute grid finds them exactly. Windows are also cut at
00:00 UTC, because one historical ticks request covers one trading session at most.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from ingestion.market_session import NEW_YORK, Session


class Calendar(Protocol):
    def session_at(self, moment: datetime) -> Session: ...


DAY = 86400


class AlwaysOpen:
    """A market that trades around the clock, as the simulator's default sessions do."""

    def session_at(self, moment: datetime) -> Session:
        return "regular"

    def now(self) -> Session:
        return "regular"


def _open(calendar: Calendar, second: int) -> bool:
    return calendar.session_at(datetime.fromtimestamp(second, UTC)) != "closed"


def open_intervals(
    calendar: Calendar, start: int, end: int, *, cut_days: bool = True
) -> list[tuple[int, int]]:
    """The open parts of seconds ``start``..``end`` (both included), as (first, last) seconds, cut at
    00:00 UTC unless ``cut_days`` is false."""
    intervals: list[tuple[int, int]] = []
    current: int | None = None
    second = start
    while second <= end:
        step_end = min(end, (second // 60 + 1) * 60 - 1, (second // DAY + 1) * DAY - 1)
        if _open(calendar, second):
            if current is None:
                current = second
            if cut_days and step_end == (second // DAY + 1) * DAY - 1 and step_end < end:
                intervals.append((current, step_end))
                current = None
        elif current is not None:
            intervals.append((current, second - 1))
            current = None
        second = step_end + 1
    if current is not None:
        intervals.append((current, end))
    return intervals


def trading_day(calendar: Calendar, day: date) -> bool:
    """Whether the market trades on ``day`` (New York date): asked at noon, inside every session."""
    return calendar.session_at(datetime.combine(day, time(12, 0), NEW_YORK)) != "closed"


def trading_days_back(calendar: Calendar, today: date, count: int) -> date:
    """The earliest of the last ``count`` trading days up to ``today`` (included)."""
    day = today
    found = 0
    for _ in range(count * 3 + 14):
        if trading_day(calendar, day):
            found += 1
            if found == count:
                return day
        day -= timedelta(days=1)
    return day


def trading_days_between(calendar: Calendar, after: date, until: date) -> int:
    """Trading days in (``after``, ``until``]."""
    count = 0
    day = after + timedelta(days=1)
    while day <= until:
        count += trading_day(calendar, day)
        day += timedelta(days=1)
    return count
