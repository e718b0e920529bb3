"""Overload is a state of the pipeline: what it sheds at which backlog, counted per kind, alerted once
per episode, and never while the QuestDB writer is stalled (then the spool takes the rows)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from test_pipeline import RecordingSink

from ingestion.bus import EventBus
from ingestion.events import DepthUpdate, Event, IngestionEvent, Quote, Trade
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline

CAPACITY = 1000  # the writer's rows in memory before it spills: quotes shed from 400, all from 800


@dataclass
class Backlog:
    """The writer's side of the pipeline's question, set by the test."""

    backlog_rows: int = 0
    capacity_rows: int = CAPACITY
    stalled: bool = False


def read(first: int) -> list[Event]:
    """One read: two quotes, a depth update and a trade."""
    ts = first * 1000
    return [
        Quote("SPY", ts, 1.0, 2.0, None, None, None, None, None, None, None, None, None),
        DepthUpdate("SPY", ts + 1, "bid", 0, "insert", 1.0, 100.0, "NSDQ", True),
        Trade("SPY", ts + 2, None, 1.5, 10.0, "ARCA", "", False, False, "tick_by_tick"),
        Quote("SPY", ts + 3, 1.0, 2.1, None, None, None, None, None, None, None, None, None),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fixture:
    def __init__(self) -> None:
        self.backlog = Backlog()
        self.sink = RecordingSink()
        self.metrics = Metrics()
        self.bus = EventBus()
        self.published: list[IngestionEvent] = []
        self.bus.subscribe(self.published.append)
        self.pipeline = Pipeline(
            [self.sink], self.metrics, self.bus, queue_size=100_000, backpressure=self.backlog
        )
        self.clock = Clock()
        assert self.pipeline.overload is not None
        self.pipeline.overload.monotonic = self.clock

    def put(self, events: Sequence[Event]) -> None:
        self.pipeline.put(events)

    def dropped(self, kind: str) -> float:
        labels = {"type": kind, "reason": "overload"}
        return self.metrics.registry.get_sample_value("ingestion_events_dropped_by_type_total", labels) or 0.0

    def alerts(self) -> list[str]:
        return [event.event for event in self.published if event.alert]


def kinds(events: Sequence[Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_under_the_first_mark_nothing_is_shed() -> None:
    f = Fixture()
    f.backlog.backlog_rows = 399
    f.put(read(0))
    assert f.pipeline.depth == 4
    assert f.pipeline.overload is not None
    assert f.pipeline.overload.level == "normal"
    assert f.alerts() == []


def test_from_forty_percent_quotes_are_shed_and_depth_and_trades_go_through() -> None:
    f = Fixture()
    f.backlog.backlog_rows = 400
    f.put(read(0))
    f.pipeline.drain()
    assert kinds(f.sink.events) == ["DepthUpdate", "Trade"]
    assert f.dropped("quote") == 2
    assert f.dropped("trade") == 0
    assert f.pipeline.dropped == 2
    assert f.alerts() == ["pipeline_overload"]
    assert "shedding Level 1 quotes" in f.published[0].detail


def test_from_eighty_percent_every_event_is_shed_and_each_kind_is_counted() -> None:
    f = Fixture()
    f.backlog.backlog_rows = 800
    f.put(read(0))
    f.put(read(10))
    assert f.pipeline.depth == 0
    assert (f.dropped("quote"), f.dropped("depth"), f.dropped("trade")) == (4, 2, 2)
    assert f.metrics.registry.get_sample_value("ingestion_events_dropped_total") == 8
    assert f.metrics.registry.get_sample_value("ingestion_overload_state") == 2
    assert f.pipeline.last_event_ns == 10_003  # data arrived, though none of it was kept


def test_the_state_holds_until_the_backlog_is_down_to_ten_percent() -> None:
    f = Fixture()
    f.backlog.backlog_rows = 500
    f.put(read(0))
    f.backlog.backlog_rows = 150  # under the mark, above the way out: still shedding
    f.put(read(10))
    assert f.pipeline.overload is not None
    assert f.pipeline.overload.level == "shedding_quotes"
    assert f.pipeline.overload.snapshot()["shed_this_episode"] == {"quote": 4}
    f.pipeline.drain()  # the sinks took what was kept
    f.backlog.backlog_rows = 100
    f.put(read(20))
    assert f.pipeline.overload.level == "normal"
    f.pipeline.drain()
    assert len(f.sink.events) == 2 + 2 + 4


def test_one_alert_when_the_episode_starts_and_one_after_ten_calm_seconds_saying_what_was_shed() -> None:
    """At twice the sustainable rate the level comes and goes every few seconds: one episode, two alerts."""
    f = Fixture()
    for backlog in (500, 50, 500, 50):  # shedding, normal, shedding again within seconds, normal
        f.backlog.backlog_rows = backlog
        f.put(read(backlog))
        f.clock.now += 2
    assert f.alerts() == ["pipeline_overload"]
    f.clock.now += 9  # 11 s since the level was last back to normal
    f.backlog.backlog_rows = 0
    f.put(read(1000))
    assert f.alerts() == ["pipeline_overload", "pipeline_overload_cleared"]
    assert "shed 4 quote" in f.published[1].detail
    assert f.pipeline.overload is not None
    assert f.pipeline.overload.episodes == 1
    assert f.pipeline.overload.snapshot()["episode_seconds"] is None


def test_events_queued_in_the_pipeline_count_toward_the_backlog() -> None:
    f = Fixture()
    for first in range(101):  # the 101st read finds 400 events queued, none handed to the sinks yet
        f.put(read(first * 10))
    assert f.pipeline.overload is not None
    assert f.pipeline.overload.level == "shedding_quotes"


def test_a_stalled_writer_is_not_overload_the_spool_takes_the_rows_and_nothing_is_shed() -> None:
    """QuestDB that does not answer is QuestDB's problem: the writer spills to its spool."""
    f = Fixture()
    f.backlog.backlog_rows = 900
    f.backlog.stalled = True
    f.put(read(0))
    assert f.pipeline.depth == 4
    assert f.pipeline.dropped == 0
    assert f.alerts() == []


async def test_received_is_what_was_handed_on_plus_what_was_dropped() -> None:
    f = Fixture()
    runner = asyncio.create_task(f.pipeline.run())
    offered = 0
    for step, backlog in enumerate((0, 450, 900, 900, 300, 50, 0, 850, 0)):
        f.backlog.backlog_rows = backlog
        events = read(step * 10)
        offered += len(events)
        f.put(events)
        await asyncio.sleep(0)
    runner.cancel()
    assert len(f.sink.events) + f.pipeline.dropped == offered
    assert f.pipeline.received == len(f.sink.events)
    assert f.alerts() == ["pipeline_overload"]  # the level came back, but not for ten calm seconds
