"""IB's historical pacing rules: error 162 exactly when IB's limits say so, and 50 open requests.

The rules (TWS API docs, "Historical Data Limitations"): identical requests within 15 s; six or
more requests for one contract, exchange and tick type within 2 s; more than 60 requests within
10 minutes; BID_ASK counts twice. The boundaries in time are shown on the Pacer with a clock of
our own; ib_async shows that each rule answers 162 over the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from ib_async import Stock
from sim_support import IbClient, SimFactory, wait_until

from ingestion.simulator.contracts import DEFAULT_UNIVERSE
from ingestion.simulator.pacing import Pacer
from ingestion.simulator.server import Simulator

PACING = "Historical Market Data Service error message:Historical data request pacing violation"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestPacerRules:
    def test_identical_requests_within_15_seconds(self):
        clock = FakeClock()
        pacer = Pacer(clock)
        assert pacer.admit("same", "SPY", 1)
        clock.now += 14.9
        assert not pacer.admit("same", "SPY", 1)
        clock.now += 0.1
        assert pacer.admit("same", "SPY", 1)

    def test_the_sixth_request_for_one_contract_within_2_seconds(self):
        clock = FakeClock()
        pacer = Pacer(clock)
        for i in range(5):
            assert pacer.admit(i, "SPY", 1)
            clock.now += 0.3
        assert not pacer.admit(5, "SPY", 1), "six within 2 s"
        assert pacer.admit(5, "QQQ", 1), "another contract is counted apart"
        clock.now = 1000.0 + 2.0  # the first one is now 2 s old
        assert pacer.admit(6, "SPY", 1)

    def test_more_than_60_requests_in_10_minutes(self):
        clock = FakeClock()
        pacer = Pacer(clock)
        for i in range(60):
            assert pacer.admit(i, i, 1)
            clock.now += 5.0  # 60 requests over 300 s
        assert not pacer.admit(60, 60, 1)
        clock.now = 1000.0 + 600.0  # the first one leaves the window
        assert pacer.admit(60, 60, 1)
        assert not pacer.admit(61, 61, 1)

    def test_bid_ask_counts_twice(self):
        clock = FakeClock()
        pacer = Pacer(clock)
        assert pacer.admit(1, "SPY", 2)
        assert pacer.admit(2, "SPY", 2)
        assert not pacer.admit(3, "SPY", 2), "three BID_ASK are six requests"
        for i in range(28):
            assert pacer.admit(("x", i), i, 2)
        assert not pacer.admit("last", "last", 1), "30 BID_ASK are 60 requests"

    def test_refused_requests_are_not_counted(self):
        clock = FakeClock()
        pacer = Pacer(clock)
        assert pacer.admit("a", "SPY", 1)
        for _ in range(10):
            assert not pacer.admit("a", "SPY", 1)
        for i in range(4):
            assert pacer.admit(i, "SPY", 1)


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[IbClient]:
    c = await IbClient.connect(sim)
    yield c
    c.ib.disconnect()


def stocks(n: int) -> list[Stock]:
    return [Stock(spec.symbol, "SMART", "USD") for spec in DEFAULT_UNIVERSE[:n]]


def pacing_errors(client: IbClient) -> list[int]:
    return [req_id for req_id, code, msg in client.errors if code == 162 and msg == PACING]


async def bars(client: IbClient, contract: Stock, bar_size: str = "1 hour", what: str = "TRADES") -> int:
    """Request bars; the number received (0 after an error)."""
    got = await client.ib.reqHistoricalDataAsync(contract, "", "1 D", bar_size, what, useRTH=False)
    return len(got)


async def test_an_identical_request_within_15_seconds_gets_162(client: IbClient):
    [spy] = stocks(1)
    await client.ib.qualifyContractsAsync(spy)
    assert await bars(client, spy) > 0
    assert await bars(client, spy) == 0
    assert len(pacing_errors(client)) == 1
    assert await bars(client, spy, "2 hours") > 0, "a different request is fine"


async def test_the_sixth_request_for_one_contract_within_2_seconds_gets_162(client: IbClient):
    spy, qqq = stocks(2)
    await client.ib.qualifyContractsAsync(spy, qqq)
    sizes = ["1 hour", "2 hours", "3 hours", "4 hours", "30 mins", "20 mins"]
    got = [await bars(client, spy, size) for size in sizes]
    assert [n > 0 for n in got] == [True] * 5 + [False]
    assert len(pacing_errors(client)) == 1
    assert await bars(client, qqq) > 0, "another contract has its own count"


async def test_bid_ask_counts_twice(client: IbClient):
    [spy] = stocks(1)
    await client.ib.qualifyContractsAsync(spy)
    got = [await bars(client, spy, size, "BID_ASK") for size in ("1 hour", "2 hours", "3 hours")]
    assert [n > 0 for n in got] == [True, True, False]
    assert len(pacing_errors(client)) == 1


async def test_more_than_60_requests_in_10_minutes_get_162(sim: Simulator, client: IbClient):
    contracts = stocks(16)
    await client.ib.qualifyContractsAsync(*contracts)
    sizes = ("1 hour", "2 hours", "3 hours", "4 hours")
    got = [await bars(client, contract, size) for size in sizes for contract in contracts]
    assert [n > 0 for n in got] == [True] * 60 + [False] * 4
    assert len(pacing_errors(client)) == 4
    hmds = sim.snapshot_stats()["hmds"]
    assert hmds["requests"] == {"head_timestamp": 0, "historical_data": 64, "historical_ticks": 0}
    assert (hmds["answered"], hmds["pacing"]) == (60, 4)


async def test_the_51st_open_request_is_refused(sim_factory: SimFactory):
    """With 50 requests open (the farm is down), the 51st gets 322; the 50 are answered later."""
    async with sim_factory() as sim:
        client = await IbClient.connect(sim)
        contracts = stocks(11)
        await client.ib.qualifyContractsAsync(*contracts)
        sim.set_hmds("down")
        sizes = ("1 hour", "2 hours", "3 hours", "4 hours", "8 hours")
        pairs = [(contract, size) for contract in contracts for size in sizes][:51]
        requests = [asyncio.ensure_future(bars(client, contract, size)) for contract, size in pairs]
        await wait_until(lambda: 322 in client.codes())
        [(_, _, text)] = [e for e in client.errors if e[1] == 322]
        assert text == "Error processing request:Only 50 simultaneous API historical data requests allowed."
        assert sim.history.snapshot()["open"] == 50
        sim.set_hmds("up")
        got = await asyncio.wait_for(asyncio.gather(*requests), 10)
        assert sum(1 for n in got if n > 0) == 50
        client.ib.disconnect()
