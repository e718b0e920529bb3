"""IB's official Python client (PyPI ``ibapi-stable`` 10.50.2, version 178) against the simulator."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ingestion.simulator.server import Simulator

ibapi_client = pytest.importorskip("ibapi.client")
from ibapi.contract import Contract, ContractDetails  # noqa: E402
from ibapi.wrapper import EWrapper  # noqa: E402

WAIT = 5.0


class App(EWrapper, ibapi_client.EClient):  # type: ignore[misc]
    """Records what the official client's callbacks deliver."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        ibapi_client.EClient.__init__(self, self)
        self.next_id: int | None = None
        self.details: list[ContractDetails] = []
        self.prices: list[tuple[int, float]] = []
        self.errors: list[int] = []
        self.ready = threading.Event()
        self.details_done = threading.Event()
        self.ticked = threading.Event()
        self.closed = threading.Event()

    def nextValidId(self, orderId: int) -> None:
        self.next_id = orderId
        self.ready.set()

    def contractDetails(self, reqId: int, contractDetails: ContractDetails) -> None:
        self.details.append(contractDetails)

    def contractDetailsEnd(self, reqId: int) -> None:
        self.details_done.set()

    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: object) -> None:
        self.prices.append((tickType, price))
        self.ticked.set()

    def error(
        self, reqId: int, errorTime: int, errorCode: int, errorString: str, advancedOrderRejectJson: str = ""
    ) -> None:
        self.errors.append(errorCode)

    def connectionClosed(self) -> None:
        self.closed.set()


def spy() -> Contract:
    contract = Contract()
    contract.symbol = "SPY"
    contract.secType = "STK"
    contract.exchange = "SMART"
    contract.currency = "USD"
    return contract


def session(port: int) -> App:
    """Connect, wait for nextValidId, get SPY's details and one price tick, then disconnect."""
    app = App()
    app.connect("127.0.0.1", port, clientId=31)
    reader = threading.Thread(target=app.run, daemon=True)
    reader.start()
    try:
        assert app.ready.wait(WAIT)
        app.reqContractDetails(1, spy())
        assert app.details_done.wait(WAIT)
        app.reqMktData(2, spy(), "", False, False, [])
        assert app.ticked.wait(WAIT)
    finally:
        app.disconnect()
        reader.join(WAIT)
    return app


async def test_official_client_gets_next_valid_id_contract_details_and_a_tick(sim: Simulator):
    """ibapi negotiates 178, gets nextValidId, exactly one SPY contract (ARCA) and price ticks."""
    app = await asyncio.to_thread(session, sim.port)
    assert app.next_id == 1
    [details] = app.details
    assert details.contract.conId == 756733
    assert details.contract.primaryExchange == "ARCA"
    assert details.longName == "SPDR S&P 500 ETF TRUST"
    assert any(tick_type == 1 and 500 < price < 700 for tick_type, price in app.prices)
    assert set(app.errors) <= {2104, 2106, 2158}


async def test_official_client_sees_the_server_close(sim: Simulator):
    """A server-side close ends ibapi's reader loop with connectionClosed."""
    app = App()

    def connect() -> threading.Thread:
        app.connect("127.0.0.1", sim.port, clientId=32)
        reader = threading.Thread(target=app.run, daemon=True)
        reader.start()
        assert app.ready.wait(WAIT)
        return reader

    reader = await asyncio.to_thread(connect)
    sim.disconnect_all()
    assert await asyncio.to_thread(app.closed.wait, WAIT)
    await asyncio.to_thread(reader.join, WAIT)
