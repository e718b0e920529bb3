"""Bars for reqHistoricalData: IB's bar sizes and durations, and minutes from the tape or the past.

Every bar is an aggregate of minutes. Minutes since the simulator started come from the market's
own minute aggregates (the trades and quotes it produced, sent or not); minutes before that come
from a deterministic synthetic past: per symbol a mean-reverting daily walk that ends where the
live market starts, and per session a Brownian bridge of minutes between its open and close.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np

from ingestion.simulator.hours import NEW_YORK, TradingHours, TradingSession
from ingestion.simulator.tape import MinuteBar, QuoteTape, TradeTape

MINUTE_MS: Final = 60_000
# How far back the synthetic past reaches (IB serves years of daily bars; the daemon asks for 2).
PAST_DAYS: Final = 3 * 365

# IB's legal bar sizes (error 321 lists them) that this simulator serves, in seconds. Bars under a
# minute come from the tape itself, so only for the time it still holds.
BAR_SIZES: Final = {
    "1 secs": 1,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
    "1 day": 86400,
}
DAY: Final = 86400

# IB's step sizes (TWS API docs, "Historical Data Limitations", Step Sizes): for a duration, the
# smallest and largest bar allowed. A duration between two rows takes the row at or below it.
STEP_SIZES: Final = (
    (60, 1, 60),
    (120, 1, 120),
    (1800, 1, 1800),
    (3600, 5, 3600),
    (14400, 10, 10800),
    (28800, 30, 28800),
    (DAY, 60, DAY),
    (2 * DAY, 120, DAY),
    (7 * DAY, 180, 7 * DAY),
    (30 * DAY, 1800, 30 * DAY),
    (365 * DAY, DAY, 30 * DAY),
)

# Days of synthetic minutes kept at once (each up to 1,440 minutes in six columns, 70 KB).
CACHED_DAYS: Final = 16

_UNIT_SECONDS: Final = {"S": 1, "D": DAY, "W": 7 * DAY, "M": 30 * DAY, "Y": 365 * DAY}


@dataclass(frozen=True, slots=True)
class Duration:
    """An IB duration string such as ``"5 D"``: ``count`` of ``unit`` (S, D, W, M, Y)."""

    count: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        parts = text.strip().split()
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in _UNIT_SECONDS or int(parts[0]) < 1:
            msg = f"bad duration {text!r}"
            raise ValueError(msg)
        return cls(int(parts[0]), parts[1])

    @property
    def seconds(self) -> int:
        return self.count * _UNIT_SECONDS[self.unit]


def step_allowed(duration: Duration, bar_seconds: int) -> bool:
    """Whether IB's step-size table allows bars of ``bar_seconds`` over ``duration``."""
    seconds = duration.seconds
    row = STEP_SIZES[0]
    for candidate in STEP_SIZES:
        if candidate[0] <= seconds:
            row = candidate
    _, smallest, largest = row
    return smallest <= bar_seconds <= largest


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute's aggregates, the unit every bar is built from (prices in cents)."""

    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    notional: float
    count: int
    mid_open: float
    mid_high: float
    mid_low: float
    mid_close: float
    bid_sum: float
    ask_sum: float
    quotes: int
    ask_high: float
    bid_low: float


def live_minute(minute: int, bar: MinuteBar) -> Minute:
    """A minute of the running market, from its aggregates."""
    return Minute(
        minute * MINUTE_MS,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.notional,
        bar.count,
        bar.mid_open / 2,
        bar.mid_high / 2,
        bar.mid_low / 2,
        bar.mid_close / 2,
        bar.bid_sum,
        bar.ask_sum,
        bar.quotes,
        bar.ask_high,
        bar.bid_low,
    )


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar as HISTORICAL_DATA carries it (prices in dollars)."""

    start_ms: int
    day: dt.date | None  # set for daily bars, which IB labels by date
    open: float
    high: float
    low: float
    close: float
    volume: int
    wap: float
    count: int


class SyntheticPast:
    """The deterministic past of one symbol before ``start_ms``."""

    def __init__(self, seed: int, symbol: str, price_cents: int, start_ms: int, hours: TradingHours) -> None:
        self._key = (seed, zlib.crc32(symbol.encode()))
        self.start_ms = start_ms
        self._hours = hours
        self._sessions = hours.sessions(start_ms - PAST_DAYS * DAY * 1000, start_ms, rth=False)
        n = len(self._sessions)
        # A mean-reverting walk of log prices, drawn backwards from the start (1% a day, within ~5%).
        shocks = np.random.default_rng([*self._key, 0]).normal(0.0, 0.01, n)
        logs = np.zeros(n + 1)
        for k in range(n - 1, -1, -1):
            logs[k] = logs[k + 1] * 0.98 + shocks[k]
        # Session k opens at closes[k] and closes at closes[k + 1]; the last one closes at the start.
        self._closes = price_cents * np.exp(logs)
        self._index = {s.day: k for k, s in enumerate(self._sessions)}
        # Minute columns of the few days asked for last (intraday requests cover days, not years),
        # and every daily bar made (a few dozen bytes each).
        self._days: dict[dt.date, tuple[np.ndarray, ...]] = {}
        self._day_bars: dict[tuple[dt.date, int, int, str], Bar | None] = {}

    @property
    def first_ms(self) -> int:
        return self._sessions[0].start_ms if self._sessions else self.start_ms

    def _columns(self, session: TradingSession) -> tuple[np.ndarray, ...] | None:
        """Minute starts and OHLCV (cents) of ``session``'s day within its bounds, or None."""
        k = self._index.get(session.day)
        if k is None:
            return None
        columns = self._days.get(session.day)
        if columns is None:
            if len(self._days) >= CACHED_DAYS:
                del self._days[next(iter(self._days))]
            columns = self._days[session.day] = self._make(k)
        starts = columns[0]
        lo, hi = np.searchsorted(starts, [session.start_ms, session.end_ms])
        return tuple(column[lo:hi] for column in columns)

    def minutes(self, session: TradingSession) -> list[Minute]:
        """The synthetic minutes of ``session`` before the start."""
        columns = self._columns(session)
        if columns is None:
            return []
        out = []
        for start, o, h, lo, c, v in zip(*(column.tolist() for column in columns), strict=True):
            mid = (o + c) / 2
            out.append(
                Minute(
                    start, o, h, lo, c, v, (h + lo + c) / 3 * v, max(1, v // 150),
                    o, h, lo, c, mid - 0.5, mid + 0.5, 1, h + 0.5, lo - 0.5,
                )
            )  # fmt: skip
        return out

    def day_bar(self, session: TradingSession, what: str) -> Bar | None:
        """The daily bar of a session wholly before the start, straight from the columns."""
        key = (session.day, session.start_ms, session.end_ms, what)
        if key not in self._day_bars:
            self._day_bars[key] = self._make_day_bar(session, what)
        return self._day_bars[key]

    def _make_day_bar(self, session: TradingSession, what: str) -> Bar | None:
        columns = self._columns(session)
        if columns is None or not len(columns[0]):
            return None
        _, o, h, lo, c, v = columns
        if what == "TRADES":
            volume = int(v.sum())
            wap = float(((h + lo + c) / 3 * v).sum()) / volume / 100
            count = int(np.maximum(1, v // 150).sum())
            return Bar(
                session.start_ms, session.day, float(o[0]) / 100, float(h.max()) / 100,
                float(lo.min()) / 100, float(c[-1]) / 100, volume, round(wap, 4), count,
            )  # fmt: skip
        if what == "MIDPOINT":
            return Bar(
                session.start_ms, session.day, float(o[0]) / 100, float(h.max()) / 100,
                float(lo.min()) / 100, float(c[-1]) / 100, -1, -1.0, -1,
            )  # fmt: skip
        mids = (o + c) / 2
        return Bar(
            session.start_ms, session.day, round(float((mids - 0.5).mean()) / 100, 4),
            float((h + 0.5).max()) / 100, float((lo - 0.5).min()) / 100,
            round(float((mids + 0.5).mean()) / 100, 4), -1, -1.0, -1,
        )  # fmt: skip

    def _make(self, k: int) -> tuple[np.ndarray, ...]:
        """Session k's minutes (extended hours) before the start: a bridge from open to close."""
        s = self._sessions[k]
        first = s.start_ms // MINUTE_MS
        m = max(min(s.end_ms, self.start_ms) // MINUTE_MS - first, 0)
        rng = np.random.default_rng([*self._key, s.day.toordinal()])
        sigma = 0.01 / math.sqrt(390)
        walk = np.cumsum(rng.normal(0.0, sigma, m))
        t = np.arange(1, m + 1) / max(m, 1)
        target = math.log(self._closes[k + 1] / self._closes[k])
        closes = self._closes[k] * np.exp(walk - t * (walk[-1] if m else 0.0) + t * target)
        opens = np.concatenate(([self._closes[k]], closes[:-1]))[:m]
        wiggle = np.abs(rng.normal(0.0, sigma / 2, (2, m)))
        closes, opens = np.round(closes), np.round(opens)
        highs = np.maximum(np.round(np.maximum(opens, closes) * (1 + wiggle[0])), np.maximum(opens, closes))
        lows = np.minimum(np.round(np.minimum(opens, closes) * (1 - wiggle[1])), np.minimum(opens, closes))
        volumes = (rng.lognormal(0.0, 0.5, m) * 2000).astype(np.int64) + 100
        starts = (first + np.arange(m, dtype=np.int64)) * MINUTE_MS
        return starts, opens, highs, lows, closes, volumes


def label(start_ms: int, format_date: int, hours: TradingHours) -> str:
    """An intraday bar's time as IB formats it: local time with its zone, or epoch seconds."""
    if format_date == 2:
        return str(start_ms // 1000)
    zone = NEW_YORK if hours.name == "nyse" else dt.UTC
    name = "US/Eastern" if hours.name == "nyse" else "UTC"
    return dt.datetime.fromtimestamp(start_ms / 1000, zone).strftime(f"%Y%m%d %H:%M:%S {name}")


def bucket_start(t_ms: int, bar_seconds: int, hours: TradingHours) -> int:
    """The start of the bar containing ``t_ms``: multiples of the bar size from local midnight."""
    zone = NEW_YORK if hours.name == "nyse" else dt.UTC
    local = dt.datetime.fromtimestamp(t_ms / 1000, zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    into = int((local - midnight).total_seconds()) // bar_seconds * bar_seconds
    return int((midnight + dt.timedelta(seconds=into)).timestamp() * 1000)


def aggregate(minutes: list[Minute], what: str, start_ms: int, day: dt.date | None) -> Bar | None:
    """One bar from its minutes; None for a TRADES bar without trades (IB leaves it out)."""
    if what == "TRADES":
        traded = [m for m in minutes if m.count]
        if not traded:
            return None
        volume = sum(m.volume for m in traded)
        wap = sum(m.notional for m in traded) / volume / 100
        return Bar(
            start_ms,
            day,
            traded[0].open / 100,
            max(m.high for m in traded) / 100,
            min(m.low for m in traded) / 100,
            traded[-1].close / 100,
            volume,
            round(wap, 4),
            sum(m.count for m in traded),
        )
    if what == "MIDPOINT":
        return Bar(
            start_ms,
            day,
            minutes[0].mid_open / 100,
            max(m.mid_high for m in minutes) / 100,
            min(m.mid_low for m in minutes) / 100,
            minutes[-1].mid_close / 100,
            -1,
            -1.0,
            -1,
        )
    # BID_ASK, as IB defines it: open = average bid, high = highest ask, low = lowest bid,
    # close = average ask over the bar.
    quotes = sum(m.quotes for m in minutes)
    return Bar(
        start_ms,
        day,
        round(sum(m.bid_sum for m in minutes) / quotes / 100, 4),
        max(m.ask_high for m in minutes) / 100,
        min(m.bid_low for m in minutes) / 100,
        round(sum(m.ask_sum for m in minutes) / quotes / 100, 4),
        -1,
        -1.0,
        -1,
    )


def tape_bars(
    trades: TradeTape, quotes: QuoteTape, lo: int, hi: int, bar_seconds: int, what: str
) -> list[Bar]:
    """Bars under a minute over ``[lo, hi)``, straight from the tape (buckets without data left out)."""
    step = bar_seconds * 1000
    bars = []
    if what == "TRADES":
        groups: dict[int, list[int]] = {}
        for i in range(trades.index(lo), trades.index(hi)):
            groups.setdefault(trades.time_ms[i] // step * step, []).append(i)
        for key, members in groups.items():
            prices = [trades.price[i] for i in members]
            sizes = [trades.size[i] for i in members]
            volume = sum(sizes)
            wap = sum(p * q for p, q in zip(prices, sizes, strict=True)) / volume / 100
            first, last = prices[0] / 100, prices[-1] / 100
            high, low = max(prices) / 100, min(prices) / 100
            bars.append(Bar(key, None, first, high, low, last, volume, round(wap, 4), len(members)))
        return bars
    books: dict[int, list[tuple[int, int]]] = {}
    for i in range(quotes.index(lo), quotes.index(hi)):
        quote = quotes.quote(i)
        books.setdefault(quote.time_ms // step * step, []).append((quote.bid, quote.ask))
    for key, book in books.items():
        bids = [bid for bid, _ in book]
        asks = [ask for _, ask in book]
        if what == "MIDPOINT":
            mids = [bid + ask for bid, ask in book]
            bars.append(
                Bar(key, None, mids[0] / 200, max(mids) / 200, min(mids) / 200, mids[-1] / 200, -1, -1.0, -1)
            )
        else:
            average_bid = round(sum(bids) / len(bids) / 100, 4)
            average_ask = round(sum(asks) / len(asks) / 100, 4)
            bars.append(
                Bar(key, None, average_bid, max(asks) / 100, min(bids) / 100, average_ask, -1, -1.0, -1)
            )
    return bars
