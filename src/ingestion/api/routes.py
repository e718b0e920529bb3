"""The FastAPI application: health, subscriptions, metrics, the status page and its data.

Every handler is ``async`` on purpose: it then runs on the daemon's event loop, the only thread
that mutates the state it reads, so a snapshot is never torn and no request hops to a thread.
Handlers only read (see ``Daemon`` in app.py); nothing here changes what the daemon does.
"""

from __future__ import annotations

import importlib.resources
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ingestion import __version__
from ingestion.api.live import add_live_routes
from ingestion.api.models import HealthBody, Liveness, StatusSnapshot, SubscriptionsBody
from ingestion.api.parts import DaemonParts as Daemon
from ingestion.ibkr.subscriptions import Subscription

STATUS_PAGE = "index.html"
RECENT_EVENTS_SHOWN = 30
NO_CACHE = {"Cache-Control": "no-store"}


def create_app(daemon: Daemon) -> FastAPI:
    """The HTTP API of one daemon; it reads the daemon's components and never changes them."""
    app = FastAPI(
        title="data-ingestion",
        version=__version__,
        description="Health, subscriptions, metrics and the status page of the market-data ingestion daemon.",
    )
    _add_health(app, daemon)
    _add_subscriptions(app, daemon)
    _add_metrics(app, daemon)
    _add_status_page(app, daemon)
    add_live_routes(app, daemon)
    return app


def _add_health(app: FastAPI, daemon: Daemon) -> None:
    health = daemon.health

    @app.get(
        "/health",
        response_model=HealthBody,
        summary="Overall health (CONTRACTS.md)",
        responses={503: {"model": HealthBody, "description": "Degraded or unhealthy; the body says why"}},
    )
    async def get_health() -> Response:
        body = health.body()
        return JSONResponse(body, status_code=health.http_status(body), headers=NO_CACHE)

    @app.get("/health/live", response_model=Liveness, summary="200 while the process runs")
    async def get_live() -> dict[str, str]:
        return {"status": "alive"}


def _add_subscriptions(app: FastAPI, daemon: Daemon) -> None:
    registry = daemon.registry

    @app.get("/subscriptions", response_model=SubscriptionsBody, summary="Every symbol and data type")
    async def get_subscriptions() -> Response:
        body = {"counts": registry.counts(), "subscriptions": registry.snapshot()}
        return JSONResponse(body, headers=NO_CACHE)


def _add_metrics(app: FastAPI, daemon: Daemon) -> None:
    metrics = daemon.metrics

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        summary="Prometheus text format",
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def get_metrics() -> Response:
        # These two gauges are otherwise set only when their owner happens to work; a scrape must
        # see the current values even while the pipeline or the spool sits idle.
        metrics.queue_depth.set(daemon.pipeline.depth)
        spool = daemon.questdb.status().details.get("spool_bytes")
        if isinstance(spool, int | float):
            metrics.spool_bytes.set(spool)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_status_page(app: FastAPI, daemon: Daemon) -> None:
    page = importlib.resources.files("ingestion.api").joinpath("static", STATUS_PAGE).read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, summary="The status page, for people")
    async def get_status_page() -> HTMLResponse:
        return HTMLResponse(page, headers=NO_CACHE)

    @app.get(
        "/api/status",
        response_model=StatusSnapshot,
        summary="What the status page shows, polled every second",
    )
    async def get_status() -> Response:
        return JSONResponse(status_snapshot(daemon), headers=NO_CACHE)


def status_snapshot(daemon: Daemon) -> dict[str, Any]:
    """Health, per-symbol quote and stream states, recent events and webhook counts, in one body."""
    return {
        "server_time": iso_now(),
        "health": daemon.health.body(),
        "symbols": [_symbol_status(daemon, symbol) for symbol in daemon.registry.streams],
        "events": daemon.alert_log.recent(RECENT_EVENTS_SHOWN),
        "webhooks": daemon.webhooks.status(),
    }


def _symbol_status(daemon: Daemon, symbol: str) -> dict[str, Any]:
    entries: list[Subscription] = daemon.registry.streams[symbol].entries()
    return {
        "symbol": symbol,
        "quote": daemon.normaliser.top_of_book(symbol),
        "events": sum(e.count for e in entries),
        "streams": {e.data_type: e.as_dict() for e in entries},
    }


def iso_now() -> str:
    seconds = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"
