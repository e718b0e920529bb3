"""The history component: gaps found and filled, bars kept up to date, all through one pacer.

Two loops, both on the event loop and neither in the path of live data:

- the *watch* loop applies the gap causes every half second (gaps.py) and reports each gap found;
- the *work* loop, one request at a time: first the gaps ready to fill (oldest first), then the bar
  series due (at start, and whenever a session closes), one symbol and bar size at a time, so a gap
  found meanwhile waits for at most one bar series.

Failures never loop: a request that times out, finds no connection or meets a 162 is retried after
``retry_seconds``, doubling up to eight times that; at most ``MAX_RETRIES`` times for a 162, and until
``give_up_hours`` for an HMDS that does not answer; then the gap (or bar series) is reported once as
not filled, with the reason, and the loop goes on with the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from ingestion.bus import EventBus
from ingestion.config import BarSeriesConfig, HistoryConfig
from ingestion.history import pending as saved_gaps
from ingestion.history.backfill import Backfiller, GapFill
from ingestion.history.bars import BarPlanner, BarSync
from ingestion.history.client import (
    ConnectionSource,
    HistoryClient,
    HistoryError,
    HmdsDown,
    NoData,
    NotConnected,
    PacingViolation,
    RequestTimedOut,
)
from ingestion.history.gaps import Gap, GapTracker, utc_second
from ingestion.history.pacer import Pacer
from ingestion.history.store import HistoryStore
from ingestion.history.windows import Calendar
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.logging import get_logger
from ingestion.market_session import NEW_YORK
from ingestion.metrics import Metrics
from ingestion.sinks.questdb import QuestDBWriter
from ingestion.sinks.schema import QuestDBUnavailableError, SchemaMismatchError
from ingestion.timefmt import iso

log = get_logger("history")

WATCH_SECONDS = 0.5
IDLE_SECONDS = 0.5
MAX_RETRIES = 3
# How far before the look-back the daemon's downtime start is looked for, to report what lies beyond it.
OLDER_SECONDS = 31 * 86400
# /health shows history as "failing" this long after its last error.
ERROR_SHOWN_SECONDS = 600.0


@dataclass(slots=True)
class _Pending:
    gap: Gap
    fill: GapFill
    due: float = 0.0  # monotonic
    served: float = 0.0  # monotonic: the gap served least recently goes next
    failures: int = 0
    restored: bool = False  # from the state file: its live trades are read back from QuestDB first


@dataclass(slots=True)
class _Counts:
    gaps_found: int = 0
    gaps_filled: int = 0
    gaps_unfilled: int = 0
    trades_recovered: int = 0
    bars_stored: int = 0
    requests: int = 0
    pacing_violations: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    last_error_monotonic: float | None = None
    bars_up_to_date: dict[str, bool] = field(default_factory=dict)
    bars_synced_at: dict[str, str | None] = field(default_factory=dict)


class HistoryService:
    """Owns the pacer and the work loop; reads the gap tracker, which the pipeline feeds."""

    def __init__(
        self,
        config: HistoryConfig,
        tracker: GapTracker,
        symbols: list[str],
        *,
        calendar: Calendar,
        state: ConnectionState,
        registry: SubscriptionRegistry,
        questdb: QuestDBWriter,
        http: Callable[[], httpx.AsyncClient],
        connection: ConnectionSource,
        bus: EventBus,
        metrics: Metrics,
        now: Callable[[], float] = time.time,
        client: HistoryClient | None = None,
        state_path: Path | None = None,
    ) -> None:
        self._state_path = state_path
        self._config = config
        self._symbols = symbols
        self._calendar = calendar
        self._state = state
        self._questdb = questdb
        self._http_factory = http
        self._bus = bus
        self._metrics = metrics
        self._now = now
        self._started = now()
        self.pacer = Pacer(config.pacing, on_wait=metrics.history_pacing_waits.inc)
        self.client = client or HistoryClient(
            connection,
            registry,
            self.pacer,
            metrics,
            timeout_seconds=config.pacing.request_timeout_seconds,
            hmds_down=lambda: any(
                f.kind == "historical" and f.state == "broken" for f in state.farms.values()
            ),
        )
        self.tracker = tracker
        self._backfiller = Backfiller(self.client, calendar, on_request=self._count_request)
        self._bars = BarSync(
            self.client,
            BarPlanner(calendar, now),
            what_to_show=config.what_to_show,
            use_rth=config.use_rth,
            on_request=self._count_request,
        )
        self._queue: list[_Pending] = []
        self._bars_due: list[tuple[str, BarSeriesConfig]] = []
        self._bar_failures: dict[tuple[str, str], int] = {}
        self._newest_bars: dict[tuple[str, str], int] | None = None
        self._last_session: str | None = None
        self._last_day: date | None = None
        self._counts = _Counts(bars_up_to_date=dict.fromkeys((b.bar_size for b in config.bars), False))
        self._store: HistoryStore | None = None
        self._saves: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    # -- running -----------------------------------------------------------------------------------

    async def run(self) -> None:
        if not self._config.enabled:
            return
        self._http = self._http_factory()
        self._store = HistoryStore(self._http)
        self._restore()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._watch(), name="history-watch")
                tasks.create_task(self._work(), name="history-work")
        finally:
            await self._http.aclose()

    async def _watch(self) -> None:
        while True:
            for gap in self.tracker.check():
                self._found(gap)
            self._schedule_bars_on_session_close()
            await asyncio.sleep(WATCH_SECONDS)

    async def _work(self) -> None:
        self._bars_due = [(s, b) for s in self._symbols for b in self._config.bars]
        while True:
            if self._state.status != "connected":
                await asyncio.sleep(IDLE_SECONDS)
                continue
            await self._resolve_downtime()
            ready = self.tracker.take_ready()
            for gap in ready:
                self._queue.append(_Pending(gap, self._backfiller.begin(gap)))
            if ready:
                await self._save()
            now = time.monotonic()
            due = [p for p in self._queue if p.due <= now]
            if due:
                await self._fill(min(due, key=lambda p: (p.served, p.gap.opened_at)))
            elif self._bars_due and await self._load_newest_bars():
                await self._sync_bars(*self._bars_due[0])
            else:
                await asyncio.sleep(IDLE_SECONDS)

    # -- gaps --------------------------------------------------------------------------------------

    def _found(self, gap: Gap) -> None:
        self._counts.gaps_found += 1
        self._metrics.history_gaps.labels("found").inc()
        start = utc_second(gap.start_s) if gap.start_s is not None else "?"
        detail = f"{gap.symbol}: trades missing from {start} ({gap.first_cause}); backfill once live again"
        log.warning("gap in time_and_sales found", symbol=gap.symbol, start=start, cause=gap.first_cause)
        self._bus.publish("gap_found", detail)

    async def _resolve_downtime(self) -> None:
        symbols = self.tracker.pending_start()
        if not symbols or self._store is None:
            return
        days = self._config.backfill.lookback_days
        since = self._now() - days * 86400
        try:
            newest = await self._store.newest_trades(since, self._started)
            # A symbol with nothing stored in the look-back but something in the month before it: the part
            # of the downtime beyond the look-back is reported, the part within it filled.
            older = {}
            if any(s not in newest for s in symbols):
                older = await self._store.newest_trades(since - OLDER_SECONDS, since)
            for symbol in symbols:
                second = newest.get(symbol)
                stored = await self._store.trades_of_second(symbol, second) if second is not None else []
                if second is None and symbol in older:
                    start = utc_second(int(since))
                    reason = f"beyond backfill.lookback_days ({days}): filled from {start} on"
                    self._unfilled_span(symbol, older[symbol], int(since), reason)
                    second = int(since)
                self.tracker.resolve_start(symbol, second, stored)
                if second is not None:
                    self._found(self.tracker.open[symbol])
        except (QuestDBUnavailableError, SchemaMismatchError) as exc:
            self._error(f"reading the newest stored trades: {exc}")
            await asyncio.sleep(self._config.pacing.retry_seconds)

    async def _fill(self, pending: _Pending) -> None:
        """One request of the gap served least recently; the gap's rows once its window is read."""
        gap, fill = pending.gap, pending.fill
        if pending.restored:
            await self._read_back(pending)
            return
        if not fill.done:
            try:
                await self._backfiller.step(fill)
            except HistoryError as exc:
                self._failed(pending, exc)
                return
            pending.served = time.monotonic()
            if not fill.done:
                return
        # The edge rule costs about 2.4 ms per 1,000 trades of the window: a worker thread, not the loop.
        trades = await asyncio.to_thread(self._backfiller.rows, fill)
        self._queue.remove(pending)
        await self._save()
        if trades:
            self._questdb.accept_many(trades)
            self._metrics.history_rows.labels("time_and_sales").inc(len(trades))
        self._counts.gaps_filled += 1
        self._counts.trades_recovered += len(trades)
        self._metrics.history_gaps.labels("filled").inc()
        assert gap.start_s is not None
        assert gap.end_s is not None
        length = gap.end_s + 1 - gap.start_s
        closed = "" if fill.intervals else ", the market was closed throughout"
        detail = (
            f"{gap.symbol}: gap {utc_second(gap.start_s)} .. {utc_second(gap.end_s + 1)} ({length} s, "
            f"{gap.first_cause}) filled: {len(trades)} trades recovered of {len(fill.history)} IB had "
            f"in the window, {fill.requests} requests{closed}"
        )
        log.info("gap in time_and_sales filled", symbol=gap.symbol, trades=len(trades), seconds=length)
        self._bus.publish("gap_filled", detail)

    def _failed(self, pending: _Pending, exc: HistoryError) -> None:
        gap = pending.gap
        if isinstance(exc, NotConnected):
            pending.due = time.monotonic() + 1.0
            return
        if (
            isinstance(exc, HmdsDown)
            and (self._now() - gap.opened_at) / 3600 < self._config.backfill.give_up_hours
        ):
            pending.due = time.monotonic() + 1.0  # nothing was sent: look again in a second
            return
        self._error(f"{gap.symbol} backfill: {exc}")
        if isinstance(exc, PacingViolation):
            self._paced()
        pending.failures += 1
        age_hours = (self._now() - gap.opened_at) / 3600
        # An HMDS that does not answer is waited for (up to give_up_hours); other failures get MAX_RETRIES.
        permanent = not exc.retry or (pending.failures > MAX_RETRIES and not isinstance(exc, RequestTimedOut))
        if permanent or age_hours >= self._config.backfill.give_up_hours:
            self._queue.remove(pending)
            self._unfilled(gap, str(exc))
            self._save_soon()
            return
        pending.due = time.monotonic() + self._config.pacing.retry_seconds * 2 ** min(pending.failures - 1, 3)

    # -- gaps across restarts ----------------------------------------------------------------------

    def _restore(self) -> None:
        if self._state_path is None:
            return
        try:
            gaps = saved_gaps.load(self._state_path, self._config.backfill.settle_seconds)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            self._error(f"gaps of the last run not read from {self._state_path}: {exc}")
            return
        for gap in gaps:
            self._queue.append(_Pending(gap, self._backfiller.begin(gap), restored=True))
            self.tracker.covered(gap)
        if gaps:
            log.info("gaps of the last run to fill", gaps=len(gaps), symbols=sorted({g.symbol for g in gaps}))

    async def _read_back(self, item: _Pending) -> None:
        """A restored window: what live stored in it is in QuestDB now; read it, then fill as usual."""
        gap = item.gap
        assert self._store is not None
        assert gap.start_s is not None
        assert gap.end_s is not None
        try:
            gap.edge = await self._store.trades_between(gap.symbol, gap.start_s, gap.end_s)
        except (QuestDBUnavailableError, SchemaMismatchError) as exc:
            self._error(f"reading back the trades of {gap.describe()}: {exc}")
            item.due = time.monotonic() + self._config.pacing.retry_seconds
            return
        item.restored = False

    async def _save(self) -> None:
        if self._state_path is None:
            return
        gaps = [p.gap for p in self._queue]
        try:
            await asyncio.to_thread(saved_gaps.save, self._state_path, gaps)
        except OSError as exc:
            self._error(f"gaps not saved to {self._state_path}: {exc}")

    def _save_soon(self) -> None:
        self._saves.add(task := asyncio.get_running_loop().create_task(self._save()))
        task.add_done_callback(self._saves.discard)

    def _unfilled(self, gap: Gap, reason: str) -> None:
        self._report_unfilled(gap.symbol, f"{gap.describe()} cannot be filled: {reason}", reason)

    def _unfilled_span(self, symbol: str, first: int, until: int, reason: str) -> None:
        detail = f"{symbol} {utc_second(first)} .. {utc_second(until)} (downtime) cannot be filled: {reason}"
        self._report_unfilled(symbol, detail, reason)

    def _report_unfilled(self, symbol: str, detail: str, reason: str) -> None:
        self._counts.gaps_unfilled += 1
        self._metrics.history_gaps.labels("unfilled").inc()
        log.error("gap in time_and_sales not filled", symbol=symbol, reason=reason)
        self._bus.publish("gap_unfilled", detail)

    # -- bars --------------------------------------------------------------------------------------

    def _schedule_bars_on_session_close(self) -> None:
        """Bars again when a session closes, and at each new day in New York (a market that never
        closes, as the simulator's, still completes a daily bar a day); a series with nothing new
        completed costs no request."""
        moment = datetime.fromtimestamp(self._now(), UTC)
        session = self._calendar.session_at(moment)
        previous, self._last_session = self._last_session, session
        day = moment.astimezone(NEW_YORK).date()
        new_day = self._last_day is not None and day != self._last_day
        self._last_day = day
        closing = previous in ("pre", "regular") and session in ("after", "closed")
        if closing or (previous == "after" and session == "closed") or new_day:
            due = [(s, b) for s in self._symbols for b in self._config.bars]
            self._bars_due.extend(item for item in due if item not in self._bars_due)
            self._newest_bars = None

    async def _load_newest_bars(self) -> bool:
        if self._newest_bars is not None:
            return True
        assert self._store is not None
        try:
            self._newest_bars = await self._store.newest_bars()
        except (QuestDBUnavailableError, SchemaMismatchError) as exc:
            self._error(f"reading the newest stored bars: {exc}")
            await asyncio.sleep(self._config.pacing.retry_seconds)
            return False
        return True

    async def _sync_bars(self, symbol: str, series: BarSeriesConfig) -> None:
        assert self._newest_bars is not None
        key = (symbol, series.bar_size)
        try:
            for request in self._bars.plan(series, self._newest_bars.get(key)):
                bars = await self._bars.fetch(symbol, series, request)
                if bars:
                    self._questdb.accept_many(bars)
                    self._metrics.history_rows.labels("market_data_historical").inc(len(bars))
                    self._counts.bars_stored += len(bars)
                    self._newest_bars[key] = max(b.timestamp_ns for b in bars)
        except (NotConnected, HmdsDown):
            await asyncio.sleep(IDLE_SECONDS)
            return
        except HistoryError as exc:
            self._error(f"{symbol} {series.bar_size} bars: {exc}")
            if isinstance(exc, PacingViolation):
                self._paced()
            failures = self._bar_failures[key] = self._bar_failures.get(key, 0) + 1
            if isinstance(exc, NoData) or not exc.retry or failures > MAX_RETRIES:
                self._bars_due.remove((symbol, series))
                log.error("bars not stored", symbol=symbol, bar_size=series.bar_size, reason=str(exc))  # noqa: TRY400
                self._bus.publish("bars_unfilled", f"{symbol} {series.bar_size}: {exc}")
                self._bar_done(series)
            else:
                await asyncio.sleep(self._config.pacing.retry_seconds * 2 ** (failures - 1))
            return
        self._bars_due.remove((symbol, series))
        self._bar_failures.pop(key, None)
        self._bar_done(series)

    def _bar_done(self, series: BarSeriesConfig) -> None:
        if not any(b.bar_size == series.bar_size for _, b in self._bars_due):
            self._counts.bars_up_to_date[series.bar_size] = True
            self._counts.bars_synced_at[series.bar_size] = iso(datetime.now(UTC))
        else:
            self._counts.bars_up_to_date[series.bar_size] = False

    # -- bookkeeping -------------------------------------------------------------------------------

    def _count_request(self) -> None:
        self._counts.requests += 1

    def _paced(self) -> None:
        self._counts.pacing_violations += 1
        self._metrics.history_pacing_violations.inc()
        self.pacer.penalise(self._config.pacing.retry_seconds)

    def _error(self, text: str) -> None:
        self._counts.last_error = text
        self._counts.last_error_at = iso(datetime.now(UTC))
        self._counts.last_error_monotonic = time.monotonic()
        log.warning("history request failed", error=text)

    def status(self) -> dict[str, Any]:
        """The ``history`` section of /health."""
        c = self._counts
        if not self._config.enabled:
            return {"state": "disabled"}
        recent_error = (
            c.last_error_monotonic is not None
            and time.monotonic() - c.last_error_monotonic < ERROR_SHOWN_SECONDS
        )
        return {
            "state": "failing" if recent_error else "ok",
            "bars_up_to_date": dict(c.bars_up_to_date),
            "bars_synced_at": dict(c.bars_synced_at),
            "bars_stored": c.bars_stored,
            "bar_series_pending": len(self._bars_due),
            "gaps_open": self.tracker.snapshot(),
            "gaps_pending": len(self.tracker.open) + len(self._queue),
            "gaps_found": c.gaps_found,
            "gaps_filled": c.gaps_filled,
            "gaps_unfilled": c.gaps_unfilled,
            "trades_recovered": c.trades_recovered,
            "requests": c.requests,
            "pacing_waits": self.pacer.waits,
            "pacing_violations": c.pacing_violations,
            "requests_last_10_minutes": self.pacer.used_in_ten_minutes(),
            "last_error": c.last_error,
            "last_error_at": c.last_error_at,
        }
