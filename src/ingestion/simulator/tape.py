"""What the market produced: trades and quotes in compact columns, and per-minute aggregates.

A tape keeps its newest ``limit`` records in ``array`` columns (18 bytes a trade, 24 a quote), so
that hours of a busy market fit in tens of megabytes; beyond the limit the oldest quarter is
dropped at once (amortised O(1) per record). Minute aggregates, from which every bar is built, are
kept for ten days: one small row per minute and symbol.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import Final

# The exchanges a trade prints on; a trade stores its index into this tuple.
TRADE_EXCHANGES: Final = ("ARCA", "NASDAQ", "BATS", "EDGX", "IEX", "NYSE", "DRCTEDGE", "MEMX", "FINRA")
UNREPORTED: Final = 2  # IB's TickAttribLast mask bit 2 (bit 1 is pastLimit)
ODD_LOT: Final = "I"


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade as every view of it shows it (tick-by-tick, RTVolume, historical TRADES)."""

    time_ms: int
    price_cents: int
    size: int
    exchange: str
    mask: int

    @property
    def conditions(self) -> str:
        return ODD_LOT if self.size < 100 else ""


@dataclass(frozen=True, slots=True)
class Quote:
    """One top-of-book state, in force from ``time_ms`` until the next one."""

    time_ms: int
    bid: int
    ask: int
    bid_size: int
    ask_size: int


class TradeTape:
    """The trades of one symbol, oldest first, at most ``limit`` of them (17 bytes a trade)."""

    __slots__ = ("count", "flags", "limit", "price", "size", "time_ms")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0  # every trade ever appended, dropped ones included
        self.time_ms = array("q")
        self.price = array("i")
        self.size = array("i")
        self.flags = array("B")  # exchange index * 4 + attribute mask

    def append(self, time_ms: int, price: int, size: int, exchange: int, mask: int) -> None:
        self.time_ms.append(time_ms)
        self.price.append(price)
        self.size.append(size)
        self.flags.append(exchange << 2 | mask)
        self.count += 1
        if len(self.time_ms) > self.limit:
            drop = max(1, self.limit // 4)
            for column in (self.time_ms, self.price, self.size, self.flags):
                del column[:drop]

    def __len__(self) -> int:
        return len(self.time_ms)

    def first_ms(self) -> int | None:
        """Time of the oldest trade still held."""
        return self.time_ms[0] if self.time_ms else None

    def index(self, time_ms: int) -> int:
        """Position of the first held trade at or after ``time_ms``."""
        return bisect_left(self.time_ms, time_ms)

    def trade(self, i: int) -> Trade:
        flags = self.flags[i]
        return Trade(self.time_ms[i], self.price[i], self.size[i], TRADE_EXCHANGES[flags >> 2], flags & 3)

    def between(self, start_ms: int, end_ms: int) -> list[Trade]:
        """Held trades with ``start_ms <= time_ms < end_ms``, oldest first."""
        return [self.trade(i) for i in range(self.index(start_ms), self.index(end_ms))]


class QuoteTape:
    """The top-of-book changes of one symbol, oldest first, at most ``limit`` of them (24 bytes
    each: both prices in one column, both sizes in another, each pair packed as high << 32 | low).

    The market appends to the columns itself (its hot path) and calls ``trim`` past the limit.
    """

    __slots__ = ("limit", "prices", "sizes", "time_ms")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.time_ms = array("q")
        self.prices = array("q")
        self.sizes = array("q")

    def append(self, time_ms: int, bid: int, ask: int, bid_size: int, ask_size: int) -> None:
        self.time_ms.append(time_ms)
        self.prices.append(bid << 32 | ask)
        self.sizes.append(bid_size << 32 | ask_size)
        if len(self.time_ms) > self.limit:
            self.trim()

    def trim(self) -> None:
        """Drop the oldest quarter."""
        drop = max(1, self.limit // 4)
        for column in (self.time_ms, self.prices, self.sizes):
            del column[:drop]

    def __len__(self) -> int:
        return len(self.time_ms)

    def index(self, time_ms: int) -> int:
        return bisect_left(self.time_ms, time_ms)

    def quote(self, i: int) -> Quote:
        prices, sizes = self.prices[i], self.sizes[i]
        return Quote(self.time_ms[i], prices >> 32, prices & 0xFFFFFFFF, sizes >> 32, sizes & 0xFFFFFFFF)


class MinuteBar:
    """Aggregates of one minute: trades (OHLC, volume, notional, count) and quotes (mid OHLC in
    half cents, bid/ask sums for time-free averages, highest ask, lowest bid)."""

    __slots__ = (
        "ask_high",
        "ask_sum",
        "bid_low",
        "bid_sum",
        "close",
        "count",
        "high",
        "low",
        "mid_close",
        "mid_high",
        "mid_low",
        "mid_open",
        "notional",
        "open",
        "quotes",
        "volume",
    )

    def __init__(self, bid: int, ask: int) -> None:
        mid = bid + ask
        self.open = self.high = self.low = self.close = 0
        self.volume = self.notional = self.count = 0
        self.mid_open = self.mid_high = self.mid_low = self.mid_close = mid
        self.bid_sum, self.ask_sum, self.quotes = bid, ask, 1
        self.ask_high, self.bid_low = ask, bid

    def add_trade(self, price: int, size: int) -> None:
        if not self.count:
            self.open = self.high = self.low = price
        elif price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += size
        self.notional += price * size
        self.count += 1
