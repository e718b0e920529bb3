"""The /health body, assembled from the objects that own each piece of state.

Nothing here keeps state of its own except the stale-data monitor's verdict: the connection
state, the subscription registry, the pipeline, the sinks and the FRED poller are read, never
recomputed. ``healthy`` means what CONTRACTS.md says: connected to IBKR, IB's own connectivity
intact (no 1100 outstanding) and QuestDB accepting writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ingestion.bus import EventBus
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.logging import alert, get_logger
from ingestion.market_session import MarketCalendar
from ingestion.pipeline import Pipeline
from ingestion.sinks.base import SinkStatus
from ingestion.timefmt import iso_ns

Overall = Literal["healthy", "degraded", "unhealthy"]
SERVICE_NAME = "data-ingestion"

log = get_logger("health")


class StatusSource(Protocol):
    def status(self) -> SinkStatus: ...


class FredStatusSource(Protocol):
    def status(self) -> dict[str, Any]: ...


class StaleDataMonitor:
    """Reports "no ticks for N s during the regular session while connected", once per episode.

    No ticks while the market is closed, or while disconnected (already alerted), is not stale.
    """

    def __init__(
        self,
        stale_after: float,
        state: ConnectionState,
        pipeline: Pipeline,
        calendar: MarketCalendar,
        bus: EventBus,
        *,
        now: Callable[[], float] = time.time,
        check_interval: float = 5.0,
    ) -> None:
        self._stale_after = stale_after
        self._state = state
        self._pipeline = pipeline
        self._calendar = calendar
        self._bus = bus
        self._now = now
        self._check_interval = check_interval
        self._connected_since: float | None = None
        self.stale = False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval)
            self.check()

    def check(self) -> None:
        now = self._now()
        if self._state.status != "connected":
            self._connected_since = None
            self._set(stale=False, detail="")
            return
        if self._connected_since is None:
            self._connected_since = now
        last_ns = self._pipeline.last_event_ns
        last = max(last_ns / 1e9 if last_ns else 0.0, self._connected_since)
        quiet = now - last
        regular = self._calendar.session_at(datetime.fromtimestamp(now, UTC)) == "regular"
        self._set(
            stale=regular and quiet >= self._stale_after,
            detail=f"no market data for {quiet:.0f} s during the regular session while connected to IBKR",
        )

    def _set(self, *, stale: bool, detail: str) -> None:
        if stale == self.stale:
            return
        self.stale = stale
        if stale:
            alert(log, f"Stale data: {detail}")
            self._bus.publish("stale_data", detail, alert=True)
        elif detail:
            log.info("market data flows again")
            self._bus.publish("stale_data_cleared", "market data flows again", alert=True)


@dataclass
class HealthReporter:
    """Builds the /health body; ``http_status`` says 200 or 503."""

    version: str
    state: ConnectionState
    registry: SubscriptionRegistry
    pipeline: Pipeline
    calendar: MarketCalendar
    storage: Mapping[str, StatusSource]
    stale: StaleDataMonitor
    fred: FredStatusSource | None = None
    started_monotonic: float = 0.0
    history: FredStatusSource | None = None

    def body(self) -> dict[str, Any]:
        connection = self.state.snapshot()
        storage = {name: sink.status().as_dict() for name, sink in self.storage.items()}
        status, reasons = self._overall(storage)
        body: dict[str, Any] = {
            "status": status,
            "service": SERVICE_NAME,
            "version": self.version,
            "ibkr_status": connection["ibkr_status"],
            "ibkr_connected_at": connection["ibkr_connected_at"],
            "last_disconnected_at": connection["last_disconnected_at"],
            "reconnection_attempts": connection["reconnection_attempts"],
            "symbols_subscribed": self.registry.symbols_subscribed(),
            "subscriptions": self.registry.counts(),
            "market_session": self.calendar.now(),
            "last_tick_at": iso_ns(self.pipeline.last_event_ns),
            "storage": storage,
            "reasons": reasons,
            "stale_data": self.stale.stale,
            "ibkr": connection["ibkr"],
            "pipeline": {
                "queue_depth": self.pipeline.depth,
                "events_received": self.pipeline.received,
                "events_dropped": self.pipeline.dropped,
                **({"overload": overload.snapshot()} if (overload := self.pipeline.overload) else {}),
            },
            "fred": self.fred.status() if self.fred is not None else {"state": "disabled"},
            "history": self.history.status() if self.history is not None else {"state": "disabled"},
            "uptime_seconds": round(time.monotonic() - self.started_monotonic, 1),
        }
        return body

    def _overall(self, storage: Mapping[str, Mapping[str, Any]]) -> tuple[Overall, list[str]]:
        reasons: list[str] = []
        if self.state.status != "connected":
            reasons.append(
                f"IBKR {self.state.status}" + (f": {self.state.last_error}" if self.state.last_error else "")
            )
        reasons.extend(self.state.degraded_reasons)
        reasons.extend(self.registry.degraded_reasons())
        for name, details in storage.items():
            if details.get("status") != "ok":
                reasons.append(f"{name} {details.get('status')}")
        if self.stale.stale:
            reasons.append("stale data during the regular session")
        if (overload := self.pipeline.overload) is not None and overload.level != "normal":
            reasons.append(f"overloaded: {overload.level.replace('_', ' ')}")
        if self.state.status != "connected":
            return "unhealthy", reasons
        return ("degraded" if reasons else "healthy"), reasons

    @staticmethod
    def http_status(body: Mapping[str, Any]) -> int:
        return 200 if body["status"] == "healthy" else 503
