"""When the market trades: ``always`` (UTC days) or ``nyse`` (XNYS sessions), and what history follows."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from ib_async import Stock
from sim_support import IbClient, SimFactory, wait_until

from ingestion.simulator.hours import AlwaysOpen, NyseHours

SPY = Stock("SPY", "SMART", "USD")


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def test_nyse_sessions_follow_the_calendar():
    """Thanksgiving is closed, the day after closes early; extended hours are 04:00-20:00 New York."""
    hours = NyseHours(ms("2026-12-01T00:00:00+00:00"))
    regular = hours.sessions(ms("2026-11-25T00:00:00+00:00"), ms("2026-11-28T00:00:00+00:00"), rth=True)
    assert [(s.day.isoformat(), s.start_ms, s.end_ms) for s in regular] == [
        ("2026-11-25", ms("2026-11-25T09:30:00-05:00"), ms("2026-11-25T16:00:00-05:00")),
        ("2026-11-27", ms("2026-11-27T09:30:00-05:00"), ms("2026-11-27T13:00:00-05:00")),
    ]
    [extended] = hours.sessions(ms("2026-11-25T12:00:00+00:00"), ms("2026-11-25T13:00:00+00:00"), rth=False)
    assert (extended.start_ms, extended.end_ms) == (
        ms("2026-11-25T04:00:00-05:00"),
        ms("2026-11-25T20:00:00-05:00"),
    )
    [early] = hours.sessions(ms("2026-11-27T12:00:00+00:00"), ms("2026-11-27T13:00:00+00:00"), rth=False)
    assert early.end_ms == ms("2026-11-27T17:00:00-05:00"), (
        "after an early close, extended hours end at 17:00"
    )
    assert hours.is_open(ms("2026-11-25T04:00:00-05:00"))
    assert not hours.is_open(ms("2026-11-25T03:59:59-05:00"))
    assert not hours.is_open(ms("2026-11-26T12:00:00-05:00"))  # Thanksgiving


def test_always_has_one_session_per_utc_day():
    days = AlwaysOpen().sessions(ms("2026-12-05T23:00:00+00:00"), ms("2026-12-06T01:00:00+00:00"), rth=True)
    assert [(s.start_ms, s.end_ms) for s in days] == [
        (ms("2026-12-05T00:00:00+00:00"), ms("2026-12-06T00:00:00+00:00")),
        (ms("2026-12-06T00:00:00+00:00"), ms("2026-12-07T00:00:00+00:00")),
    ]


async def test_a_closed_nyse_market_does_not_trade_and_bars_follow_its_sessions(sim_factory: SimFactory):
    """On a Saturday the nyse market makes no trade; daily bars are XNYS sessions; useRTH=1 bars
    start at 09:30 New York, useRTH=0 bars at 04:00."""
    saturday = ms("2026-12-05T17:00:00+00:00") / 1000
    async with sim_factory(session="nyse", clock=lambda: saturday) as sim:
        client = await IbClient.connect(sim)
        await client.ib.qualifyContractsAsync(SPY)
        client.ib.reqMktData(SPY, "233")
        await asyncio.sleep(0.3)
        assert all(m.trades.count == 0 for m in sim.markets.values())
        daily = await client.ib.reqHistoricalDataAsync(SPY, "", "1 M", "1 day", "TRADES", useRTH=True)
        assert [b.date for b in daily][-3:] == [
            dt.date(2026, 12, 2),
            dt.date(2026, 12, 3),
            dt.date(2026, 12, 4),
        ]
        assert dt.date(2026, 11, 26) not in [b.date for b in daily]
        assert all(b.date.weekday() < 5 for b in daily)
        rth = await client.ib.reqHistoricalDataAsync(SPY, "", "1 D", "1 hour", "TRADES", useRTH=True)
        extended = await client.ib.reqHistoricalDataAsync(SPY, "", "1 D", "1 hour", "TRADES", useRTH=False)
        new_york = [
            b.date.astimezone(dt.timezone(dt.timedelta(hours=-5))) for b in (rth[0], rth[1], extended[0])
        ]
        assert [t.strftime("%Y-%m-%d %H:%M") for t in new_york] == [
            "2026-12-04 09:30",
            "2026-12-04 10:00",
            "2026-12-04 04:00",
        ]
        assert sum(b.volume for b in rth) < sum(b.volume for b in extended)
        client.ib.disconnect()


async def test_a_tick_request_stays_within_one_session(sim_factory: SimFactory):
    """Ticks asked from just before midnight UTC (``always``) stop at midnight: one session per request."""
    offset = ms("2026-12-05T23:59:59+00:00") / 1000 - time.time()
    async with sim_factory(rate=400, clock=lambda: time.time() + offset) as sim:
        client = await IbClient.connect(sim)
        await client.ib.qualifyContractsAsync(SPY)
        client.ib.reqTickByTickData(SPY, "AllLast")
        midnight = ms("2026-12-06T00:00:00+00:00")
        await wait_until(lambda: len(sim.tape("SPY", midnight, 2**62)) > 10, within=10)
        sim.pause()
        start = dt.datetime(2026, 12, 5, 23, 59, 59, tzinfo=dt.UTC)
        ticks = await client.ib.reqHistoricalTicksAsync(SPY, start, "", 1000, "TRADES", False)
        before = sim.tape("SPY", 0, midnight)
        assert 0 < len(before) < 1000
        assert [t.price for t in ticks] == [t.price_cents / 100 for t in before]
        client.ib.disconnect()
