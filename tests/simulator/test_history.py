"""IB history from the simulator, read by unmodified ib_async: head timestamps, bars and ticks."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from ib_async import Stock
from sim_support import IbClient, SimFactory, wait_until
from simulator_wire import WireClient, contract, frame, handshake, split_frames, start_api

from ingestion.simulator.bars import PAST_DAYS
from ingestion.simulator.server import Simulator

SPY = Stock("SPY", "SMART", "USD")


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[IbClient]:
    """ib_async on the default simulator, with SPY observed (Level 1 with RTVolume)."""
    c = await IbClient.connect(sim)
    await c.ib.qualifyContractsAsync(SPY)
    c.ib.reqMktData(SPY, "233")
    yield c
    c.ib.disconnect()


def utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


async def test_head_timestamp_is_the_start_of_the_synthetic_past(sim: Simulator, client: IbClient):
    """reqHeadTimeStamp answers with the first bar the farm has: years before the simulator started."""
    head = await client.ib.reqHeadTimeStampAsync(SPY, "TRADES", useRTH=False, formatDate=1)
    first = utc(sim.started_ms) - dt.timedelta(days=PAST_DAYS)
    assert head == dt.datetime(first.year, first.month, first.day)  # ib_async parses it naive (UTC)
    epoch = await client.ib.reqHeadTimeStampAsync(SPY, "TRADES", useRTH=False, formatDate=2)
    assert epoch == head.replace(tzinfo=dt.UTC)


async def test_two_years_of_daily_bars(sim: Simulator, client: IbClient):
    """ "2 Y" of "1 day" TRADES: one bar per (UTC) day up to today, OHLC consistent, near SPY's price."""
    bars = await client.ib.reqHistoricalDataAsync(SPY, "", "2 Y", "1 day", "TRADES", useRTH=True)
    today = utc(sim.now_ms()).date()
    assert bars[-1].date == today
    assert len(bars) >= 730
    assert all(
        later.date - earlier.date == dt.timedelta(days=1) for earlier, later in itertools.pairwise(bars)
    )
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0
        assert bar.barCount > 0
        assert 400 < bar.close < 800


async def test_minute_bars_of_the_live_period_are_built_from_the_tapes_trades(
    sim: Simulator, client: IbClient
):
    """The minute bars since the start aggregate exactly the trades the market produced."""
    await wait_until(lambda: sim.markets["SPY"].trades.count > 100)
    sim.pause()
    bars = await client.ib.reqHistoricalDataAsync(
        SPY, "", "1 D", "1 min", "TRADES", useRTH=False, formatDate=2
    )
    live = [b for b in bars if b.date.timestamp() * 1000 >= sim.started_ms // 60_000 * 60_000]
    assert live
    for bar in live:
        start = int(bar.date.timestamp() * 1000)
        trades = sim.tape("SPY", start, start + 60_000)
        assert bar.barCount == len(trades)
        assert bar.volume == sum(t.size for t in trades)
        assert (bar.open, bar.close) == (trades[0].price_cents / 100, trades[-1].price_cents / 100)
        assert bar.high == max(t.price_cents for t in trades) / 100
        assert bar.low == min(t.price_cents for t in trades) / 100
    earlier = [b for b in bars if b not in live]
    assert len(earlier) > 0, "the synthetic past fills the day before the start"


async def test_second_bars_come_straight_from_the_tape(sim: Simulator, client: IbClient):
    """ "5 secs" bars over "300 S": each one the tape's trades of its five seconds."""
    await wait_until(lambda: sim.markets["SPY"].trades.count > 100)
    sim.pause()
    bars = await client.ib.reqHistoricalDataAsync(
        SPY, "", "300 S", "5 secs", "TRADES", useRTH=False, formatDate=2
    )
    assert bars
    for bar in bars:
        start = int(bar.date.timestamp() * 1000)
        assert start % 5000 == 0
        trades = sim.tape("SPY", start, start + 5000)
        assert (bar.barCount, bar.volume) == (len(trades), sum(t.size for t in trades))
        assert (bar.open, bar.close) == (trades[0].price_cents / 100, trades[-1].price_cents / 100)
    assert sum(b.barCount for b in bars) == len(sim.tape("SPY", int(bars[0].date.timestamp() * 1000), 2**62))


async def test_midpoint_and_bid_ask_bars(sim: Simulator, client: IbClient):
    """MIDPOINT and BID_ASK bars carry no volume (-1); BID_ASK is avg bid, max ask, min bid, avg ask."""
    mid = await client.ib.reqHistoricalDataAsync(SPY, "", "1 D", "1 hour", "MIDPOINT", useRTH=False)
    quotes = await client.ib.reqHistoricalDataAsync(SPY, "", "1 D", "1 hour", "BID_ASK", useRTH=False)
    assert mid
    assert quotes
    assert mid[-1].date.tzinfo is not None
    for bar in (*mid, *quotes):
        assert (bar.volume, bar.barCount) == (-1, -1)
    for bar in quotes:
        assert bar.low <= bar.open < bar.close <= bar.high


async def test_ticks_stop_at_1000_unless_a_second_needs_completing(sim_factory: SimFactory):
    """Start-anchored: the first 1,000 trades and the rest of the 1,000th one's second; end-anchored:
    the last 1,000 and the rest of the first one's second. Both exactly the tape's trades."""
    async with sim_factory(rate=2500) as sim:  # an AllLast-only client: 2,500 trades a second
        client = await IbClient.connect(sim)
        await client.ib.qualifyContractsAsync(SPY)
        client.ib.reqTickByTickData(SPY, "AllLast")
        times = sim.markets["SPY"].trades.time_ms

        def second(i: int) -> int:
            return times[i] // 1000

        def spans_enough() -> bool:
            # The 1,000th trade from the start is not in the last second, nor the 1,000th from the
            # end in the first: both requests then end inside the tape.
            return len(times) > 2000 and second(999) < second(-1) and second(-1000) > second(0)

        await wait_until(spans_enough, within=15)
        sim.pause()
        tape = sim.tape("SPY", 0, 2**62)
        start = tape[0].time_ms // 1000
        ticks = await client.ib.reqHistoricalTicksAsync(SPY, utc(start * 1000), "", 1000, "TRADES", False)
        assert len(ticks) >= 1000
        assert [int(t.time.timestamp()) for t in ticks] == [t.time_ms // 1000 for t in tape[: len(ticks)]]
        assert all(t.time == ticks[999].time for t in ticks[1000:])
        assert tape[len(ticks)].time_ms // 1000 > ticks[-1].time.timestamp()
        end = tape[-1].time_ms // 1000
        last = await client.ib.reqHistoricalTicksAsync(SPY, "", utc(end * 1000), 1000, "TRADES", False)
        assert len(last) >= 1000
        assert [t.price for t in last] == [t.price_cents / 100 for t in tape[-len(last) :]]
        assert all(t.time == last[-1000].time for t in last[: len(last) - 1000])
        quotes = await client.ib.reqHistoricalTicksAsync(SPY, "", utc(end * 1000), 50, "BID_ASK", False)
        assert quotes
        assert all(q.priceBid < q.priceAsk for q in quotes)
        moves = await client.ib.reqHistoricalTicksAsync(
            SPY, "", utc(end * 1000), 50, "BID_ASK", False, ignoreSize=True
        )
        prices = [(q.priceBid, q.priceAsk) for q in moves]
        assert 1 < len(moves) < len(quotes)
        assert all(a != b for a, b in itertools.pairwise(prices)), "ignoreSize: price changes only"
        mids = await client.ib.reqHistoricalTicksAsync(SPY, "", utc(end * 1000), 10, "MIDPOINT", False)
        assert mids
        assert all(600 * 0.8 < m.price < 600 * 1.2 for m in mids)
        client.ib.disconnect()


async def test_an_empty_window_gets_hmds_no_data(sim: Simulator, client: IbClient):
    """Ticks before the simulator ran, or bars before the past began: 162 "HMDS query returned no data"."""
    yesterday = utc(sim.started_ms) - dt.timedelta(days=1)
    ticks = await client.ib.reqHistoricalTicksAsync(SPY, yesterday, "", 100, "TRADES", False)
    long_ago = utc(sim.started_ms) - dt.timedelta(days=PAST_DAYS + 30)
    bars = await client.ib.reqHistoricalDataAsync(SPY, long_ago, "1 D", "1 hour", "TRADES", useRTH=False)
    assert ticks == []
    assert list(bars) == []
    texts = [msg for _, code, msg in client.errors if code == 162]
    assert (
        texts
        == ["Historical Market Data Service error message:HMDS query returned no data: SPY@SMART Trades"] * 2
    )


@pytest.mark.parametrize(
    ("duration", "bar_size", "code", "text"),
    [
        ("1 Y", "1 min", 162, "Historical Market Data Service error message:invalid step: 60"),
        ("5 D", "1 min", 162, "Historical Market Data Service error message:invalid step: 60"),
        ("60 S", "1 day", 162, "Historical Market Data Service error message:invalid step: 86400"),
        ("1 D", "7 mins", 321, "Historical data bar size setting is invalid. Legal ones are: 1 secs,"),
        ("1 X", "1 min", 321, "Historical data duration format is invalid."),
    ],
)
async def test_invalid_bar_size_and_duration_are_refused_as_ib_does(
    client: IbClient, duration: str, bar_size: str, code: int, text: str
):
    """IB's step-size table and legal bar sizes: other combinations get 162 or 321, no bars.
    (ib_async takes 321 for a warning and waits for bars until its timeout, as it does with IB.)"""
    bars = await client.ib.reqHistoricalDataAsync(
        SPY, "", duration, bar_size, "TRADES", useRTH=False, timeout=1.5
    )
    assert list(bars) == []
    [(error_code, message)] = [(c, m) for _, c, m in client.errors if c in (162, 321)]
    assert error_code == code
    assert text in message


async def test_hmds_farm_down_holds_requests_until_it_is_up(
    sim: Simulator, client: IbClient, control: httpx.AsyncClient
):
    """POST /hmds?state=down: 2105 to every client and requests stay open; up: 2106 and answers."""
    assert (await control.post("/hmds?state=down")).json() == {"sent": 1}
    request = asyncio.ensure_future(client.ib.reqHeadTimeStampAsync(SPY, "TRADES", False, 1))
    await asyncio.sleep(0.3)
    assert not request.done()
    late = await IbClient.connect(sim, client_id=2)
    await control.post("/hmds?state=up")
    assert isinstance(await asyncio.wait_for(request, 5), dt.datetime)
    await control.post("/hmds?state=inactive")
    await client.ib.reqCurrentTimeAsync()
    notices = [(r, c, m) for r, c, m in client.errors if c in (2105, 2106, 2107)]
    assert notices[-3:] == [
        (-1, 2105, "HMDS data farm connection is broken:ushmds"),
        (-1, 2106, "HMDS data farm connection is OK:ushmds"),
        (-1, 2107, "HMDS data farm connection is inactive but should be available upon demand.ushmds"),
    ]
    assert (-1, 2105, "HMDS data farm connection is broken:ushmds") in late.errors, "told at connect"
    assert (await control.post("/hmds?state=sideways")).status_code == 400
    late.ib.disconnect()


async def test_cancel_historical_data_drops_an_open_request(sim: Simulator):
    """cancelHistoricalData: the request is never answered, not even after the farm is back."""
    wire = await WireClient.connect(sim.port)
    await wire.send(handshake())
    await wire.read_frames(1)
    sim.set_hmds("down")
    bars = frame(20, 7, *contract("SPY"), 0, "", "1 hour", "1 D", 0, "TRADES", 1, 0, "")
    await wire.send(
        start_api(1) + bars + frame(20, 8, *contract("QQQ"), 0, "", "1 hour", "1 D", 0, "TRADES", 1, 0, "")
    )
    await wire.send(frame(25, 1, 7))
    await asyncio.sleep(0.1)
    sim.set_hmds("up")
    frames, _ = split_frames(await wire.read_for(0.5))
    await wire.close()
    answered = [f[1] for f in frames if f[0] == "17"]
    assert answered == ["8"]
