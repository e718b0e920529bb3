"""The whole daemon with history on, against the simulator's tape, a real Valkey and the QuestDB double."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from history_helpers import AlwaysOpen

from daemon_stack import stack_settings
from ingestion.app import Daemon, build, run
from ingestion.config import HistoryConfig, Settings, SymbolConfig
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import Simulator, running_simulator
from questdb_double import QuestDBDouble
from waiting import wait_for

# Three tick-by-tick symbols (the default allowance) and two whose trades come from RTVolume.
SYMBOLS = ("SPY", "QQQ", "IWM", "DIA", "XLK")
RATE = 3000.0
STOP_SECONDS = 15.0

TradeKey = tuple[int, int, float]  # (second, price in cents, size)


def history_settings(
    sim: Simulator, qdb: QuestDBDouble, spool: Path, valkey: str, **history: Any
) -> Settings:
    base = stack_settings(sim, qdb, spool, valkey)
    config = {
        "bars": [],
        "backfill": {"settle_seconds": 2, "stall_seconds": 3},
        "pacing": {"retry_seconds": 2, "request_timeout_seconds": 10},
    } | history
    return base.model_copy(
        update={
            "universe": tuple(SymbolConfig(symbol=s) for s in SYMBOLS),
            "history": HistoryConfig.model_validate(config),
        }
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Daemon]:
    """``build`` (with the simulator's always-open sessions) + ``run``; a clean stop on exit."""
    daemon = build(settings, calendar=AlwaysOpen())  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(run(daemon, stop), name="daemon")
    try:
        await wait_for(lambda: task.done() or (daemon.api is not None and daemon.api.port), 10, "the API")
        assert not task.done(), f"the daemon stopped during start-up: exit {task.result()}"
        yield daemon
    finally:
        stop.set()
        async with asyncio.timeout(STOP_SECONDS):
            code = await task
    assert code == 0


@dataclass
class Market:
    sim: Simulator
    control: httpx.AsyncClient

    async def post(self, path: str) -> None:
        (await self.control.post(path)).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        return (await self.control.get("/stats")).json()

    async def trades(self, symbol: str, start: int, end: int) -> Counter[TradeKey]:
        answer = await self.control.get("/tape", params={"symbol": symbol, "start": start, "end": end})
        return Counter(
            (int(t["time_ms"]) // 1000, round(float(t["price"]) * 100), float(t["size"]))
            for t in answer.json()["trades"]
        )


@asynccontextmanager
async def market(rate: float = RATE) -> AsyncIterator[Market]:
    config = SimulatorConfig(port=0, control_port=0, rate=rate)
    async with (
        running_simulator(config) as sim,
        httpx.AsyncClient(base_url=control_url(sim), timeout=10) as control,
    ):
        yield Market(sim, control)


def control_url(sim: Simulator) -> str:
    return f"http://127.0.0.1:{sim.control_port}"


def stored_trades(qdb: QuestDBDouble, symbol: str) -> list[dict[str, Any]]:
    return [r for r in qdb.rows("time_and_sales") if r.get("symbol") == symbol]


def second_of(micros: int) -> int:
    return micros // 1_000_000


def stored_keys(rows: list[dict[str, Any]], first_second: int) -> Counter[TradeKey]:
    keys: Counter[TradeKey] = Counter()
    for row in rows:
        second = second_of(int(row["exchange_time"]))
        if second >= first_second:
            keys[(second, round(float(row["price"]) * 100), float(row["size"]))] += 1
    return keys


def first_live_second(rows: list[dict[str, Any]]) -> int:
    return min(second_of(int(r["exchange_time"])) for r in rows if r.get("source") != "backfill")


async def history_status(daemon: Daemon) -> dict[str, Any]:
    assert daemon.history is not None
    return daemon.history.status()


async def until(predicate: Any, within: float, what: str) -> Any:
    return await wait_for(predicate, within, what)


def now_s() -> int:
    return int(datetime.now().timestamp())
