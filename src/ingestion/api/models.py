"""Response models: the OpenAPI schema of the HTTP API, and a check that bodies keep CONTRACTS.md.

The handlers return the bodies the components build (``HealthReporter.body()``,
``SubscriptionRegistry.snapshot()``) without re-validating them on every request, to keep
``/health`` cheap; the tests validate real bodies against these models instead. Every model
allows extra keys: CONTRACTS.md lets fields be added, never removed or renamed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IsoTime = str  # ISO 8601 UTC with a Z, e.g. 2026-11-23T14:30:00.123Z


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class SubscriptionCounts(_Open):
    active: int = Field(
        description="Streams delivering data: live, or delayed when ibkr.market_data_type asks for it"
    )
    pending: int = Field(description="Requested, no data and no answer yet")
    rejected: int = Field(description="Refused by IB: limits, invalid symbol, not entitled")


class QuestDBStorage(_Open):
    status: Literal["ok", "spooling", "down"]


class ValkeyStorage(_Open):
    status: Literal["ok", "down"]


class Storage(_Open):
    questdb: QuestDBStorage
    valkey: ValkeyStorage


class HealthBody(_Open):
    """``GET /health``: 200 when ``status`` is ``healthy``, 503 otherwise."""

    status: Literal["healthy", "degraded", "unhealthy"]
    service: Literal["data-ingestion"]
    version: str
    ibkr_status: Literal["connected", "connecting", "disconnected"]
    ibkr_connected_at: IsoTime | None
    last_disconnected_at: IsoTime | None
    reconnection_attempts: int = Field(
        description="Attempts since the last successful connect; 0 while connected"
    )
    symbols_subscribed: int = Field(description="Symbols with at least one live subscription")
    subscriptions: SubscriptionCounts
    market_session: Literal["pre", "regular", "after", "closed"]
    last_tick_at: IsoTime | None
    storage: Storage
    reasons: list[str] = Field(default_factory=list, description="Why the status is not healthy")


class Liveness(BaseModel):
    """``GET /health/live``: the process runs and its event loop answers."""

    status: Literal["alive"]


SubscriptionState = Literal[
    "pending", "active", "delayed", "skipped_limit", "rejected_limit", "invalid_symbol", "not_entitled"
]


class SubscriptionEntry(_Open):
    symbol: str
    data_type: Literal["l1", "l2", "time_and_sales"]
    state: SubscriptionState
    error_code: int | None = Field(description="IB's error code, when IB refused or degraded the stream")
    error_text: str | None
    last_tick_at: IsoTime | None
    count: int = Field(description="Events received on this stream since the daemon started")
    source: Literal["tick_by_tick", "rtvolume"] | None = Field(
        default=None, description="time_and_sales only: where trades come from"
    )


class SubscriptionsBody(BaseModel):
    """``GET /subscriptions``: every symbol and data type of the universe."""

    counts: dict[str, int]
    subscriptions: list[SubscriptionEntry]


class RecentEventModel(BaseModel):
    at: IsoTime
    event: str
    detail: str
    code: int | None
    alert: bool


class TopOfBook(BaseModel):
    last: float | None
    bid: float | None
    ask: float | None
    bid_size: float | None = None
    ask_size: float | None = None
    volume: float | None = None


class SymbolStatus(BaseModel):
    symbol: str
    quote: TopOfBook | None = Field(description="None until the first Level 1 update")
    events: int = Field(description="Events received for this symbol, all data types; rate it client-side")
    streams: dict[str, SubscriptionEntry]


class WebhookStatus(BaseModel):
    configured: int
    pending: int
    delivered: int
    failed: int
    dropped: int


class StatusSnapshot(BaseModel):
    """``GET /api/status``: everything the status page shows, polled every second."""

    server_time: IsoTime
    health: HealthBody
    symbols: list[SymbolStatus]
    events: list[RecentEventModel] = Field(description="Latest first: alerts and other state changes")
    webhooks: WebhookStatus
