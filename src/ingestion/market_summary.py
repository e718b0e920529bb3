"""The ``Market data:`` line: what ``docker logs`` says while all is well.

Every ``logging.summary_interval_seconds`` while market data flows or a session is open, one INFO
line: ticks received in the interval, symbols with data out of symbols subscribed, the age of the
last tick, QuestDB rows written and spool size, and the state of Valkey. One more when the market
session changes (the regular session opens, the after-hours session ends). Nothing per tick, and
nothing while the market is closed and no data comes: a quiet weekend log stays quiet.

The event text starts with ``Market data:`` and says "ticks", so the user's
``grep -i "tick\\|price\\|market"`` finds it (CONTRACTS.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.logging import get_logger
from ingestion.market_session import MarketCalendar
from ingestion.pipeline import Pipeline
from ingestion.sinks.base import SinkStatus

PREFIX = "Market data:"
# How often the session is looked at, so that its opening is logged within seconds.
SESSION_CHECK_SECONDS = 5.0

log = get_logger("market")


class StatusSource(Protocol):
    def status(self) -> SinkStatus: ...


class MarketSummary:
    """Logs the summary line; reads the pipeline, the registry and the sinks, owns only its counters."""

    def __init__(
        self,
        interval: float,
        pipeline: Pipeline,
        registry: SubscriptionRegistry,
        calendar: MarketCalendar,
        storage: Mapping[str, StatusSource],
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._pipeline = pipeline
        self._registry = registry
        self._calendar = calendar
        self._storage = storage
        self._now = now
        self._ticks = pipeline.received
        self._rows = self._rows_written()
        self._counts = self._symbol_counts()
        self._session: str | None = None
        self.lines = 0

    async def run(self) -> None:
        self._session = self._calendar.now()
        due = self._now() + self._interval
        while True:
            await asyncio.sleep(max(0.0, min(SESSION_CHECK_SECONDS, due - self._now())))
            self.check_session()
            if self._now() >= due:
                due += self._interval * max(1, int((self._now() - due) // self._interval) + 1)
                self.summarise()

    def check_session(self) -> None:
        """One line when the market session changes."""
        session = self._calendar.now()
        if self._session is None or session == self._session:
            self._session = session
            return
        previous, self._session = self._session, session
        what = f"{previous} session closed" if session == "closed" else f"{session} session open"
        self._log(f"{PREFIX} {what}", previous_session=previous, market_session=session)

    def summarise(self) -> bool:
        """The interval's line, if data flowed or a session is open; True when it was logged."""
        ticks = self._pipeline.received - self._ticks
        self._ticks = self._pipeline.received
        rows = self._rows_written()
        rows_in_interval, self._rows = rows - self._rows, rows
        counts = self._symbol_counts()
        with_data = sum(1 for symbol, count in counts.items() if count > self._counts.get(symbol, 0))
        self._counts = counts
        session = self._calendar.now()
        if ticks == 0 and session == "closed":
            return False
        self._log(
            self.text(ticks, with_data, rows_in_interval),
            ticks=ticks,
            symbols_with_data=with_data,
            symbols_subscribed=self._registry.symbols_subscribed(),
            last_tick_age_seconds=self._last_tick_age(),
            questdb_rows=rows_in_interval,
            **self._storage_fields(),
            market_session=session,
        )
        return True

    def text(self, ticks: int, with_data: int, rows: int) -> str:
        age = self._last_tick_age()
        last = "no tick yet" if age is None else f"last tick {age:.1f} s ago"
        storage = self._storage_fields()
        subscribed = self._registry.symbols_subscribed()
        return (
            f"{PREFIX} {ticks} ticks in {self._interval:g} s, {with_data}/{subscribed} "
            f"symbols with data, {last}; QuestDB {storage['questdb']} ({rows} rows written, spool "
            f"{storage['spool_bytes']} bytes); Valkey {storage['valkey']}"
        )

    def _log(self, text: str, **fields: Any) -> None:
        self.lines += 1
        log.info(text, **fields)

    def _last_tick_age(self) -> float | None:
        last_ns = self._pipeline.last_event_ns
        return round(max(0.0, time.time() - last_ns / 1e9), 1) if last_ns else None

    def _storage_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name, sink in self._storage.items():
            status = sink.status()
            fields[name] = status.state
            if "spool_bytes" in status.details:
                fields["spool_bytes"] = status.details["spool_bytes"]
        fields.setdefault("questdb", "unknown")
        fields.setdefault("valkey", "unknown")
        fields.setdefault("spool_bytes", 0)
        return fields

    def _rows_written(self) -> int:
        sink = self._storage.get("questdb")
        rows = sink.status().details.get("rows_written", 0) if sink is not None else 0
        return rows if isinstance(rows, int) else 0

    def _symbol_counts(self) -> dict[str, int]:
        return {
            symbol: sum(entry.count for entry in streams.entries())
            for symbol, streams in self._registry.streams.items()
        }
