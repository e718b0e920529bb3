"""Test harness: the daemon's IBKR side (supervisor, registry, normaliser, pipeline) on the simulator."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from ingestion.app import stop_tasks
from ingestion.bus import EventBus
from ingestion.config import BackoffConfig, IbkrConfig, LimitsConfig, Settings, SymbolConfig
from ingestion.events import DepthUpdate, Event, IngestionEvent, Quote, ReceiveClock, Trade
from ingestion.ibkr.backoff import ExponentialBackoff
from ingestion.ibkr.normalise import Normaliser
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.ibkr.supervisor import ConnectionSupervisor
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import Simulator, running_simulator
from ingestion.sinks.base import SinkStatus
from waiting import wait_for  # noqa: F401 - re-exported for the daemon tests


@dataclass
class CountingSink:
    """A sink that implements the real interface and counts what reaches it."""

    name: str = "counting"
    quotes: Counter = field(default_factory=Counter)
    depth: Counter = field(default_factory=Counter)
    trades: Counter = field(default_factory=Counter)
    trade_sources: Counter = field(default_factory=Counter)
    last: dict[str, Event] = field(default_factory=dict)
    timestamps_increasing: bool = True
    _previous_ns: int = 0

    def accept(self, event: Event) -> None:
        if event.timestamp_ns <= self._previous_ns:
            self.timestamps_increasing = False
        self._previous_ns = event.timestamp_ns
        if isinstance(event, Quote):
            self.quotes[event.symbol] += 1
        elif isinstance(event, DepthUpdate):
            self.depth[event.symbol] += 1
        elif isinstance(event, Trade):
            self.trades[event.symbol] += 1
            self.trade_sources[event.symbol, event.source] += 1
        self.last[f"{type(event).__name__}:{getattr(event, 'symbol', '')}"] = event

    def accept_many(self, events: Sequence[Event]) -> None:
        for event in events:
            self.accept(event)

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None

    def status(self) -> SinkStatus:
        return SinkStatus("ok")


@dataclass
class Stack:
    sim: Simulator
    settings: Settings
    bus_events: list[IngestionEvent]
    state: ConnectionState
    registry: SubscriptionRegistry
    supervisor: ConnectionSupervisor
    pipeline: Pipeline
    sink: CountingSink
    control: httpx.AsyncClient
    supervisor_task: asyncio.Task[None] | None = None

    async def post(self, path: str) -> dict[str, Any]:
        response = await self.control.post(path)
        response.raise_for_status()
        return response.json()

    async def stats(self) -> dict[str, Any]:
        response = await self.control.get("/stats")
        response.raise_for_status()
        return response.json()

    async def stop_supervisor(self) -> None:
        """What the daemon's stop does after drain(): cancel the supervisor, which disconnects and does
        not reconnect. (A bare ``ib.disconnect()`` looks like a lost connection, and the supervisor
        reconnects and resubscribes.)"""
        assert self.supervisor_task is not None, "the stack was made with start_supervisor=False"
        await stop(self.supervisor_task)

    def events_named(self, name: str) -> list[IngestionEvent]:
        return [e for e in self.bus_events if e.event == name]


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` as the daemon does (again every second: on 3.11 one cancel can be lost inside
    ``asyncio.wait_for``, which ib_async uses) and fail if it is still running after 10 s."""
    await stop_tasks([task], deadline=time.monotonic() + 10)
    assert task.done(), f"{task.get_name()} did not stop within 10 s of being cancelled"


def fast_settings(port: int, **overrides: Any) -> Settings:
    ibkr = IbkrConfig(
        host="127.0.0.1",
        port=port,
        connect_timeout_seconds=2,
        heartbeat_interval_seconds=1,
        heartbeat_timeout_seconds=1,
        reconnect=BackoffConfig(initial_seconds=0.2, max_seconds=1.0),
    )
    return Settings(ibkr=overrides.pop("ibkr", ibkr), **overrides)


@asynccontextmanager
async def ibkr_stack(
    sim_config: SimulatorConfig | None = None,
    *,
    settings: Callable[[int], Settings] = fast_settings,
    settle_seconds: float = 1.0,
    start_supervisor: bool = True,
) -> AsyncIterator[Stack]:
    """Simulator + the daemon's IBKR side + a counting sink, all on loopback sockets."""
    async with running_simulator(sim_config or SimulatorConfig(port=0, control_port=0, rate=2000)) as sim:
        chosen = settings(sim.port)
        bus = EventBus()
        bus_events: list[IngestionEvent] = []
        bus.subscribe(bus_events.append)
        metrics = Metrics()
        state = ConnectionState(bus, metrics, chosen.ibkr.host, chosen.ibkr.port)
        registry = SubscriptionRegistry(chosen, bus, metrics, settle_seconds=settle_seconds)
        sink = CountingSink()
        pipeline = Pipeline([sink], metrics, bus, chosen.pipeline.queue_size)
        normaliser = Normaliser(registry, pipeline.put, ReceiveClock(), metrics)
        supervisor = ConnectionSupervisor(
            chosen.ibkr,
            state,
            registry,
            normaliser,
            backoff=ExponentialBackoff.from_config(chosen.ibkr.reconnect),
        )
        tasks = [asyncio.create_task(pipeline.run())]
        supervisor_task = asyncio.create_task(supervisor.run()) if start_supervisor else None
        if supervisor_task is not None:
            tasks.append(supervisor_task)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}", timeout=10) as control:
            stack = Stack(
                sim, chosen, bus_events, state, registry, supervisor, pipeline, sink, control, supervisor_task
            )
            try:
                yield stack
            finally:
                for task in reversed(tasks):
                    await stop(task)


def universe(*symbols: str) -> tuple[SymbolConfig, ...]:
    return tuple(SymbolConfig(symbol=s) for s in symbols)


def limits(**values: int) -> LimitsConfig:
    return LimitsConfig(**values)
