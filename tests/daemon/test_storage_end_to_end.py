"""The whole daemon into a real Valkey and the QuestDB double: every row exactly once, outages and all."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as redis

from daemon_stack import running_daemon, stack_settings
from ingestion.config import Settings
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import running_simulator
from questdb_double import QuestDBDouble
from waiting import wait_for

FULL_UNIVERSE = Settings().universe
SENT_TRADE_KIND = {"tick_by_tick": "tick_by_tick_all_last", "rtvolume": "rtvolume"}


def per_symbol(qdb: QuestDBDouble, table: str) -> Counter:
    return Counter(row["symbol"] for row in qdb.rows(table))


def market_rows(qdb: QuestDBDouble) -> int:
    return sum(qdb.row_count(t) for t in ("market_data_l1", "market_data_l2", "time_and_sales"))


@pytest.mark.slow
async def test_a_60s_run_with_a_30s_questdb_outage_stores_every_row_exactly_once(
    valkey_url: str, tmp_path: Path
) -> None:
    """1. 15 s streaming; 2. QuestDB answers 503 for 30 s while rows go to the spool; 3. 15 s more;
    then every trade and depth message the simulator sent is in QuestDB exactly once (per symbol,
    zero duplicates), Level 1 rows exist for all 15 symbols, and the spool is drained."""
    with QuestDBDouble() as qdb:
        async with running_simulator(SimulatorConfig(port=0, control_port=None, rate=800)) as sim:
            settings = stack_settings(sim, qdb, tmp_path / "spool", valkey_url)
            settings = settings.model_copy(update={"universe": FULL_UNIVERSE})
            async with running_daemon(settings) as daemon:
                await wait_for(
                    lambda: daemon.registry.counts()["active"] == 33, 15, "33 active subscriptions"
                )
                await asyncio.sleep(15)
                qdb.outage(503)
                await wait_for(lambda: daemon.questdb.status().state == "down", 5, "the writer to notice")
                await asyncio.sleep(30)
                spooled = daemon.questdb.status().details["spool_bytes"]
                assert spooled > 0, "rows went to the spool during the outage"
                qdb.heal()
                await asyncio.sleep(15)
                sim.pause()
                sent = sim.snapshot_stats()["sent"]["by_symbol"]
                sources = {
                    s: daemon.registry.streams[s].time_and_sales.source for s in daemon.registry.streams
                }
                expected_trades = {s: sent[s][SENT_TRADE_KIND[sources[s]]] for s in sources}
                expected_depth = {s: sent[s]["depth"] for s in sources if sent[s]["depth"]}

                def stored_everything() -> bool:
                    status = daemon.questdb.status()
                    return (
                        status.state == "ok"
                        and status.details["spool_bytes"] == 0
                        and status.details["pending_rows"] == 0
                        and per_symbol(qdb, "time_and_sales") == Counter(expected_trades)
                        and per_symbol(qdb, "market_data_l2") == Counter(expected_depth)
                    )

                await wait_for(stored_everything, 60, "every trade and depth row, spool drained")
                assert set(per_symbol(qdb, "market_data_l1")) == {s.symbol for s in FULL_UNIVERSE}
                for table in ("market_data_l1", "market_data_l2", "time_and_sales"):
                    assert qdb.duplicates(table) == 0, f"{table} received a row twice"
                assert sum(expected_trades.values()) > 2000
                assert daemon.questdb.status().details["rows_lost"] == 0
                events = {row["event"] for row in qdb.rows("ingestion_events")}
                assert {"questdb_down", "questdb_restored"} <= events


@pytest.mark.slow
async def test_valkey_down_for_20s_does_not_slow_questdb_and_the_cache_catches_up(
    restartable_valkey, tmp_path: Path
) -> None:
    """With Valkey stopped for 20 s, rows reach QuestDB at the same rate as before; once it is
    back, market:l1:<SYMBOL> holds fresh state again."""
    with QuestDBDouble() as qdb:
        async with running_simulator(SimulatorConfig(port=0, control_port=None, rate=800)) as sim:
            settings = stack_settings(sim, qdb, tmp_path / "spool", restartable_valkey.url)
            async with running_daemon(settings) as daemon, redis.from_url(restartable_valkey.url) as cache:
                await wait_for(lambda: daemon.registry.counts()["pending"] == 0, 15, "subscriptions")
                await wait_for(lambda: cache.get("market:l1:SPY"), 5, "the cache to fill")

                async def rows_per_second(seconds: float) -> float:
                    before = sum(
                        qdb.row_count(t) for t in ("market_data_l1", "market_data_l2", "time_and_sales")
                    )
                    await asyncio.sleep(seconds)
                    after = sum(
                        qdb.row_count(t) for t in ("market_data_l1", "market_data_l2", "time_and_sales")
                    )
                    return (after - before) / seconds

                baseline = await rows_per_second(8)
                restartable_valkey.stop()
                await wait_for(lambda: daemon.valkey.status().state == "down", 5, "the cache outage")
                during = await rows_per_second(20)
                restartable_valkey.start()
                await wait_for(lambda: daemon.valkey.status().state == "ok", 10, "the cache to recover")

                async def fresh_quote() -> bool:
                    try:
                        raw = await cache.get("market:l1:SPY")
                    except redis.ConnectionError:  # the test's own connection died with the server
                        return False
                    return (
                        raw is not None and json.loads(raw)["timestamp"] > daemon.pipeline.last_event_ns - 2e9
                    )

                await wait_for(fresh_quote, 10, "a fresh market:l1:SPY after the restart")
            assert baseline > 200
            assert during >= 0.8 * baseline, f"QuestDB rows/s fell from {baseline:.0f} to {during:.0f}"
