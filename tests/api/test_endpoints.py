"""The other endpoints of a real daemon: liveness, subscriptions, metrics, OpenAPI, the status page data,
and the listener itself (a taken port, a clean stop)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from daemon_stack import module_stack
from ingestion.api import ApiPortInUseError, ApiServer
from ingestion.api.models import StatusSnapshot, SubscriptionsBody
from ingestion.config import ApiConfig

# Every series the issue asks /metrics to carry (names as the text format shows families).
REQUIRED_FAMILIES = {
    "ingestion_events_received",
    "ingestion_rows_written",
    "ingestion_questdb_flush_seconds",
    "ingestion_latency_to_questdb_seconds",
    "ingestion_latency_to_valkey_seconds",
    "ingestion_spool_bytes",
    "ingestion_rows_lost",
    "ingestion_queue_depth",
    "ingestion_ibkr_reconnects",
    "ingestion_ibkr_connection_state",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory, valkey_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One daemon for the read-only tests of this module, each of which only reads from it."""
    async with module_stack(tmp_path_factory.mktemp("spool"), valkey_url) as stack:
        yield stack.api


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
class TestRunningDaemon:
    async def test_liveness_is_200(self, api: httpx.AsyncClient) -> None:
        """/health/live answers 200 while the process runs."""
        response = await api.get("/health/live")
        assert response.status_code == 200
        assert response.json() == {"status": "alive"}

    async def test_subscriptions_list_every_symbol_and_type(self, api: httpx.AsyncClient) -> None:
        """/subscriptions: 3 symbols x 3 data types, each with state, IB error, last tick and count."""
        body = SubscriptionsBody.model_validate((await api.get("/subscriptions")).json())
        pairs = {(s.symbol, s.data_type) for s in body.subscriptions}
        assert pairs == {(sym, t) for sym in ("SPY", "QQQ", "IWM") for t in ("l1", "l2", "time_and_sales")}
        l1 = next(s for s in body.subscriptions if s.symbol == "SPY" and s.data_type == "l1")
        assert l1.state == "active"
        assert l1.count > 0
        assert l1.last_tick_at is not None
        assert l1.error_code is None
        tas = next(s for s in body.subscriptions if s.symbol == "SPY" and s.data_type == "time_and_sales")
        assert tas.source == "tick_by_tick"
        assert body.counts["active"] == 9

    async def test_metrics_parse_and_carry_every_series(self, api: httpx.AsyncClient) -> None:
        """/metrics is Prometheus text (its official parser reads it) with every required series."""
        response = await api.get("/metrics")
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        assert families.keys() >= REQUIRED_FAMILIES, sorted(REQUIRED_FAMILIES - families.keys())
        received = {
            (s.labels["symbol"], s.labels["type"]): s.value
            for s in families["ingestion_events_received"].samples
            if s.name.endswith("_total")
        }
        assert received["SPY", "quote"] > 0
        connected = [s for s in families["ingestion_ibkr_connection_state"].samples if s.value == 1]
        assert [s.labels["state"] for s in connected] == ["connected"]

    async def test_openapi_describes_every_response(self, api: httpx.AsyncClient) -> None:
        """OpenAPI names a model for /health (200 and 503) and /subscriptions, text for the rest."""
        paths = (await api.get("/openapi.json")).json()["paths"]
        health = paths["/health"]["get"]["responses"]
        for code in ("200", "503"):
            assert health[code]["content"]["application/json"]["schema"]["$ref"].endswith("/HealthBody")
        subscriptions = paths["/subscriptions"]["get"]["responses"]["200"]["content"]["application/json"]
        assert subscriptions["schema"]["$ref"].endswith("/SubscriptionsBody")
        assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
        assert "text/html" in paths["/"]["get"]["responses"]["200"]["content"]

    async def test_status_page_is_one_self_contained_html_page(self, api: httpx.AsyncClient) -> None:
        """/ is HTML with a viewport meta, inline script and style, and nothing loaded from elsewhere."""
        response = await api.get("/")
        assert response.headers["content-type"].startswith("text/html")
        page = response.text
        assert '<meta name="viewport"' in page
        assert 'id="banner"' in page
        assert "<script>" in page
        assert "<style>" in page
        assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in page

    async def test_status_data_has_quotes_and_stream_states(self, api: httpx.AsyncClient) -> None:
        """/api/status: the health body, a quote and stream states per symbol, recent events."""
        body = StatusSnapshot.model_validate((await api.get("/api/status")).json())
        spy = next(s for s in body.symbols if s.symbol == "SPY")
        assert spy.quote is not None
        assert spy.quote.bid is not None
        assert spy.events > 0
        assert set(spy.streams) == {"l1", "l2", "time_and_sales"}
        assert any(e.event == "connected" for e in body.events)


class TestApiServer:
    async def test_a_taken_port_fails_start_with_a_clear_error(self) -> None:
        """start() on a port another socket listens on raises ApiPortInUseError naming the port."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = ApiServer(ApiConfig(host="127.0.0.1", port=port), FastAPI())
            with pytest.raises(ApiPortInUseError, match=f"API port {port} on 127.0.0.1 is already in use"):
                await server.start()

    async def test_serve_stops_on_cancel_and_re_raises_it(self) -> None:
        """1. start binds port 0 and reports the real port  2. it answers  3. cancel: the task ends
        cancelled (CancelledError re-raised) and the port is closed."""
        app = FastAPI()

        @app.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"pong": True}

        server = ApiServer(ApiConfig.model_construct(host="127.0.0.1", port=0), app)
        await server.start()
        assert server.port != 0
        task = asyncio.create_task(server.serve())
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/ping")).json() == {"pong": True}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
