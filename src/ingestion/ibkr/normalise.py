"""IB ticker updates -> normalised events (Quote, DepthUpdate, Trade).

ib_async batches what one socket read brought into ``pendingTickersEvent``; each ticker then
lists, in arrival order, the Level 1 ticks (``ticks``), depth messages (``domTicks``) and
tick-by-tick trades (``tickByTicks``) of that read. We apply them one by one to our own top of
book, so there is exactly one Quote per Level 1 update, one DepthUpdate per depth message and
one Trade per trade message, each with its own strictly increasing receive timestamp.

This runs once per socket read on the event loop: no logging, no allocation beyond the events, and
the events of one read go to ``emit`` as one list, so the queue and the fan-out behind it work per
read rather than per message (at saturation a read brings a few hundred messages).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from ib_async import TickByTickAllLast, Ticker

from ingestion.events import DepthUpdate, MarketEvent, Quote, ReceiveClock, Trade
from ingestion.ibkr.exchange_time import RTVOLUME_TICK_TYPES
from ingestion.ibkr.subscriptions import SubscriptionRegistry, SymbolStreams
from ingestion.metrics import Metrics

# IB tick types -> our Level 1 field; live and delayed (66-76) variants.
PRICE_FIELDS = {1: "bid", 2: "ask", 4: "last", 6: "high", 7: "low", 9: "close", 14: "open",
                66: "bid", 67: "ask", 68: "last", 72: "high", 73: "low", 75: "close", 76: "open"}  # fmt: skip
SIZE_FIELDS = {0: "bid_size", 3: "ask_size", 5: "last_size", 8: "volume",
               69: "bid_size", 70: "ask_size", 71: "last_size", 74: "volume"}  # fmt: skip
# A price tick carries the size of the same side.
SIZE_OF_PRICE = {"bid": "bid_size", "ask": "ask_size", "last": "last_size"}
# IB's "no value" markers: UNSET_DOUBLE, and -1 for an empty side.
UNSET_DOUBLE = 1.7976931348623157e308
DEPTH_OPERATIONS = ("insert", "update", "delete")

Emit = Callable[[list[MarketEvent]], None]


def clean_price(value: float | None) -> float | None:
    """A usable price, or None for NaN, IB's sentinels and non-positive values."""
    if value is None or math.isnan(value) or value >= UNSET_DOUBLE or value <= 0:
        return None
    return float(value)


def clean_size(value: float | None) -> float | None:
    """A usable size (zero included), or None for NaN, sentinels and negative values."""
    if value is None or math.isnan(value) or value >= UNSET_DOUBLE or value < 0:
        return None
    return float(value)


def to_ns(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1_000_000) * 1000


@dataclass(slots=True)
class TopOfBook:
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last_size: float | None = None
    volume: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    open: float | None = None

    def apply(self, tick_type: int, price: float, size: float) -> bool:
        """Apply one Level 1 tick; False when it is not a Level 1 field."""
        field = PRICE_FIELDS.get(tick_type)
        if field is not None:
            value = clean_price(price)
            setattr(self, field, value)
            size_field = SIZE_OF_PRICE.get(field)
            if size_field is not None:
                setattr(self, size_field, clean_size(size) if value is not None else None)
            return True
        field = SIZE_FIELDS.get(tick_type)
        if field is not None:
            setattr(self, field, clean_size(size))
            return True
        return False


class Normaliser:
    """Turns one batch of ticker updates into events, in arrival order per ticker."""

    def __init__(
        self, registry: SubscriptionRegistry, emit: Emit, clock: ReceiveClock, metrics: Metrics
    ) -> None:
        self._registry = registry
        self._emit = emit
        self._clock = clock
        self._books: dict[str, TopOfBook] = {}
        received = metrics.events_received
        self._counters = {
            (symbol, kind): received.labels(symbol, kind)
            for symbol in registry.streams
            for kind in ("quote", "depth", "trade")
        }

    def reset(self) -> None:
        """Forget the top of book: a new connection starts from IB's fresh snapshot."""
        self._books.clear()

    def top_of_book(self, symbol: str) -> dict[str, float | None] | None:
        """Last, bid and ask (with sizes and volume) for the status page; None before any quote."""
        book = self._books.get(symbol)
        if book is None:
            return None
        return {
            "last": book.last,
            "bid": book.bid,
            "ask": book.ask,
            "bid_size": book.bid_size,
            "ask_size": book.ask_size,
            "volume": book.volume,
        }

    def on_pending_tickers(self, tickers: Iterable[Ticker]) -> None:
        events: list[MarketEvent] = []
        for ticker in tickers:
            streams = self._registry.streams.get(ticker.contract.symbol if ticker.contract else "")
            if streams is None:
                continue
            if ticker.ticks:
                self._level1(streams, ticker, events)
            if ticker.domTicks and streams.l2 is not None:
                self._depth(streams, ticker, events)
            if ticker.tickByTicks and streams.time_and_sales is not None:
                self._tick_by_tick(streams, ticker, events)
        if events:
            self._emit(events)

    def _level1(self, streams: SymbolStreams, ticker: Ticker, events: list[MarketEvent]) -> None:
        symbol = streams.symbol
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = TopOfBook()
        quotes = streams.l1
        trades = streams.time_and_sales
        trades_from_rtvolume = trades is not None and trades.source == "rtvolume"
        # Counted per socket read, not per event: a prometheus Counter takes a lock on every inc().
        quoted = traded = 0
        now = 0
        for tick in ticker.ticks:
            if tick.tickType in RTVOLUME_TICK_TYPES:
                if trades_from_rtvolume:
                    traded += self._rtvolume_trade(streams, tick.time, tick.price, tick.size, events)
                continue
            if quotes is None or not book.apply(tick.tickType, tick.price, tick.size):
                continue
            now = self._clock.now_ns()
            events.append(
                Quote(
                    symbol,
                    now,
                    book.bid,
                    book.ask,
                    book.last,
                    book.bid_size,
                    book.ask_size,
                    book.last_size,
                    book.volume,
                    book.high,
                    book.low,
                    book.close,
                    book.open,
                )
            )
            quoted += 1
        if quoted:
            assert quotes is not None
            quotes.tick(now, quoted)
            self._counters[symbol, "quote"].inc(quoted)
        if traded:
            self._counters[symbol, "trade"].inc(traded)

    def _rtvolume_trade(
        self, streams: SymbolStreams, moment: datetime, price: float, size: float, events: list[MarketEvent]
    ) -> bool:
        clean = clean_price(price)
        if clean is None:
            return False
        now = self._clock.now_ns()
        events.append(
            Trade(
                streams.symbol,
                now,
                to_ns(moment),
                clean,
                clean_size(size),
                None,
                None,
                False,
                False,
                "rtvolume",
            )
        )
        assert streams.time_and_sales is not None
        streams.time_and_sales.tick(now)
        return True

    def _depth(self, streams: SymbolStreams, ticker: Ticker, events: list[MarketEvent]) -> None:
        symbol = streams.symbol
        entry = streams.l2
        assert entry is not None
        smart = self._registry.smart_depth
        emitted = 0
        now = 0
        for tick in ticker.domTicks:
            operation = DEPTH_OPERATIONS[tick.operation] if 0 <= tick.operation <= 2 else None
            if operation is None:
                continue
            now = self._clock.now_ns()
            deleted = operation == "delete"
            events.append(
                DepthUpdate(
                    symbol,
                    now,
                    "bid" if tick.side else "ask",
                    tick.position,
                    operation,
                    None if deleted else clean_price(tick.price),
                    None if deleted else clean_size(tick.size),
                    tick.marketMaker or None,
                    smart,
                )
            )
            emitted += 1
        if emitted:
            entry.tick(now, emitted)
            self._counters[symbol, "depth"].inc(emitted)

    def _tick_by_tick(self, streams: SymbolStreams, ticker: Ticker, events: list[MarketEvent]) -> None:
        entry = streams.time_and_sales
        assert entry is not None
        if entry.source != "tick_by_tick":
            return
        symbol = streams.symbol
        emitted = 0
        now = 0
        for tick in ticker.tickByTicks:
            if not isinstance(tick, TickByTickAllLast):
                continue
            price = clean_price(tick.price)
            if price is None:
                continue
            now = self._clock.now_ns()
            attrib = tick.tickAttribLast
            events.append(
                Trade(
                    symbol,
                    now,
                    to_ns(tick.time),
                    price,
                    clean_size(tick.size),
                    tick.exchange or None,
                    tick.specialConditions or None,
                    bool(attrib.pastLimit),
                    bool(attrib.unreported),
                    "tick_by_tick",
                )
            )
            emitted += 1
        if emitted:
            entry.tick(now, emitted)
            self._counters[symbol, "trade"].inc(emitted)
