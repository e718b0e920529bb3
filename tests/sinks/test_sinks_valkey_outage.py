"""Valkey stopped mid-stream: QuestDB rows keep flowing at the same rate and the cache catches up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sinks_helpers import BASE_NS, ConfigFactory, RecordingBus, eventually, full_quote, running_writer

from ingestion.config import ValkeyConfig
from ingestion.metrics import Metrics
from ingestion.sinks.questdb import QuestDBWriter
from ingestion.sinks.valkey import ValkeyCache
from questdb_double import QuestDBDouble

US = 1000


class Feed:
    """Quotes at a steady pace into both sinks, as the pipeline would hand them over, until stopped."""

    def __init__(self, writer: QuestDBWriter, cache: ValkeyCache) -> None:
        self.writer = writer
        self.cache = cache
        self.sent = 0
        self.accept_seconds: list[float] = []
        self.stop = asyncio.Event()

    async def run(self, per_tick: int = 20, tick: float = 0.01) -> None:
        while not self.stop.is_set():
            for _ in range(per_tick):
                quote = full_quote("SPY", BASE_NS + self.sent * US, base=100 + self.sent % 50)
                started = time.perf_counter()
                self.writer.accept(quote)
                self.cache.accept(quote)
                self.accept_seconds.append(time.perf_counter() - started)
                self.sent += 1
            await asyncio.sleep(tick)


@dataclass
class Window:
    fed: int
    landed: int

    @property
    def pace(self) -> float:
        """Rows that reached QuestDB per row fed: 1.0 is keeping up with the feed."""
        return self.landed / max(1, self.fed)


async def window(qdb: QuestDBDouble, feed: Feed, seconds: float) -> Window:
    """What was fed and what landed over ``seconds``. Both, because on a loaded machine the feed
    itself runs slower than its nominal 2,000 quotes/s, and a rate alone would measure that."""
    fed, landed = feed.sent, qdb.row_count("market_data_l1")
    await asyncio.sleep(seconds)  # a measuring window, not a wait for a condition
    return Window(feed.sent - fed, qdb.row_count("market_data_l1") - landed)


async def cached_timestamp(url: str) -> int | None:
    client = Redis.from_url(url)
    try:
        raw = await client.get("market:l1:SPY")
    finally:
        await client.aclose()
    return json.loads(raw)["timestamp"] if raw else None


async def test_valkey_outage_does_not_slow_questdb_and_the_cache_catches_up(
    qdb: QuestDBDouble, make_config: ConfigFactory, restartable_valkey: Any
) -> None:
    """1. stream into both sinks; 2. stop Valkey: QuestDB's row rate holds, cache writes are dropped
    and counted; 3. restart Valkey: the cache holds the latest quote again; one down and one restored
    alert were published."""
    bus = RecordingBus()
    metrics = Metrics()
    config = ValkeyConfig(url=restartable_valkey.url, conflation_ms=20, socket_timeout_seconds=0.5)
    cache = ValkeyCache(config, bus, metrics)
    await cache.start()
    cache_task = asyncio.create_task(cache.run())
    try:
        async with running_writer(make_config(), metrics=metrics) as writer:
            feed = Feed(writer, cache)
            feeding = asyncio.create_task(feed.run())
            await eventually(lambda: qdb.row_count("market_data_l1") > 200, what="rows flowing")
            before = await window(qdb, feed, 1.5)
            await asyncio.to_thread(restartable_valkey.stop)
            await eventually(lambda: cache.status().state == "down", what="the cache to notice")
            during = await window(qdb, feed, 1.5)
            await asyncio.to_thread(restartable_valkey.start)
            feed.stop.set()
            await feeding
            await eventually(lambda: cache.status().state == "ok", what="the cache to reconnect")
            last = BASE_NS + (feed.sent - 1) * US
            deadline = time.monotonic() + 5
            while await cached_timestamp(restartable_valkey.url) != last:
                assert time.monotonic() < deadline, "the cache never caught up"
                await asyncio.sleep(0.02)
            await eventually(lambda: qdb.row_count("market_data_l1") == feed.sent, what="every row")
    finally:
        cache_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cache_task
        await cache.aclose()
    # QuestDB keeps pace with the feed while Valkey is down, as before it went down.
    assert during.pace >= 0.8 * before.pace, (before, during)
    # The loop was not held up either: the feed ran about as fast (a loop blocked on a dead server
    # would slow the feed and QuestDB alike, which the pace alone would not show).
    assert during.fed >= 0.5 * before.fed, (before, during)
    # accept() does no I/O: the 99th percentile is far below a round trip to a dead server, and
    # none waited for one (a single preemption on a busy machine can take a few ms, hence p99).
    durations = sorted(feed.accept_seconds)
    assert durations[int(len(durations) * 0.99)] < 0.005
    assert durations[-1] < 0.25
    assert metrics.registry.get_sample_value("ingestion_valkey_dropped_total") > 0
    assert [e.event for e in bus.published] == ["valkey_down", "valkey_restored"]
    assert all(e.alert for e in bus.published)


async def test_a_valkey_that_never_answers_is_down_within_the_socket_timeout(bus: RecordingBus) -> None:
    """A server that takes the connection and never replies (hung, or a black-holed port behind a
    proxy): the first round trip gives up after socket_timeout_seconds, not sooner and not never, and
    the outage is reported once, with that reason."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = ValkeyConfig(url=f"redis://127.0.0.1:{port}/0", conflation_ms=20, socket_timeout_seconds=0.3)
    cache = ValkeyCache(config, bus, Metrics())
    await cache.start()
    task = asyncio.create_task(cache.run())
    try:
        started = time.monotonic()
        cache.accept(full_quote("SPY", BASE_NS, base=100))
        await eventually(lambda: cache.status().state == "down", what="the cache to give up", within=2.5)
        gave_up_after = time.monotonic() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await cache.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert gave_up_after >= 0.3
    assert cache.status().details["last_error"] == "TimeoutError(no reply within 0.3 s)"
    assert [e.event for e in bus.published] == ["valkey_down"]
