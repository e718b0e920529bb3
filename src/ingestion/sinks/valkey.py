"""The Valkey cache: the latest state per symbol, recent trades, the status key and the events channel.

:meth:`ValkeyCache.accept` only updates memory (a dict entry, a book, a bounded deque), so the pipeline
never waits for Valkey. Every ``conflation_ms`` one pipelined round trip (see :class:`RoundTrips`) carries
the latest L1 and L2 of each symbol that changed (at most one write per symbol and interval, however many
ticks came in), every trade since the last cycle (``XADD ... MAXLEN ~``, all of them in one script call:
see :data:`XADD_TRADES`), queued events (``PUBLISH``) and, every ``status_interval_seconds``, the status key.
Round trips are at least ``min_write_interval_ms`` apart (default 0: a trade goes at once). Each one costs a
send, a wake-up of Valkey and a reply to read, and they, not the ticks, were most of the daemon's CPU at a
real feed's rate (docs/PERFORMANCE.md, twelfth round); raising the interval trades cache latency for CPU.

Valkey down: it is a cache, so writes are dropped and counted (``cache_dropped``); the outage is logged and
published once (``valkey_down``) and its end once (``valkey_restored``). Each cycle tries again with the
short socket timeout, and the latest L1/L2 state that could not be written is kept, so the first cycle
after Valkey returns brings the cache up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from ingestion.bus import EventBus
from ingestion.config import ValkeyConfig
from ingestion.events import DepthUpdate, Event, IngestionEvent, Quote, Trade
from ingestion.logging import alert, get_logger
from ingestion.metrics import Metrics
from ingestion.sinks.base import SinkStatus
from ingestion.sinks.book import DepthBook
from ingestion.timefmt import iso_ns

log = get_logger("valkey")

EVENTS_CHANNEL = "ingestion:events"
STATUS_KEY = "ingestion:status"
StatusProvider = Callable[[], dict[str, Any]]
T = TypeVar("T")
Command = tuple[str | int | float, ...]
INFINITY = float("inf")
NEVER = float("-inf")

# Adds the trades of one cycle to their streams: KEYS[i] gets ``XADD KEYS[i] MAXLEN ~ ARGV[1] * ...``, its
# field/value items being the ARGV[at] items after ARGV[at] (their count). The entries are the ones XADD
# commands would add. Why a script: redis-py spends 10.8 us of the event loop per XADD in a pipeline
# (building the command, packing it, parsing its own reply), and 4.4 us per trade as one call (50 trades
# a call, bench in the commit that added it); per-trade XADDs were 13 % of the event loop at saturation.
XADD_TRADES = """
local at = 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[at])
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, at + 1, at + n))
  at = at + n + 1
end
return #KEYS
"""
# A script blocks the server while it runs (about 1 us per XADD): a backlog goes in calls of this many.
TRADES_PER_SCRIPT = 1000
# Below this many trades in a cycle, XADDs: one or two cost the client as much as the script call, and a
# script call costs the server about 6 us more than an XADD (commandstats: 6.8 against 0.7 us a call).
SCRIPT_FROM_TRADES = 4


class HiredisPackingConnection(Connection):
    """redis-py's asyncio connection, packing commands with hiredis as redis-py's sync client does.

    ``redis.asyncio`` packs every argument in Python: 18.7 us for the XADD of one trade, against
    3.7 us for ``hiredis.pack_command``, which gives the same bytes (tests/sinks/test_sinks_valkey.py
    compares them). At 45,000 msgs/s that packing was 13 % of the event loop. Whatever hiredis does
    not take (a command name with a space, a bool, which redis-py refuses) goes the Python way.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (" " if isinstance(first, str) else b" ") in first:
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)


class RoundTrips:
    """Commands written in one go on one connection of ``client``'s pool, then their replies read in order.

    What ``Pipeline.execute`` does, without its bookkeeping: redis-py 8 spends about 120 us of the event
    loop per pipelined round trip of three commands (a task to release the connection, five turns of the
    loop, a timer per reply), against 54 us this way (bench/bench_valkey_round_trip.py). A cycle is one
    round trip, and at saturation there are about a thousand a second.

    The connection is the pool's, so the URL's TLS, password and database apply; it connects on first
    use, and again after a failure or once the server closed it. No per-command timeout: redis-py would
    run each send in a task of its own (``asyncio.wait_for``); the caller bounds the whole round trip
    instead. Any failure or cancellation midway drops the connection (redis-py does, for sends and reads
    alike), so a reply left unread never answers a later command.
    """

    def __init__(self, client: Redis) -> None:
        self._connection = client.connection_pool.get_available_connection()

    async def __call__(self, commands: Sequence[Command]) -> list[Any]:
        """The replies, in order; an error reply is returned as its ``ResponseError``, not raised."""
        connection = self._connection
        if connection.is_connected and await connection.can_read():
            # Closed by the server while idle (a restart, an idle timeout, a proxy), or holding bytes
            # nothing asked for: start afresh, as redis-py's pool does before it lends a connection.
            await connection.disconnect()
        await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:  # read whole: the next reply is still in step
                replies.append(error)
        return replies


def error_replies(replies: Sequence[Any]) -> list[ResponseError]:
    return [reply for reply in replies if isinstance(reply, ResponseError)]


def l1_key(symbol: str) -> str:
    return f"market:l1:{symbol}"


def l2_key(symbol: str) -> str:
    return f"market:l2:{symbol}"


def trades_key(symbol: str) -> str:
    return f"market:trades:{symbol}"


def l1_body(quote: Quote) -> dict[str, Any]:
    body = {
        "symbol": quote.symbol, "last": quote.last, "bid": quote.bid, "ask": quote.ask,
        "bid_size": quote.bid_size, "ask_size": quote.ask_size, "volume": quote.volume,
        "timestamp": quote.timestamp_ns,
    }  # fmt: skip
    if quote.delayed:
        body["delayed"] = True  # IB's delayed data: a reader must not take it for the live market
    return body


def trade_fields(trade: Trade) -> dict[str, str | int | float]:
    fields = {
        "timestamp": trade.timestamp_ns, "price": trade.price, "size": trade.size,
        "exchange_time": trade.exchange_time_ns, "exchange": trade.exchange, "conditions": trade.conditions,
        "past_limit": int(trade.past_limit), "unreported": int(trade.unreported), "source": trade.source,
        "delayed": 1 if trade.delayed else None,
    }  # fmt: skip
    return {k: v for k, v in fields.items() if v is not None}


def xadd_trades_command(trades: Sequence[Trade], maxlen: int) -> Command:
    """``EVAL XADD_TRADES`` with its key count, keys, then ARGV."""
    argv: list[str | int | float] = [maxlen]
    for trade in trades:
        fields = trade_fields(trade)
        argv.append(2 * len(fields))
        for item in fields.items():
            argv.extend(item)
    return ("EVAL", XADD_TRADES, len(trades), *(trades_key(trade.symbol) for trade in trades), *argv)


def xadd_command(trade: Trade, maxlen: int) -> Command:
    """``XADD`` of one trade, capped near ``maxlen`` entries, as redis-py's ``xadd`` would send it."""
    items = [item for pair in trade_fields(trade).items() for item in pair]
    return ("XADD", trades_key(trade.symbol), "MAXLEN", "~", maxlen, "*", *items)


def set_command(key: str, text: str, ttl: int) -> Command:
    return ("SET", key, text, "EX", ttl)


def refuses_scripts(error: Exception) -> bool:
    """Whether Valkey refused EVAL itself (an ACL without it, or a server with scripting removed)."""
    text = str(error).lower()
    return "eval" in text and (isinstance(error, NoPermissionError) or "unknown command" in text)


def event_body(event: IngestionEvent) -> dict[str, Any]:
    return {"event": event.event, "at": iso_ns(event.timestamp_ns), "detail": event.detail}


class Conflated(Generic[T]):
    """The newest value per key, written at most once per ``interval`` seconds per key.

    A key last written ``interval`` or longer ago is due at once (the leading edge); one written more
    recently waits until the interval has passed, and then carries whatever value is newest then.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._pending: dict[str, T] = {}
        self._sent_at: dict[str, float] = {}  # monotonic time each key was last taken for a write
        # For the keys of the last take: when the interval let them go (-inf: nothing held them).
        self.free_since: dict[str, float] = {}

    def put(self, key: str, value: T) -> None:
        self._pending[key] = value

    def due_at(self, key: str) -> float:
        """When ``key`` may be written next (monotonic; -inf: now)."""
        return self._sent_at.get(key, NEVER) + self._interval

    def seconds_to_due(self, now: float) -> float:
        """Until the first pending key may be written (<= 0: now); infinite when nothing is pending."""
        sent_at, interval = self._sent_at, self._interval
        return min((sent_at.get(key, NEVER) + interval - now for key in self._pending), default=INFINITY)

    def take_due(self, now: float, *, final: bool = False) -> dict[str, T]:
        """The keys that may be written now, marked as sent at ``now``; ``final`` takes all of them."""
        if final:
            due, self._pending = self._pending, {}
            self.free_since = {}
            return due
        sent_at, oldest, interval = self._sent_at, now - self._interval, self._interval
        due = {key: value for key, value in self._pending.items() if sent_at.get(key, NEVER) <= oldest}
        self.free_since = {key: sent_at.get(key, NEVER) + interval for key in due}
        for key in due:
            del self._pending[key]
            sent_at[key] = now
        return due

    def put_back(self, taken: dict[str, T]) -> None:
        """Values a failed write took, unless a newer one came meanwhile."""
        for key, value in taken.items():
            self._pending.setdefault(key, value)


class ValkeyCache:
    """The cache sink. Wire it as ``ValkeyCache(settings.valkey, bus, metrics, status_provider)``.

    Args:
        config: Valkey settings.
        bus: Where the outage and its end are published.
        metrics: The daemon's metrics.
        status_provider: Returns the /health body for ``ingestion:status``; None writes no status key.
        max_queued: Trades (and, separately, events) held between two cycles; beyond it the oldest
            are dropped and counted, so memory stays bounded while Valkey is slow or down.
        now_ns: Wall clock for latency (injected in tests).
    """

    name = "valkey"

    def __init__(
        self,
        config: ValkeyConfig,
        bus: EventBus,
        metrics: Metrics,
        status_provider: StatusProvider | None = None,
        *,
        max_queued: int = 20_000,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._bus = bus
        self._metrics = metrics
        self._status_provider = status_provider
        self._now_ns = now_ns
        self._max_queued = max_queued
        self._interval = config.conflation_ms / 1000
        # Newest state not yet written, per symbol: the quote, and the book that changed.
        self._l1: Conflated[Quote] = Conflated(self._interval)
        self._l2: Conflated[DepthBook] = Conflated(self._interval)
        self._books: dict[str, DepthBook] = {}
        self._trades: deque[Trade] = deque()
        self._events: deque[IngestionEvent] = deque()
        self._next_status = 0.0
        self._last_attempt = float("-inf")
        self._min_gap = config.min_write_interval_ms / 1000
        self._wake = asyncio.Event()
        # When the writer wakes anyway (monotonic); -inf while it is not waiting. New state due no earlier
        # than that needs no wake-up: at 2,000 msgs/s one per socket read cost more than the writes.
        self._wake_at = NEVER
        self._client: Redis | None = None
        self._round_trip: RoundTrips | None = None
        self._down_since: float | None = None
        self._down_at: str | None = None
        self._dropped = 0
        self._last_error: str | None = None
        self._last_write_ns: int | None = None
        self._trades_by_script = True  # until Valkey refuses EVAL: then one XADD per trade
        # Bound once: labels() costs a lock and a dict lookup, and a round trip may carry one trade.
        # Latency per kind, because they mean different things: a trade's is its own wait; a conflated
        # key's is the age of the newest state it carries, which the conflation interval bounds.
        kinds = ("l1", "l2", "trades")
        self._observe = {kind: metrics.latency_valkey.labels(kind=kind).observe for kind in kinds}
        # For a conflated key, also the part of that age the daemon adds on top of the interval's wait.
        beyond = metrics.latency_valkey_beyond_conflation
        self._observe_beyond = {kind: beyond.labels(kind=kind).observe for kind in ("l1", "l2")}
        self._count_writes = {kind: metrics.cache_writes.labels(kind=kind).inc for kind in (*kinds, "events")}

    # --- the Sink interface -------------------------------------------------------------------------------
    def accept(self, event: Event) -> None:
        """Update the in-memory state; O(1) apart from a book row shift (at most 50 rows)."""
        self.accept_many((event,))

    def accept_many(self, events: Sequence[Event]) -> None:
        """Update the in-memory state with each event in turn; wakes the writer once."""
        due = INFINITY
        for event in events:
            if isinstance(event, Quote):
                self._l1.put(event.symbol, event)
                due = min(due, self._l1.due_at(event.symbol))
            elif isinstance(event, DepthUpdate):
                book = self._books.get(event.symbol)
                if book is None:
                    book = self._books[event.symbol] = DepthBook()
                book.apply(event)
                self._l2.put(event.symbol, book)
                due = min(due, self._l2.due_at(event.symbol))
            elif isinstance(event, Trade):
                self._enqueue(self._trades, event)
                due = NEVER
            elif isinstance(event, IngestionEvent) and event.alert:
                self.publish_event(event)
        if due < self._wake_at:
            self._wake.set()

    def publish_event(self, event: IngestionEvent) -> None:
        """Queue ``event`` for ``ingestion:events``; it goes with the next round trip. Never blocks."""
        self._enqueue(self._events, event)
        self._wake.set()

    async def start(self) -> None:
        url = self._config.url.get_secret_value()
        # TLS (rediss://) and unix sockets keep the connection class their scheme selects.
        packing = {"connection_class": HiredisPackingConnection} if url.startswith("redis://") else {}
        self._client = Redis.from_url(
            url,
            **packing,
            # None: RoundTrips bounds each round trip as a whole (_cycle and _probe).
            socket_timeout=None,
            socket_connect_timeout=self._config.socket_timeout_seconds,
            # No client-side retries: a failed cycle is simply dropped and the next one tries again.
            retry=Retry(NoBackoff(), 0),
        )
        self._round_trip = RoundTrips(self._client)

    async def run(self) -> None:
        task = asyncio.current_task()
        while True:
            await self._work_due()
            await self._cycle()
            if task is not None and task.cancelling():
                # A cancellation that redis-py's send dropped (Python 3.11's wait_for): honour it.
                raise asyncio.CancelledError

    async def aclose(self) -> None:
        """One last cycle with everything still pending (the caller bounds it in time), then close."""
        try:
            if self._client is not None and self._down_since is None:
                await self._cycle(final=True)
        finally:
            if self._client is not None:
                await self._client.aclose()

    def status(self) -> SinkStatus:
        details = {
            "dropped": self._dropped,
            "last_error": self._last_error,
            "last_write_at": None if self._last_write_ns is None else iso_ns(self._last_write_ns),
            "down_since": self._down_at,
        }
        return SinkStatus("down" if self._down_since is not None else "ok", details)

    # --- one write cycle ----------------------------------------------------------------------------------
    def _enqueue(self, queue: deque[Any], item: Any) -> None:
        if len(queue) >= self._max_queued:
            queue.popleft()
            self._count_dropped(1)
        queue.append(item)

    async def _work_due(self) -> None:
        """Return when a round trip is due: at once if trades or events wait, else at the next due key."""
        try:
            while True:
                self._wake.clear()
                now = time.monotonic()
                delay = self._seconds_to_next_cycle(now)
                if delay <= 0:
                    return
                self._wake_at = now + delay
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if delay == INFINITY else delay):
                        await self._wake.wait()
        finally:
            self._wake_at = NEVER

    def _seconds_to_next_cycle(self, now: float) -> float:
        if self._down_since is not None:
            # While Valkey is down, try (or ping) once per interval, not once per tick.
            return self._last_attempt + self._interval - now
        if self._trades or self._events:
            due = 0.0
        else:
            status = self._next_status - now if self._status_provider is not None else INFINITY
            due = min(status, self._l1.seconds_to_due(now), self._l2.seconds_to_due(now))
        return max(due, self._last_attempt + self._min_gap - now)

    async def _cycle(self, *, final: bool = False) -> None:
        now = self._last_attempt = time.monotonic()
        quotes = self._l1.take_due(now, final=final)
        books = self._l2.take_due(now, final=final)
        trades, self._trades = self._trades, deque()
        events, self._events = self._events, deque()
        status = self._status_body()
        commands = len(quotes) + len(books) + len(trades) + len(events) + (status is not None)
        if commands == 0:
            if self._down_since is not None:
                await self._probe()
            return
        try:
            async with asyncio.timeout(self._config.socket_timeout_seconds):
                await self._write(quotes, books, trades, events, status)
        except (RedisError, OSError, TimeoutError) as exc:
            # Keep the latest L1/L2 state (unless newer came meanwhile) so the cache catches up later.
            self._l1.put_back(quotes)
            self._l2.put_back(books)
            self._count_dropped(commands)
            self._went_down(exc)
            return
        self._wrote(quotes, books, trades, events)

    async def _write(
        self,
        quotes: dict[str, Quote],
        books: dict[str, DepthBook],
        trades: deque[Trade],
        events: deque[IngestionEvent],
        status: dict[str, Any] | None,
    ) -> None:
        assert self._round_trip is not None  # start() made it
        ttl = self._config.ttl_seconds
        commands: list[Command] = []
        for symbol, quote in quotes.items():
            commands.append(set_command(l1_key(symbol), json.dumps(l1_body(quote)), ttl))
        for symbol, book in books.items():
            commands.append(set_command(l2_key(symbol), json.dumps(book.snapshot(symbol)), ttl))
        commands += self._trade_commands(trades)
        commands += [("PUBLISH", EVENTS_CHANNEL, json.dumps(event_body(event))) for event in events]
        if status is not None:
            text = json.dumps(status, default=str)
            commands.append(set_command(STATUS_KEY, text, self._config.status_ttl_seconds))
        errors = error_replies(await self._round_trip(commands))
        refused = [error for error in errors if refuses_scripts(error)]
        if refused:
            await self._stop_scripting(trades, str(refused[0]))
        for error in errors:
            if error not in refused:
                raise error

    def _trade_commands(self, trades: Sequence[Trade]) -> list[Command]:
        maxlen = self._config.trades_stream_maxlen
        if not self._trades_by_script or len(trades) < SCRIPT_FROM_TRADES:
            return [xadd_command(trade, maxlen) for trade in trades]
        items = list(trades)  # a deque does not slice
        return [
            xadd_trades_command(items[start : start + TRADES_PER_SCRIPT], maxlen)
            for start in range(0, len(items), TRADES_PER_SCRIPT)
        ]

    async def _stop_scripting(self, trades: deque[Trade], reason: str) -> None:
        """Valkey refused EVAL: say so once, and send this cycle's trades (and all later ones) by XADD."""
        self._trades_by_script = False
        log.warning("Valkey refuses EVAL; adding trades with one XADD each", error=reason)
        assert self._round_trip is not None
        if errors := error_replies(await self._round_trip(self._trade_commands(trades))):
            raise errors[0]

    def _status_body(self) -> dict[str, Any] | None:
        if self._status_provider is None or time.monotonic() < self._next_status:
            return None
        self._next_status = time.monotonic() + self._config.status_interval_seconds
        try:
            return self._status_provider()
        except Exception:
            log.exception("status provider failed")
            return None

    async def _probe(self) -> None:
        assert self._round_trip is not None
        try:
            async with asyncio.timeout(self._config.socket_timeout_seconds):
                if errors := error_replies(await self._round_trip([("PING",)])):
                    raise errors[0]
        except (RedisError, OSError, TimeoutError) as exc:
            self._last_error = self._reason(exc)
            return
        self._came_back()

    # --- bookkeeping --------------------------------------------------------------------------------------
    def _wrote(
        self,
        quotes: dict[str, Quote],
        books: dict[str, DepthBook],
        trades: deque[Trade],
        events: deque[IngestionEvent],
    ) -> None:
        now = self._now_ns()
        self._observe_state("l1", quotes, self._l1.free_since, now)
        self._observe_state("l2", books, self._l2.free_since, now)
        observe_trade = self._observe["trades"]
        for trade in trades:
            observe_trade(max(now - trade.timestamp_ns, 0) / 1e9)
        for kind, written in (("l1", quotes), ("l2", books), ("trades", trades), ("events", events)):
            if written:
                self._count_writes[kind](len(written))
        self._last_write_ns = now
        if self._down_since is not None:
            self._came_back()

    def _observe_state(
        self,
        kind: str,
        written: dict[str, Quote] | dict[str, DepthBook],
        free_since: dict[str, float],
        now: int,
    ) -> None:
        """The age of each written state, and how much of it came after the interval let the key go."""
        observe, observe_beyond = self._observe[kind], self._observe_beyond[kind]
        now_monotonic = time.monotonic()
        for key, state in written.items():
            age = max(now - state.timestamp_ns, 0) / 1e9
            observe(age)
            observe_beyond(min(age, now_monotonic - free_since.get(key, NEVER)))

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):  # asyncio.timeout's, which says nothing
            return f"TimeoutError(no reply within {self._config.socket_timeout_seconds} s)"
        return repr(exc)

    def _count_dropped(self, count: int) -> None:
        self._dropped += count
        self._metrics.cache_dropped.inc(count)

    def _went_down(self, exc: BaseException) -> None:
        self._last_error = self._reason(exc)
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self._down_at = iso_ns(self._now_ns())
        alert(log, "Valkey down: cache writes dropped until it returns", error=self._last_error)
        self._bus.publish(
            "valkey_down", f"Valkey unreachable ({self._last_error}); cache writes dropped", alert=True
        )

    def _came_back(self) -> None:
        assert self._down_since is not None
        seconds = time.monotonic() - self._down_since
        self._down_since = None
        self._down_at = None
        alert(log, "Valkey restored", outage_seconds=round(seconds, 1), dropped=self._dropped)
        detail = f"Valkey restored after {seconds:.1f} s; {self._dropped} cache writes dropped so far"
        self._bus.publish("valkey_restored", detail, alert=True)
