"""The seeded market model: one independent stream of events per subscription.

Each stream owns its RNG, seeded from (seed, symbol, kind), and its own simulated clock, so what it
sends depends only on the seed and on how many events were asked of it, never on the wall clock.
``step(out)`` appends the frames of one event to ``out`` and returns how many messages that was;
frames are built as text from prefixes encoded once per stream (this is the simulator's hot path).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Protocol

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
TRADE_EXCHANGES: Final = ("ARCA", "NASDAQ", "BATS", "EDGX", "IEX", "NYSE", "DRCTEDGE", "MEMX", "FINRA")

_INSERT: Final = 0
_UPDATE: Final = 1
_DELETE: Final = 2
_ASK: Final = 0  # IB's side codes: 0 ask, 1 bid
_BID: Final = 1


class Stream(Protocol):
    """What the scheduler drives: one subscription's event source."""

    symbol: str
    req_id: int

    def step(self, out: list[bytes]) -> int: ...


def stream_rng(seed: int, symbol: str, kind: str) -> random.Random:
    """An RNG that depends only on (seed, symbol, kind); str seeds are hashed with SHA-512, not hash()."""
    return random.Random(f"{seed}:{symbol}:{kind}")


class PricePath:
    """The reference mid of one symbol as a function of simulated seconds.

    Every stream of a symbol replays the same path (same seed, same symbol), so Level 1, depth and
    tick-by-tick agree on where the market is at a given simulated time without sharing state.
    """

    __slots__ = ("_cents", "_level", "_rng", "_sigma")

    def __init__(self, seed: int, symbol: str, price_cents: int) -> None:
        self._rng = stream_rng(seed, symbol, "path")
        # About 1% daily volatility: 0.0065% of the price per second.
        self._sigma = price_cents * 0.000065
        self._level = float(price_cents)
        self._cents = [price_cents]

    def at(self, second: int) -> int:
        """The reference mid, in cents, ``second`` simulated seconds after the start."""
        cents = self._cents
        while len(cents) <= second:
            self._level = max(self._level + self._rng.gauss(0.0, self._sigma), 100.0)
            cents.append(round(self._level))
        return cents[second]


class Quote:
    """A top of book that walks one tick at a time towards a target mid and always keeps bid < ask."""

    __slots__ = ("ask", "ask_size", "bid", "bid_size", "rng")

    def __init__(self, rng: random.Random, price_cents: int) -> None:
        self.rng = rng
        self.bid = price_cents
        self.ask = price_cents + 1
        self.bid_size = self._lot()
        self.ask_size = self._lot()

    def _lot(self) -> int:
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
                self.bid_size = self._lot()
                return True
            self.ask += 1
            self.ask_size = self._lot()
            return False
        if tighten:
            self.ask -= 1
            self.ask_size = self._lot()
            return False
        self.bid -= 1
        self.bid_size = self._lot()
        return True

    def trade(self) -> tuple[int, int, bool]:
        """A trade that hits the bid or lifts the ask: (price, size, hit_bid)."""
        rng = self.rng
        hit_bid = rng.random() < 0.5
        size = 100 * (1 + int(rng.random() * 5)) if rng.random() < 0.85 else 1 + int(rng.random() * 99)
        if hit_bid:
            price = self.bid
            self.bid_size -= size
            if self.bid_size <= 0:
                # The level is gone: the bid backs off a tick with fresh size.
                self.bid -= 1
                self.bid_size = self._lot()
        else:
            price = self.ask
            self.ask_size -= size
            if self.ask_size <= 0:
                self.ask += 1
                self.ask_size = self._lot()
        return price, size, hit_bid


class MarketDataStream:
    """Level 1 for one reqMktData: bid/ask/last with sizes, volume, and RTVolume when asked (233)."""

    __slots__ = (
        "_p_price",
        "_p_size",
        "_p_string",
        "counts",
        "high",
        "last",
        "low",
        "path",
        "quote",
        "req_id",
        "rng",
        "rt_volume",
        "spec",
        "start_ms",
        "symbol",
        "time_ms",
        "volume",
        "vwap_num",
    )

    def __init__(
        self,
        req_id: int,
        spec: ContractSpec,
        seed: int,
        start_ms: int,
        rt_volume: bool,
        counts: dict[str, int],
    ) -> None:
        self.req_id = req_id
        self.spec = spec
        self.symbol = spec.symbol
        self.rng = stream_rng(seed, spec.symbol, "mktdata")
        self.path = PricePath(seed, spec.symbol, spec.price_cents)
        self.quote = Quote(self.rng, spec.price_cents)
        self.rt_volume = rt_volume
        self.counts = counts
        self.start_ms = start_ms
        self.time_ms = start_ms
        self.last = spec.price_cents
        self.high = spec.price_cents + spec.price_cents // 200
        self.low = spec.price_cents - spec.price_cents // 250
        self.volume = 0
        self.vwap_num = 0
        self._p_price = f"{Out.TICK_PRICE}\0006\0{req_id}\0"
        self._p_size = f"{Out.TICK_SIZE}\0006\0{req_id}\0"
        self._p_string = f"{Out.TICK_STRING}\0006\0{req_id}\0"

    def _price(self, tick: int, cents: int, size: int) -> bytes:
        return encode_text(f"{self._p_price}{tick}\0{format_price(cents)}\0{size}\0{0}\0")

    def _size(self, tick: int, size: int) -> bytes:
        return encode_text(f"{self._p_size}{tick}\0{size}\0")

    def initial(self, out: list[bytes]) -> int:
        """The ticks IB sends once at subscription start: the full top of book and the session stats."""
        q, start = self.quote, self.spec.price_cents
        out += [
            self._price(TickType.BID, q.bid, q.bid_size),
            self._size(TickType.BID_SIZE, q.bid_size),
            self._price(TickType.ASK, q.ask, q.ask_size),
            self._size(TickType.ASK_SIZE, q.ask_size),
            self._price(TickType.LAST, self.last, 100),
            self._size(TickType.LAST_SIZE, 100),
            self._size(TickType.VOLUME, self.volume),
            self._price(TickType.HIGH, self.high, 0),
            self._price(TickType.LOW, self.low, 0),
            self._price(TickType.CLOSE, start - start // 400, 0),
            self._price(TickType.OPEN, start - start // 1000, 0),
            encode_text(f"{self._p_string}{TickType.LAST_TIMESTAMP}\0{self.time_ms // 1000}\0"),
        ]
        counts = self.counts
        counts[stats.TICK_PRICE] += 7
        counts[stats.TICK_SIZE] += 4
        counts[stats.TICK_STRING] += 1
        return 12

    def step(self, out: list[bytes]) -> int:
        rng, q, counts = self.rng, self.quote, self.counts
        self.time_ms += 1 + int(rng.random() * 50)
        r = rng.random()
        if r < 0.4:
            price, size, _ = q.trade()
            self.last = price
            self.volume += size
            self.vwap_num += price * size
            self.high = max(self.high, price)
            self.low = min(self.low, price)
            out.append(self._price(TickType.LAST, price, size))
            out.append(self._size(TickType.LAST_SIZE, size))
            out.append(self._size(TickType.VOLUME, self.volume))
            out.append(self._price(TickType.BID, q.bid, q.bid_size))
            out.append(self._price(TickType.ASK, q.ask, q.ask_size))
            counts[stats.TICK_PRICE] += 3
            counts[stats.TICK_SIZE] += 2
            if not self.rt_volume:
                return 5
            vwap = self.vwap_num / self.volume / 100
            single = "true" if rng.random() < 0.7 else "false"
            out.append(
                encode_text(
                    f"{self._p_string}{TickType.RT_VOLUME}\0{format_price(price)};{size};{self.time_ms};"
                    f"{self.volume};{vwap:.8f};{single}\0"
                )
            )
            counts[stats.RTVOLUME] += 1
            return 6
        if r < 0.7:
            if q.move(self.path.at((self.time_ms - self.start_ms) // 1000)):
                out.append(self._price(TickType.BID, q.bid, q.bid_size))
                out.append(self._size(TickType.BID_SIZE, q.bid_size))
            else:
                out.append(self._price(TickType.ASK, q.ask, q.ask_size))
                out.append(self._size(TickType.ASK_SIZE, q.ask_size))
            counts[stats.TICK_PRICE] += 1
            counts[stats.TICK_SIZE] += 1
            return 2
        if r < 0.85:
            q.bid_size = 100 * (1 + int(rng.random() * 20))
            out.append(self._size(TickType.BID_SIZE, q.bid_size))
        else:
            q.ask_size = 100 * (1 + int(rng.random() * 20))
            out.append(self._size(TickType.ASK_SIZE, q.ask_size))
        counts[stats.TICK_SIZE] += 1
        return 1


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


class DepthStream:
    """A depth book kept under the discipline every client applies the same way.

    Inserts only append (position == row count), changes are updates, deletes remove the last row;
    prices stay strictly ordered per side and best bid < best ask.
    """

    __slots__ = (
        "_p_msg",
        "asks",
        "bids",
        "counts",
        "market_makers",
        "path",
        "req_id",
        "rng",
        "rows",
        "smart",
        "spec",
        "symbol",
        "time_ms",
        "version",
    )

    def __init__(
        self,
        req_id: int,
        spec: ContractSpec,
        seed: int,
        rows: int,
        smart: bool,
        version: int,
        counts: dict[str, int],
    ) -> None:
        self.req_id = req_id
        self.spec = spec
        self.symbol = spec.symbol
        self.rng = stream_rng(seed, spec.symbol, "depth")
        self.path = PricePath(seed, spec.symbol, spec.price_cents)
        self.time_ms = 0  # simulated milliseconds since the start, only used to follow the path
        self.rows = rows
        self.smart = smart
        self.version = version
        self.counts = counts
        self.bids: list[list[int | str]] = []
        self.asks: list[list[int | str]] = []
        if smart:
            self.market_makers: tuple[str, ...] = SMART_DEPTH_EXCHANGES
            flag = "\x001" if version >= V_SMART_DEPTH else ""
            self._p_msg = (f"{Out.MARKET_DEPTH_L2}\0001\0{req_id}\0", flag)
        else:
            self.market_makers = ("",)
            self._p_msg = (f"{Out.MARKET_DEPTH}\0001\0{req_id}\0", "")

    def _frame(self, position: int, op: int, side: int, row: list[int | str]) -> bytes:
        head, flag = self._p_msg
        price = format_price(row[0])  # type: ignore[arg-type]
        if self.smart:
            return encode_text(f"{head}{position}\0{row[2]}\0{op}\0{side}\0{price}\0{row[1]}{flag}\0")
        return encode_text(f"{head}{position}\0{op}\0{side}\0{price}\0{row[1]}\0")

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
            mid = self.spec.price_cents
            price = mid if side == _BID else mid + 1
        return [price, self._size(), self._mm()]

    def initial(self, out: list[bytes]) -> int:
        """Build the book from empty: append rows alternately, bid then ask."""
        for _ in range(self.rows):
            for side, book in ((_BID, self.bids), (_ASK, self.asks)):
                row = self._new_row(side)
                book.append(row)
                out.append(self._frame(len(book) - 1, _INSERT, side, row))
        self.counts[stats.DEPTH] += 2 * self.rows
        return 2 * self.rows

    def reset(self, out: list[bytes]) -> int:
        """Error 317 (clients empty their book), then the book rebuilt from scratch."""
        out.append(error_frame(self.version, self.req_id, ErrorCode.DEPTH_RESET, _DEPTH_RESET_TEXT))
        self.counts[stats.DEPTH_RESET] += 1
        self.bids.clear()
        self.asks.clear()
        return 1 + self.initial(out)

    def step(self, out: list[bytes]) -> int:
        rng = self.rng
        self.time_ms += 1 + int(rng.random() * 50)
        if self.bids and self.asks and rng.random() < 0.05:
            gap = self.path.at(self.time_ms // 1000) * 2 - int(self.bids[0][0]) - int(self.asks[0][0])
            if abs(gap) > 4:
                return self._shift(out, 1 if gap > 0 else -1)
        side = _BID if rng.random() < 0.5 else _ASK
        book = self.bids if side == _BID else self.asks
        n = len(book)
        r = rng.random()
        if r < 0.08 and n == self.rows and n > 1:
            row = book.pop()
            out.append(self._frame(n - 1, _DELETE, side, row))
        elif (r < 0.16 or n < self.rows - 2) and n < self.rows:
            row = self._new_row(side)
            book.append(row)
            out.append(self._frame(n, _INSERT, side, row))
        else:
            pos = int(rng.random() * n)
            row = book[pos]
            if r < 0.45:
                self._reprice(side, book, pos, row)
            row[1] = self._size()
            if rng.random() < 0.2:
                row[2] = self._mm()
            out.append(self._frame(pos, _UPDATE, side, row))
        self.counts[stats.DEPTH] += 1
        return 1

    def _shift(self, out: list[bytes], ticks: int) -> int:
        """Move the whole book by ``ticks`` to follow the market: one update per row, best first."""
        n = 0
        # The side moving away from the other goes first, so the book never crosses in between.
        sides = (
            ((_ASK, self.asks), (_BID, self.bids)) if ticks > 0 else ((_BID, self.bids), (_ASK, self.asks))
        )
        for side, book in sides:
            for pos, row in enumerate(book):
                row[0] = int(row[0]) + ticks
                out.append(self._frame(pos, _UPDATE, side, row))
                n += 1
        self.counts[stats.DEPTH] += n
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

_TBT_KINDS: Final = {
    TickByTickType.LAST: stats.TBT_LAST,
    TickByTickType.ALL_LAST: stats.TBT_ALL_LAST,
    TickByTickType.BID_ASK: stats.TBT_BID_ASK,
    TickByTickType.MID_POINT: stats.TBT_MIDPOINT,
}


class TickByTickStream:
    """reqTickByTickData: trades (Last, AllLast), quotes (BidAsk) or midpoints (MidPoint)."""

    __slots__ = (
        "_head",
        "counts",
        "ignore_size",
        "kind",
        "path",
        "quote",
        "req_id",
        "rng",
        "start_ms",
        "symbol",
        "tbt",
        "time_ms",
    )

    def __init__(
        self,
        req_id: int,
        spec: ContractSpec,
        seed: int,
        start_ms: int,
        tbt: TickByTickType,
        ignore_size: bool,
        counts: dict[str, int],
    ) -> None:
        self.req_id = req_id
        self.symbol = spec.symbol
        self.tbt = tbt
        self.kind = _TBT_KINDS[tbt]
        self.rng = stream_rng(seed, spec.symbol, self.kind)
        self.path = PricePath(seed, spec.symbol, spec.price_cents)
        self.quote = Quote(self.rng, spec.price_cents)
        self.ignore_size = ignore_size
        self.counts = counts
        self.start_ms = start_ms
        self.time_ms = start_ms
        self._head = f"{Out.TICK_BY_TICK}\0{req_id}\0{int(tbt)}\0"

    def step(self, out: list[bytes]) -> int:
        rng, q = self.rng, self.quote
        self.time_ms += 1 + int(rng.random() * 50)
        seconds = self.time_ms // 1000
        target = self.path.at((self.time_ms - self.start_ms) // 1000)
        tbt = self.tbt
        if tbt <= TickByTickType.ALL_LAST:
            if rng.random() < 0.5:
                q.move(target)
            price, size, _ = q.trade()
            if tbt == TickByTickType.ALL_LAST:
                exchange = TRADE_EXCHANGES[int(rng.random() * len(TRADE_EXCHANGES))]
                mask = 2 if rng.random() < 0.01 else 0  # bit 2: unreported
            else:
                exchange = TRADE_EXCHANGES[int(rng.random() * 6)]
                mask = 0
            conditions = "I" if size < 100 else ""  # odd lot
            body = f"{seconds}\0{format_price(price)}\0{size}\0{mask}\0{exchange}\0{conditions}\0"
        elif tbt == TickByTickType.BID_ASK:
            if self.ignore_size or rng.random() < 0.6:
                q.move(target)
            else:
                q.bid_size = 100 * (1 + int(rng.random() * 20))
            body = (
                f"{seconds}\0{format_price(q.bid)}\0{format_price(q.ask)}\0{q.bid_size}\0{q.ask_size}\0{0}\0"
            )
        else:
            before = q.bid + q.ask
            while q.bid + q.ask == before:
                q.move(target)
            half = q.bid + q.ask  # the midpoint in half cents
            body = f"{seconds}\0{half // 200}.{half % 200 * 5:03d}\0"
        out.append(encode_text(self._head + body))
        self.counts[self.kind] += 1
        return 1
