"""Every fault of the control API, observed from the client side (unmodified ib_async)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from ib_async import IB, Stock
from sim_support import wait_until

from ingestion.simulator.server import Simulator

CLIENT_ID = 21


class Client:
    """An ib_async connection plus what it saw: error codes with texts, and disconnects."""

    def __init__(self) -> None:
        self.ib = IB()
        self.errors: list[tuple[int, int, str]] = []
        self.disconnected = asyncio.Event()
        self.ib.errorEvent += lambda req_id, code, msg, contract: self.errors.append((req_id, code, msg))
        self.ib.disconnectedEvent += self.disconnected.set

    def codes(self) -> list[int]:
        return [code for _, code, _ in self.errors if code not in (2104, 2106, 2158)]


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[Client]:
    c = Client()
    await c.ib.connectAsync("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5)
    yield c
    c.ib.disconnect()


async def subscribe_spy(ib: IB) -> Stock:
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    ib.reqMktData(spy, "233")
    await ib.reqCurrentTimeAsync()
    return spy


async def flat_for(sim: Simulator, seconds: float) -> bool:
    """True if the simulator sent no market data for SPY during ``seconds``."""
    before = dict(sim.stats.for_symbol("SPY"))
    await asyncio.sleep(seconds)
    return dict(sim.stats.for_symbol("SPY")) == before


class TestStats:
    async def test_stats_report_connections_and_counts_by_kind_and_symbol(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """GET /stats has the connection count and per-kind, per-symbol message counts."""
        await subscribe_spy(client.ib)
        await wait_until(lambda: sim.stats.for_symbol("SPY")["rtvolume"] > 0)
        body = (await control.get("/stats")).json()
        assert body["connections"] == 1
        assert body["clients"] == [CLIENT_ID]
        spy = body["sent"]["by_symbol"]["SPY"]
        assert spy["tick_price"] > 0
        assert spy["rtvolume"] > 0
        assert body["sent"]["trades"]["SPY"] == spy["rtvolume"]
        assert body["sent"]["by_kind"]["next_valid_id"] == 1

    async def test_stats_reset_zeroes_the_counters(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """POST /stats/reset zeroes every counter."""
        await subscribe_spy(client.ib)
        sim.pause()
        assert (await control.post("/stats/reset")).status_code == 200
        body = (await control.get("/stats")).json()
        assert body["sent"]["total"] == 0

    async def test_bad_requests_are_refused(self, control: httpx.AsyncClient):
        """Unknown paths are 404, missing or bad parameters and non-system codes are 400."""
        assert (await control.post("/nope")).status_code == 404
        assert (await control.post("/rate")).status_code == 400
        assert (await control.post("/rate?value=fast")).status_code == 400
        assert (await control.post("/error?code=200")).status_code == 400
        assert (await control.get("/disconnect")).status_code == 405


class TestConnectionFaults:
    async def test_disconnect_closes_every_client(self, control: httpx.AsyncClient, client: Client):
        """POST /disconnect: the client sees its socket closed."""
        await control.post("/disconnect")
        await asyncio.wait_for(client.disconnected.wait(), 5)

    async def test_restart_refuses_connections_while_down(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """POST /restart: clients are dropped, the port refuses connections while down, then accepts."""
        assert (await control.post("/restart?down=0.5")).status_code == 200
        await asyncio.wait_for(client.disconnected.wait(), 5)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", sim.port)
        await asyncio.sleep(0.7)
        await client.ib.connectAsync("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5)
        assert client.ib.isConnected()

    async def test_silence_sends_and_answers_nothing_then_catches_up(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """POST /silence: no ticks, no answers, socket open; afterwards the request is answered."""
        await subscribe_spy(client.ib)
        await control.post("/silence?seconds=0.6")
        request = asyncio.ensure_future(client.ib.reqCurrentTimeAsync())
        assert await flat_for(sim, 0.3)
        assert not request.done()
        await asyncio.wait_for(request, 2)
        assert client.ib.isConnected()


class TestSystemMessages:
    @pytest.mark.parametrize(
        ("code", "text"),
        [
            (2103, "Market data farm connection is broken:usfarm"),
            (2105, "HMDS data farm connection is broken:ushmds"),
            (2157, "Sec-def data farm connection is broken:secdefnj"),
            (1102, "Connectivity between IB and Trader Workstation has been restored - data maintained."),
        ],
    )
    async def test_system_message_reaches_client_with_ib_text(
        self, control: httpx.AsyncClient, client: Client, code: int, text: str
    ):
        """POST /error?code=n: every client gets message n with reqId -1 and IB's text."""
        await control.post(f"/error?code={code}")
        await client.ib.reqCurrentTimeAsync()
        assert (-1, code, text) in client.errors

    async def test_1100_pauses_market_data_and_1102_resumes_it(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """After 1100 no market data flows; after 1102 the same subscription streams again."""
        await subscribe_spy(client.ib)
        await control.post("/error?code=1100")
        assert await flat_for(sim, 0.2)
        await control.post("/error?code=1102")
        assert not await flat_for(sim, 0.2)
        assert client.codes()[:2] == [1100, 1102]

    async def test_1101_drops_every_subscription(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """After 1101 (data lost) the subscriptions are gone until the client subscribes again."""
        spy = await subscribe_spy(client.ib)
        await control.post("/error?code=1100")
        await control.post("/error?code=1101")
        assert await flat_for(sim, 0.2)
        client.ib.cancelMktData(spy)
        client.ib.reqMktData(spy, "233")
        assert not await flat_for(sim, 0.2)

    async def test_10197_goes_to_each_market_data_request(self, control: httpx.AsyncClient, client: Client):
        """10197 (competing live session) is reported with the reqId of the market data subscription."""
        await subscribe_spy(client.ib)
        req_id = next(iter(client.ib.wrapper.reqId2Ticker))
        await control.post("/error?code=10197")
        await client.ib.reqCurrentTimeAsync()
        assert (req_id, 10197, "No market data during competing live session") in client.errors


class TestRate:
    async def test_rate_sets_the_total_message_rate(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """POST /rate?value=1000: about 1000 streaming messages per second arrive."""
        await control.post("/rate?value=1000")
        await subscribe_spy(client.ib)
        counts = sim.stats.for_symbol("SPY")
        before, started = sum(counts.values()), time.monotonic()
        await asyncio.sleep(1.0)
        # Per second actually elapsed: a loaded machine oversleeps, and the simulator catches up.
        rate = (sum(counts.values()) - before) / (time.monotonic() - started)
        assert 500 <= rate <= 1500

    async def test_burst_sends_that_many_messages_while_paused(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """POST /pause stops streaming; POST /burst?messages=5000 then sends 5000 depth messages."""
        qqq = Stock("QQQ", "SMART", "USD")
        await client.ib.qualifyContractsAsync(qqq)
        await control.post("/pause")
        client.ib.reqMktDepth(qqq, 10, isSmartDepth=True)
        await client.ib.reqCurrentTimeAsync()
        counts = sim.stats.for_symbol("QQQ")
        before = counts["depth"]
        await control.post("/burst?messages=5000")
        await wait_until(lambda: sim.burst_pending == 0)
        # A book shift is one event of up to 20 messages, so a burst may end a few messages late.
        assert 5000 <= counts["depth"] - before < 5020

    async def test_unthrottled_rate_outruns_the_default(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """POST /rate?value=0 is unthrottled: ten times more than a 1,000 msgs/s rate would send."""
        await subscribe_spy(client.ib)
        await control.post("/rate?value=0")
        counts = sim.stats.for_symbol("SPY")
        before = sum(counts.values())
        await asyncio.sleep(0.5)
        assert sum(counts.values()) - before > 5_000


class TestDepthReset:
    async def test_depth_reset_sends_317_and_rebuilds_the_book(
        self, sim: Simulator, control: httpx.AsyncClient, client: Client
    ):
        """POST /depth-reset: error 317 empties the client's book, the rebuilt one matches the simulator's."""
        iwm = Stock("IWM", "SMART", "USD")
        await client.ib.qualifyContractsAsync(iwm)
        await control.post("/pause")
        ticker = client.ib.reqMktDepth(iwm, 10, isSmartDepth=True)
        await control.post("/burst?messages=500")
        await wait_until(lambda: sim.burst_pending == 0)
        await control.post("/depth-reset")
        await client.ib.reqCurrentTimeAsync()
        req_id = next(iter(client.ib.wrapper.reqId2Ticker))
        assert 317 in client.codes()
        book = sim.depth_book(CLIENT_ID, req_id)
        assert [(lv.price, lv.size) for lv in ticker.domBids] == [(float(r.price), r.size) for r in book.bids]
        assert [(lv.price, lv.size) for lv in ticker.domAsks] == [(float(r.price), r.size) for r in book.asks]
