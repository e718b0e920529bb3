"""The one object that owns the truth about the IBKR connection.

The supervisor calls the transition methods; /health, the status page and metrics read
:meth:`ConnectionState.snapshot`. Every transition is logged here, with the wording users grep
for (CONTRACTS.md), and published on the event bus for the ``ingestion_events`` table and alerts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ingestion.bus import EventBus
from ingestion.ibkr import codes
from ingestion.logging import alert, get_logger
from ingestion.metrics import Metrics
from ingestion.timefmt import iso

Status = Literal["connected", "connecting", "disconnected"]
STATUSES: tuple[Status, ...] = ("connected", "connecting", "disconnected")

log = get_logger("ibkr")


@dataclass(slots=True)
class Farm:
    name: str
    kind: str
    state: Literal["ok", "broken", "inactive", "connecting"]
    code: int
    since: datetime


@dataclass
class ConnectionState:
    """Connection status, times, attempts, farms and IB's own connectivity."""

    bus: EventBus
    metrics: Metrics
    host: str
    port: int
    status: Status = "disconnected"
    connected_at: datetime | None = None
    last_disconnected_at: datetime | None = None
    attempts: int = 0
    reconnects: int = 0
    server_version: int | None = None
    broker_connectivity: Literal["ok", "lost"] = "ok"
    broker_lost_at: datetime | None = None
    competing_session: bool = False
    last_error: str | None = None
    farms: dict[str, Farm] = field(default_factory=dict)
    _lost_monotonic: float | None = None
    _ever_connected: bool = False
    _started_monotonic: float | None = None

    def __post_init__(self) -> None:
        self._export_status()

    # -- connection lifecycle ------------------------------------------------------------

    def connecting(self) -> int:
        """A new attempt starts; returns its number (1 for the first since the last success)."""
        self.attempts += 1
        if self._started_monotonic is None:
            self._started_monotonic = time.monotonic()
        self._set_status("connecting")
        if self._ever_connected or self.attempts > 1:
            log.warning(f"Attempting reconnection... (attempt {self.attempts})", attempt=self.attempts)
        else:
            log.info(f"Connecting to IBKR at {self.host}:{self.port}", attempt=self.attempts)
        return self.attempts

    def attempt_failed(self, reason: str, retry_in: float) -> None:
        self.last_error = reason
        self._set_status("disconnected")
        log.warning(
            "IBKR connection attempt failed",
            attempt=self.attempts,
            reason=reason,
            retry_in_seconds=round(retry_in, 2),
        )
        self.not_connected_yet()

    def not_connected_yet(self) -> None:
        """Never connected since start-up: for the user the same failure as a lost connection.

        Alerts once, on the first failed attempt (or when the supervisor's start-up deadline passes
        first); the first connection then reports ``connection_restored`` with the whole wait.
        """
        if self._ever_connected or self._lost_monotonic is not None or self._started_monotonic is None:
            return
        self._lost_monotonic = self._started_monotonic
        since = datetime.now(UTC) - timedelta(seconds=time.monotonic() - self._started_monotonic)
        self.last_disconnected_at = since
        message = f"IBKR Connection Lost at {iso(since)}"
        reason = self.last_error or "no answer yet"
        alert(log, message, reason=f"not connected since start-up: {reason}")
        self.bus.publish("connection_lost", f"{message}: not connected since start-up: {reason}", alert=True)

    def connected(self, server_version: int) -> None:
        now = datetime.now(UTC)
        self.server_version = server_version
        self.connected_at = now
        self.attempts = 0
        self.last_error = None
        self.broker_connectivity = "ok"
        self.competing_session = False
        self._set_status("connected")
        log.info(f"Connected to IBKR at {self.host}:{self.port}", server_version=server_version)
        if self._lost_monotonic is not None:
            outage = time.monotonic() - self._lost_monotonic
            if self._ever_connected:
                self.reconnects += 1
                self.metrics.reconnects.inc()
            detail = f"IBKR connection restored after {outage:.1f} s outage"
            alert(log, detail, outage_seconds=round(outage, 3))
            self.bus.publish("connection_restored", detail, alert=True)
            self._lost_monotonic = None
        else:
            self.bus.publish("connected", f"Connected to IBKR at {self.host}:{self.port}")
        self._ever_connected = True

    def lost(self, reason: str) -> None:
        """The connection dropped (socket closed, heartbeat missed). Alerts once per outage."""
        if self.status != "connected":
            return
        now = datetime.now(UTC)
        self.last_disconnected_at = now
        self._lost_monotonic = time.monotonic()
        self.last_error = reason
        self.farms.clear()
        self._set_status("disconnected")
        message = f"IBKR Connection Lost at {iso(now)}"
        alert(log, message, reason=reason)
        self.bus.publish("connection_lost", f"{message}: {reason}", alert=True)

    def stopped(self) -> None:
        """A clean stop (SIGTERM): not an outage, no alert."""
        if self.status == "connected":
            self.last_disconnected_at = datetime.now(UTC)
        self._set_status("disconnected")
        log.info("Disconnected", host=self.host, port=self.port)
        self.bus.publish("disconnected", "clean stop")

    # -- IB system messages (the socket stays up) ----------------------------------------

    def system_message(self, code: int, text: str) -> None:
        if code in codes.CONNECTIVITY_LOST:
            self._broker_lost(code, text)
        elif code in codes.RESTORED_DATA_LOST or code in codes.RESTORED_DATA_KEPT:
            self._broker_restored(code, text)
        elif code in codes.FARM_NOTICES:
            self._farm_notice(code, text)
        elif code in codes.COMPETING_SESSION:
            self._competing_session(code, text)

    def _broker_lost(self, code: int, text: str) -> None:
        if self.broker_connectivity == "lost":
            return
        self.broker_connectivity = "lost"
        self.broker_lost_at = datetime.now(UTC)
        alert(
            log,
            "IB connectivity lost (1100): the gateway lost its connection to IB's servers",
            code=code,
            text=text,
        )
        self.bus.publish("ib_connectivity_lost", text, code=code, alert=True)

    def _broker_restored(self, code: int, text: str) -> None:
        kept = code in codes.RESTORED_DATA_KEPT
        outage = (datetime.now(UTC) - self.broker_lost_at).total_seconds() if self.broker_lost_at else 0.0
        self.broker_connectivity = "ok"
        self.broker_lost_at = None
        what = "data maintained" if kept else "data lost, resubscribing everything"
        detail = f"IB connectivity restored ({code}, {what}) after {outage:.1f} s"
        alert(log, detail, code=code, text=text)
        self.bus.publish("ib_connectivity_restored", detail, code=code, alert=True)

    def _farm_notice(self, code: int, text: str) -> None:
        name = text.rsplit(":", 1)[-1].strip() if ":" in text else codes.FARM_KIND.get(code, "unknown")
        if code in codes.FARM_OK:
            state = "ok"
        elif code in codes.FARM_BROKEN:
            state = "broken"
        elif code in codes.FARM_INACTIVE:
            state = "inactive"
        else:
            state = "connecting"
        previous = self.farms.get(name)
        self.farms[name] = Farm(name, codes.FARM_KIND.get(code, "unknown"), state, code, datetime.now(UTC))
        if previous is not None and previous.state == state:
            return
        if state == "broken":
            log.warning("IB data farm connection broken", farm=name, code=code, text=text)
        else:
            log.info("IB data farm status", farm=name, state=state, code=code)
        self.bus.publish(f"farm_{state}", f"{name}: {text}", code=code)

    def _competing_session(self, code: int, text: str) -> None:
        if self.competing_session:
            return
        self.competing_session = True
        detail = (
            "No market data during competing live session (10197): another session logged in with this "
            "username (TWS, the mobile app or IBKR web) takes the market data. Log out there, or subscribe "
            "to market data on a second username for this gateway."
        )
        alert(log, detail, code=code, text=text)
        self.bus.publish("competing_session", detail, code=code, alert=True)

    def competing_session_cleared(self) -> None:
        if self.competing_session:
            self.competing_session = False
            log.info("competing session over: market data flows again")
            self.bus.publish("competing_session_cleared", "market data flows again")

    # -- reading -------------------------------------------------------------------------

    @property
    def degraded_reasons(self) -> list[str]:
        reasons = []
        if self.broker_connectivity == "lost":
            reasons.append("IB connectivity lost (1100)")
        if self.competing_session:
            reasons.append("competing live session (10197)")
        reasons.extend(f"data farm {f.name} broken" for f in self.farms.values() if f.state == "broken")
        return reasons

    def snapshot(self) -> dict[str, Any]:
        return {
            "ibkr_status": self.status,
            "ibkr_connected_at": iso(self.connected_at) if self.status == "connected" else None,
            "last_disconnected_at": iso(self.last_disconnected_at),
            "reconnection_attempts": self.attempts if self.status != "connected" else 0,
            "ibkr": {
                "host": self.host,
                "port": self.port,
                "server_version": self.server_version,
                "ib_connectivity": self.broker_connectivity,
                "competing_session": self.competing_session,
                "reconnects": self.reconnects,
                "last_error": self.last_error,
                "degraded_reasons": self.degraded_reasons,
                "farms": {
                    f.name: {"kind": f.kind, "state": f.state, "code": f.code, "since": iso(f.since)}
                    for f in self.farms.values()
                },
            },
        }

    def _set_status(self, status: Status) -> None:
        self.status = status
        self._export_status()

    def _export_status(self) -> None:
        for name in STATUSES:
            self.metrics.connection_state.labels(name).set(1 if name == self.status else 0)
