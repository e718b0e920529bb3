"""Market sessions from the NYSE calendar: holidays, half days, extended hours."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta

import pytest

from ingestion.market_session import NEW_YORK, MarketCalendar


@pytest.fixture(scope="module")
def calendar() -> MarketCalendar:
    return MarketCalendar(start=date(2026, 1, 1), end=date(2027, 12, 31))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "session"),
    [
        # Monday 2026-11-23, a normal day (EST = UTC-5): 04:00, 09:30, 16:00, 20:00 New York.
        ("2026-11-23T08:59:59", "closed"),
        ("2026-11-23T09:00:00", "pre"),
        ("2026-11-23T14:29:59", "pre"),
        ("2026-11-23T14:30:00", "regular"),
        ("2026-11-23T20:59:59", "regular"),
        ("2026-11-23T21:00:00", "after"),
        ("2026-11-24T00:59:59", "after"),
        ("2026-11-24T01:00:00", "closed"),
        # Summer time (EDT = UTC-4): the regular session is 13:30-20:00 UTC.
        ("2026-07-01T13:30:00", "regular"),
        ("2026-07-01T13:29:00", "pre"),
    ],
)
def test_normal_day(calendar: MarketCalendar, moment: str, session: str) -> None:
    """On a normal trading day the four sessions follow New York time, across daylight saving."""
    assert calendar.session_at(utc(moment)) == session


def test_thanksgiving_is_closed_all_day(calendar: MarketCalendar) -> None:
    """2026-11-26 (Thanksgiving) is a holiday: closed even at what would be midday."""
    assert calendar.session_at(utc("2026-11-26T17:00:00")) == "closed"
    assert calendar.session_at(utc("2026-11-26T10:00:00")) == "closed"


def test_independence_day_observed_is_closed(calendar: MarketCalendar) -> None:
    """2026-07-03 (Independence Day observed, a Friday) is closed."""
    assert calendar.session_at(utc("2026-07-03T15:00:00")) == "closed"


@pytest.mark.parametrize(
    ("moment", "session"),
    [
        ("2026-11-27T17:59:59", "regular"),  # 12:59:59 New York
        ("2026-11-27T18:00:00", "after"),  # the 13:00 early close
        ("2026-11-27T21:59:59", "after"),
        ("2026-11-27T22:00:00", "closed"),  # the late session ends at 17:00 on half days
    ],
)
def test_day_after_thanksgiving_closes_early(calendar: MarketCalendar, moment: str, session: str) -> None:
    """2026-11-27 is a half day: regular until 13:00 New York, after hours until 17:00."""
    assert calendar.session_at(utc(moment)) == session


def test_weekend_is_closed(calendar: MarketCalendar) -> None:
    """Saturday has no session at all."""
    assert calendar.session_at(utc("2026-11-21T15:00:00")) == "closed"


def test_three_weeks_asked_in_any_order_give_each_days_hours(calendar: MarketCalendar) -> None:
    """The calendar keeps each day's boundaries once read (and only a few days at a time): asked about
    every 5 minutes of three weeks in a shuffled order, each New York day still has its own hours."""
    normal = {"pre": 330, "regular": 390, "after": 240}  # minutes: 04:00-09:30, 09:30-16:00, 16:00-20:00
    half_day = {"pre": 330, "regular": 210, "after": 240}  # 13:00 close, after hours until 17:00
    first = date(2026, 11, 16)
    steps = [
        datetime.combine(first + timedelta(days=d), time(0), NEW_YORK) + timedelta(minutes=5 * i)
        for d in range(21)
        for i in range(24 * 12)
    ]
    random.Random(5).shuffle(steps)
    minutes: dict[date, Counter[str]] = defaultdict(Counter)
    for moment in steps:
        minutes[moment.date()][calendar.session_at(moment.astimezone(UTC))] += 5
    for day, counted in minutes.items():
        if day.weekday() >= 5 or day == date(2026, 11, 26):  # weekends and Thanksgiving
            expected: dict[str, int] = {}
        else:
            expected = half_day if day == date(2026, 11, 27) else normal
        assert {s: n for s, n in counted.items() if s != "closed"} == expected, day
