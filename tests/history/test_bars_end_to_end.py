"""Bars from the simulator's history into market_data_historical; a second start asks for no bar it has."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from history_stack import SYMBOLS, history_settings, market, running

from ingestion.app import Daemon
from questdb_double import QuestDBDouble
from waiting import wait_for

pytestmark = pytest.mark.slow

BARS = [{"bar_size": "1 day", "lookback": "1 M"}, {"bar_size": "30 mins", "lookback": "2 D"}]
HALF_HOUR = 1800


def bars_done(daemon: Daemon) -> bool:
    assert daemon.history is not None
    status = daemon.history.status()
    return status["bar_series_pending"] == 0 and all(status["bars_up_to_date"].values())


def bars_of(qdb: QuestDBDouble, bar_size: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for row in qdb.rows("market_data_historical"):
        if row["bar_size"] == bar_size:
            found.setdefault(row["symbol"], []).append(row["timestamp"])
    return {symbol: sorted(stamps) for symbol, stamps in found.items()}


async def test_bars_are_stored_once_and_a_second_start_asks_only_for_what_completed_since(
    tmp_path: Path, valkey_url: str
) -> None:
    with QuestDBDouble() as qdb:
        async with market() as mkt:
            settings = history_settings(
                mkt.sim, qdb, tmp_path, valkey_url, bars=BARS, backfill={"enabled": False}
            )
            async with running(settings) as daemon:
                await wait_for(lambda: bars_done(daemon), 30, "the first sync of bars")
            first_done = time.time()
            daily, halves = bars_of(qdb, "1 day"), bars_of(qdb, "30 mins")
            answered = (await mkt.stats())["hmds"]["answered"]
            async with running(settings) as daemon:
                await wait_for(lambda: bars_done(daemon), 30, "the second sync of bars")
            asked_again = (await mkt.stats())["hmds"]["answered"] - answered
            second_done = time.time()
    assert set(daily) == set(SYMBOLS)
    assert all(len(days) >= 28 for days in daily.values()), (
        "a month of daily bars, today's (still open) left out"
    )
    assert all(len(stamps) >= 48 for stamps in halves.values()), "two days of half-hour bars"
    assert all(stamps[-1] // 1_000_000 + HALF_HOUR <= first_done for stamps in halves.values()), (
        "complete bars only"
    )
    assert qdb.duplicates("market_data_historical") == 0, "no bar was stored twice"
    # The second start asks only for half-hour bars completed in between (none, unless a boundary passed).
    boundary_passed = int(first_done) // HALF_HOUR != int(second_done) // HALF_HOUR
    assert asked_again == (len(SYMBOLS) if boundary_passed else 0)
