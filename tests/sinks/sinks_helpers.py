"""Helpers for the sink tests: event factories, a running writer, and polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from ingestion.bus import EventBus
from ingestion.config import QuestDBConfig
from ingestion.events import DepthUpdate, EconomicObservation, IngestionEvent, Quote, Trade
from ingestion.metrics import Metrics
from ingestion.sinks.questdb import QuestDBWriter

# 2026-11-23T14:29:00Z: a minute before the user's cutoff in CONTRACTS.md.
ConfigFactory = Callable[..., QuestDBConfig]

BASE_NS = int(datetime(2026, 11, 23, 14, 29, tzinfo=UTC).timestamp()) * 1_000_000_000


async def eventually(condition: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` every 10 ms until it holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


def quote(symbol: str, ts: int, **values: float | None) -> Quote:
    fields = dict.fromkeys(
        ("bid", "ask", "last", "bid_size", "ask_size", "last_size", "volume", "high", "low", "close", "open")
    )
    fields.update(values)
    return Quote(symbol, ts, **fields)  # type: ignore[arg-type]


def full_quote(symbol: str, ts: int, base: float = 100.0) -> Quote:
    return Quote(symbol, ts, base - 0.01, base + 0.01, base, 300.0, 200.0, 50.0, 1_000_000.0,
                 base + 1, base - 1, base - 0.5, base - 0.25)  # fmt: skip


def depth(
    symbol: str,
    ts: int,
    position: int = 0,
    operation: str = "insert",
    side: str = "bid",
    price: float | None = 99.5,
    size: float | None = 100.0,
    mm: str | None = "NSDQ",
) -> DepthUpdate:
    return DepthUpdate(symbol, ts, side, position, operation, price, size, mm, True)  # type: ignore[arg-type]


def trade(symbol: str, ts: int, price: float = 100.0, exchange_time_ns: int | None = None) -> Trade:
    return Trade(symbol, ts, exchange_time_ns, price, 10.0, "ARCA", "@ T", False, True, "tick_by_tick")


def observation(series: str, ts: int, value: float) -> EconomicObservation:
    return EconomicObservation(series, ts, value)


def ingestion_event(ts: int, event: str = "ibkr_connected", code: int | None = None) -> IngestionEvent:
    return IngestionEvent(ts, event, "Connected to IBKR at 127.0.0.1:4002", code)


class RecordingBus(EventBus):
    """A real EventBus that also keeps what was published, for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[IngestionEvent] = []
        self.subscribe(self.published.append)

    def names(self) -> list[str]:
        return [e.event for e in self.published]


@contextlib.asynccontextmanager
async def running_writer(
    config: QuestDBConfig, bus: EventBus | None = None, metrics: Metrics | None = None, **kwargs: object
) -> AsyncIterator[QuestDBWriter]:
    """A started writer whose run() is a task; closed (flushing what is pending) on exit."""
    writer = QuestDBWriter(config, bus or RecordingBus(), metrics or Metrics(), **kwargs)  # type: ignore[arg-type]
    await writer.start()
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await writer.aclose()


def counter_value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0
