"""Market time for history requests: closed time is never asked for; bars are asked for only once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from history_helpers import AlwaysOpen

from ingestion.config import BarSeriesConfig
from ingestion.history.bars import BarPlanner, parse_bar
from ingestion.history.windows import open_intervals
from ingestion.market_session import MarketCalendar


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def nyse() -> MarketCalendar:
    return MarketCalendar(datetime(2026, 11, 1).date(), datetime(2026, 12, 31).date())


def test_a_window_over_a_weekend_asks_only_for_the_open_hours(nyse: MarketCalendar) -> None:
    # Friday 2026-12-04 19:59:30 New York (00:59:30 UTC Saturday) to Monday 04:00:30 New York.
    windows = open_intervals(nyse, ts("2026-12-05T00:59:30"), ts("2026-12-07T09:00:30"))
    assert windows == [(ts("2026-12-05T00:59:30"), ts("2026-12-05T00:59:59")),
                       (ts("2026-12-07T09:00:00"), ts("2026-12-07T09:00:30"))]  # fmt: skip


def test_a_window_is_cut_at_midnight_utc_one_session_per_request() -> None:
    windows = open_intervals(AlwaysOpen(), ts("2026-12-05T23:59:50"), ts("2026-12-06T00:00:10"))
    assert windows == [(ts("2026-12-05T23:59:50"), ts("2026-12-05T23:59:59")),
                       (ts("2026-12-06T00:00:00"), ts("2026-12-06T00:00:10"))]  # fmt: skip


def test_a_closed_window_asks_for_nothing(nyse: MarketCalendar) -> None:
    assert open_intervals(nyse, ts("2026-12-05T12:00:00"), ts("2026-12-05T18:00:00")) == []


def test_intraday_bars_start_after_the_newest_stored_and_end_at_the_last_complete_bar() -> None:
    now = ts("2026-12-06T10:30:45")
    planner = BarPlanner(AlwaysOpen(), lambda: now)
    series = BarSeriesConfig(bar_size="1 min", lookback="5 D")
    newest = ts("2026-12-06T10:00:00") * 10**9
    (request,) = planner.plan(series, newest)
    assert request.end == datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
    assert request.duration == "1740 S"  # 29 bars, 10:01 to 10:29
    assert request.keep_after_ns == ts("2026-12-06T10:01:00") * 10**9
    # Nothing completed since the newest stored bar: no request at all.
    assert planner.plan(series, ts("2026-12-06T10:29:00") * 10**9) == []


def test_the_first_intraday_sync_asks_one_day_per_request_over_the_look_back() -> None:
    now = ts("2026-12-06T10:30:00")
    planner = BarPlanner(AlwaysOpen(), lambda: now)
    requests = planner.plan(BarSeriesConfig(bar_size="1 min", lookback="2 D"), None)
    assert all(int(r.duration.split()[0]) <= 86400 for r in requests)
    assert requests[0].keep_after_ns == ts("2026-12-05T05:00:00") * 10**9  # midnight New York, two days back
    assert requests[-1].end == datetime(2026, 12, 6, 10, 30, tzinfo=UTC)


def test_daily_bars_ask_for_the_look_back_first_then_only_the_days_completed_since() -> None:
    now = ts("2026-12-06T10:30:00")
    planner = BarPlanner(AlwaysOpen(), lambda: now)
    series = BarSeriesConfig(bar_size="1 day", lookback="2 Y")
    assert planner.plan(series, None)[0].duration == "2 Y"
    assert planner.plan(series, ts("2026-12-05T00:00:00") * 10**9) == []  # yesterday stored, today still open
    (request,) = planner.plan(series, ts("2026-12-03T00:00:00") * 10**9)
    assert request.duration == "3 D"  # the 4th and 5th, plus today's (still open, dropped)
    assert request.keep_after_ns == ts("2026-12-04T00:00:00") * 10**9
    assert request.keep_until_ns == ts("2026-12-06T00:00:00") * 10**9


class Bar:
    def __init__(self, **fields: object) -> None:
        self.__dict__.update(fields)


def test_a_bar_with_missing_or_garbage_fields_is_skipped() -> None:
    good = Bar(date=datetime(2026, 12, 6, tzinfo=UTC), open=1, high=2, low=0.5, close=1.5, volume=10,
               average=1.2, barCount=3)  # fmt: skip
    assert parse_bar(good, "SPY", "1 min") is not None
    assert parse_bar(Bar(date=good.date, open="x"), "SPY", "1 min") is None
    assert parse_bar(Bar(**{**good.__dict__, "high": float("nan")}), "SPY", "1 min") is None
    assert parse_bar(Bar(**{**good.__dict__, "date": None}), "SPY", "1 min") is None
