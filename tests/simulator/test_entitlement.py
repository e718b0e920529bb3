"""Entitlements: a live, delayed-only or unentitled account, as unmodified ib_async and ibapi see it.

IB's answers (TWS API "Market Data Types" and "Delayed Streaming Data"): a delayed-only account that
asked for delayed data (reqMarketDataType 3 or 4) gets marketDataType 3/4, warning 10167 and the
delayed tick types 66-76; asking for live data it gets 354 "... Delayed market data is available."
and nothing else. No permission at all: 354, or 10168 for delayed. Depth and tick-by-tick have no
delayed form: 354 without live data.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from ib_async import IB, Stock, Ticker
from sim_support import SimFactory, wait_until

from ingestion.simulator.entitlement import DELAYED_TICK_TYPES, Entitlement
from ingestion.simulator.server import Simulator

ibapi_client = pytest.importorskip("ibapi.client")
from ibapi.contract import Contract  # noqa: E402
from ibapi.wrapper import EWrapper  # noqa: E402

LIVE_TICKS = frozenset(range(0, 10)) | {14}
DELAYED_TICKS = frozenset(range(66, 77))
WAIT = 5.0


class Recorder:
    """ib_async's errorEvent, as (reqId, code, text)."""

    def __init__(self, ib: IB) -> None:
        self.errors: list[tuple[int, int, str]] = []
        ib.errorEvent += lambda req_id, code, text, contract: self.errors.append((req_id, code, text))

    def codes(self, req_id: int) -> list[int]:
        return [code for rid, code, _ in self.errors if rid == req_id]


@pytest.fixture
async def account(sim_factory: SimFactory, request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    async with sim_factory(entitlement=Entitlement(request.param), rate=2_000.0) as sim:
        yield sim


async def connected(sim: Simulator, client_id: int = 21) -> tuple[IB, Recorder, Stock]:
    ib = IB()
    recorder = Recorder(ib)
    await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=5)
    contract = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    return ib, recorder, contract


def req_id_of(ib: IB, ticker: Ticker, kind: str = "mktData") -> int:
    return ib.wrapper.ticker2ReqId[kind][ticker]


def tick_types(ticker: Ticker) -> set[int]:
    return {tick.tickType for tick in ticker.ticks}


@pytest.mark.parametrize("account", ["delayed"], indirect=True)
class TestDelayedAccount:
    async def test_asking_for_delayed_data_gets_10167_type_3_and_delayed_ticks(self, account: Simulator):
        """reqMarketDataType(3): marketDataType 3, warning 10167, then bid/ask/last as ticks 66-76."""
        ib, recorder, spy = await connected(account)
        try:
            ib.reqMarketDataType(3)
            ticker = ib.reqMktData(spy, "233", False, False)
            seen: set[int] = set()
            ticker.updateEvent += lambda t: seen.update(tick_types(t))
            await wait_until(lambda: {66, 67, 68} <= seen)
            assert ticker.marketDataType == 3
            assert recorder.codes(req_id_of(ib, ticker)) == [10167]
            assert seen <= DELAYED_TICKS, f"live tick types in a delayed stream: {seen - DELAYED_TICKS}"
            assert 500 < ticker.bid < ticker.ask < 700
            assert ticker.rtTime is None, "delayed data has no RTVolume (233)"
        finally:
            ib.disconnect()

    async def test_delayed_frozen_is_reported_as_type_4(self, account: Simulator):
        ib, _, spy = await connected(account)
        try:
            ib.reqMarketDataType(4)
            ticker = ib.reqMktData(spy, "", False, False)
            await wait_until(lambda: ticker.marketDataType == 4 and ticker.bid > 0)
        finally:
            ib.disconnect()

    async def test_asking_for_live_data_gets_354_with_the_delayed_hint_and_no_data(self, account: Simulator):
        ib, recorder, spy = await connected(account)
        try:
            ticker = ib.reqMktData(spy, "233", False, False)
            req_id = req_id_of(ib, ticker)
            await wait_until(lambda: recorder.codes(req_id))
            await asyncio.sleep(0.2)
            [(_, code, text)] = [e for e in recorder.errors if e[0] == req_id]
            assert code == 354
            assert "Delayed market data is available" in text
            assert not ticker.ticks
        finally:
            ib.disconnect()

    async def test_depth_and_tick_by_tick_are_refused_with_354(self, account: Simulator):
        """Neither has a delayed form: both need a live subscription, whatever the data type."""
        ib, recorder, spy = await connected(account)
        try:
            ib.reqMarketDataType(3)
            depth = ib.reqMktDepth(spy, 5, True)
            tbt = ib.reqTickByTickData(spy, "AllLast", 0, False)
            depth_id, tbt_id = req_id_of(ib, depth, "mktDepth"), req_id_of(ib, tbt, "AllLast")
            await wait_until(lambda: recorder.codes(depth_id) and recorder.codes(tbt_id))
            assert recorder.codes(depth_id) == [354]
            assert recorder.codes(tbt_id) == [354]
            await asyncio.sleep(0.2)
            assert not depth.domBids
            assert not tbt.tickByTicks
        finally:
            ib.disconnect()


@pytest.mark.parametrize("account", ["delayed"], indirect=True)
async def test_ib_insync_gets_the_delayed_quote_too(account: Simulator):
    """Unmodified ib_insync (version 176): marketDataType 3, 10167, and bid/ask/last from 66-68."""
    import ib_insync

    ib = ib_insync.IB()
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    await ib.connectAsync("127.0.0.1", account.port, clientId=22, timeout=5)
    try:
        spy = ib_insync.Stock("SPY", "SMART", "USD")
        await ib.qualifyContractsAsync(spy)
        ib.reqMarketDataType(3)
        ticker = ib.reqMktData(spy, "", False, False)
        await wait_until(lambda: ticker.bid > 0 and ticker.ask > 0 and ticker.last > 0 and 10167 in errors)
        assert ticker.marketDataType == 3
        assert [code for code in errors if not 2100 <= code < 2200] == [10167]  # farm notices aside
        assert {tick.tickType for tick in ticker.ticks} <= DELAYED_TICKS
    finally:
        ib.disconnect()


@pytest.mark.parametrize("account", ["none"], indirect=True)
async def test_an_account_without_permissions_gets_354_live_and_10168_delayed(account: Simulator):
    ib, recorder, spy = await connected(account)
    try:
        live = ib.reqMktData(spy, "", False, False)
        live_id = req_id_of(ib, live)
        await wait_until(lambda: recorder.codes(live_id))
        ib.reqMarketDataType(3)
        qqq = Stock("QQQ", "SMART", "USD")
        await ib.qualifyContractsAsync(qqq)
        delayed = ib.reqMktData(qqq, "", False, False)
        delayed_id = req_id_of(ib, delayed)
        await wait_until(lambda: recorder.codes(delayed_id))
        await asyncio.sleep(0.2)
        assert recorder.codes(live_id) == [354]
        assert "Delayed market data is available" not in recorder.errors[-2][2]
        assert recorder.codes(delayed_id) == [10168]
        assert not live.ticks
        assert not delayed.ticks
    finally:
        ib.disconnect()


@pytest.mark.parametrize("account", ["live"], indirect=True)
async def test_a_live_account_asking_for_delayed_gets_live_data_reported_as_type_1(account: Simulator):
    """IB: if live data is available, it will always be returned instead of delayed data."""
    ib, recorder, spy = await connected(account)
    try:
        ib.reqMarketDataType(3)
        ticker = ib.reqMktData(spy, "", False, False)
        await wait_until(lambda: {1, 2} <= tick_types(ticker))
        assert ticker.marketDataType == 1
        assert tick_types(ticker) <= LIVE_TICKS | {45}
        assert not recorder.codes(req_id_of(ib, ticker))
    finally:
        ib.disconnect()


async def test_post_entitlement_changes_what_new_requests_get(sim: Simulator, control: httpx.AsyncClient):
    """A live stream keeps streaming live after the switch; the next request is answered as delayed."""
    ib, recorder, spy = await connected(sim)
    try:
        ib.reqMarketDataType(3)
        live = ib.reqMktData(spy, "", False, False)
        await wait_until(lambda: live.bid > 0)
        response = await control.post("/entitlement", params={"value": "delayed"})
        assert response.json() == {"entitlement": "delayed"}
        assert (await control.get("/stats")).json()["entitlement"] == "delayed"
        qqq = Stock("QQQ", "SMART", "USD")
        await ib.qualifyContractsAsync(qqq)
        delayed = ib.reqMktData(qqq, "", False, False)
        await wait_until(lambda: delayed.bid > 0)
        live.ticks.clear()
        await wait_until(lambda: bool(live.ticks))
        assert delayed.marketDataType == 3
        assert recorder.codes(req_id_of(ib, delayed)) == [10167]
        assert tick_types(delayed) <= DELAYED_TICKS
        assert live.marketDataType == 1
        assert tick_types(live) <= LIVE_TICKS
        assert (await control.post("/entitlement", params={"value": "none"})).status_code == 200
        iwm = Stock("IWM", "SMART", "USD")
        await ib.qualifyContractsAsync(iwm)
        refused = ib.reqMktData(iwm, "", False, False)
        await wait_until(lambda: recorder.codes(req_id_of(ib, refused)) == [10168])
        bad = await control.post("/entitlement", params={"value": "premium"})
        assert bad.status_code == 400
        assert "live, delayed, none" in bad.json()["error"]
    finally:
        ib.disconnect()


async def test_post_entitlement_for_one_symbol_refuses_only_its_new_requests(
    sim: Simulator, control: httpx.AsyncClient
):
    """A symbol's own permission: its next requests are refused (354) while other symbols stream; live
    again, its next request streams; the account's value replaces every symbol's own."""
    ib, recorder, spy = await connected(sim)
    try:
        response = await control.post("/entitlement", params={"value": "none", "symbol": "SPY"})
        assert response.json() == {"entitlement": "none", "symbol": "SPY"}
        refused = ib.reqMktData(spy, "", False, False)
        await wait_until(lambda: recorder.codes(req_id_of(ib, refused)) == [354])
        qqq = Stock("QQQ", "SMART", "USD")
        await ib.qualifyContractsAsync(qqq)
        other = ib.reqMktData(qqq, "", False, False)
        await wait_until(lambda: other.bid > 0)
        ib.cancelMktData(spy)
        await control.post("/entitlement", params={"value": "live", "symbol": "SPY"})
        again = ib.reqMktData(spy, "", False, False)
        await wait_until(lambda: again.bid > 0)
        assert recorder.codes(req_id_of(ib, again)) == []
        await control.post("/entitlement", params={"value": "none", "symbol": "SPY"})
        await control.post("/entitlement", params={"value": "live"})
        assert sim.entitlement_of("SPY") is Entitlement.LIVE
        unknown = await control.post("/entitlement", params={"value": "none", "symbol": "NOPE"})
        assert unknown.status_code == 400
        assert "unknown symbol" in unknown.json()["error"]
    finally:
        ib.disconnect()


def test_every_live_level1_tick_type_has_its_delayed_twin():
    """66-76 in IB's order: bid, ask, last, bid size, ask size, last size, high, low, volume, close, open."""
    assert [DELAYED_TICK_TYPES[t] for t in (1, 2, 4, 0, 3, 5, 6, 7, 8, 9, 14)] == list(range(66, 77))


class DelayedApp(EWrapper, ibapi_client.EClient):  # type: ignore[misc]
    """IB's official client, recording what a delayed market data request brings."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        ibapi_client.EClient.__init__(self, self)
        self.ready = threading.Event()
        self.ticked = threading.Event()
        self.errors: list[tuple[int, int]] = []
        self.data_types: list[tuple[int, int]] = []
        self.price_types: set[int] = set()
        self.size_types: set[int] = set()

    def nextValidId(self, orderId: int) -> None:
        self.ready.set()

    def marketDataType(self, reqId: int, marketDataType: int) -> None:
        self.data_types.append((reqId, marketDataType))

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: object) -> None:
        self.price_types.add(tickType)
        if {66, 67, 68} <= self.price_types:
            self.ticked.set()

    def tickSize(self, reqId: int, tickType: int, size: object) -> None:
        self.size_types.add(tickType)

    def error(
        self, reqId: int, errorTime: int, errorCode: int, errorString: str, advancedOrderRejectJson: str = ""
    ) -> None:
        self.errors.append((reqId, errorCode))


def delayed_session(port: int) -> DelayedApp:
    app = DelayedApp()
    app.connect("127.0.0.1", port, clientId=41)
    reader = threading.Thread(target=app.run, daemon=True)
    reader.start()
    try:
        assert app.ready.wait(WAIT)
        contract = Contract()
        contract.symbol, contract.secType, contract.exchange, contract.currency = "SPY", "STK", "SMART", "USD"
        app.reqMktData(7, contract, "", False, False, [])  # live asked: 354
        app.reqMarketDataType(3)
        app.reqMktData(8, contract, "", False, False, [])
        assert app.ticked.wait(WAIT)
        # ibapi's reader goes on with queued messages after disconnect() and then fails on its reset
        # server version: stop the stream and let the queue drain first.
        app.cancelMktData(8)
        time.sleep(0.2)
        deadline = time.monotonic() + WAIT
        while not app.msg_queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        app.disconnect()
        reader.join(WAIT)
    return app


@pytest.mark.parametrize("account", ["delayed"], indirect=True)
async def test_official_client_gets_10167_market_data_type_3_and_ticks_66_to_76(account: Simulator):
    app = await asyncio.to_thread(delayed_session, account.port)
    assert (7, 354) in app.errors
    assert (8, 10167) in app.errors
    assert app.data_types == [(8, 3)]
    assert {66, 67, 68, 72, 73, 75, 76} <= app.price_types <= DELAYED_TICKS
    assert {69, 70, 71, 74} <= app.size_types <= DELAYED_TICKS


def test_simulate_gateway_takes_the_entitlement_option():
    """`ingestion simulate-gateway --entitlement delayed`; live by default; anything else exits 2."""
    from ingestion.cli import build_parser
    from ingestion.simulator.cli import config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["simulate-gateway"])).entitlement is Entitlement.LIVE
    args = parser.parse_args(["simulate-gateway", "--entitlement", "delayed"])
    assert config_from_args(args).entitlement is Entitlement.DELAYED
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["simulate-gateway", "--entitlement", "premium"])
    assert exited.value.code == 2
