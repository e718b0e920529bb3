"""Unmodified ib_async against the simulator: connect, qualify, Level 1, depth, tick-by-tick, disconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from ib_async import IB, Stock, Ticker
from sim_support import SimFactory, wait_until

from ingestion.simulator.contracts import DEFAULT_ETFS
from ingestion.simulator.market import SMART_DEPTH_EXCHANGES
from ingestion.simulator.server import Simulator

CLIENT_ID = 11


@pytest.fixture
async def ib(sim: Simulator) -> AsyncIterator[IB]:
    """An ib_async client connected (full, not readonly) to the simulator."""
    client = IB()
    await client.connectAsync("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5)
    yield client
    client.disconnect()


async def qualified(ib: IB, symbol: str) -> Stock:
    contract = Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    return contract


class TestConnect:
    @pytest.mark.parametrize("readonly", [True, False], ids=["readonly", "full"])
    async def test_connects_in_under_a_second(self, sim: Simulator, readonly: bool):
        """Handshake and the whole startup sync finish in under a second, readonly or not."""
        ib = IB()
        started = time.monotonic()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=3, readonly=readonly, timeout=5)
        elapsed = time.monotonic() - started
        try:
            assert ib.isConnected()
            assert ib.managedAccounts() == ["DU1234567"]
            assert elapsed < 1.0
        finally:
            ib.disconnect()

    async def test_sees_the_disconnect_when_the_simulator_closes_the_socket(self, sim: Simulator, ib: IB):
        """Closing the socket server-side fires disconnectedEvent."""
        lost = asyncio.Event()
        ib.disconnectedEvent += lost.set
        sim.disconnect_all()
        await asyncio.wait_for(lost.wait(), 5)
        assert not ib.isConnected()


class TestContracts:
    async def test_qualifies_all_15_etfs(self, ib: IB):
        """Every default ETF qualifies to one contract with a non-zero conId and its primary exchange."""
        contracts = [Stock(symbol, "SMART", "USD") for symbol in DEFAULT_ETFS]
        result = await ib.qualifyContractsAsync(*contracts)
        assert [c.symbol for c in result] == list(DEFAULT_ETFS)
        assert all(c.conId > 0 for c in result)
        assert len({c.conId for c in result}) == 15
        primaries = {c.symbol: c.primaryExchange for c in result}
        assert primaries["SPY"] == "ARCA"
        assert primaries["QQQ"] == "NASDAQ"

    async def test_unknown_symbol_gets_error_200(self, ib: IB):
        """An unknown symbol does not qualify and produces error 200."""
        errors: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
        result = await ib.qualifyContractsAsync(Stock("NOPE", "SMART", "USD"))
        assert result == [None]
        assert errors == [200]


class TestMarketData:
    async def test_level1_has_quotes_trades_volume_and_rtvolume(self, ib: IB):
        """reqMktData with 233 fills bid < ask with sizes, last, volume, session stats and RTVolume."""
        ticker = ib.reqMktData(await qualified(ib, "SPY"), "233")
        await wait_until(lambda: ticker.rtVolume > 0 and ticker.volume > 0)
        assert 500 < ticker.bid < ticker.ask < 700
        assert ticker.bidSize > 0
        assert ticker.askSize > 0
        assert ticker.last > 0
        assert ticker.high >= ticker.low > 0
        assert ticker.close > 0
        assert ticker.open > 0
        assert ticker.marketDataType == 1

    async def test_snapshot_ends_with_tick_snapshot_end(self, ib: IB):
        """A snapshot request (reqTickers) completes with a price."""
        [ticker] = await ib.reqTickersAsync(await qualified(ib, "QQQ"))
        assert ticker.bid < ticker.ask

    async def test_smart_depth_has_ten_rows_per_side_with_exchange_codes(self, ib: IB):
        """Smart depth fills 10 bid and 10 ask rows, prices ordered, market makers are exchange codes."""
        ticker = ib.reqMktDepth(await qualified(ib, "IWM"), 10, isSmartDepth=True)
        await wait_until(lambda: len(ticker.domBids) == 10 and len(ticker.domAsks) == 10)
        bids = [level.price for level in ticker.domBids]
        asks = [level.price for level in ticker.domAsks]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        assert bids[0] < asks[0]
        assert {level.marketMaker for level in ticker.domBids} <= set(SMART_DEPTH_EXCHANGES)

    @pytest.mark.parametrize("kind", ["Last", "AllLast", "BidAsk", "MidPoint"])
    async def test_tick_by_tick_kind_arrives(self, ib: IB, kind: str):
        """Each of the four tick-by-tick kinds delivers ticks to the ticker."""
        ticker = ib.reqTickByTickData(await qualified(ib, "DIA"), kind)
        await wait_until(lambda: len(ticker.tickByTicks) >= 5)
        tick = ticker.tickByTicks[-1]
        if kind == "BidAsk":
            assert tick.bidPrice < tick.askPrice
        elif kind == "MidPoint":
            assert tick.midPoint > 0
        else:
            assert tick.price > 0
            assert tick.size > 0

    async def test_cancels_stop_every_stream(self, sim: Simulator, ib: IB):
        """After cancelMktData, cancelMktDepth and cancelTickByTickData nothing more is sent."""
        contract = await qualified(ib, "XLK")
        ib.reqMktData(contract, "233")
        ib.reqMktDepth(contract, 10, isSmartDepth=True)
        ib.reqTickByTickData(contract, "AllLast")
        counts = sim.stats.for_symbol("XLK")
        await wait_until(lambda: counts["depth"] > 50 and counts["tick_by_tick_all_last"] > 10)
        ib.cancelMktData(contract)
        ib.cancelMktDepth(contract, isSmartDepth=True)
        ib.cancelTickByTickData(contract, "AllLast")
        await ib.reqCurrentTimeAsync()  # the cancels have been processed once this is answered
        before = dict(counts)
        await asyncio.sleep(0.2)
        assert dict(counts) == before


class TestDepthBook:
    async def test_client_book_matches_simulator_book_after_10000_updates(self, sim_factory: SimFactory):
        """After 10,000 depth messages the client's domBids/domAsks equal the simulator's own book."""
        async with sim_factory() as sim:
            sim.pause()
            ib = IB()
            await ib.connectAsync("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5)
            try:
                ticker = ib.reqMktDepth(await qualified(ib, "SPY"), 10, isSmartDepth=True)
                await ib.reqCurrentTimeAsync()
                req_id = next(iter(ib.wrapper.reqId2Ticker))
                sim.burst(10_000)
                await wait_until(lambda: sim.burst_pending == 0, within=20)
                await ib.reqCurrentTimeAsync()  # every depth message before this answer was applied
                assert sim.stats.for_symbol("SPY")["depth"] >= 10_000
                assert_same_book(ticker, sim, req_id)
            finally:
                ib.disconnect()


def assert_same_book(ticker: Ticker, sim: Simulator, req_id: int) -> None:
    """The client's book equals the simulator's, row by row (price, size, market maker)."""
    book = sim.depth_book(CLIENT_ID, req_id)
    expected_bids = [(float(r.price), float(r.size), r.market_maker) for r in book.bids]
    expected_asks = [(float(r.price), float(r.size), r.market_maker) for r in book.asks]
    assert [(lv.price, lv.size, lv.marketMaker) for lv in ticker.domBids] == expected_bids
    assert [(lv.price, lv.size, lv.marketMaker) for lv in ticker.domAsks] == expected_asks
