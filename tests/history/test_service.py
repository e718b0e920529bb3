"""The history service against a scripted IB: retries never loop, bad answers are skipped, gaps told once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from history_helpers import AlwaysOpen

from ingestion.bus import EventBus
from ingestion.config import HistoryConfig, Settings
from ingestion.events import Trade
from ingestion.history import pending as saved_gaps
from ingestion.history.client import NoData, PacingViolation, RequestTimedOut
from ingestion.history.gaps import Gap, GapTracker
from ingestion.history.service import MAX_RETRIES, HistoryService
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.metrics import Metrics
from ingestion.sinks.schema import apply_schema
from questdb_double import QuestDBDouble
from waiting import wait_for

T0 = 1_765_000_000


def tick(second: int, price: Any, size: Any = 100, exchange: str = "ARCA") -> Any:
    attrib = SimpleNamespace(pastLimit=False, unreported=False)
    moment = datetime.fromtimestamp(second, UTC) if second else None
    return SimpleNamespace(time=moment, tickAttribLast=attrib, price=price, size=size, exchange=exchange,
                           specialConditions="")  # fmt: skip


class ScriptedIB:
    """Answers trade_ticks from a script (one per symbol, or shared): a result or an exception per request."""

    def __init__(self, script: list[Any] | dict[str, list[Any]]) -> None:
        self.script = script
        self.requests: list[int] = []
        self.symbols: list[str] = []

    async def trade_ticks(self, symbol: str, start: int, what: str = "TRADES") -> list[Any]:
        self.requests.append(start)
        self.symbols.append(symbol)
        script = self.script[symbol] if isinstance(self.script, dict) else self.script
        step = script.pop(0) if script else []
        if isinstance(step, Exception):
            raise step
        return step

    async def bars(self, *args: Any) -> list[Any]:
        return []


class Sink:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    def accept_many(self, events: Any) -> None:
        self.rows.extend(events)


@pytest.fixture
def qdb() -> Iterator[QuestDBDouble]:
    with QuestDBDouble() as double:
        yield double


@asynccontextmanager
async def service(
    qdb: QuestDBDouble,
    script: Any,
    give_up_hours: float = 6.0,
    symbols: tuple[str, ...] = ("SPY",),
    state_path: Path | None = None,
) -> AsyncIterator[tuple[HistoryService, Any]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{qdb.port}") as http:
        await apply_schema(http)
    clock = SimpleNamespace(now=float(T0))
    bus = EventBus()
    metrics = Metrics()
    settings = Settings.model_validate({"universe": list(symbols)})
    state = ConnectionState(bus, metrics, "127.0.0.1", 4002)
    config = HistoryConfig.model_validate(
        {
            "bars": [],
            "backfill": {"settle_seconds": 1, "stall_seconds": 3600, "give_up_hours": give_up_hours},
            "pacing": {"retry_seconds": 0.05},
        }
    )
    sink = Sink()
    published: list[tuple[str, str]] = []
    bus.subscribe(lambda e: published.append((e.event, e.detail)))
    ib = ScriptedIB(script)
    registry = SubscriptionRegistry(settings, bus, metrics)
    tracker = GapTracker(config.backfill, list(symbols), state, registry, AlwaysOpen(), now=lambda: clock.now)
    history = HistoryService(
        config, tracker, list(symbols), calendar=AlwaysOpen(), state=state,  # type: ignore[arg-type]
        registry=registry, questdb=sink,  # type: ignore[arg-type]
        http=lambda: httpx.AsyncClient(base_url=f"http://127.0.0.1:{qdb.port}"),
        connection=SimpleNamespace(ib=None), bus=bus, metrics=metrics, now=lambda: clock.now,
        client=ib, state_path=state_path,  # type: ignore[arg-type]
    )  # fmt: skip
    task = asyncio.create_task(history.run())
    world = SimpleNamespace(clock=clock, state=state, sink=sink, published=published, ib=ib, task=task)
    try:
        state.connected(178)
        await wait_for(lambda: not history.tracker.pending_start(), 5, "the downtime start read from QuestDB")
        # One live trade at T0, then an outage of 10 s.
        history.tracker.accept_many([Trade("SPY", T0 * 10**9 + 5000, T0 * 10**9, 1.0, 100.0, "ARCA", None,
                                           False, False, "tick_by_tick")])  # fmt: skip
        state.lost("test outage")
        await wait_for(lambda: history.tracker.open, 5, "the gap opened")
        clock.now = T0 + 10
        state.connected(178)
        await asyncio.sleep(0.7)
        clock.now = T0 + 30  # past settle and latency: the gap is ready
        yield history, world
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def events(world: Any, name: str) -> list[str]:
    return [detail for event, detail in world.published if event == name]


async def test_a_gap_is_filled_with_the_trades_live_missed_and_garbage_ticks_are_skipped(
    qdb: QuestDBDouble,
) -> None:
    answer = [
        tick(T0, 1.0),
        tick(T0 + 3, 1.1),
        tick(T0 + 4, "garbage"),
        tick(0, 1.2),
        tick(T0 + 5, 1.3, None),
    ]
    async with service(qdb, [answer]) as (history, world):
        await wait_for(lambda: history.status()["gaps_filled"] == 1, 5, "the gap filled")
    assert [(r.exchange_time_ns // 10**9, r.price, r.source) for r in world.sink.rows] == [
        (T0 + 3, 1.1, "backfill")
    ]
    (filled,) = events(world, "gap_filled")
    assert "1 trades recovered" in filled
    assert "1 requests" in filled


async def test_a_pacing_violation_waits_and_retries_then_succeeds(qdb: QuestDBDouble) -> None:
    async with service(qdb, [PacingViolation("162: pacing violation"), [tick(T0 + 2, 1.5)]]) as (
        history,
        world,
    ):
        await wait_for(lambda: history.status()["gaps_filled"] == 1, 5, "the gap filled after one retry")
        status = history.status()
    assert status["pacing_violations"] == 1
    assert len(world.ib.requests) == 2
    assert len(world.sink.rows) == 1


async def test_pacing_violations_without_end_give_up_after_a_few_retries_and_say_so_once(
    qdb: QuestDBDouble,
) -> None:
    script = [PacingViolation("162: pacing violation")] * 20
    async with service(qdb, script) as (history, world):
        await wait_for(lambda: history.status()["gaps_unfilled"] == 1, 10, "the gap given up")
        await asyncio.sleep(0.5)
        assert not world.task.done(), "the component goes on"
    assert len(world.ib.requests) == MAX_RETRIES + 1
    (unfilled,) = events(world, "gap_unfilled")
    assert "pacing violation" in unfilled


async def test_a_window_ib_has_no_data_for_is_reported_once_with_the_reason(qdb: QuestDBDouble) -> None:
    async with service(qdb, [NoData("162: HMDS query returned no data")]) as (history, world):
        await wait_for(lambda: history.status()["gaps_unfilled"] == 1, 5, "the gap reported")
        await asyncio.sleep(0.3)
    assert len(world.ib.requests) == 1
    (unfilled,) = events(world, "gap_unfilled")
    assert "no data" in unfilled


async def test_an_hmds_that_does_not_answer_is_waited_for_then_the_gap_is_reported_once(
    qdb: QuestDBDouble,
) -> None:
    """Timeouts are retried beyond the retry limit of other failures, until give_up_hours (36 s here)."""
    script = [RequestTimedOut("no answer within 60 s (is the HMDS farm down?)")] * 50
    async with service(qdb, script, give_up_hours=0.01) as (history, world):
        await wait_for(lambda: len(world.ib.requests) > MAX_RETRIES + 1, 10, "retries past the usual limit")
        assert history.status()["gaps_unfilled"] == 0
        world.clock.now = T0 + 40
        await wait_for(lambda: history.status()["gaps_unfilled"] == 1, 10, "the gap given up")
        asked = len(world.ib.requests)
        await asyncio.sleep(0.5)
        assert len(world.ib.requests) == asked, "nothing more is asked for a gap given up"
    (unfilled,) = events(world, "gap_unfilled")
    assert "HMDS" in unfilled


def full_answer(first: int) -> list[Any]:
    """1,000 trades, 200 in each of five seconds from ``first``: IB has more after them."""
    return [tick(first + i // 200, 1.0 + i / 10_000) for i in range(1000)]


async def test_a_long_gap_is_read_a_request_at_a_time_and_does_not_hold_up_a_short_one(
    qdb: QuestDBDouble,
) -> None:
    script = {
        "SPY": [full_answer(T0), full_answer(T0 + 5), [tick(T0 + 10, 2.0)]],
        "QQQ": [[tick(T0 + 3, 3.0)]],
    }
    async with service(qdb, script, symbols=("SPY", "QQQ")) as (history, world):
        await wait_for(lambda: history.status()["gaps_filled"] == 2, 5, "both gaps filled")
    assert world.ib.symbols == ["SPY", "QQQ", "SPY", "SPY"]
    assert world.ib.requests[2:] == [T0 + 5, T0 + 10], "each request starts after the last whole second"
    spy = [r for r in world.sink.rows if r.symbol == "SPY"]
    assert len(spy) == 2000  # every trade but the one live stored at T0 (the first, price 1.0)


async def test_a_gap_waiting_when_the_daemon_stopped_is_filled_after_the_restart(
    qdb: QuestDBDouble, tmp_path: Path
) -> None:
    """Closed gaps survive a restart; what live stored in the window is read back from QuestDB first."""
    state = tmp_path / "history-gaps.json"
    gap = Gap("SPY", T0, float(T0), set(), "connection", settle_seconds=1)
    gap.cleared_at = T0 + 9.5  # the window is T0 .. T0 + 10
    saved_gaps.save(state, [gap])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{qdb.port}") as http:
        await apply_schema(http)
        live = "time_and_sales,symbol=SPY,exchange=ARCA,source=tick_by_tick"
        stored = f"{live} exchange_time={T0 * 10**6}t,price=1.0,size=100.0 {T0 * 10**9 + 5_000_000}\\n"
        (await http.post("/write", content=stored)).raise_for_status()
    answer = [tick(T0, 1.0), tick(T0 + 4, 1.4), tick(T0 + 10, 2.0)]
    async with service(qdb, {"SPY": [answer]}, state_path=state) as (history, world):
        await wait_for(lambda: history.status()["gaps_filled"] == 2, 10, "the restored gap and the new one")
        await wait_for(lambda: saved_gaps.load(state, 1) == [], 5, "the state file emptied")
    restored = sorted((r.exchange_time_ns // 10**9, r.price) for r in world.sink.rows)
    assert restored == [(T0 + 4, 1.4), (T0 + 10, 2.0)], "the trade live stored at T0 is not stored again"


async def test_downtime_beyond_the_look_back_is_reported_and_the_part_within_it_filled(
    qdb: QuestDBDouble,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{qdb.port}") as http:
        await apply_schema(http)
        old = T0 - 10 * 86400  # ten days before: the look-back is five
        fields = f"exchange_time={old * 10**6}t,price=1.0,size=1.0"
        row = f"time_and_sales,symbol=SPY,source=rtvolume {fields} {old * 10**9}"
        (await http.post("/write", content=row + "\n")).raise_for_status()
    within = T0 - 5 * 86400 + 10  # in the look-back's first (UTC) day
    async with service(qdb, [[tick(within, 3.0)]]) as (history, world):
        await wait_for(lambda: history.status()["gaps_filled"] >= 1, 10, "the look-back's part filled")
    (unfilled,) = events(world, "gap_unfilled")
    assert "beyond backfill.lookback_days (5)" in unfilled
    assert world.ib.requests[0] == T0 - 5 * 86400, "filled from the start of the look-back"
    assert [(r.exchange_time_ns // 10**9, r.price) for r in world.sink.rows] == [(within, 3.0)]
