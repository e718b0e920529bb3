"""Reproducible markets and exact counts: what a lossless-pipeline test relies on."""

from __future__ import annotations

import asyncio
from collections import Counter

from sim_support import SimFactory, wait_until
from simulator_wire import (
    WireClient,
    frame,
    handshake,
    req_contract_details,
    req_mkt_data,
    req_mkt_depth,
    req_tick_by_tick,
    split_frames,
    start_api,
)

SCRIPT = b"".join(
    [
        start_api(1),
        frame(59, 1, 1),
        req_contract_details(2, "SPY"),
        req_mkt_data(3, "SPY"),
        req_mkt_data(4, "QQQ", generic=""),
        req_mkt_depth(5, "IWM"),
        req_mkt_depth(6, "XLF", smart=False),
        req_tick_by_tick(7, "SPY", "AllLast"),
        req_tick_by_tick(8, "QQQ", "BidAsk"),
        req_tick_by_tick(9, "DIA", "MidPoint"),
        frame(49, 1),
    ]
)


# A clock that stands still: with the market paused from the start, only bursts move it, so every
# timestamp and every price of the run is fixed.
FROZEN_CLOCK = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


async def record(sim_factory: SimFactory, seed: int, burst: int) -> bytes:
    """All bytes a raw client receives for SCRIPT followed by a burst of ``burst`` messages."""
    async with sim_factory(seed=seed, paused=True, clock=lambda: FROZEN_CLOCK) as sim:
        client = await WireClient.connect(sim.port)
        await client.send(handshake())
        await client.read_frames(1)
        await client.send(SCRIPT)
        await client.read_frames(10)
        sim.burst(burst)
        await wait_until(lambda: sim.burst_pending == 0)
        await client.send(frame(49, 1))
        frames: list[list[str]] = []
        while sum(1 for f in frames if f[0] == "49") < 2:
            frames = await client.read_frames(len(frames) + 1)
        await client.close()
        return bytes(client.received)


async def test_same_seed_same_requests_give_byte_identical_streams(sim_factory: SimFactory):
    """Two runs with the same seed, clock and request script send exactly the same bytes."""
    first = await record(sim_factory, seed=7, burst=20_000)
    second = await record(sim_factory, seed=7, burst=20_000)
    assert len(first) > 500_000
    assert first == second


async def test_different_seeds_give_different_streams(sim_factory: SimFactory):
    """The seed matters: another seed sends other prices."""
    assert await record(sim_factory, seed=1, burst=2_000) != await record(sim_factory, seed=2, burst=2_000)


async def test_under_the_wall_clock_the_trades_are_the_same_whoever_listens(sim_factory: SimFactory):
    """With the wall clock and a rate, the n-th trade of a symbol (price, size, exchange, attributes)
    is the same in every run with that seed, whether a client listens to the symbol or not."""
    tapes = []
    for listen in (True, False):
        async with sim_factory(seed=3, rate=50_000) as sim:
            client = await WireClient.connect(sim.port)
            await client.send(handshake())
            await client.read_frames(1)
            await client.send(SCRIPT if listen else start_api(1))
            await wait_until(lambda: sim.markets["SPY"].trades.count > 200)
            trades = sim.tape("SPY", 0, 2**62)
            tapes.append([(t.price_cents, t.size, t.exchange, t.mask) for t in trades])
            await client.close()
    common = min(map(len, tapes))
    assert common > 200
    assert tapes[0][:common] == tapes[1][:common]


async def test_stats_count_exactly_what_a_client_received(sim_factory: SimFactory):
    """Trades (tick-by-tick Last/AllLast and RTVolume) and depth messages per symbol match /stats exactly."""
    async with sim_factory(rate=0) as sim:
        client = await WireClient.connect(sim.port)
        await client.send(handshake())
        await client.read_frames(1)
        await client.send(SCRIPT)
        await wait_until(lambda: sim.stats.snapshot()["total"] > 50_000)  # type: ignore[operator]
        sim.pause()
        await client.send(frame(49, 1))
        frames: list[list[str]] = []
        while sum(1 for f in frames if f[0] == "49") < 2:
            frames = await client.read_frames(len(frames) + 1, within=10)
        stats = sim.snapshot_stats()["sent"]
        await client.close()
    symbol_of = {"3": "SPY", "4": "QQQ", "5": "IWM", "6": "XLF", "7": "SPY", "8": "QQQ", "9": "DIA"}
    trades: Counter[str] = Counter()
    depth: Counter[str] = Counter()
    for f in frames:
        if f[0] == "99" and f[2] in ("1", "2"):
            trades[symbol_of[f[1]]] += 1
        elif f[0] == "46" and f[3] == "48":
            trades[symbol_of[f[2]]] += 1
        elif f[0] in ("12", "13"):
            depth[symbol_of[f[2]]] += 1
    by_symbol = stats["by_symbol"]  # type: ignore[index]
    assert trades["SPY"] > 0
    assert dict(trades) == {s: n for s, n in stats["trades"].items() if n}  # type: ignore[index]
    assert dict(depth) == {s: c["depth"] for s, c in by_symbol.items() if c["depth"]}
    assert len(frames) == sum(stats["by_kind"].values())  # type: ignore[index]


async def test_realistic_prices_spreads_and_volume(sim_factory: SimFactory):
    """Prices sit near real ETF levels on a 0.01 grid, bid < ask always, RTVolume has six fields."""
    async with sim_factory(rate=0) as sim:
        client = await WireClient.connect(sim.port)
        await client.send(handshake())
        await client.read_frames(1)
        await client.send(SCRIPT)
        frames, _ = split_frames(await client.read_for(0.3))
        await client.close()
    assert sum(1 for f in frames if f[0] == "46" and f[3] == "48") > 100
    bids = {f[2]: float(f[4]) for f in frames if f[0] == "1" and f[3] == "1"}
    assert 550 < bids["3"] < 650
    assert 480 < bids["4"] < 560
    for f in frames:
        if f[0] == "99" and f[2] == "3":
            assert float(f[4]) < float(f[5])
            assert len(f[4].split(".")[1]) == 2  # a 0.01 tick grid
        if f[0] == "46" and f[3] == "48":
            _, size, _, volume, _, single = f[4].split(";")
            assert int(size) > 0
            assert int(volume) >= int(size)
            assert single in ("true", "false")


async def test_a_closed_client_is_sent_nothing_more_and_the_stats_agree(sim_factory: SimFactory):
    """POST /disconnect while streaming unthrottled: every frame /stats counts reached the client
    before the close, and nothing counted was rendered for the closing socket."""
    async with sim_factory(rate=0) as sim:
        client = await WireClient.connect(sim.port)
        await client.send(handshake())
        await client.read_frames(1)
        await client.send(SCRIPT)
        await wait_until(lambda: sim.stats.snapshot()["total"] > 20_000)  # type: ignore[operator]
        sim.disconnect_all()
        assert await client.closed_by_server()
        await asyncio.sleep(0.1)  # turns of the scheduler after the close
        frames, rest = split_frames(bytes(client.received))
        assert rest == b""
        assert len(frames) == sim.stats.snapshot()["total"]
