"""The market runs whether or not anyone listens, and every view of a trade shows the same trade."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
from ib_async import Stock
from sim_support import IbClient, SimFactory, wait_until
from simulator_wire import WireClient, handshake, req_mkt_data, split_frames, start_api

from ingestion.simulator.server import Simulator


def produced(sim: Simulator, symbol: str = "SPY") -> int:
    return sim.markets[symbol].trades.count


def as_seen(trades: list) -> list[tuple[int, float, float, str, str, bool]]:
    """Trades (tape or ib_async ticks) as (unix second, price, size, exchange, conditions, unreported)."""
    out = []
    for t in trades:
        if hasattr(t, "time_ms"):
            out.append(
                (t.time_ms // 1000, t.price_cents / 100, t.size, t.exchange, t.conditions, bool(t.mask & 2))
            )
        else:
            attrib = getattr(t, "tickAttribLast", None) or t.tickAttribLast
            second = int(t.time.timestamp())
            out.append((second, t.price, t.size, t.exchange, t.specialConditions, attrib.unreported))
    return out


async def test_the_market_trades_while_no_one_listens(sim_factory: SimFactory):
    """With no client at all, every symbol keeps trading; the tape and /stats count it."""
    async with sim_factory(rate=3000) as sim:
        await wait_until(lambda: all(m.trades.count > 20 for m in sim.markets.values()), within=10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}") as control:
            market = (await control.get("/stats")).json()["market"]
        assert set(market["trades"]) == set(sim.markets)
        assert all(n > 20 for n in market["trades"].values())
        assert market["session"] == "always"


async def test_pause_freezes_the_market_and_resume_continues(sim_factory: SimFactory):
    """POST /pause: no trade happens at all (the produced count stands still); /resume goes on."""
    async with sim_factory(rate=5000) as sim:
        client = await IbClient.connect(sim)
        spy = Stock("SPY", "SMART", "USD")
        await client.ib.qualifyContractsAsync(spy)
        client.ib.reqMktData(spy, "233")
        await wait_until(lambda: produced(sim) > 10)
        sim.pause()
        frozen = {m.symbol: m.trades.count for m in sim.markets.values()}
        await asyncio.sleep(0.3)
        assert {m.symbol: m.trades.count for m in sim.markets.values()} == frozen
        assert sim.market_stats()["paused"] is True
        sim.resume()
        await wait_until(lambda: produced(sim) > frozen["SPY"] and produced(sim, "XLK") > frozen["XLK"])
        client.ib.disconnect()


async def test_live_ticks_history_and_tape_show_the_same_trades(sim_factory: SimFactory):
    """Every trade a tick-by-tick AllLast client received is on the tape, one for one, and
    reqHistoricalTicks from the first of those seconds returns exactly the tape's trades."""
    async with sim_factory(rate=400) as sim:
        client = await IbClient.connect(sim)
        spy = Stock("SPY", "SMART", "USD")
        await client.ib.qualifyContractsAsync(spy)
        live: list = []
        ticker = client.ib.reqTickByTickData(spy, "AllLast")
        ticker.updateEvent += lambda t: live.extend(t.tickByTicks)
        await wait_until(lambda: len(live) > 150, within=10)
        sim.pause()
        await client.ib.reqCurrentTimeAsync()
        tape = sim.tape("SPY", 0, 2**62)
        first = next(i for i, t in enumerate(tape) if as_seen([t]) == as_seen(live[:1]))
        assert as_seen(tape[first:]) == as_seen(live)
        start = as_seen(live[:1])[0][0]
        ticks = await client.ib.reqHistoricalTicksAsync(
            spy, dt.datetime.fromtimestamp(start, dt.UTC), "", 1000, "TRADES", useRth=False
        )
        assert as_seen(ticks) == as_seen(sim.tape("SPY", start * 1000, 2**62))
        assert len(ticks) >= len(live)
        client.ib.disconnect()


async def test_rtvolume_carries_the_tapes_millisecond_time(sim_factory: SimFactory):
    """RTVolume (tick 48) is price;size;time_ms;...: the same trades, times and order as the tape."""
    async with sim_factory(rate=2000) as sim:
        client = await WireClient.connect(sim.port)
        await client.send(handshake())
        await client.read_frames(1)
        await client.send(start_api(1) + req_mkt_data(3, "QQQ"))
        await wait_until(lambda: sim.stats.for_symbol("QQQ")["rtvolume"] > 50)
        sim.pause()
        frames, _ = split_frames(await client.read_for(0.3))
        await client.close()
    rt = [f[4].split(";") for f in frames if f[0] == "46" and f[3] == "48"]
    seen = [(round(float(p) * 100), int(size), int(ms)) for p, size, ms, *_ in rt]
    tape = [(t.price_cents, t.size, t.time_ms) for t in sim.tape("QQQ", 0, 2**62)]
    first = tape.index(seen[0])
    assert tape[first:] == seen


async def test_trades_during_a_gateway_outage_come_back_through_history(sim_factory: SimFactory):
    """POST /restart?down=: the client is dropped, the market keeps trading, and after the
    reconnect reqHistoricalTicks returns exactly the trades produced while it was away."""
    async with sim_factory(rate=600) as sim:
        client = await IbClient.connect(sim)
        spy = Stock("SPY", "SMART", "USD")
        await client.ib.qualifyContractsAsync(spy)
        client.ib.reqTickByTickData(spy, "AllLast")
        # Long enough for the simulator to measure the pace the market keeps while nobody listens.
        await wait_until(lambda: produced(sim) > 400, within=10)
        lost = asyncio.Event()
        client.ib.disconnectedEvent += lost.set
        down_at = sim.now_ms()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}") as control:
            assert (await control.post("/restart?down=1.0")).status_code == 200
        await asyncio.wait_for(lost.wait(), 5)
        during = produced(sim)
        await asyncio.sleep(1.2)
        assert produced(sim) > during + 200, "the market went on at its pace while the gateway was down"
        await client.ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=5)
        sim.pause()
        start = down_at // 1000 + 1
        ticks = await client.ib.reqHistoricalTicksAsync(
            spy, dt.datetime.fromtimestamp(start, dt.UTC), "", 1000, "TRADES", useRth=False
        )
        expected = sim.tape("SPY", start * 1000, 2**62)
        assert len(expected) > 20
        assert len(ticks) >= min(len(expected), 1000)
        assert as_seen(ticks) == as_seen(expected[: len(ticks)])
        client.ib.disconnect()


async def test_silence_and_1100_do_not_stop_the_market(sim: Simulator):
    """While the gateway is silent or has lost IB, nothing is sent but trades keep happening."""
    client = await IbClient.connect(sim)
    spy = Stock("SPY", "SMART", "USD")
    await client.ib.qualifyContractsAsync(spy)
    client.ib.reqTickByTickData(spy, "AllLast")
    await wait_until(lambda: sim.stats.for_symbol("SPY")["tick_by_tick_all_last"] > 10)
    sim.silence(1.0)  # long enough that the checks below fall inside it on a loaded machine
    await asyncio.sleep(0.05)
    sent, made = sim.stats.for_symbol("SPY")["tick_by_tick_all_last"], produced(sim)
    await asyncio.sleep(0.3)
    assert sim.stats.for_symbol("SPY")["tick_by_tick_all_last"] == sent
    assert produced(sim) > made
    await wait_until(lambda: not sim.silenced, within=5)
    sim.send_system_message(1100)
    await asyncio.sleep(0.05)
    sent, made = sim.stats.for_symbol("SPY")["tick_by_tick_all_last"], produced(sim)
    await asyncio.sleep(0.3)
    assert sim.stats.for_symbol("SPY")["tick_by_tick_all_last"] == sent
    assert produced(sim) > made
    sim.send_system_message(1102)
    client.ib.disconnect()


async def test_tape_endpoint_lists_the_trades_of_a_window(sim: Simulator, control: httpx.AsyncClient):
    """GET /tape?symbol=&start=&end= lists the produced trades of [start, end) as JSON."""
    await wait_until(lambda: produced(sim) > 30)
    sim.pause()
    trades = sim.tape("SPY", 0, 2**62)
    middle = trades[len(trades) // 2].time_ms
    body = (await control.get(f"/tape?symbol=spy&start={middle / 1000}&end={2**31}")).json()
    assert body["symbol"] == "SPY"
    expected = [t for t in trades if t.time_ms >= middle]
    assert [t["time_ms"] for t in body["trades"]] == [t.time_ms for t in expected]
    first = expected[0]
    assert body["trades"][0] == {
        "time_ms": first.time_ms,
        "time": first.time_ms // 1000,
        "price": first.price_cents / 100,
        "size": first.size,
        "exchange": first.exchange,
        "conditions": first.conditions,
        "unreported": bool(first.mask & 2),
    }
    assert (await control.get("/tape?symbol=NOPE&start=0&end=1")).status_code == 400
    assert (await control.get("/tape?symbol=SPY&start=0")).status_code == 400
