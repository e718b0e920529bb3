"""Gaps in the live trades: found from the state the daemon already owns, closed when live is complete again.

A symbol with time & sales has a gap while any *cause* holds for it:

==============  =================================================================================
connection      the IBKR connection is not up (a disconnect, a gateway restart; also the daemon's
                own downtime, which starts at the newest trade stored before it stopped)
ib_connectivity IB's 1100 is outstanding (until 1101/1102)
stall           connected in the regular session, yet no market data at all for ``stall_seconds``
subscription    the symbol's trade stream is rejected (until it is active again)
overload        the pipeline shed trades of the symbol (until it lets trades through again); the gap
                opens the moment the first one is shed and starts no later than that trade's second
==============  =================================================================================

While a gap is open every live trade of its symbol is recorded (as the multiset the edge rule in
edges.py needs); the gap also starts with the trades of the last live second before it. When the last
cause clears, live trades are complete again from ``settle_seconds`` later (the resubscription has gone
out and the first trades arrived): that second ends the window. Once the tracker has seen data received
``LATENCY_SECONDS`` after it (trades of that second still on their way, or waiting in the pipeline's
queue, have then passed), the gap is ready to fill.

The tracker sees live market data as a pipeline sink, in the order the QuestDB writer gets it: per read
it notes the time (for stalls), per event it does one type check, per trade a few attribute reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingestion.config import BackfillConfig
from ingestion.events import Event, Trade
from ingestion.history.edges import StoredTrade, TapeTrade
from ingestion.history.windows import Calendar
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.timefmt import iso

# Live trades of a second are all stored this long after the second ended (queue and flush included).
LATENCY_SECONDS = 2.0
# With no data at all after a gap's end (a quiet market), it is filled this much later anyway.
QUIET_SECONDS = 10.0
REJECTED_STATES = frozenset({"rejected_limit", "not_entitled", "invalid_symbol"})


def trade_second(trade: Trade) -> int:
    """The exchange's second of a trade (its receive time's when IB sent none)."""
    exchange_ns = trade.exchange_time_ns
    return (exchange_ns if exchange_ns is not None else trade.timestamp_ns) // 1_000_000_000


def utc_second(second: int) -> str:
    return iso(datetime.fromtimestamp(second, UTC))


@dataclass(slots=True)
class Gap:
    """One symbol's interval without (complete) live trades."""

    symbol: str
    start_s: int | None  # None until the daemon's own downtime start is read from QuestDB
    opened_at: float  # wall clock
    causes: set[str]
    first_cause: str
    live: list[Trade] = field(default_factory=list)  # seen live since the gap's first second
    cleared_at: float | None = None
    settle_seconds: float = 5.0
    edge: list[StoredTrade] = field(default_factory=list)  # read from QuestDB: the downtime's first second

    def stored(self) -> list[StoredTrade]:
        """Every trade stored for the window so far: live ones, and those read back from QuestDB."""
        return self.edge + [
            StoredTrade(TapeTrade(trade_second(t), t.price, t.size, t.exchange), t.timestamp_ns // 1000)
            for t in self.live
        ]

    @property
    def end_s(self) -> int | None:
        if self.causes or self.cleared_at is None:
            return None
        return int(self.cleared_at + self.settle_seconds)

    def ready(self, now: float, seen_until: float) -> bool:
        """Closed, and every live trade of its last second has reached the tracker: the tracker has seen
        data received ``LATENCY_SECONDS`` after that second (so a backlog in the queue only delays this),
        or nothing at all came for ``QUIET_SECONDS`` more (a quiet market)."""
        end = self.end_s
        if end is None or self.start_s is None:
            return False
        after = end + 1 + LATENCY_SECONDS
        return now >= after and (seen_until >= after or now >= after + QUIET_SECONDS)

    def describe(self) -> str:
        start = utc_second(self.start_s) if self.start_s is not None else "?"
        end = utc_second(self.end_s + 1) if self.end_s is not None else "open"
        return f"{self.symbol} {start} .. {end} ({self.first_cause})"


@dataclass(slots=True)
class _LastSecond:
    second: int
    trades: list[Trade]


class GapTracker:
    """Opens, records and closes gaps; the backfill takes the ready ones with :meth:`take_ready`."""

    name = "gaps"

    def __init__(
        self,
        config: BackfillConfig,
        symbols: Sequence[str],
        state: ConnectionState,
        registry: SubscriptionRegistry,
        calendar: Calendar,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._symbols = tuple(symbols)
        self._tracked = frozenset(symbols)
        self._state = state
        self._registry = registry
        self._last_event_ns: int | None = None
        self._calendar = calendar
        self._now = now
        self._last: dict[str, _LastSecond] = {}
        self._covered: dict[str, int] = {}  # last second of the last window handed to the backfill
        self.open: dict[str, Gap] = {}
        self._stalled_since: float | None = None
        self._shed_from: dict[str, int] = {}  # symbol -> second of its first trade shed, while shedding
        self._opened: list[Gap] = []  # opened between two checks (by shed trades): reported by the next
        self._connected_since: float | None = None
        # The daemon's own downtime: every symbol is in a gap from start-up until the first connection,
        # with its start read from QuestDB (resolve_start) and its live trades recorded meanwhile.
        started = now()
        for symbol in self._symbols:
            self.open[symbol] = Gap(
                symbol, None, started, {"connection"}, "downtime", settle_seconds=config.settle_seconds
            )

    # -- the pipeline's side: live trades ---------------------------------------------------------

    def accept(self, event: Event) -> None:
        self.accept_many((event,))

    def accept_many(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self._last_event_ns = events[-1].timestamp_ns
        # The events themselves are kept (they never change): converted only when a gap is filled.
        for trade in [e for e in events if type(e) is Trade]:
            second = trade_second(trade)
            last = self._last.get(trade.symbol)
            if last is None or last.second != second:
                self._last[trade.symbol] = _LastSecond(second, [trade])
            else:
                last.trades.append(trade)
            gap = self.open.get(trade.symbol)
            if gap is not None:
                gap.live.append(trade)

    # -- the pipeline's side: trades shed under overload (overload.ShedTrades) ---------------------

    def trades_shed(self, trades: Sequence[Trade]) -> None:
        """The pipeline shed ``trades``: their symbols' gaps open now, before the tracker sees any later
        live trade, so the window starts at the last live second and every live trade in it is recorded."""
        for trade in trades:
            symbol = trade.symbol
            if symbol in self._shed_from or symbol not in self._tracked:
                continue
            self._shed_from[symbol] = trade_second(trade)
            gap = self.open.get(symbol)
            if gap is None:
                self._opened.append(self._open(symbol, {"overload"}, self._now()))
            else:
                gap.causes.add("overload")
                gap.cleared_at = None

    def trade_shedding_over(self) -> None:
        """Trades go through again: the next check clears the cause, and the window ends as for any other."""
        self._shed_from.clear()

    # -- causes ------------------------------------------------------------------------------------

    def resolve_start(self, symbol: str, newest: int | None, stored: list[StoredTrade]) -> None:
        """The daemon's downtime gap of ``symbol`` starts at ``newest`` (second of the newest stored trade,
        within the look-back), with ``stored`` the trades of that second; None: nothing to fill."""
        gap = self.open.get(symbol)
        if gap is None or gap.first_cause != "downtime" or gap.start_s is not None:
            return
        if newest is None:
            del self.open[symbol]
            return
        gap.start_s = newest
        gap.edge = stored

    def pending_start(self) -> list[str]:
        return [s for s, g in self.open.items() if g.start_s is None]

    def check(self) -> list[Gap]:
        """Apply the current causes; returns the gaps opened by this check."""
        now = self._now()
        opened = []
        connection = self._state.status != "connected"
        if connection:
            self._connected_since = None
        elif self._connected_since is None:
            self._connected_since = now
        broker = self._state.broker_connectivity == "lost"
        stall = self._stalled(now) if not connection else False
        for symbol in self._symbols:
            causes = {"overload"} if symbol in self._shed_from else set()
            if connection:
                causes.add("connection")
            if broker:
                causes.add("ib_connectivity")
            if stall:
                causes.add("stall")
            if self._rejected(symbol):
                causes.add("subscription")
            gap = self._apply(symbol, causes, now)
            if gap is not None:
                opened.append(gap)
        opened[:0], self._opened = self._opened, []
        return opened

    def _apply(self, symbol: str, causes: set[str], now: float) -> Gap | None:
        gap = self.open.get(symbol)
        if gap is None:
            return self._open(symbol, causes, now) if causes else None
        if causes:
            gap.causes = set(causes)
            gap.cleared_at = None
        elif gap.causes:
            gap.causes.clear()
            gap.cleared_at = now
        return None

    def _open(self, symbol: str, causes: set[str], now: float) -> Gap:
        last = self._last.get(symbol)
        covered = self._covered.get(symbol)
        if last is not None and (covered is None or last.second > covered):
            start, trades = last.second, list(last.trades)
        elif covered is not None:
            # No live trade since the last window filled back: start right after it, not before it.
            start, trades = covered + 1, []
        else:
            start, trades = int(now), []
        shed = self._shed_from.get(symbol)
        if shed is not None and shed < start and (covered is None or shed > covered):
            # A shed trade stamped before the last live second (or before now): the window covers it.
            start = shed
        settle = self._config.settle_seconds
        gap = Gap(symbol, start, now, set(causes), sorted(causes)[0], trades, settle_seconds=settle)
        self.open[symbol] = gap
        return gap

    def _rejected(self, symbol: str) -> bool:
        streams = self._registry.streams.get(symbol)
        entry = streams.time_and_sales if streams is not None else None
        return entry is not None and entry.state in REJECTED_STATES

    def _stalled(self, now: float) -> bool:
        """No market data at all for ``stall_seconds`` while connected in the regular session."""
        last_ns = self._last_event_ns
        since = max(last_ns / 1e9 if last_ns else 0.0, self._connected_since or now)
        quiet = now - since
        if quiet < self._config.stall_seconds:
            return False
        return self._calendar.session_at(datetime.fromtimestamp(now, UTC)) == "regular"

    # -- the backfill's side -----------------------------------------------------------------------

    def covered(self, gap: Gap) -> None:
        """``gap``'s window is in the backfill's hands: a later gap of its symbol starts after it."""
        end = gap.end_s
        if end is not None:
            self._covered[gap.symbol] = max(end, self._covered.get(gap.symbol, end))

    def take_ready(self) -> list[Gap]:
        """Gaps whose window is closed and whose live trades are all recorded; they leave the tracker."""
        now = self._now()
        seen_until = (self._last_event_ns or 0) / 1e9
        ready = [g for g in self.open.values() if g.ready(now, seen_until)]
        for gap in ready:
            del self.open[gap.symbol]
            self.covered(gap)
        return ready

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "symbol": g.symbol,
                "start": utc_second(g.start_s) if g.start_s is not None else None,
                "causes": sorted(g.causes),
                "cause": g.first_cause,
            }
            for g in self.open.values()
        ]
