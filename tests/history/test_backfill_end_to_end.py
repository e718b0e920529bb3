"""The whole daemon against the simulator's market: after an outage, a stall or our own downtime, the
trades in time_and_sales (live + backfill) are the trades the market produced, one for one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from history_stack import (
    SYMBOLS,
    Market,
    first_live_second,
    history_settings,
    market,
    running,
    stored_keys,
    stored_trades,
)

from api.headless_chromium import headless_chromium
from ingestion.app import Daemon
from questdb_double import QuestDBDouble
from waiting import wait_for

pytestmark = pytest.mark.slow

HISTORY_PANEL = """({state: document.querySelector('#history').dataset.state,
  filled: document.querySelector('#history-gaps-filled').textContent,
  pending: document.querySelector('#history-gaps-pending').textContent})"""


def sample(metrics: str, series: str) -> float:
    """The value of one series in Prometheus text."""
    line = next(line for line in metrics.splitlines() if line.startswith(series + " "))
    return float(line.rsplit(" ", 1)[1])


def connected(daemon: Daemon) -> bool:
    return daemon.state.status == "connected" and daemon.pipeline.last_event_ns is not None


def gaps_waiting(daemon: Daemon) -> bool:
    """Every symbol's gap closed and queued for the backfill, none filled."""
    assert daemon.history is not None
    status = daemon.history.status()
    return status["gaps_pending"] == len(SYMBOLS) and not status["gaps_open"] and status["gaps_filled"] == 0


def all_filled(daemon: Daemon, at_least: int) -> bool:
    assert daemon.history is not None
    status = daemon.history.status()
    return status["gaps_filled"] + status["gaps_unfilled"] >= at_least and status["gaps_pending"] == 0


async def shown(page: Any) -> dict[str, str] | None:
    panel = await page.evaluate(HISTORY_PANEL)
    return panel if panel["state"] and panel["filled"] not in ("", "\u2026") else None


async def settled(qdb: QuestDBDouble) -> None:
    """Wait until time_and_sales stops growing (the market is paused, the writer has flushed)."""
    last = -1
    while (count := qdb.row_count("time_and_sales")) != last:
        last = count
        await asyncio.sleep(0.5)


async def assert_one_for_one(mkt: Market, qdb: QuestDBDouble) -> dict[str, tuple[int, int]]:
    """Per symbol, from the first whole second live saw until the pause: stored == produced."""
    figures = {}
    for symbol in SYMBOLS:
        rows = stored_trades(qdb, symbol)
        first = first_live_second(rows) + 1
        stored = stored_keys(rows, first)
        produced = await mkt.trades(symbol, first, first + 3600)
        missing, extra = produced - stored, stored - produced
        assert not missing, (
            f"{symbol}: {sum(missing.values())} trades of the market never stored: {list(missing)[:5]}"
        )
        assert not extra, (
            f"{symbol}: {sum(extra.values())} stored trades the market never made: {list(extra)[:5]}"
        )
        figures[symbol] = (sum(produced.values()), sum(1 for r in rows if r.get("source") == "backfill"))
    assert qdb.duplicates("time_and_sales") == 0
    return figures


async def test_an_outage_a_1100_and_a_silent_stall_are_filled_back_exactly_once(
    tmp_path: Path, valkey_url: str
) -> None:
    """Three kinds of gap in one session at 3,000 msgs/s: a gateway restart (3 s down, while IB's historical
    farm is down too), IB's 1100 until 1102 (3 s) and a silent stall (4 s, shorter than the heartbeat's
    limit, so the socket stays up)."""
    with QuestDBDouble() as qdb:
        async with market() as mkt:
            settings = history_settings(mkt.sim, qdb, tmp_path, valkey_url)
            ibkr = settings.ibkr.model_copy(
                update={"heartbeat_interval_seconds": 2, "heartbeat_timeout_seconds": 8}
            )
            settings = settings.model_copy(update={"ibkr": ibkr})
            async with running(settings) as daemon:
                await wait_for(lambda: connected(daemon), 20, "connected with data")
                await asyncio.sleep(2)
                # The outage's gaps wait while IB's historical farm is down (2105), and fill once it is up.
                await mkt.post("/hmds?state=down")
                await mkt.post("/restart?down=3")
                await wait_for(lambda: daemon.state.reconnects == 1, 20, "reconnected")
                await wait_for(lambda: gaps_waiting(daemon), 20, "the gaps ready, the farm still down")
                await asyncio.sleep(1)
                assert daemon.history.status()["requests"] == 0, "nothing is asked of a farm that is down"
                await mkt.post("/hmds?state=up")
                await wait_for(lambda: all_filled(daemon, len(SYMBOLS)), 40, "the outage's gaps filled")
                await mkt.post("/error?code=1100")
                await asyncio.sleep(3)
                await mkt.post("/error?code=1102")
                await wait_for(lambda: all_filled(daemon, 2 * len(SYMBOLS)), 40, "the 1100's gaps filled")
                await mkt.post("/silence?seconds=4")
                await wait_for(lambda: all_filled(daemon, 3 * len(SYMBOLS)), 40, "the stall's gaps filled")
                await mkt.post("/pause")
                await settled(qdb)
                figures = await assert_one_for_one(mkt, qdb)
                assert daemon.history is not None
                status = daemon.history.status()
                assert daemon.state.reconnects == 1, "the stall did not cost the connection"
                hmds = (await mkt.stats())["hmds"]
                metrics = daemon.metrics.render().decode()
        assert all(recovered > 0 for _, recovered in figures.values()), figures
        assert status["gaps_filled"] >= 3 * len(SYMBOLS)  # (more only if a loaded machine also stalled)
        assert status["pacing_violations"] == 0
        assert hmds["pacing"] == 0, "the simulator never answered 162"
        events = [(r["event"], r.get("detail", "")) for r in qdb.rows("ingestion_events")]
        causes = [detail.split("(")[1].split(")")[0] for event, detail in events if event == "gap_found"]
        assert sorted(set(causes)) == ["connection", "ib_connectivity", "stall"]
        assert [e for e, _ in events].count("gap_filled") == status["gaps_filled"]
        assert sample(metrics, 'ingestion_history_requests_total{kind="ticks"}') >= status["requests"] > 0
        backfilled = sum(recovered for _, recovered in figures.values())
        assert sample(metrics, 'ingestion_history_rows_total{table="time_and_sales"}') == backfilled
        assert sample(metrics, 'ingestion_history_gaps_total{outcome="filled"}') == status["gaps_filled"]


async def test_the_daemons_own_downtime_is_filled_back_from_the_newest_stored_trade(
    tmp_path: Path, valkey_url: str, chromium: str
) -> None:
    """Stopped for 3 s while the market trades on: the next start fills the hole, one for one, and the
    status page says so."""
    with QuestDBDouble() as qdb:
        async with market() as mkt:
            settings = history_settings(mkt.sim, qdb, tmp_path, valkey_url)
            async with running(settings) as daemon:
                await wait_for(lambda: connected(daemon), 20, "connected with data")
                await asyncio.sleep(2)
            await asyncio.sleep(3)
            async with running(settings) as daemon:
                await wait_for(lambda: connected(daemon), 20, "connected again")
                await wait_for(lambda: all_filled(daemon, len(SYMBOLS)), 40, "the downtime's gaps filled")
                assert daemon.api is not None
                async with headless_chromium(chromium, tmp_path / "profile") as browser:
                    page = await browser.new_page()
                    await page.goto(f"http://127.0.0.1:{daemon.api.port}/")
                    panel = await wait_for(lambda: shown(page), 10, "the history panel")
                # A paused market is silent: the stall detector opens gaps then, which is fine after this.
                await mkt.post("/pause")
                await settled(qdb)
                figures = await assert_one_for_one(mkt, qdb)
        assert panel["state"] == "ok"
        assert int(panel["filled"].split(" ")[0]) >= len(SYMBOLS)
        assert panel["pending"] == "0"
        assert all(recovered > 0 for _, recovered in figures.values()), figures
        found = [r["detail"] for r in qdb.rows("ingestion_events") if r["event"] == "gap_found"]
        # (A loaded machine may also see a stall; its gap is filled like any other, and counted above.)
        assert sum("(downtime)" in detail for detail in found) == len(SYMBOLS)


REFUSED = ("SPY", "DIA")  # one tick-by-tick symbol, one whose trades come from RTVolume


def held_by_refusal(daemon: Daemon) -> bool:
    """The outage's gaps of the other symbols filled; the refused symbols' gaps open, held by that alone."""
    assert daemon.history is not None
    status = daemon.history.status()
    held = {g["symbol"]: g["causes"] for g in status["gaps_open"]}
    others = len(SYMBOLS) - len(REFUSED)
    return held == {symbol: ["subscription"] for symbol in REFUSED} and status["gaps_filled"] >= others


async def test_a_refused_subscription_that_comes_back_is_asked_again_and_its_gap_filled_once(
    tmp_path: Path, valkey_url: str
) -> None:
    """After a gateway restart IB refuses time & sales of two symbols (354, no permission) for a while as
    the market trades on; once the permission is there again the daemon's retry gets the streams back on
    the same connection, and the whole time without them is filled back, one for one."""
    with QuestDBDouble() as qdb:
        async with market() as mkt:
            settings = history_settings(mkt.sim, qdb, tmp_path, valkey_url)
            ibkr = settings.ibkr.model_copy(update={"retry_not_entitled_seconds": 1})
            settings = settings.model_copy(update={"ibkr": ibkr})
            async with running(settings) as daemon:
                await wait_for(lambda: connected(daemon), 20, "connected with data")
                await asyncio.sleep(2)
                for symbol in REFUSED:  # answered only to new requests: the restart's resubscription
                    await mkt.post(f"/entitlement?value=none&symbol={symbol}")
                await mkt.post("/restart?down=1")
                await wait_for(lambda: daemon.state.reconnects == 1, 20, "reconnected")
                await wait_for(lambda: held_by_refusal(daemon), 30, "only the refused symbols' gaps open")
                await asyncio.sleep(3)  # refused, retried every second, while the market trades on
                # (A loaded machine may add a stall to every symbol: only the refusal's hold is asserted.)
                held = {g["symbol"]: g["causes"] for g in daemon.history.status()["gaps_open"]}
                assert all("subscription" in held.get(symbol, ()) for symbol in REFUSED), held
                refused = sorted(
                    f"{e.symbol} {e.data_type}"
                    for e in daemon.registry.entries()
                    if e.state == "not_entitled"
                )
                for symbol in REFUSED:
                    await mkt.post(f"/entitlement?value=live&symbol={symbol}")
                await wait_for(lambda: all_filled(daemon, len(SYMBOLS)), 30, "the refused time filled")
                states = {e.state for e in daemon.registry.entries() if e.state != "skipped_limit"}
                await mkt.post("/pause")
                await settled(qdb)
                figures = await assert_one_for_one(mkt, qdb)
                reconnects = daemon.state.reconnects
        assert reconnects == 1, "the streams came back without a reconnect"
        # SPY's depth book is one of IB's three (DIA's is skipped for the limit, as before the refusal).
        assert refused == ["DIA l1", "DIA time_and_sales", "SPY l1", "SPY l2", "SPY time_and_sales"]
        assert states == {"active"}, "every refused stream streams again"

        assert all(recovered > 0 for _, recovered in figures.values()), figures
        events = [(r["event"], r.get("detail", "")) for r in qdb.rows("ingestion_events")]
        rejected = [detail for event, detail in events if event == "subscription_rejected"]
        # Each refused stream is reported once: the retries' refusals are not news.
        assert sorted(d.split(":")[0] for d in rejected) == refused
        back = [detail for event, detail in events if event == "subscription_live"]
        assert {d.split(" ")[0] for d in back} == set(REFUSED)
