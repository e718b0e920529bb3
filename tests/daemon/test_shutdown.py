"""Stopping the components: every task ends, even one whose library dropped a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from ibkr_harness import ibkr_stack, wait_for
from structlog.testing import capture_logs

from ingestion.app import stop_tasks
from ingestion.bus import EventBus
from ingestion.config import ValkeyConfig
from ingestion.events import Trade
from ingestion.metrics import Metrics
from ingestion.simulator.config import SimulatorConfig
from ingestion.sinks.valkey import ValkeyCache


async def _swallows_one_cancellation() -> None:
    """What asyncio.wait_for does on Python 3.11 when a result and the cancellation meet."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)


async def _never_stops() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


async def test_a_task_that_drops_one_cancellation_is_asked_again_and_ends() -> None:
    task = asyncio.create_task(_swallows_one_cancellation())
    await asyncio.sleep(0)
    started = time.monotonic()
    await stop_tasks([task], deadline=started + 5)
    assert task.cancelled()
    assert time.monotonic() - started < 2  # the second request comes after a second


async def test_a_task_that_never_ends_is_named_in_the_log_at_the_deadline() -> None:
    task = asyncio.create_task(_never_stops(), name="stubborn")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await stop_tasks([task], deadline=time.monotonic() + 0.5)
    assert not task.done()
    assert {"event": "component did not stop in time", "component": "stubborn", "log_level": "error"} in logs
    task.get_coro().close()  # type: ignore[union-attr]


async def test_the_valkey_writer_stops_when_cancelled_in_the_middle_of_a_write(valkey_url: str) -> None:
    """The real case: redis-py under Python 3.11 drops about every other cancellation that lands while a
    command is being sent. Cancelled once, at random moments of a busy writer, it ends every time."""
    rng = random.Random(7)
    for _ in range(30):
        cache = ValkeyCache(ValkeyConfig(url=valkey_url, socket_timeout_seconds=1.0), EventBus(), Metrics())
        await cache.start()
        writer = asyncio.create_task(cache.run())
        feeder = asyncio.create_task(_feed(cache))
        await asyncio.sleep(rng.uniform(0.005, 0.03))
        feeder.cancel()
        writer.cancel()  # once: the writer itself must honour a cancellation redis-py dropped
        await asyncio.wait([writer, feeder], timeout=1)
        await cache.aclose()
        assert writer.done()


async def _feed(cache: ValkeyCache) -> None:
    sequence = 0
    while True:
        price = 100.0 + sequence % 7  # a busy writer: a trade per loop iteration
        cache.accept(Trade("SPY", time.time_ns(), None, price, 1.0, "ARCA", "", False, False, "tick_by_tick"))
        sequence += 1
        await asyncio.sleep(0)


async def test_drain_cancels_the_streams_and_reads_everything_already_sent() -> None:
    """What the gateway sent before the stop is read and handed on, not dropped with the socket: drain()
    then disconnect, as a stop does, and the sink holds every trade and depth message the simulator sent."""
    async with ibkr_stack(SimulatorConfig(port=0, control_port=0, rate=30000)) as stack:
        await wait_for(lambda: stack.registry.counts()["active"] == 33, 10, "subscription")
        await asyncio.sleep(2)
        # The daemon's stop allows 1 s; here the simulator shares the loop with the daemon at 30,000
        # msgs/s, and a loaded machine may need longer to read the backlog. What is checked is that
        # drain() reads it all, not how long the stop may take.
        await stack.supervisor.drain(limit_seconds=5.0)
        # What a stop does next: whatever is still unread now is lost with the socket. The supervisor
        # must not come back: a reconnect would stream again while the counts below are read.
        await stack.stop_supervisor()
        assert stack.events_named("connection_restored") == []
        sent = (await stack.stats())["sent"]
        await wait_for(lambda: stack.pipeline.depth == 0, 5, "the pipeline to empty")
        by_symbol = sent["by_symbol"]
        expected = {
            symbol: (
                by_symbol[symbol]["tick_by_tick_all_last"]
                if stack.registry.streams[symbol].time_and_sales.source == "tick_by_tick"
                else by_symbol[symbol]["rtvolume"],
                by_symbol[symbol]["depth"],
            )
            for symbol in stack.registry.streams
        }
        received = {symbol: (stack.sink.trades[symbol], stack.sink.depth[symbol]) for symbol in expected}
    assert received == expected
