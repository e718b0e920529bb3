"""The seeded market: one ``SymbolMarket`` per symbol, and the subscriptions that observe it.

A symbol's market is a sequence of events (a trade, a quote move, a size change) drawn from one RNG
seeded from (seed, symbol), so the n-th event of a symbol is the same in every run with that seed,
whoever listens; the scheduler decides when events happen and stamps them with its clock. Every
trade and quote goes on the symbol's tape (history is served from it); subscriptions are observers
that render each event into their client's output in the layout IB uses. Depth books follow the
symbol's quote and move only while observed (IB serves no depth history).

Frames are built as text from prefixes encoded once per subscription: this is the hot path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from ingestion.simulator import stats
from ingestion.simulator.contracts import ContractSpec
from ingestion.simulator.protocol import (
    V_SMART_DEPTH,
    ErrorCode,
    Out,
    TickByTickType,
    TickType,
    encode_text,
    error_frame,
    format_price,
)
from ingestion.simulator.tape import ODD_LOT, TRADE_EXCHANGES, UNREPORTED, MinuteBar, QuoteTape, TradeTape

if TYPE_CHECKING:
    from collections.abc import Callable

SMART_DEPTH_EXCHANGES: Final = (
    "ARCA",
    "NSDQ",
    "BATS",
    "EDGX",
    "IEX",
    "NYSE",
    "BYX",
    "EDGEA",
    "MEMX",
    "PEARL",
)
__all__ = ["SMART_DEPTH_EXCHANGES", "TRADE_EXCHANGES", "DepthBook", "SymbolMarket"]

# The price path advances one step every this many events of a symbol.
PATH_EVENTS: Final = 16
# Minute aggregates kept per symbol (ten days of minutes; bars of older live time are gone).
MINUTES_KEPT: Final = 10 * 1440
# Probability of each event kind; the rest are size changes.
P_TRADE: Final = 0.4
P_MOVE: Final = 0.7

_INSERT: Final = 0
_UPDATE: Final = 1
_DELETE: Final = 2
_ASK: Final = 0  # IB's side codes: 0 ask, 1 bid
_BID: Final = 1


def seeded_rng(seed: int, symbol: str, kind: str) -> random.Random:
    """An RNG that depends only on (seed, symbol, kind); str seeds are hashed with SHA-512, not hash()."""
    return random.Random(f"{seed}:{symbol}:{kind}")


class PricePath:
    """The reference mid of one symbol, one step per ``PATH_EVENTS`` events of its market.

    About 1% a day at the default pace, pulled gently back to the starting price so that hours at
    a saturating rate stay near it.
    """

    __slots__ = ("_base", "_cents", "_level", "_rng", "_sigma")

    def __init__(self, seed: int, symbol: str, price_cents: int) -> None:
        self._rng = seeded_rng(seed, symbol, "path")
        self._sigma = price_cents * 0.00005
        self._base = float(price_cents)
        self._level = float(price_cents)
        self._cents = price_cents

    def next(self) -> int:
        """The mid, in cents, after one more step."""
        level = self._level
        level += (self._base - level) * 0.0002 + self._rng.gauss(0.0, self._sigma)
        self._level = max(level, 100.0)
        self._cents = round(self._level)
        return self._cents

    @property
    def cents(self) -> int:
        return self._cents


class TopOfBook:
    """A top of book that walks one tick at a time towards a target mid and always keeps bid < ask."""

    __slots__ = ("ask", "ask_size", "bid", "bid_size", "rng")

    def __init__(self, rng: random.Random, price_cents: int) -> None:
        self.rng = rng
        self.bid = price_cents
        self.ask = price_cents + 1
        self.bid_size = self.lot()
        self.ask_size = self.lot()

    def lot(self) -> int:
        return 100 * (1 + int(self.rng.random() * 20))

    def move(self, target: int) -> bool:
        """Move one side by one tick; returns True when the bid moved, False when the ask did.

        Moves lean towards ``target`` and prefer tightening the spread, so spreads stay 1-3 ticks.
        """
        rng = self.rng
        drift = target * 2 - self.bid - self.ask  # in half ticks
        p_up = 0.5 + max(-0.4, min(0.4, drift * 0.05))
        up = rng.random() < p_up
        spread = self.ask - self.bid
        tighten = spread > 1 and (rng.random() < 0.5 or spread >= 3)
        if up:
            if tighten:
                self.bid += 1
                self.bid_size = self.lot()
                return True
            self.ask += 1
            self.ask_size = self.lot()
            return False
        if tighten:
            self.ask -= 1
            self.ask_size = self.lot()
            return False
        self.bid -= 1
        self.bid_size = self.lot()
        return True

    def trade(self) -> tuple[int, int]:
        """A trade that hits the bid or lifts the ask: (price, size)."""
        rng = self.rng
        hit_bid = rng.random() < 0.5
        size = 100 * (1 + int(rng.random() * 5)) if rng.random() < 0.85 else 1 + int(rng.random() * 99)
        if hit_bid:
            price = self.bid
            self.bid_size -= size
            if self.bid_size <= 0:
                # The level is gone: the bid backs off a tick with fresh size.
                self.bid -= 1
                self.bid_size = self.lot()
        else:
            price = self.ask
            self.ask_size -= size
            if self.ask_size <= 0:
                self.ask += 1
                self.ask_size = self.lot()
        return price, size


class Holder(Protocol):
    """What an observer needs of its session: the output list and whether the socket is full."""

    out: list[bytes]
    writing_paused: bool


class Observer:
    """A subscription of one client: renders events into its session's output list."""

    __slots__ = ("counts", "out", "req_id", "session")

    def __init__(self, session: Holder, req_id: int, counts: dict[str, int]) -> None:
        self.session = session
        self.out = session.out
        self.req_id = req_id
        self.counts = counts


class MarketData(Observer):
    """Level 1 for one reqMktData: bid/ask/last with sizes, volume, and RTVolume when asked (233)."""

    __slots__ = ("_p_price", "_p_size", "_p_string", "rt_volume")

    def __init__(self, session: Holder, req_id: int, counts: dict[str, int], rt_volume: bool) -> None:
        super().__init__(session, req_id, counts)
        self.rt_volume = rt_volume
        self._p_price = f"{Out.TICK_PRICE}\0006\0{req_id}\0"
        self._p_size = f"{Out.TICK_SIZE}\0006\0{req_id}\0"
        self._p_string = f"{Out.TICK_STRING}\0006\0{req_id}\0"

    def _price(self, tick: int, cents: int, size: int) -> bytes:
        return encode_text(f"{self._p_price}{tick}\0{format_price(cents)}\0{size}\0{0}\0")

    def _size(self, tick: int, size: int) -> bytes:
        return encode_text(f"{self._p_size}{tick}\0{size}\0")

    def _string(self, tick: int, text: str) -> bytes:
        return encode_text(f"{self._p_string}{tick}\0{text}\0")

    def initial(self, m: SymbolMarket) -> None:
        """The ticks IB sends once at subscription start: the full top of book and the session stats."""
        q, start = m.book, m.spec.price_cents
        self.out += [
            self._price(TickType.BID, q.bid, q.bid_size),
            self._size(TickType.BID_SIZE, q.bid_size),
            self._price(TickType.ASK, q.ask, q.ask_size),
            self._size(TickType.ASK_SIZE, q.ask_size),
            self._price(TickType.LAST, m.last, m.last_size),
            self._size(TickType.LAST_SIZE, m.last_size),
            self._size(TickType.VOLUME, m.volume),
            self._price(TickType.HIGH, m.high, 0),
            self._price(TickType.LOW, m.low, 0),
            self._price(TickType.CLOSE, start - start // 400, 0),
            self._price(TickType.OPEN, start - start // 1000, 0),
            self._string(TickType.LAST_TIMESTAMP, str(m.last_ms // 1000)),
        ]
        counts = self.counts
        counts[stats.TICK_PRICE] += 7
        counts[stats.TICK_SIZE] += 4
        counts[stats.TICK_STRING] += 1

    def on_trade(self, m: SymbolMarket, single: bool) -> int:
        q, out, counts = m.book, self.out, self.counts
        price, size = m.last, m.last_size
        out.append(self._price(TickType.LAST, price, size))
        out.append(self._size(TickType.LAST_SIZE, size))
        out.append(self._size(TickType.VOLUME, m.volume))
        out.append(self._price(TickType.BID, q.bid, q.bid_size))
        out.append(self._price(TickType.ASK, q.ask, q.ask_size))
        counts[stats.TICK_PRICE] += 3
        counts[stats.TICK_SIZE] += 2
        if not self.rt_volume:
            return 5
        vwap = m.vwap_num / m.volume / 100
        out.append(
            encode_text(
                f"{self._p_string}{TickType.RT_VOLUME}\0{format_price(price)};{size};{m.last_ms};"
                f"{m.volume};{vwap:.8f};{'true' if single else 'false'}\0"
            )
        )
        counts[stats.RTVOLUME] += 1
        return 6

    def on_move(self, m: SymbolMarket, bid: bool) -> int:
        q = m.book
        if bid:
            self.out.append(self._price(TickType.BID, q.bid, q.bid_size))
            self.out.append(self._size(TickType.BID_SIZE, q.bid_size))
        else:
            self.out.append(self._price(TickType.ASK, q.ask, q.ask_size))
            self.out.append(self._size(TickType.ASK_SIZE, q.ask_size))
        self.counts[stats.TICK_PRICE] += 1
        self.counts[stats.TICK_SIZE] += 1
        return 2

    def on_size(self, m: SymbolMarket, bid: bool) -> int:
        q = m.book
        if bid:
            self.out.append(self._size(TickType.BID_SIZE, q.bid_size))
        else:
            self.out.append(self._size(TickType.ASK_SIZE, q.ask_size))
        self.counts[stats.TICK_SIZE] += 1
        return 1


_TBT_KINDS: Final = {
    TickByTickType.LAST: stats.TBT_LAST,
    TickByTickType.ALL_LAST: stats.TBT_ALL_LAST,
    TickByTickType.BID_ASK: stats.TBT_BID_ASK,
    TickByTickType.MID_POINT: stats.TBT_MIDPOINT,
}


class TickByTick(Observer):
    """reqTickByTickData: trades (Last, AllLast), quotes (BidAsk) or midpoints (MidPoint)."""

    __slots__ = ("_head", "ignore_size", "kind", "tbt")

    def __init__(
        self, session: Holder, req_id: int, counts: dict[str, int], tbt: TickByTickType, ignore_size: bool
    ) -> None:
        super().__init__(session, req_id, counts)
        self.tbt = tbt
        self.kind = _TBT_KINDS[tbt]
        self.ignore_size = ignore_size
        self._head = f"{Out.TICK_BY_TICK}\0{req_id}\0{int(tbt)}\0"

    def on_trade(self, m: SymbolMarket, mask: int, exchange: str) -> int:
        size = m.last_size
        conditions = ODD_LOT if size < 100 else ""
        self.out.append(
            encode_text(
                f"{self._head}{m.last_ms // 1000}\0{format_price(m.last)}\0{size}\0{mask}\0"
                f"{exchange}\0{conditions}\0"
            )
        )
        self.counts[self.kind] += 1
        return 1

    def on_quote(self, m: SymbolMarket, price_moved: bool) -> int:
        if self.ignore_size and not price_moved:
            return 0
        q = m.book
        self.out.append(
            encode_text(
                f"{self._head}{m.now_ms // 1000}\0{format_price(q.bid)}\0{format_price(q.ask)}\0"
                f"{q.bid_size}\0{q.ask_size}\0{0}\0"
            )
        )
        self.counts[self.kind] += 1
        return 1

    def on_mid(self, m: SymbolMarket) -> int:
        half = m.book.bid + m.book.ask  # the midpoint in half cents
        self.out.append(encode_text(f"{self._head}{m.now_ms // 1000}\0{half // 200}.{half % 200 * 5:03d}\0"))
        self.counts[self.kind] += 1
        return 1


class SymbolMarket:
    """One symbol's market: its top of book, trade statistics, tape, and observers."""

    __slots__ = (
        "_bar",
        "_minute",
        "book",
        "counts",
        "depth",
        "events",
        "high",
        "l1",
        "last",
        "last_ms",
        "last_size",
        "low",
        "minutes",
        "now_ms",
        "path",
        "quotes",
        "rng",
        "spec",
        "symbol",
        "tbt_mid",
        "tbt_quotes",
        "tbt_trades",
        "trades",
        "volume",
        "vwap_num",
    )

    def __init__(
        self, spec: ContractSpec, seed: int, limits: tuple[int, int], start_ms: int, counts: dict[str, int]
    ) -> None:
        """``limits``: the trades and the quotes the tape keeps."""
        self.spec = spec
        self.symbol = spec.symbol
        self.counts = counts
        self.rng = seeded_rng(seed, spec.symbol, "market")
        self.path = PricePath(seed, spec.symbol, spec.price_cents)
        self.book = TopOfBook(self.rng, spec.price_cents)
        self.events = 0
        self.now_ms = start_ms
        self.last = spec.price_cents
        self.last_size = 100
        self.last_ms = start_ms
        self.high = spec.price_cents + spec.price_cents // 200
        self.low = spec.price_cents - spec.price_cents // 250
        self.volume = 0
        self.vwap_num = 0
        self.trades = TradeTape(limits[0])
        self.quotes = QuoteTape(limits[1])
        self.minutes: dict[int, MinuteBar] = {}
        self._minute = -1
        self._bar: MinuteBar | None = None
        self.l1: list[MarketData] = []
        self.tbt_trades: list[TickByTick] = []
        self.tbt_quotes: list[TickByTick] = []
        self.tbt_mid: list[TickByTick] = []
        self.depth: list[DepthBook] = []

    # ------------------------------------------------------------- observers

    @property
    def observed(self) -> bool:
        return bool(self.l1 or self.tbt_trades or self.tbt_quotes or self.tbt_mid or self.depth)

    def held(self) -> bool:
        """True while a client of this symbol does not drain its socket: the market waits for it."""
        for group in (self.l1, self.tbt_trades, self.tbt_quotes, self.tbt_mid):
            for observer in group:
                if observer.session.writing_paused:
                    return True
        return any(book.held() for book in self.depth)

    def observe_tick_by_tick(self, observer: TickByTick) -> None:
        self._tbt_group(observer.tbt).append(observer)

    def forget_tick_by_tick(self, observer: TickByTick) -> None:
        self._tbt_group(observer.tbt).remove(observer)

    def _tbt_group(self, tbt: TickByTickType) -> list[TickByTick]:
        if tbt <= TickByTickType.ALL_LAST:
            return self.tbt_trades
        return self.tbt_quotes if tbt == TickByTickType.BID_ASK else self.tbt_mid

    def depth_book(self, rows: int, smart: bool, seed: int) -> DepthBook:
        """The shared book for depth requests of this shape, created (and built) on first use."""
        for book in self.depth:
            if book.rows == rows and book.smart == smart:
                return book
        book = DepthBook(self, seed, rows, smart, lambda: self.depth.remove(book))
        self.depth.append(book)
        return book

    # ----------------------------------------------------------------- events

    def step(self, now_ms: int, deliver: bool = True) -> int:
        """One market event at ``now_ms``; returns the messages rendered (0 when not ``deliver``)."""
        rng, q = self.rng, self.book
        self.events += 1
        self.now_ms = now_ms
        minute = now_ms // 60_000
        if minute != self._minute:
            self._new_minute(minute)
        bar = self._bar
        assert bar is not None
        r = rng.random()
        sent = 0
        if r < P_TRADE:
            bid, ask = q.bid, q.ask
            price, size = q.trade()
            exchange = int(rng.random() * len(TRADE_EXCHANGES))
            mask = UNREPORTED if rng.random() < 0.01 else 0
            single = rng.random() < 0.7
            self.last, self.last_size, self.last_ms = price, size, now_ms
            self.volume += size
            self.vwap_num += price * size
            if price > self.high:
                self.high = price
            elif price < self.low:
                self.low = price
            self.trades.append(now_ms, price, size, exchange, mask)
            bar.add_trade(price, size)
            self._quoted(now_ms, bar)
            if deliver:
                name = TRADE_EXCHANGES[exchange]
                for l1 in self.l1:
                    sent += l1.on_trade(self, single)
                for tbt in self.tbt_trades:
                    sent += tbt.on_trade(self, mask, name)
                moved = q.bid != bid or q.ask != ask
                for tbt in self.tbt_quotes:
                    sent += tbt.on_quote(self, moved)
                if moved and q.bid + q.ask != bid + ask:
                    for tbt in self.tbt_mid:
                        sent += tbt.on_mid(self)
        elif r < P_MOVE:
            mid = q.bid + q.ask
            if self.events % PATH_EVENTS == 0:
                self.path.next()
            bid_moved = q.move(self.path.cents)
            self._quoted(now_ms, bar)
            if deliver:
                for l1 in self.l1:
                    sent += l1.on_move(self, bid_moved)
                for tbt in self.tbt_quotes:
                    sent += tbt.on_quote(self, True)
                if q.bid + q.ask != mid:
                    for tbt in self.tbt_mid:
                        sent += tbt.on_mid(self)
        else:
            bid_side = r < 0.85
            if bid_side:
                q.bid_size = q.lot()
            else:
                q.ask_size = q.lot()
            self._quoted(now_ms, bar)
            if deliver:
                for l1 in self.l1:
                    sent += l1.on_size(self, bid_side)
                for tbt in self.tbt_quotes:
                    sent += tbt.on_quote(self, False)
        if deliver:
            for book in self.depth:
                sent += book.step()
        return sent

    def _new_minute(self, minute: int) -> None:
        q, minutes = self.book, self.minutes
        self._minute = minute
        self._bar = minutes[minute] = MinuteBar(q.bid, q.ask)
        if len(minutes) > MINUTES_KEPT:
            del minutes[next(iter(minutes))]  # the oldest: dicts keep insertion order

    def _quoted(self, now_ms: int, bar: MinuteBar) -> None:
        """Record the top of book on the tape and in the minute (written out: the hot path)."""
        q, quotes = self.book, self.quotes
        bid, ask = q.bid, q.ask
        quotes.time_ms.append(now_ms)
        quotes.prices.append(bid << 32 | ask)
        quotes.sizes.append(q.bid_size << 32 | q.ask_size)
        if len(quotes.time_ms) > quotes.limit:
            quotes.trim()
        mid = bid + ask
        if mid > bar.mid_high:
            bar.mid_high = mid
        elif mid < bar.mid_low:
            bar.mid_low = mid
        bar.mid_close = mid
        bar.bid_sum += bid
        bar.ask_sum += ask
        bar.quotes += 1
        if ask > bar.ask_high:
            bar.ask_high = ask
        if bid < bar.bid_low:
            bar.bid_low = bid


@dataclass(frozen=True, slots=True)
class DepthRow:
    """One row of a depth book as a client should hold it."""

    price: str
    size: int
    market_maker: str


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """Both sides of a book, best first."""

    bids: tuple[DepthRow, ...]
    asks: tuple[DepthRow, ...]


class DepthView(Observer):
    """One reqMktDepth: the book's changes in the client's layout (smart depth or not)."""

    __slots__ = ("_flag", "_head", "book", "smart", "version")

    def __init__(
        self, session: Holder, req_id: int, counts: dict[str, int], book: DepthBook, version: int
    ) -> None:
        super().__init__(session, req_id, counts)
        self.book = book
        self.smart = book.smart
        self.version = version
        if book.smart:
            self._head = f"{Out.MARKET_DEPTH_L2}\0001\0{req_id}\0"
            self._flag = "\x001" if version >= V_SMART_DEPTH else ""
        else:
            self._head = f"{Out.MARKET_DEPTH}\0001\0{req_id}\0"
            self._flag = ""

    def frame(self, position: int, op: int, side: int, row: list[int | str]) -> None:
        price = format_price(row[0])  # type: ignore[arg-type]
        if self.smart:
            text = f"{self._head}{position}\0{row[2]}\0{op}\0{side}\0{price}\0{row[1]}{self._flag}\0"
        else:
            text = f"{self._head}{position}\0{op}\0{side}\0{price}\0{row[1]}\0"
        self.out.append(encode_text(text))
        self.counts[stats.DEPTH] += 1

    def initial(self) -> None:
        """The whole book as inserts, alternately bid then ask (how IB builds a book from empty)."""
        book = self.book
        for i in range(max(len(book.bids), len(book.asks))):
            for side, rows in ((_BID, book.bids), (_ASK, book.asks)):
                if i < len(rows):
                    self.frame(i, _INSERT, side, rows[i])

    def reset(self) -> None:
        """Error 317 (the client empties its book), then the book again from scratch."""
        self.out.append(error_frame(self.version, self.req_id, ErrorCode.DEPTH_RESET, _DEPTH_RESET_TEXT))
        self.counts[stats.DEPTH_RESET] += 1
        self.initial()


class DepthBook:
    """A depth book kept under the discipline every client applies the same way, shared by the
    depth requests of one shape (rows, smart) on one symbol.

    Inserts only append (position == row count), changes are updates, deletes remove the last row;
    prices stay strictly ordered per side and best bid < best ask.
    """

    __slots__ = ("_release", "asks", "bids", "market", "market_makers", "rng", "rows", "smart", "views")

    def __init__(
        self, market: SymbolMarket, seed: int, rows: int, smart: bool, release: Callable[[], None]
    ) -> None:
        self.market = market
        self.rng = seeded_rng(seed, market.symbol, f"depth:{rows}:{int(smart)}")
        self.rows = rows
        self.smart = smart
        self.market_makers: tuple[str, ...] = SMART_DEPTH_EXCHANGES if smart else ("",)
        self.views: list[DepthView] = []
        self.bids: list[list[int | str]] = []
        self.asks: list[list[int | str]] = []
        self._release = release
        self._build()

    def held(self) -> bool:
        return any(view.session.writing_paused for view in self.views)

    def add(self, view: DepthView) -> None:
        self.views.append(view)
        view.initial()

    def remove(self, view: DepthView) -> None:
        self.views.remove(view)
        if not self.views:
            self._release()

    def reset(self) -> None:
        """Rebuild the book; every view gets 317 and the new book."""
        self.bids.clear()
        self.asks.clear()
        self._build()
        for view in self.views:
            view.reset()

    def _build(self) -> None:
        for _ in range(self.rows):
            self.bids.append(self._new_row(_BID))
            self.asks.append(self._new_row(_ASK))

    def _emit(self, position: int, op: int, side: int, row: list[int | str]) -> int:
        for view in self.views:
            view.frame(position, op, side, row)
        return len(self.views)

    def _size(self) -> int:
        return 100 * (1 + int(self.rng.random() * 30))

    def _mm(self) -> str:
        mms = self.market_makers
        return mms[int(self.rng.random() * len(mms))]

    def _new_row(self, side: int) -> list[int | str]:
        """A row beyond the current worst price of a side, 1 to 3 ticks away."""
        book = self.bids if side == _BID else self.asks
        gap = 1 + int(self.rng.random() * 3)
        if book:
            worst = int(book[-1][0])
            price = worst - gap if side == _BID else worst + gap
        else:
            q = self.market.book
            price = q.bid if side == _BID else q.ask
        return [price, self._size(), self._mm()]

    def step(self) -> int:
        """One change of the book; returns the messages sent to its views."""
        rng = self.rng
        if self.bids and self.asks and rng.random() < 0.05:
            q = self.market.book
            gap = q.bid + q.ask - int(self.bids[0][0]) - int(self.asks[0][0])
            if abs(gap) > 4:
                return self._shift(1 if gap > 0 else -1)
        side = _BID if rng.random() < 0.5 else _ASK
        book = self.bids if side == _BID else self.asks
        n = len(book)
        r = rng.random()
        if r < 0.08 and n == self.rows and n > 1:
            row = book.pop()
            return self._emit(n - 1, _DELETE, side, row)
        if (r < 0.16 or n < self.rows - 2) and n < self.rows:
            row = self._new_row(side)
            book.append(row)
            return self._emit(n, _INSERT, side, row)
        pos = int(rng.random() * n)
        row = book[pos]
        if r < 0.45:
            self._reprice(side, book, pos, row)
        row[1] = self._size()
        if rng.random() < 0.2:
            row[2] = self._mm()
        return self._emit(pos, _UPDATE, side, row)

    def _shift(self, ticks: int) -> int:
        """Move the whole book by ``ticks`` to follow the market: one update per row, best first."""
        n = 0
        # The side moving away from the other goes first, so the book never crosses in between.
        sides = (
            ((_ASK, self.asks), (_BID, self.bids)) if ticks > 0 else ((_BID, self.bids), (_ASK, self.asks))
        )
        for side, book in sides:
            for pos, row in enumerate(book):
                row[0] = int(row[0]) + ticks
                n += self._emit(pos, _UPDATE, side, row)
        return n

    def _reprice(self, side: int, book: list[list[int | str]], pos: int, row: list[int | str]) -> None:
        """Move a row's price anywhere strictly between its neighbours (the opposite best for row 0)."""
        if side == _BID:
            upper = int(book[pos - 1][0]) if pos else int(self.asks[0][0]) if self.asks else int(row[0]) + 2
            lower = int(book[pos + 1][0]) if pos + 1 < len(book) else int(row[0]) - 3
        else:
            lower = int(book[pos - 1][0]) if pos else int(self.bids[0][0]) if self.bids else int(row[0]) - 2
            upper = int(book[pos + 1][0]) if pos + 1 < len(book) else int(row[0]) + 3
        room = upper - lower - 1
        if room > 0:
            row[0] = lower + 1 + int(self.rng.random() * room)

    def snapshot(self) -> DepthSnapshot:
        """The book as a client applying every message so far must hold it."""

        def side(book: list[list[int | str]]) -> tuple[DepthRow, ...]:
            return tuple(DepthRow(format_price(int(r[0])), int(r[1]), str(r[2])) for r in book)

        return DepthSnapshot(side(self.bids), side(self.asks))


_DEPTH_RESET_TEXT: Final = (
    "Market depth data has been RESET. Please empty deep book contents before applying any new entries."
)
