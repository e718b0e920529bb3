"""A real daemon for tests: ``ingestion.app.build`` + ``run`` against the simulator, a real Valkey
and the QuestDB double, all on loopback sockets in the test's own event loop (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import pytest

from ingestion.api.models import HealthBody
from ingestion.config import (
    AlertsConfig,
    ApiConfig,
    BackoffConfig,
    HistoryConfig,
    IbkrConfig,
    QuestDBConfig,
    Settings,
    SpoolConfig,
    SymbolConfig,
    ValkeyConfig,
)
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import Simulator, running_simulator
from questdb_double import QuestDBDouble  # tests/ is on sys.path: the root conftest lives there
from waiting import wait_for

if TYPE_CHECKING:
    from ingestion.app import Daemon

SYMBOLS = ("SPY", "QQQ", "IWM")
# Low enough for two CPUs to run the daemon, the simulator and a browser side by side.
SIM_RATE = 300.0
STOP_SECONDS = 15.0
# The /health fields CONTRACTS.md promises, and which of them are times.
CONTRACT_FIELDS = frozenset({
    "status", "service", "version", "ibkr_status", "ibkr_connected_at", "last_disconnected_at",
    "reconnection_attempts", "symbols_subscribed", "subscriptions", "market_session", "last_tick_at",
    "storage",
})  # fmt: skip
CONTRACT_TIMES = ("ibkr_connected_at", "last_disconnected_at", "last_tick_at")


def assert_contract_body(body: dict[str, Any]) -> None:
    """Every field of CONTRACTS.md, with its type and allowed values; times are ISO 8601 UTC."""
    assert body.keys() >= CONTRACT_FIELDS, f"missing: {sorted(CONTRACT_FIELDS - body.keys())}"
    HealthBody.model_validate(body)
    assert {"active", "pending", "rejected"} <= body["subscriptions"].keys()
    for name in CONTRACT_TIMES:
        value = body[name]
        if value is not None:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            assert parsed.utcoffset() == timedelta(0), f"{name} is not UTC: {value}"


@dataclass
class DaemonStack:
    """A running daemon and what it talks to; ``api`` and ``control`` are HTTP clients."""

    daemon: Daemon
    sim: Simulator
    qdb: QuestDBDouble
    api: httpx.AsyncClient
    control: httpx.AsyncClient

    @property
    def api_url(self) -> str:
        assert self.daemon.api is not None
        return f"http://127.0.0.1:{self.daemon.api.port}"

    async def health(self) -> httpx.Response:
        return await self.api.get("/health")

    async def health_ok(self) -> bool:
        return (await self.health()).status_code == 200

    async def simulator(self, path: str) -> dict[str, Any]:
        """POST to the simulator's control API (``/restart?down=3``, ``/error?code=1100``...)."""
        response = await self.control.post(path)
        response.raise_for_status()
        return response.json()

    async def health_where(
        self, predicate: Callable[[dict[str, Any]], bool], within: float, what: str
    ) -> Any:
        """The first /health answer whose body satisfies ``predicate``, as (status code, body)."""

        async def probe() -> tuple[int, dict[str, Any]] | None:
            response = await self.health()
            body = response.json()
            return (response.status_code, body) if predicate(body) else None

        return await wait_for(probe, within, what)


class StackFactory(Protocol):
    """``daemon_stack(webhooks=(url,), valkey=url, questdb={"flush_rows": 50})``: all optional."""

    def __call__(
        self,
        *,
        webhooks: tuple[str, ...] = (),
        valkey: str | None = None,
        questdb: dict[str, Any] | None = None,
    ) -> AbstractAsyncContextManager[DaemonStack]: ...


def stack_settings(
    sim: Simulator,
    qdb: QuestDBDouble,
    spool_dir: Path,
    valkey_url: str,
    webhooks: tuple[str, ...] = (),
    questdb: dict[str, Any] | None = None,
) -> Settings:
    """Settings with test-sized timings: heartbeats and backoff in fractions of a second."""
    questdb_settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": qdb.port,
        "flush_interval_ms": 50,
        "retry_interval_seconds": 0.2,
        "request_timeout_seconds": 2,
        "spool": SpoolConfig(dir=spool_dir, fsync="never"),
    }
    return Settings(
        ibkr=IbkrConfig(
            host="127.0.0.1",
            port=sim.port,
            heartbeat_interval_seconds=1,
            heartbeat_timeout_seconds=1,
            connect_timeout_seconds=2,
            reconnect=BackoffConfig(initial_seconds=0.2, max_seconds=1),
        ),
        universe=tuple(SymbolConfig(symbol=s) for s in SYMBOLS),
        questdb=QuestDBConfig(**(questdb_settings | (questdb or {}))),
        valkey=ValkeyConfig(
            url=valkey_url, status_interval_seconds=0.5, status_ttl_seconds=2, socket_timeout_seconds=0.5
        ),
        # Port 0 (any free port) is what a test wants, but ApiConfig's validation allows 1..65535 only.
        api=ApiConfig.model_construct(host="127.0.0.1", port=0),
        alerts=AlertsConfig(webhooks=webhooks, webhook_timeout_seconds=2, webhook_retries=3),
        # History has its own tests (tests/history); here it would only add requests to other tests' counts.
        history=HistoryConfig(enabled=False),
    )


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Daemon]:
    """``build`` + ``run`` in this loop; on exit, the stop event and a check of the exit code."""
    from ingestion.app import build, run  # here, so the webhook unit tests run without the whole daemon

    daemon = build(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(daemon, stop), name="daemon")
    try:
        await wait_for(
            lambda: task.done() or (daemon.api is not None and daemon.api.port), 10, "the API port"
        )
        if task.done():
            pytest.fail(f"the daemon stopped during start-up: exit {task.result()}")
        yield daemon
    finally:
        stop.set()
        async with asyncio.timeout(STOP_SECONDS):
            code = await task
    assert code == 0, "the daemon exits 0 on a clean stop"


def listening(daemon: Daemon) -> bool:
    return daemon.api is not None and daemon.api.port != 0


def connected_and_ticking(body: dict[str, Any]) -> bool:
    """Connected, data arriving, and every subscription settled (none still pending)."""
    return (
        body["ibkr_status"] == "connected"
        and body["last_tick_at"] is not None
        and body["subscriptions"]["pending"] == 0
    )


@asynccontextmanager
async def http_clients(
    daemon: Daemon, sim: Simulator
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    assert daemon.api is not None
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api.port}", timeout=5) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}", timeout=5) as control,
    ):
        yield api, control


@asynccontextmanager
async def module_stack(
    spool_dir: Path,
    valkey_url: str,
    webhooks: tuple[str, ...] = (),
    questdb: dict[str, Any] | None = None,
) -> AsyncIterator[DaemonStack]:
    """Simulator + daemon (QuestDB double, Valkey) + HTTP clients, connected and ticking."""
    with QuestDBDouble() as qdb:
        async with running_simulator(SimulatorConfig(port=0, control_port=0, rate=SIM_RATE)) as sim:
            settings = stack_settings(sim, qdb, spool_dir, valkey_url, webhooks, questdb)
            async with running_daemon(settings) as daemon, http_clients(daemon, sim) as (api, control):
                stack = DaemonStack(daemon, sim, qdb, api, control)
                await stack.health_where(connected_and_ticking, 20, "connected, with ticks")
                yield stack
