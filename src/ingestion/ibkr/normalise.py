"""IB market data messages -> normalised events (Quote, DepthUpdate, Trade).

For the request ids the subscription registry holds, :func:`tap_market_data` puts our handlers in
ib_async's decoder table for the six market data messages. Each parses its message's fields once and
appends one event; ib_async's own handling of them (a ``TickData`` on a ``Ticker``, a dozen ``Ticker``
attributes, a set of pending tickers walked again after the read) is skipped: at saturation it and
the normaliser walking its lists again were most of the event loop (docs/PERFORMANCE.md, tenth
round). Messages for other request ids, and tick types we do not use, go to ib_async unchanged.

Wire layouts (TWS API, as ib_async 2.1 decodes them; ../shared/reference/tws-wire-protocol.md §4):

====  ==========================================================================================
1     tickPrice ``1, version, reqId, tickType, price, size, attrMask``
2     tickSize ``2, version, reqId, tickType, size``
46    tickString ``46, version, reqId, tickType, value``; RTVolume (48, 77) is
      ``price;size;ms since epoch;total volume;VWAP;single trade``
12    updateMktDepth ``12, version, reqId, position, operation, side, price, size``
13    updateMktDepthL2 ``13, version, reqId, position, marketMaker, operation, side, price, size
      [, isSmartDepth]``
99    tickByTick Last/AllLast ``99, reqId, 1|2, time (s), price, size, mask, exchange, conditions``
58    marketDataType ``58, version, reqId, type`` (1 live, 2 frozen, 3 delayed, 4 delayed-frozen)
====  ==========================================================================================

One Quote per Level 1 message that changes our top of book: every price tick, and a size tick
only when the size differs (IB follows each price tick with a size tick repeating its size). One
DepthUpdate per depth message and one Trade per trade message, each with its own strictly
increasing receive timestamp; trades keep IB's exchange time (ib_async 2.1 replaces it with the time
of the socket read). A side with size 0 is empty, as in ib_async.

This runs once per message on the event loop: no logging, no allocation beyond the events. A
malformed message raises inside ib_async's ``Decoder.interpret``, which logs it with its fields.
The events of one socket read go to ``emit`` as one list when ib_async emits ``updateEvent`` at
the end of the read, and per-subscription counts are added then, so the queue and the metrics work
per read rather than per message (at saturation a read brings a few hundred messages).

Delayed data is told apart, never passed off as live: IB reports a Level 1 request's market data type
(message 58, before its first tick) and sends delayed data with its own tick types (66-76, mapped to
the same fields as their live twins). Either marks the request delayed in the registry, and every
Quote and RTVolume Trade of a delayed request carries ``delayed=True``, down to its row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ib_async import IB

from ingestion.events import DepthUpdate, MarketEvent, Quote, ReceiveClock, Trade
from ingestion.ibkr.subscriptions import Subscription, SubscriptionRegistry
from ingestion.metrics import Metrics

# IB tick types -> our Level 1 field; live and delayed (66-76, TWS API "Available Tick Types") variants.
# Live ticks find their field in one lookup; a delayed one (66-76) misses it and takes a second, which
# also marks its request delayed (see Normaliser._delayed_field).
PRICE_FIELDS = {1: "bid", 2: "ask", 4: "last", 6: "high", 7: "low", 9: "close", 14: "open"}
SIZE_FIELDS = {0: "bid_size", 3: "ask_size", 5: "last_size", 8: "volume"}
DELAYED_PRICE_FIELDS = {66: "bid", 67: "ask", 68: "last", 72: "high", 73: "low", 75: "close", 76: "open"}
DELAYED_SIZE_FIELDS = {69: "bid_size", 70: "ask_size", 71: "last_size", 74: "volume"}
# A price tick carries the size of the same side; the side of a size tick, for emptying it.
SIZE_OF_PRICE = {"bid": "bid_size", "ask": "ask_size", "last": "last_size"}
SIDE_OF_SIZE = {"bid_size": "bid", "ask_size": "ask"}
RTVOLUME_TICK_TYPES = frozenset({48, 77})
TRADE_TICK_BY_TICK = frozenset({"1", "2"})  # Last, AllLast; BidAsk and MidPoint are not trades
# IB's "no value" marker for doubles; -1 marks an empty side.
UNSET_DOUBLE = 1.7976931348623157e308
DEPTH_OPERATIONS = ("insert", "update", "delete")
DEPTH_SIDES = ("ask", "bid")  # IB: 0 = ask, 1 = bid

Emit = Callable[[list[MarketEvent]], None]
Handler = Callable[[list[str]], Any]


def clean_price(value: float | None) -> float | None:
    """A usable price, or None for NaN, IB's sentinels and non-positive values."""
    # A chained comparison is False for NaN, so one test covers NaN, <= 0 and UNSET_DOUBLE.
    return float(value) if value is not None and 0 < value < UNSET_DOUBLE else None


def clean_size(value: float | None) -> float | None:
    """A usable size (zero included), or None for NaN, sentinels and negative values."""
    return float(value) if value is not None and 0 <= value < UNSET_DOUBLE else None


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

    def set_price(self, field: str, price: float | None, size: float | None) -> None:
        """A price tick: its size belongs to the same side, and size 0 empties a bid or ask."""
        size_field = SIZE_OF_PRICE.get(field)
        if size_field is None:
            setattr(self, field, price)
            return
        if price is None or (size == 0 and field != "last"):
            price = size = None
        setattr(self, field, price)
        setattr(self, size_field, size)

    def set_size(self, field: str, size: float | None) -> bool:
        """A size tick; False when it changes nothing (IB repeats the size of each price tick)."""
        side = SIDE_OF_SIZE.get(field)
        if side is not None and size == 0:
            if getattr(self, side) is None and getattr(self, field) is None:
                return False
            setattr(self, side, None)
            setattr(self, field, None)
            return True
        if getattr(self, field) == size or (field == "last_size" and self.last is None):
            return False
        setattr(self, field, size)
        return True

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass(slots=True, eq=False)
class Tally:
    """The events one subscription got within the current socket read, added to it at the read's end."""

    entry: Subscription
    counter: Any  # the subscription's ingestion_events_received child
    count: int = 0
    last_ns: int = 0


@dataclass(slots=True, eq=False)
class Lane:
    """One IB request as the normaliser sees it: whose events, which book, which tallies."""

    symbol: str
    book: TopOfBook
    quotes: Tally | None
    trades: Tally | None
    depth: Tally | None
    request_id: int = 0
    delayed: bool = False


class Normaliser:
    """Turns IB's market data messages into events, in arrival order, one list per socket read."""

    def __init__(
        self, registry: SubscriptionRegistry, emit: Emit, clock: ReceiveClock, metrics: Metrics
    ) -> None:
        self._registry = registry
        self._emit = emit
        self._clock = clock
        self._books: dict[str, TopOfBook] = {}
        received = metrics.events_received
        kinds = {"l1": "quote", "l2": "depth", "time_and_sales": "trade"}
        self._tallies = {
            (entry.symbol, entry.data_type): Tally(
                entry, received.labels(entry.symbol, kinds[entry.data_type])
            )
            for entry in registry.entries()
        }
        self._touched: list[Tally] = []
        self._events: list[MarketEvent] = []
        # Lanes by the request id as IB writes it, per message kind; rebuilt when the routes change.
        self._routes_seen = -1
        self._lanes_by_kind: dict[str, dict[str, Lane]] = {}

    def handlers(self) -> dict[int, Handler]:
        """Ours, by TWS message id; each returns False for a message that is not ours."""
        return {
            1: self.tick_price,
            2: self.tick_size,
            46: self.tick_string,
            12: self.market_depth,
            13: self.market_depth_l2,
            99: self.tick_by_tick,
            58: self.market_data_type,
        }

    def reset(self) -> None:
        """Forget the top of book: a new connection starts from IB's fresh snapshot."""
        self._books = {}
        self._routes_seen = -1

    def top_of_book(self, symbol: str) -> dict[str, float | None] | None:
        """Last, bid and ask (with sizes and volume) for the status page; None before any quote."""
        book = self._books.get(symbol)
        if book is None or book.is_empty():
            return None
        return {
            "last": book.last,
            "bid": book.bid,
            "ask": book.ask,
            "bid_size": book.bid_size,
            "ask_size": book.ask_size,
            "volume": book.volume,
        }

    def flush(self) -> None:
        """End of a socket read: count what each subscription got, hand the read's events on."""
        if self._touched:
            for tally in self._touched:
                tally.entry.tick(tally.last_ns, tally.count)
                tally.counter.inc(tally.count)
                tally.count = 0
            self._touched = []
        if self._events:
            events, self._events = self._events, []
            self._emit(events)

    # -- routing -------------------------------------------------------------------------

    def _lane(self, kind: str, request_id: str) -> Lane | None:
        """Our ``kind`` request ``request_id`` (as the wire writes it), or None when it is not ours."""
        if self._routes_seen != self._registry.routes_version:
            self._lanes()
        return self._lanes_by_kind[kind].get(request_id)

    def _lanes(self) -> None:
        """Mirror the registry's request ids, keyed as they appear on the wire."""
        registry = self._registry
        self._routes_seen = registry.routes_version
        by_kind: dict[str, dict[str, Lane]] = {"l1": {}, "l2": {}, "tick_by_tick": {}}
        self._lanes_by_kind = by_kind
        for request_id, (streams, kind) in registry.routes.items():
            symbol = streams.symbol
            book = self._books.get(symbol)
            if book is None:
                book = self._books[symbol] = TopOfBook()
            by_kind[kind][str(request_id)] = Lane(
                symbol,
                book,
                self._tallies.get((symbol, "l1")),
                self._tallies.get((symbol, "time_and_sales")),
                self._tallies.get((symbol, "l2")),
                request_id,
                registry.delayed_request(request_id),
            )

    def _count(self, tally: Tally, now: int) -> None:
        if not tally.count:
            self._touched.append(tally)
        tally.count += 1
        tally.last_ns = now

    # -- Level 1 -------------------------------------------------------------------------

    def tick_price(self, fields: list[str]) -> bool:
        lane = self._lane("l1", fields[2])
        if lane is None:
            return False
        field = PRICE_FIELDS.get(int(fields[3]))
        if field is None and (field := self._delayed_field(lane, DELAYED_PRICE_FIELDS, fields[3])) is None:
            return False
        if lane.quotes is None or not fields[4]:
            return True  # Level 1 not wanted for this symbol (its request carries RTVolume), or no price
        lane.book.set_price(field, clean_price(float(fields[4])), clean_size(float(fields[5] or 0)))
        self._quote(lane, lane.quotes)
        return True

    def tick_size(self, fields: list[str]) -> bool:
        lane = self._lane("l1", fields[2])
        if lane is None:
            return False
        field = SIZE_FIELDS.get(int(fields[3]))
        if field is None and (field := self._delayed_field(lane, DELAYED_SIZE_FIELDS, fields[3])) is None:
            return False
        if lane.quotes is not None and lane.book.set_size(field, clean_size(float(fields[4] or 0))):
            self._quote(lane, lane.quotes)
        return True

    def _quote(self, lane: Lane, tally: Tally) -> None:
        book = lane.book
        now = self._clock.now_ns()
        self._events.append(
            Quote(
                lane.symbol,
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
                lane.delayed,
            )
        )
        self._count(tally, now)

    def market_data_type(self, fields: list[str]) -> bool:
        """IB's market data type for a Level 1 request: delayed (3, 4) marks the request delayed.

        Returns False always, so ib_async records it on its ticker too.
        """
        lane = self._lane("l1", fields[2])
        if lane is not None:
            lane.delayed = self._registry.on_market_data_type(lane.request_id, int(fields[3]))
        return False

    def _delayed_field(self, lane: Lane, table: dict[int, str], tick: str) -> str | None:
        """The field of a delayed tick type, or None; a request IB had not reported delayed is, now."""
        field = table.get(int(tick))
        if field is not None and not lane.delayed:
            lane.delayed = True
            self._registry.on_delayed_ticks(lane.request_id)
        return field

    def tick_string(self, fields: list[str]) -> bool:
        """RTVolume: the trades of symbols whose time and sales come from Level 1."""
        lane = self._lane("l1", fields[2])
        if lane is None or int(fields[3]) not in RTVOLUME_TICK_TYPES:
            return False
        tally = lane.trades
        if tally is None or tally.entry.source != "rtvolume":
            return True
        price_text, size_text, millis, _volume, _vwap, _single = fields[4].split(";")
        price = clean_price(float(price_text)) if price_text else None
        if price is None:
            return True  # a volume-only update: no trade
        now = self._clock.now_ns()
        self._events.append(
            Trade(
                lane.symbol,
                now,
                int(millis) * 1_000_000 if millis.isdigit() else None,
                price,
                clean_size(float(size_text)) if size_text else None,
                None,
                None,
                False,
                False,
                "rtvolume",
                lane.delayed,
            )
        )
        self._count(tally, now)
        return True

    # -- depth ---------------------------------------------------------------------------

    def market_depth(self, fields: list[str]) -> bool:
        return self._depth_update(fields[2], fields[3], "", fields[4], fields[5], fields[6], fields[7])

    def market_depth_l2(self, fields: list[str]) -> bool:
        return self._depth_update(fields[2], fields[3], fields[4], fields[5], fields[6], fields[7], fields[8])

    def _depth_update(
        self, request_id: str, position: str, maker: str, operation: str, side: str, price: str, size: str
    ) -> bool:
        lane = self._lane("l2", request_id)
        if lane is None:
            return False
        tally = lane.depth
        op = int(operation)
        if tally is None or not 0 <= op <= 2:
            return True
        deleted = op == 2
        now = self._clock.now_ns()
        self._events.append(
            DepthUpdate(
                lane.symbol,
                now,
                DEPTH_SIDES[int(side) != 0],
                int(position),
                DEPTH_OPERATIONS[op],
                None if deleted else clean_price(float(price or 0)),
                None if deleted else clean_size(float(size or 0)),
                maker or None,
                self._registry.smart_depth,
            )
        )
        self._count(tally, now)
        return True

    # -- tick-by-tick ----------------------------------------------------------------------

    def tick_by_tick(self, fields: list[str]) -> bool:
        lane = self._lane("tick_by_tick", fields[1])
        if lane is None or fields[2] not in TRADE_TICK_BY_TICK:
            return False
        tally = lane.trades
        if tally is None or tally.entry.source != "tick_by_tick":
            return True  # fell back to RTVolume: the same trades come from there
        _, _, _, seconds, price_text, size_text, mask_text, exchange, conditions = fields
        price = clean_price(float(price_text))
        if price is None:
            return True  # IB's empty trade (-1, 0)
        mask = int(mask_text)
        now = self._clock.now_ns()
        self._events.append(
            Trade(
                lane.symbol,
                now,
                int(seconds) * 1_000_000_000,
                price,
                clean_size(float(size_text)),
                exchange or None,
                conditions or None,
                bool(mask & 1),
                bool(mask & 2),
                "tick_by_tick",
            )
        )
        self._count(tally, now)
        return True


def tap_market_data(ib: IB, normaliser: Normaliser) -> None:
    """Route ``ib``'s market data messages through ``normaliser`` first; only this instance changes."""
    decoder = ib.client.decoder
    table = getattr(decoder, "handlers", None)
    ours = normaliser.handlers()
    if not isinstance(table, dict) or not set(ours) <= set(table):
        raise RuntimeError(
            "this ib_async has no Decoder.handlers table for messages "
            f"{sorted(ours)}; ingestion is built for ib_async 2.1 (see constraints.txt)"
        )
    for message_id, handler in ours.items():
        table[message_id] = _ours_first(handler, table[message_id])
    ib.updateEvent += normaliser.flush


def _ours_first(ours: Handler, theirs: Handler) -> Handler:
    def handle(fields: list[str]) -> None:
        if not ours(fields):
            theirs(fields)

    return handle
