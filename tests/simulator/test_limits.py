"""IB's per-client limits, as configured: 309, 10190, 101, 326 and pacing error 100."""

from __future__ import annotations

import pytest
from ib_async import IB, Stock
from sim_support import SimFactory
from simulator_wire import WireClient, frame, handshake, split_frames, start_api

from ingestion.simulator.contracts import DEFAULT_ETFS
from ingestion.simulator.server import Simulator


async def connect(port: int, client_id: int = 1) -> tuple[IB, list[int]]:
    """An ib_async client and the list its error codes (farm notices left out) are appended to."""
    ib = IB()
    errors: list[int] = []

    def on_error(req_id: int, code: int, msg: str, contract: object) -> None:
        if not 2100 <= code < 2200:
            errors.append(code)

    ib.errorEvent += on_error
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=5)
    return ib, errors


async def contracts(ib: IB, n: int) -> list[Stock]:
    result = [Stock(s, "SMART", "USD") for s in DEFAULT_ETFS[:n]]
    await ib.qualifyContractsAsync(*result)
    return result


@pytest.mark.parametrize("limit", [1, 3])
async def test_depth_books_beyond_the_limit_get_309(sim_factory: SimFactory, limit: int):
    """The (limit+1)-th market depth request of a client gets error 309; earlier ones stream."""
    async with sim_factory(max_depth_books=limit) as sim:
        ib, errors = await connect(sim.port)
        for contract in await contracts(ib, limit + 1):
            ib.reqMktDepth(contract, 10, isSmartDepth=True)
        await ib.reqCurrentTimeAsync()
        assert errors == [309]
        ib.disconnect()


async def test_depth_limit_is_per_client(sim_factory: SimFactory):
    """A second client has its own depth allowance."""
    async with sim_factory(max_depth_books=1) as sim:
        first, first_errors = await connect(sim.port, 1)
        second, second_errors = await connect(sim.port, 2)
        for ib in (first, second):
            [contract] = await contracts(ib, 1)
            ib.reqMktDepth(contract, 10, isSmartDepth=True)
            await ib.reqCurrentTimeAsync()
        assert first_errors == second_errors == []
        first.disconnect()
        second.disconnect()


@pytest.mark.parametrize("limit", [2, 3])
async def test_tick_by_tick_beyond_the_limit_gets_10190(sim_factory: SimFactory, limit: int):
    """The (limit+1)-th tick-by-tick request of a client gets error 10190."""
    async with sim_factory(max_tick_by_tick=limit) as sim:
        ib, errors = await connect(sim.port)
        for contract in await contracts(ib, limit + 1):
            ib.reqTickByTickData(contract, "AllLast")
        await ib.reqCurrentTimeAsync()
        assert errors == [10190]
        ib.disconnect()


async def test_market_data_lines_beyond_the_limit_get_101(sim_factory: SimFactory):
    """The (limit+1)-th streaming reqMktData gets error 101 (max tickers)."""
    async with sim_factory(max_market_data_lines=5) as sim:
        ib, errors = await connect(sim.port)
        for contract in await contracts(ib, 6):
            ib.reqMktData(contract)
        await ib.reqCurrentTimeAsync()
        assert errors == [101]
        ib.disconnect()


async def test_cancel_frees_a_depth_slot(sim_factory: SimFactory):
    """After cancelMktDepth the same client may open another book without 309."""
    async with sim_factory(max_depth_books=1) as sim:
        ib, errors = await connect(sim.port)
        first, second = await contracts(ib, 2)
        ib.reqMktDepth(first, 10, isSmartDepth=True)
        ib.cancelMktDepth(first, isSmartDepth=True)
        ib.reqMktDepth(second, 10, isSmartDepth=True)
        await ib.reqCurrentTimeAsync()
        assert errors == []
        ib.disconnect()


async def test_client_id_in_use_gets_326_and_is_closed(sim: Simulator):
    """A second connection with a client id in use receives error 326, then the socket is closed."""
    ib, _ = await connect(sim.port, client_id=5)
    second = await WireClient.connect(sim.port)
    await second.send(handshake())
    await second.read_frames(1)
    await second.send(start_api(5))
    assert await second.closed_by_server()
    frames = [f for f in split_frames(bytes(second.received))[0] if f[0] == "4"]
    assert [f[3] for f in frames] == ["326"]
    assert ib.isConnected()
    ib.disconnect()


async def test_client_id_in_use_seen_by_ib_async(sim: Simulator):
    """ib_async gets errorEvent 326 and its connect fails."""
    first, _ = await connect(sim.port, client_id=6)
    second = IB()
    errors: list[int] = []
    second.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    with pytest.raises((TimeoutError, ConnectionError)):
        # Time enough for the 326 to arrive first on a loaded machine; the socket closes at once after it.
        await second.connectAsync("127.0.0.1", sim.port, clientId=6, timeout=2)
    assert errors == [326]
    second.disconnect()
    first.disconnect()


async def test_pacing_beyond_the_limit_gets_100(sim_factory: SimFactory):
    """With pacing enabled, requests beyond the limit within a second get error 100."""
    async with sim_factory(pacing_limit=10) as sim:
        client = await WireClient.connect(sim.port)
        await client.send(handshake())
        await client.read_frames(1)
        await client.send(start_api(1) + frame(49, 1) * 12)
        received = await client.read_frames(6 + 12)
        codes = [f[3] for f in received if f[0] == "4"]
        assert codes.count("100") == 2
        assert sum(1 for f in received if f[0] == "49") == 10
        await client.close()
