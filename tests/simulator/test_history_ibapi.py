"""IB's official client (ibapi) reads history from the simulator: head timestamp, bars, ticks, 162."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from sim_support import wait_until

from ingestion.simulator.server import Simulator

ibapi_client = pytest.importorskip("ibapi.client")
from ibapi.common import BarData  # noqa: E402
from ibapi.wrapper import EWrapper  # noqa: E402
from test_ibapi import spy  # noqa: E402

WAIT = 10.0


class HistoryApp(EWrapper, ibapi_client.EClient):  # type: ignore[misc]
    """Records every historical answer by reqId; ``done`` is set when a request ends either way."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        ibapi_client.EClient.__init__(self, self)
        self.ready = threading.Event()
        self.bars: dict[int, list[BarData]] = defaultdict(list)
        self.answers: dict[int, object] = {}
        self.errors: dict[int, tuple[int, str]] = {}
        self.done: dict[int, threading.Event] = defaultdict(threading.Event)

    def nextValidId(self, orderId: int) -> None:
        self.ready.set()

    def historicalData(self, reqId: int, bar: BarData) -> None:
        self.bars[reqId].append(bar)

    def historicalDataEnd(self, reqId: int, start: str, end: str) -> None:
        self.answers[reqId] = (start, end)
        self.done[reqId].set()

    def headTimestamp(self, reqId: int, headTimestamp: str) -> None:
        self.answers[reqId] = headTimestamp
        self.done[reqId].set()

    def historicalTicks(self, reqId: int, ticks: list, done: bool) -> None:
        self.answers[reqId] = ticks
        self.done[reqId].set()

    historicalTicksBidAsk = historicalTicks
    historicalTicksLast = historicalTicks

    def error(
        self, reqId: int, errorTime: int, errorCode: int, errorString: str, advancedOrderRejectJson: str = ""
    ) -> None:
        if reqId >= 0:
            self.errors[reqId] = (errorCode, errorString)
            self.done[reqId].set()


def run(port: int, requests: Callable[[HistoryApp], list[int]]) -> HistoryApp:
    """Connect, make ``requests`` (which returns their reqIds), wait for every answer, disconnect."""
    app = HistoryApp()
    app.connect("127.0.0.1", port, clientId=41)
    reader = threading.Thread(target=app.run, daemon=True)
    reader.start()
    try:
        assert app.ready.wait(WAIT)
        for req_id in requests(app):
            assert app.done[req_id].wait(WAIT), f"request {req_id} was not answered"
    finally:
        app.disconnect()
        reader.join(WAIT)
    return app


async def test_official_client_reads_head_timestamp_bars_and_ticks(sim: Simulator):
    """reqHeadTimeStamp, reqHistoricalData (daily, formatDate 1; minutes, formatDate 2) and
    reqHistoricalTicks TRADES / BID_ASK / MIDPOINT all decode in ibapi 10.x at version 178."""
    await wait_until(lambda: sim.markets["SPY"].trades.count > 300)
    sim.pause()
    now = sim.now_ms() // 1000
    end = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(now))  # IB's UTC notation

    def requests(app: HistoryApp) -> list[int]:
        app.reqHeadTimeStamp(1, spy(), "TRADES", 0, 1)
        app.reqHistoricalData(2, spy(), "", "1 M", "1 day", "TRADES", 0, 1, False, [])
        app.reqHistoricalData(3, spy(), "", "3600 S", "1 min", "MIDPOINT", 0, 2, False, [])
        app.reqHistoricalTicks(4, spy(), "", end, 100, "TRADES", 0, True, [])
        app.reqHistoricalTicks(5, spy(), "", end, 100, "BID_ASK", 0, True, [])
        app.reqHistoricalTicks(6, spy(), "", end, 100, "MIDPOINT", 0, True, [])
        return [1, 2, 3, 4, 5, 6]

    app = await asyncio.to_thread(run, sim.port, requests)
    assert app.errors == {}
    assert len(str(app.answers[1])) == len("20231207-00:00:00")
    daily = app.bars[2]
    assert len(daily) >= 30
    assert all(len(bar.date) == 8 for bar in daily)  # daily bars are labelled yyyymmdd
    assert all(bar.low <= bar.close <= bar.high for bar in daily)
    minutes = app.bars[3]
    assert minutes
    assert all(bar.date.isdigit() for bar in minutes)  # formatDate 2: epoch seconds
    assert all(int(bar.volume) == -1 for bar in minutes)
    trades = app.answers[4]
    assert len(trades) >= 100
    tape = sim.tape("SPY", 0, (now + 1) * 1000)[-len(trades) :]
    assert [(t.time, t.price, int(t.size), t.exchange, t.specialConditions) for t in trades] == [
        (t.time_ms // 1000, t.price_cents / 100, t.size, t.exchange, t.conditions) for t in tape
    ]
    assert all(q.priceBid < q.priceAsk for q in app.answers[5])
    assert app.answers[6]


async def test_official_client_gets_162_for_an_identical_request(sim: Simulator):
    """The same request twice within 15 s: the second one is a pacing violation."""

    def requests(app: HistoryApp) -> list[int]:
        app.reqHistoricalData(1, spy(), "", "1 D", "1 hour", "TRADES", 0, 1, False, [])
        assert app.done[1].wait(WAIT)
        app.reqHistoricalData(2, spy(), "", "1 D", "1 hour", "TRADES", 0, 1, False, [])
        return [1, 2]

    app = await asyncio.to_thread(run, sim.port, requests)
    assert 1 not in app.errors
    assert app.errors[2] == (
        162,
        "Historical Market Data Service error message:Historical data request pacing violation",
    )
