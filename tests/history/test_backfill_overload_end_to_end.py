"""The whole daemon against the simulator's market and a QuestDB at its limit: the trades the pipeline shed
under overload are filled back from IB's history, so time_and_sales holds the market's trades one for one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from history_stack import SYMBOLS, history_settings, market, running
from test_backfill_end_to_end import assert_one_for_one, connected, settled

from ingestion.app import Daemon
from ingestion.config import QuestDBConfig
from questdb_double import QuestDBDouble
from waiting import wait_for

pytestmark = pytest.mark.slow


def trades_shed(metrics: str) -> float:
    series = 'ingestion_events_dropped_by_type_total{reason="overload",type="trade"}'
    line = next((line for line in metrics.splitlines() if line.startswith(series + " ")), None)
    return 0.0 if line is None else float(line.rsplit(" ", 1)[1])


def every_gap_filled(daemon: Daemon) -> bool:
    assert daemon.history is not None
    status = daemon.history.status()
    return status["gaps_filled"] > 0 and not status["gaps_open"] and status["gaps_pending"] == 0


async def test_trades_shed_under_overload_are_filled_back_exactly_once(
    tmp_path: Path, valkey_url: str
) -> None:
    """3,000 msgs/s into a QuestDB that takes 600 rows/s (the writer holds 1,000 rows: everything is shed
    from 800) for 3 s. The stall cause is set far off, so only the overload cause can cover the shed
    trades."""
    with QuestDBDouble() as qdb:
        async with market() as mkt:
            settings = history_settings(
                mkt.sim, qdb, tmp_path, valkey_url, backfill={"settle_seconds": 2, "stall_seconds": 120}
            )
            questdb = QuestDBConfig.model_validate(settings.questdb.model_dump() | {"flush_rows": 200})
            settings = settings.model_copy(update={"questdb": questdb})
            async with running(settings) as daemon:
                await wait_for(lambda: connected(daemon), 20, "connected with data")
                await asyncio.sleep(1)
                qdb.throttle(600)
                await wait_for(
                    lambda: trades_shed(daemon.metrics.render().decode()) > 0,
                    20,
                    "trades shed under overload",
                )
                await asyncio.sleep(2)
                qdb.throttle(None)
                assert daemon.pipeline.overload is not None
                await wait_for(lambda: daemon.pipeline.overload.level == "normal", 20, "trades through again")
                shed = trades_shed(daemon.metrics.render().decode())
                await wait_for(lambda: every_gap_filled(daemon), 40, "the overload's gaps filled")
                await mkt.post("/pause")
                await settled(qdb)
                figures = await assert_one_for_one(mkt, qdb)
                assert daemon.history is not None
                status = daemon.history.status()
    events = [(r["event"], r.get("detail", "")) for r in qdb.rows("ingestion_events")]
    found = [detail for event, detail in events if event == "gap_found"]
    assert any("(overload)" in detail for detail in found), found
    assert [e for e, _ in events].count("gap_filled") == status["gaps_filled"]
    recovered = sum(backfilled for _, backfilled in figures.values())
    assert recovered >= shed > 0, (recovered, shed)
    assert set(figures) == set(SYMBOLS)
