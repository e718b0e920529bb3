"""The Valkey cache against a real server: keys, stream, channel, conflation, and an outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from sinks_helpers import BASE_NS, RecordingBus, depth, full_quote, trade
from structlog.testing import capture_logs

from ingestion.config import ValkeyConfig
from ingestion.events import IngestionEvent, Trade
from ingestion.metrics import Metrics
from ingestion.sinks.book import DepthBook
from ingestion.sinks.valkey import (
    HiredisPackingConnection,
    RoundTrips,
    ValkeyCache,
    trade_fields,
    xadd_command,
)

US = 1000


@contextlib.asynccontextmanager
async def running_cache(
    config: ValkeyConfig, bus: RecordingBus | None = None, metrics: Metrics | None = None, **kwargs: Any
) -> AsyncIterator[ValkeyCache]:
    cache = ValkeyCache(config, bus or RecordingBus(), metrics or Metrics(), **kwargs)
    await cache.start()
    task = asyncio.create_task(cache.run())
    try:
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with asyncio.timeout(5):
            await cache.aclose()


@pytest.fixture
async def redis(valkey_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(valkey_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


async def poll(check: Any, within: float = 5.0) -> Any:
    """Await ``check()`` every 10 ms until it returns something truthy."""
    deadline = time.monotonic() + within
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s")
        await asyncio.sleep(0.01)
    return value


class TestLevelOne:
    async def test_quote_is_written_as_json_with_a_ttl(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """market:l1:<SYMBOL> holds the contract's JSON fields, timestamp in ns, and expires."""
        async with running_cache(valkey_config) as cache:
            cache.accept(full_quote("SPY", BASE_NS))
            body = json.loads(await poll(lambda: redis.get("market:l1:SPY")))
            ttl = await redis.ttl("market:l1:SPY")
        assert body == {
            "symbol": "SPY", "last": 100.0, "bid": 99.99, "ask": 100.01, "bid_size": 300.0,
            "ask_size": 200.0, "volume": 1_000_000.0, "timestamp": BASE_NS,
        }  # fmt: skip
        assert 0 < ttl <= valkey_config.ttl_seconds

    async def test_a_delayed_quote_says_so(self, valkey_config: ValkeyConfig, redis: Redis) -> None:
        """IB's delayed data carries "delayed": true; a live quote's JSON stays exactly the contract's."""
        quote = full_quote("QQQ", BASE_NS)
        quote.delayed = True
        async with running_cache(valkey_config) as cache:
            cache.accept(quote)
            body = json.loads(await poll(lambda: redis.get("market:l1:QQQ")))
        assert body["delayed"] is True
        assert body["bid"] == 99.99

    async def test_many_ticks_conflate_into_few_writes_of_the_latest(
        self, valkey_config: ValkeyConfig, redis: Redis, metrics: Metrics
    ) -> None:
        """1000 ticks of one symbol in one burst: one or two writes, carrying the last tick."""
        async with running_cache(valkey_config, metrics=metrics) as cache:
            for i in range(1000):
                cache.accept(full_quote("QQQ", BASE_NS + i * US, base=400 + i / 100))
            await poll(lambda: _l1_timestamp_is(redis, "QQQ", BASE_NS + 999 * US))
        assert _l1_writes(metrics) <= 2


class TestWhenWritesHappen:
    """Trades go at once; each state key at most once per interval, first at once, then the newest."""

    async def test_a_quiet_symbols_quote_is_written_at_once_not_after_the_interval(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """The leading edge: with a 2 s interval, a first quote is in Valkey long before 2 s have passed."""
        config = valkey_config.model_copy(update={"conflation_ms": 2000})
        async with running_cache(config) as cache:
            await asyncio.sleep(0.1)  # the writer is idle, waiting
            started = time.monotonic()
            cache.accept(full_quote("SPY", BASE_NS))
            await poll(lambda: redis.exists("market:l1:SPY"), within=1.0)
        assert time.monotonic() - started < 1.0

    async def test_updates_within_the_interval_wait_and_only_the_newest_is_written(
        self, valkey_config: ValkeyConfig, redis: Redis, metrics: Metrics
    ) -> None:
        """The trailing edge: after a write, newer quotes wait out the interval, then the newest lands."""
        config = valkey_config.model_copy(update={"conflation_ms": 1000})
        async with running_cache(config, metrics=metrics) as cache:
            cache.accept(full_quote("QQQ", BASE_NS))
            await poll(lambda: _l1_timestamp_is(redis, "QQQ", BASE_NS))
            first_written = time.monotonic()
            for i in range(1, 4):
                cache.accept(full_quote("QQQ", BASE_NS + i * US))
                await asyncio.sleep(0.05)
            assert await _l1_timestamp_is(redis, "QQQ", BASE_NS)  # still the first: held back
            await poll(lambda: _l1_timestamp_is(redis, "QQQ", BASE_NS + 3 * US), within=3.0)
            newest_written = time.monotonic()
            await poll(lambda: _at_least(_l1_writes(metrics), 2))  # counted once acknowledged
        # Seen by polling: each moment is late by up to a poll and a loaded loop's turn, hence 0.8 of 1 s.
        assert newest_written - first_written >= 0.8
        assert _l1_writes(metrics) == 2

    async def test_the_wait_for_the_interval_is_measured_apart_from_the_daemons_own_delay(
        self, valkey_config: ValkeyConfig, redis: Redis, metrics: Metrics
    ) -> None:
        """A quote held back for most of a 1 s interval is 1 s old when written, yet only the part
        after the interval let it go counts as the daemon's own delay (…_beyond_conflation_seconds)."""
        config = valkey_config.model_copy(update={"conflation_ms": 1000})
        async with running_cache(config, metrics=metrics) as cache:
            first = time.time_ns()
            cache.accept(full_quote("XLF", first))
            await poll(lambda: _l1_timestamp_is(redis, "XLF", first))
            held = time.time_ns()
            cache.accept(full_quote("XLF", held))
            await poll(lambda: _l1_timestamp_is(redis, "XLF", held), within=3.0)
            await poll(lambda: _at_least(_l1_writes(metrics), 2))
        age = _histogram_sum(metrics, "ingestion_latency_to_valkey_seconds")
        beyond = _histogram_sum(metrics, "ingestion_latency_to_valkey_beyond_conflation_seconds")
        assert age >= 0.8  # the held quote waited for (most of) the interval
        assert beyond < 0.4  # two writes, each sent as soon as it was allowed to go

    async def test_a_steady_stream_of_quotes_gets_one_write_per_interval(
        self, valkey_config: ValkeyConfig, redis: Redis, metrics: Metrics
    ) -> None:
        """Quotes every 5 ms for 1 s at a 200 ms interval: about 6 writes (1 s / 200 ms + the first)."""
        config = valkey_config.model_copy(update={"conflation_ms": 200})
        async with running_cache(config, metrics=metrics) as cache:
            started = time.monotonic()
            for i in range(200):
                cache.accept(full_quote("IWM", BASE_NS + i * US))
                await asyncio.sleep(0.005)
            await poll(lambda: _l1_timestamp_is(redis, "IWM", BASE_NS + 199 * US), within=2.0)
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.1)  # the last write's acknowledgement is counted
        writes = _l1_writes(metrics)
        # 200 sleeps of 5 ms take 1 s, or longer on a busy machine: never more than the first write and
        # one per 200 ms of however long it took.
        assert 2 <= writes <= 1 + elapsed / 0.2 + 1

    async def test_a_trade_is_not_held_back_by_its_symbols_conflated_quote(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """With the symbol's L1 key just written and a 2 s interval, a trade still goes at once."""
        config = valkey_config.model_copy(update={"conflation_ms": 2000})
        async with running_cache(config) as cache:
            cache.accept(full_quote("DIA", BASE_NS))
            await poll(lambda: redis.exists("market:l1:DIA"))
            started = time.monotonic()
            cache.accept(full_quote("DIA", BASE_NS + US))
            cache.accept(trade("DIA", BASE_NS + 2 * US))
            await poll(lambda: redis.exists("market:trades:DIA"), within=1.0)
            trade_seconds = time.monotonic() - started
            quote_held = await _l1_timestamp_is(redis, "DIA", BASE_NS)
        assert trade_seconds < 1.0
        assert quote_held

    async def test_with_a_minimum_write_interval_trades_wait_for_it_and_go_together(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """min_write_interval_ms spaces the round trips: a trade after a write waits out the interval and
        goes with the trades that came meanwhile (what a trader's machine saves in CPU at a real rate)."""
        config = valkey_config.model_copy(update={"min_write_interval_ms": 1000})
        async with running_cache(config) as cache:
            cache.accept(trade("IWM", BASE_NS))
            await poll(lambda: redis.exists("market:trades:IWM"))
            written = time.monotonic()
            cache.accept(trade("IWM", BASE_NS + US))
            cache.accept(trade("IWM", BASE_NS + 2 * US))
            await asyncio.sleep(0.2)
            held = await redis.xlen("market:trades:IWM")
            checked = time.monotonic() - written
            await poll(lambda: _xlen_is(redis, "market:trades:IWM", 3), within=5.0)
            waited = time.monotonic() - written
        if checked < 0.9:  # on a machine slow enough to take longer, the interval may have passed
            assert held == 1
        assert waited >= 0.9

    async def test_shutdown_writes_what_is_still_held_back(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """aclose() sends the newest state at once, without waiting out the interval."""
        config = valkey_config.model_copy(update={"conflation_ms": 60_000})
        cache = ValkeyCache(config, RecordingBus(), Metrics())
        await cache.start()
        task = asyncio.create_task(cache.run())
        cache.accept(full_quote("XLE", BASE_NS))
        await poll(lambda: redis.exists("market:l1:XLE"))
        cache.accept(full_quote("XLE", BASE_NS + US))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with asyncio.timeout(5):
            await cache.aclose()
        assert await _l1_timestamp_is(redis, "XLE", BASE_NS + US)


ARGUMENTS = st.one_of(
    st.text(), st.binary(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans()
)


class TestCommandPacking:
    """hiredis packs our commands; the bytes must be exactly those redis-py's own packer makes."""

    def test_a_trade_xadd_packs_to_the_same_bytes(self) -> None:
        args = xadd_command(trade("SPY", BASE_NS, price=412.37), 1000)
        assert HiredisPackingConnection().pack_command(*args) == [b"".join(Connection().pack_command(*args))]

    @given(st.sampled_from(["SET", "XADD", "PUBLISH", "CLIENT SETINFO", b"CONFIG GET"]), st.lists(ARGUMENTS))
    def test_any_arguments_pack_like_redis_py_or_fail_like_it(
        self, name: str | bytes, rest: list[Any]
    ) -> None:
        ours, theirs = HiredisPackingConnection(), Connection()
        try:
            expected = b"".join(theirs.pack_command(name, *rest))
        except Exception as exc:  # whatever redis-py raises (a bool: DataError), ours raises too
            with pytest.raises(type(exc)):
                ours.pack_command(name, *rest)
            return
        assert b"".join(ours.pack_command(name, *rest)) == expected

    async def test_the_cache_talks_through_the_hiredis_packer(self, valkey_config: ValkeyConfig) -> None:
        cache = ValkeyCache(valkey_config, RecordingBus(), Metrics())
        await cache.start()
        try:
            assert cache._client is not None
            assert cache._client.connection_pool.connection_class is HiredisPackingConnection
        finally:
            await cache.aclose()


class TestRoundTrips:
    """One write of many commands, their replies read in order on the same connection."""

    async def test_an_error_reply_comes_back_in_its_place_and_the_rest_stay_in_step(
        self, valkey_url: str, redis: Redis
    ) -> None:
        await redis.set("a-string", "x")
        client = Redis.from_url(valkey_url)
        round_trip = RoundTrips(client)
        try:
            replies = await round_trip(
                [("SET", "k", "1"), ("XADD", "a-string", "*", "f", "v"), ("GET", "k"), ("INCR", "n")]
            )
            again = await round_trip([("GET", "k"), ("INCR", "n")])
        finally:
            await client.aclose()
        assert replies[0] == b"OK"
        assert isinstance(replies[1], ResponseError)
        assert "WRONGTYPE" in str(replies[1])
        assert replies[2:] == [b"1", 1]
        assert again == [b"1", 2]

    async def test_a_round_trip_cut_short_leaves_no_reply_behind_for_the_next(
        self, valkey_url: str, redis: Redis
    ) -> None:
        """Cancelled while the server still holds its reply (a BLPOP waiting 1 s), the connection is
        dropped: the next round trip reconnects and reads its own reply, not the late nil."""
        client = Redis.from_url(valkey_url)
        round_trip = RoundTrips(client)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await round_trip([("BLPOP", "nothing-here", 1)])
            await asyncio.sleep(1.1)  # past the BLPOP's own timeout: its nil reply would be waiting now
            replies = await round_trip([("PING",), ("GET", "absent")])
        finally:
            await client.aclose()
        assert replies == [b"PONG", None]

    async def test_a_connection_the_server_closed_while_idle_is_made_again_not_failed_on(
        self, valkey_url: str, redis: Redis
    ) -> None:
        """A Valkey restart or an idle timeout closes the connection between two cycles: the next round
        trip connects afresh instead of failing (which would report a cache outage that never was)."""
        client = Redis.from_url(valkey_url)
        round_trip = RoundTrips(client)
        try:
            assert await round_trip([("PING",)]) == [b"PONG"]
            assert await redis.client_kill_filter(_type="normal", skipme=True) >= 1
            await asyncio.sleep(0.05)  # the close reaches this side
            replies = await round_trip([("PING",)])
        finally:
            await client.aclose()
        assert replies == [b"PONG"]


class TestDepthBook:
    @pytest.mark.parametrize(
        ("operations", "expected_prices"),
        [
            ([("insert", 0, 10.0), ("insert", 0, 11.0)], [11.0, 10.0]),  # insert shifts down
            ([("insert", 0, 10.0), ("insert", 1, 9.0), ("delete", 0, None)], [9.0]),  # delete shifts up
            ([("insert", 0, 10.0), ("insert", 1, 9.0), ("update", 1, 9.5)], [10.0, 9.5]),  # update replaces
            ([("delete", 3, None)], []),  # delete of a row never seen changes nothing
            ([("update", 0, 10.0)], [10.0]),  # update of a row never seen adds it
        ],
    )
    def test_position_operations_follow_ib(
        self, operations: list[tuple[str, int, float | None]], expected_prices: list[float]
    ) -> None:
        """Insert at a position shifts rows down, delete shifts them up, update replaces in place."""
        book = DepthBook()
        for ts, (operation, position, price) in enumerate(operations):
            book.apply(depth("SPY", ts, position=position, operation=operation, side="bid", price=price))
        assert [level[0] for level in book.bids] == expected_prices
        assert book.asks == []

    def test_book_never_grows_past_its_row_limit(self) -> None:
        """Inserts beyond the deepest row IB serves push the last rows out."""
        book = DepthBook(max_rows=5)
        for i in range(20):
            book.apply(depth("SPY", i, position=0, price=float(i)))
        assert [level[0] for level in book.bids] == [19.0, 18.0, 17.0, 16.0, 15.0]

    async def test_l2_key_holds_the_current_book(self, valkey_config: ValkeyConfig, redis: Redis) -> None:
        """market:l2:<SYMBOL> is the book after all updates: [price, size, market_maker] per row."""
        async with running_cache(valkey_config) as cache:
            cache.accept(depth("IWM", BASE_NS, position=0, side="bid", price=220.0, mm="ARCA"))
            cache.accept(depth("IWM", BASE_NS + 1, position=0, side="ask", price=220.1, mm="NSDQ"))
            cache.accept(depth("IWM", BASE_NS + 2, position=1, side="bid", price=219.9, mm="BATS"))
            body = json.loads(await poll(lambda: redis.get("market:l2:IWM")))
        assert body == {
            "symbol": "IWM",
            "timestamp": BASE_NS + 2,
            "bids": [[220.0, 100.0, "ARCA"], [219.9, 100.0, "BATS"]],
            "asks": [[220.1, 100.0, "NSDQ"]],
        }


class TestTrades:
    async def test_every_trade_lands_in_the_stream_in_order(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """market:trades:<SYMBOL> receives every trade, oldest first, with its fields."""
        async with running_cache(valkey_config) as cache:
            for i in range(250):
                cache.accept(trade("DIA", BASE_NS + i * US, price=400 + i))
            await poll(lambda: _equals(redis.xlen("market:trades:DIA"), 250))
            entries = await redis.xrange("market:trades:DIA")
        assert [float(fields["price"]) for _, fields in entries] == [400.0 + i for i in range(250)]
        assert entries[0][1]["source"] == "tick_by_tick"

    async def test_stream_is_capped_near_its_maxlen(self, valkey_config: ValkeyConfig, redis: Redis) -> None:
        """With MAXLEN ~ 100, 2000 trades leave about a hundred entries, never all of them."""
        config = valkey_config.model_copy(update={"trades_stream_maxlen": 100})
        async with running_cache(config) as cache:
            for i in range(2000):
                cache.accept(trade("XLF", BASE_NS + i * US))
            await poll(lambda: redis.exists("market:trades:XLF"))
            await asyncio.sleep(0.1)  # let a second cycle run; the cap is what is being checked
            length = await redis.xlen("market:trades:XLF")
        assert 100 <= length < 2000

    async def test_the_script_adds_the_entries_xadd_would_add(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """One EVAL carries a cycle's trades; each stream entry has the fields, values and order that an
        XADD of ``trade_fields`` gives, optional fields absent where the trade has none."""
        trades = [
            trade("SPY", BASE_NS, price=412.37),
            Trade("QQQ", BASE_NS + US, None, 380.5, 200.0, None, None, False, False, "rtvolume"),
            Trade("SPY", BASE_NS + 2 * US, BASE_NS, 412.38, 0.5, "ARCA", "T I", True, True, "tick_by_tick"),
            trade("QQQ", BASE_NS + 3 * US, price=380.51),
        ]
        await redis.config_resetstat()
        async with running_cache(valkey_config) as cache:
            cache.accept_many(trades)
            await poll(lambda: _equals(redis.xlen("market:trades:SPY"), 2))
            stats = await redis.info("commandstats")
        # (Valkey counts the XADDs a script runs as XADD calls too.)
        assert (stats["cmdstat_eval"]["calls"], stats["cmdstat_xadd"]["calls"]) == (1, 4)
        for each in trades:
            await redis.xadd(f"reference:{each.symbol}", trade_fields(each))
        for symbol in ("SPY", "QQQ"):
            written = [fields for _, fields in await redis.xrange(f"market:trades:{symbol}")]
            assert written == [fields for _, fields in await redis.xrange(f"reference:{symbol}")]

    async def test_one_or_two_trades_go_as_xadds(self, valkey_config: ValkeyConfig, redis: Redis) -> None:
        """Below SCRIPT_FROM_TRADES a cycle's trades go as XADDs, where the script would save nothing."""
        await redis.config_resetstat()
        async with running_cache(valkey_config) as cache:
            cache.accept_many([trade("DIA", BASE_NS, price=400.0), trade("DIA", BASE_NS + US, price=400.01)])
            await poll(lambda: _equals(redis.xlen("market:trades:DIA"), 2))
            stats = await redis.info("commandstats")
        assert (stats["cmdstat_xadd"]["calls"], "cmdstat_eval" in stats) == (2, False)

    async def test_a_backlog_goes_in_calls_of_a_thousand_trades(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """2,500 trades queued while no cycle ran land in one round trip of three script calls."""
        await redis.config_resetstat()
        async with running_cache(valkey_config.model_copy(update={"trades_stream_maxlen": 10_000})) as cache:
            cache.accept_many([trade("IWM", BASE_NS + i * US, price=200 + i) for i in range(2500)])
            await poll(lambda: _equals(redis.xlen("market:trades:IWM"), 2500))
            calls = (await redis.info("commandstats"))["cmdstat_eval"]["calls"]
            entries = await redis.xrange("market:trades:IWM")
        assert [float(fields["price"]) for _, fields in entries] == [200.0 + i for i in range(2500)]
        assert calls == 3

    async def test_a_valkey_that_refuses_eval_gets_one_xadd_per_trade(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """An ACL without scripting: the cycle's trades are sent again by XADD, with one warning, and the
        cache stays up; no trade is lost or written twice."""
        rules = ("on", ">pw", "~*", "&*", "+@all", "-@scripting")
        await redis.execute_command("ACL", "SETUSER", "noscripts", *rules)
        url = valkey_config.url.get_secret_value().replace("redis://", "redis://noscripts:pw@", 1)
        try:
            with capture_logs() as logs:
                async with running_cache(valkey_config.model_copy(update={"url": SecretStr(url)})) as cache:
                    cache.accept_many([trade("XLE", BASE_NS + i * US, price=90 + i) for i in range(5)])
                    await poll(lambda: _equals(redis.xlen("market:trades:XLE"), 5))
                    cache.accept_many([trade("XLE", BASE_NS + i * US, price=90 + i) for i in range(5, 8)])
                    await poll(lambda: _equals(redis.xlen("market:trades:XLE"), 8))
                    state = cache.status().state
        finally:
            await redis.execute_command("ACL", "DELUSER", "noscripts")
        entries = await redis.xrange("market:trades:XLE")
        assert [float(fields["price"]) for _, fields in entries] == [90.0 + i for i in range(8)]
        assert state == "ok"
        assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
            "Valkey refuses EVAL; adding trades with one XADD each"
        ]


class TestStatusAndEvents:
    async def test_status_key_is_refreshed_with_a_short_ttl(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """ingestion:status holds the status provider's body and expires after status_ttl_seconds."""
        health = {"status": "healthy", "service": "data-ingestion"}
        async with running_cache(valkey_config, status_provider=lambda: health):
            body = json.loads(await poll(lambda: redis.get("ingestion:status")))
            ttl = await redis.ttl("ingestion:status")
        assert body == health
        assert 0 < ttl <= valkey_config.status_ttl_seconds

    async def test_published_event_reaches_subscribers(
        self, valkey_config: ValkeyConfig, redis: Redis
    ) -> None:
        """publish_event() sends {"event","at","detail"} on ingestion:events, with at in ISO 8601 UTC."""
        pubsub = redis.pubsub()
        await pubsub.subscribe("ingestion:events")
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        async with running_cache(valkey_config) as cache:
            cache.publish_event(
                IngestionEvent(BASE_NS, "ibkr_connection_lost", "IBKR Connection Lost", alert=True)
            )
            message = await poll(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05))
        await pubsub.aclose()
        assert json.loads(message["data"]) == {
            "event": "ibkr_connection_lost",
            "at": "2026-11-23T14:29:00.000Z",
            "detail": "IBKR Connection Lost",
        }


async def _equals(awaitable: Any, expected: Any) -> bool:
    return await awaitable == expected


async def _l1_timestamp_is(redis: Redis, symbol: str, timestamp: int) -> bool:
    raw = await redis.get(f"market:l1:{symbol}")
    return raw is not None and json.loads(raw)["timestamp"] == timestamp


def _l1_writes(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("ingestion_valkey_writes_total", {"kind": "l1"}) or 0.0


def _histogram_sum(metrics: Metrics, name: str, kind: str = "l1") -> float:
    return metrics.registry.get_sample_value(f"{name}_sum", {"kind": kind}) or 0.0


async def _at_least(value: float, minimum: float) -> bool:
    return value >= minimum


async def _xlen_is(redis: Redis, key: str, length: int) -> bool:
    return await redis.xlen(key) == length
