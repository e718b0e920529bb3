"""Unmodified ib_insync 0.9.86 (version 176) against the simulator, driven through its async API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from ib_insync import IB, Stock
from sim_support import SimFactory, wait_until

from ingestion.simulator.contracts import DEFAULT_ETFS
from ingestion.simulator.server import Simulator

CLIENT_ID = 12


@pytest.fixture
async def ib(sim: Simulator) -> AsyncIterator[IB]:
    """An ib_insync client connected (full, not readonly) to the simulator."""
    client = IB()
    await client.connectAsync("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5)
    yield client
    client.disconnect()


async def qualified(ib: IB, symbol: str) -> Stock:
    contract = Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    return contract


@pytest.mark.parametrize("readonly", [True, False], ids=["readonly", "full"])
async def test_connects_in_under_a_second_at_version_176(sim: Simulator, readonly: bool):
    """ib_insync negotiates 176 and finishes its startup sync (executions included) in under a second."""
    ib = IB()
    started = time.monotonic()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=4, readonly=readonly, timeout=5)
    try:
        assert time.monotonic() - started < 1.0
        assert ib.client.serverVersion() == 176
    finally:
        ib.disconnect()


async def test_qualifies_all_15_etfs(ib: IB):
    """All 15 ETFs qualify, each to one contract with a non-zero conId."""
    result = await ib.qualifyContractsAsync(*[Stock(s, "SMART", "USD") for s in DEFAULT_ETFS])
    assert [c.symbol for c in result] == list(DEFAULT_ETFS)
    assert all(c.conId > 0 for c in result)


async def test_unknown_symbol_is_dropped_with_error_200(ib: IB):
    """ib_insync omits an unknown contract and reports error 200."""
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    assert await ib.qualifyContractsAsync(Stock("NOPE", "SMART", "USD")) == []
    assert errors == [200]


async def test_level1_depth_and_all_tick_by_tick_kinds(ib: IB):
    """Level 1 with RTVolume, smart depth and the four tick-by-tick kinds all deliver data."""
    spy, qqq, iwm = await qualified(ib, "SPY"), await qualified(ib, "QQQ"), await qualified(ib, "IWM")
    l1 = ib.reqMktData(spy, "233")
    depth = ib.reqMktDepth(qqq, 10, isSmartDepth=True)
    last = ib.reqTickByTickData(spy, "Last")
    all_last = ib.reqTickByTickData(qqq, "AllLast")
    # On its own symbol: ib_insync merges every stream of a contract into one ticker, and the
    # simulator draws Level 1 and BidAsk quotes independently, so a merged bid/ask may look locked.
    bid_ask = ib.reqTickByTickData(iwm, "BidAsk")
    await wait_until(lambda: l1.rtVolume > 0 and len(depth.domBids) == 10 and len(depth.domAsks) == 10)
    await wait_until(lambda: bool(last.tickByTicks and all_last.tickByTicks and bid_ask.tickByTicks))
    assert l1.bid < l1.ask
    ib.cancelTickByTickData(spy, "Last")
    mid = ib.reqTickByTickData(spy, "MidPoint")
    # ib_insync keeps one ticker per contract, so SPY's Last and MidPoint ticks share a list.
    await wait_until(lambda: any(hasattr(t, "midPoint") for t in mid.tickByTicks))
    assert all(t.midPoint > 0 for t in mid.tickByTicks if hasattr(t, "midPoint"))


async def test_sees_the_disconnect_when_the_simulator_closes_the_socket(sim: Simulator, ib: IB):
    """A server-side close fires ib_insync's disconnectedEvent."""
    lost = asyncio.Event()
    ib.disconnectedEvent += lost.set
    sim.disconnect_all()
    await asyncio.wait_for(lost.wait(), 5)


async def test_client_book_matches_simulator_book_after_10000_updates(sim_factory: SimFactory):
    """ib_insync's list-based book (insert/pop) equals the simulator's after 10,000 depth messages."""
    async with sim_factory() as sim:
        sim.pause()
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5)
        try:
            ticker = ib.reqMktDepth(await qualified(ib, "QQQ"), 10, isSmartDepth=True)
            await ib.reqCurrentTimeAsync()
            req_id = next(iter(ib.wrapper.reqId2Ticker))
            sim.burst(10_000)
            await wait_until(lambda: sim.burst_pending == 0, within=20)
            await ib.reqCurrentTimeAsync()
            book = sim.depth_book(CLIENT_ID, req_id)
            assert sim.stats.for_symbol("QQQ")["depth"] >= 10_000
            bids = [(lv.price, lv.size, lv.marketMaker) for lv in ticker.domBids]
            asks = [(lv.price, lv.size, lv.marketMaker) for lv in ticker.domAsks]
            assert bids == [(float(r.price), r.size, r.market_maker) for r in book.bids]
            assert asks == [(float(r.price), r.size, r.market_maker) for r in book.asks]
        finally:
            ib.disconnect()


async def test_reads_history_bars_head_timestamp_and_ticks(sim: Simulator, ib: IB):
    """At version 176 too: a head timestamp, daily bars, and the tape's trades as historical ticks."""
    spy = await qualified(ib, "SPY")
    ib.reqTickByTickData(spy, "AllLast")
    await wait_until(lambda: sim.markets["SPY"].trades.count > 150)
    sim.pause()
    head = await ib.reqHeadTimeStampAsync(spy, "TRADES", useRTH=False, formatDate=1)
    bars = await ib.reqHistoricalDataAsync(spy, "", "1 M", "1 day", "TRADES", useRTH=False)
    end = datetime.fromtimestamp(sim.now_ms() // 1000, UTC)
    ticks = await ib.reqHistoricalTicksAsync(spy, "", end, 100, "TRADES", False)
    assert head.year <= bars[0].date.year
    assert len(bars) >= 30
    assert len(ticks) >= 100
    tape = sim.tape("SPY", 0, 2**62)[-len(ticks) :]
    assert [(t.price, t.size) for t in ticks] == [(t.price_cents / 100, t.size) for t in tape]
