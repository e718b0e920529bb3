"""The pipeline in front of the real QuestDB writer and the double: a QuestDB at its limit makes the
pipeline shed (counted, alerted), never the spool; a silent one makes the writer spool, never shed; and
when the feed falls back, the writer is in direct mode again with nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sinks_helpers import BASE_NS, ConfigFactory, RecordingBus, depth, eventually, full_quote, trade

from ingestion.config import QuestDBConfig
from ingestion.events import Event
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline
from ingestion.sinks.questdb import QuestDBWriter
from questdb_double import QuestDBDouble

US = 1_000
CAPACITY = 600  # the writer's max_pending_rows: quotes shed from 240 rows, everything from 480
TABLES = {"quote": "market_data_l1", "depth": "market_data_l2", "trade": "time_and_sales"}


class Feed:
    """Reads of four events (two quotes, a depth update, a trade), each with its own timestamp."""

    def __init__(self) -> None:
        self.next_ns = BASE_NS
        self.offered = dict.fromkeys(TABLES, 0)

    def read(self) -> list[Event]:
        ts = [self.next_ns + i * US for i in range(4)]
        self.next_ns += 4 * US
        self.offered["quote"] += 2
        self.offered["depth"] += 1
        self.offered["trade"] += 1
        return [full_quote("SPY", ts[0]), depth("SPY", ts[1], position=0, operation="update"),
                trade("SPY", ts[2]), full_quote("SPY", ts[3], base=101.0)]  # fmt: skip


@contextlib.asynccontextmanager
async def running(config: QuestDBConfig, bus: RecordingBus, metrics: Metrics) -> AsyncIterator[Pipeline]:
    writer = QuestDBWriter(config, bus, metrics, max_pending_rows=CAPACITY)
    await writer.start()
    pipeline = Pipeline([writer], metrics, bus, queue_size=100_000, backpressure=writer)
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(pipeline.run())]
    try:
        yield pipeline
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pipeline.drain()
        await writer.aclose()


def writer_of(pipeline: Pipeline) -> QuestDBWriter:
    overload = pipeline.overload
    assert overload is not None
    source = overload.source
    assert isinstance(source, QuestDBWriter)
    return source


def dropped(metrics: Metrics, kind: str) -> int:
    labels = {"type": kind, "reason": "overload"}
    return int(metrics.registry.get_sample_value("ingestion_events_dropped_by_type_total", labels) or 0)


async def test_a_questdb_at_its_limit_makes_the_pipeline_shed_and_the_spool_stays_empty(
    qdb: QuestDBDouble, make_config: ConfigFactory
) -> None:
    """Bursts far beyond what the double takes, until the pipeline sheds; then a trickle until it stops."""
    qdb.throttle(500)
    bus, metrics, feed = RecordingBus(), Metrics(), Feed()
    async with running(make_config(), bus, metrics) as pipeline:
        writer = writer_of(pipeline)
        assert pipeline.overload is not None
        for _ in range(40):  # 100 events a burst: 20,000 events/s on an idle machine
            for _ in range(25):
                pipeline.put(feed.read())
            await asyncio.sleep(0.005)
            if pipeline.overload.episodes:
                break
        assert pipeline.overload.episodes >= 1
        spooled_while_overloaded = writer.status().details["rows_spooled"]
        for _ in range(400):  # 80 events/s
            pipeline.put(feed.read())
            await asyncio.sleep(0.05)
            if pipeline.overload.level == "normal" and writer.status().state == "ok":
                break
        assert pipeline.overload.level == "normal"
        assert writer.status().state == "ok"
        await eventually(lambda: writer.backlog_rows == 0, within=20, what="the backlog written")
        clock = pipeline.overload.monotonic
        pipeline.overload.monotonic = lambda: clock() + 60  # the episode's calm seconds, passed
        pipeline.put(feed.read())
        await eventually(lambda: writer.backlog_rows == 0, within=20, what="the last read written")
        details = writer.status().details
    assert spooled_while_overloaded == 0
    assert details["rows_spooled"] == 0
    assert dropped(metrics, "quote") > 0
    for kind, table in TABLES.items():
        assert qdb.row_count(table) + dropped(metrics, kind) == feed.offered[kind], kind
    assert qdb.duplicates("market_data_l1") == 0
    assert "pipeline_overload" in bus.names()
    assert "pipeline_overload_cleared" in bus.names()
    assert "questdb_down" not in bus.names()


async def test_a_silent_questdb_is_spooled_not_shed_and_every_event_lands_after_it_answers_again(
    qdb: QuestDBDouble, make_config: ConfigFactory
) -> None:
    """Each write waits 1.5 s; the request timeout is 2 s, so a send unanswered for 1 s means stalled."""
    qdb.delay(1.5)
    bus, metrics, feed = RecordingBus(), Metrics(), Feed()
    async with running(make_config(request_timeout_seconds=2.0), bus, metrics) as pipeline:
        writer = writer_of(pipeline)
        pipeline.put(feed.read())
        await eventually(lambda: writer.stalled, within=5, what="the first send stalled")
        for _ in range(250):  # 1,000 events, past the writer's capacity
            pipeline.put(feed.read())
            await asyncio.sleep(0.002)
        await eventually(lambda: writer.status().details["rows_spooled"] > 0, what="the spill")
        qdb.heal()
        await eventually(lambda: writer.status().state == "ok", within=20, what="direct mode again")
        await eventually(lambda: writer.backlog_rows == 0, within=20, what="the backlog written")
    assert pipeline.dropped == 0
    for kind, table in TABLES.items():
        assert qdb.row_count(table) == feed.offered[kind], kind
    assert "pipeline_overload" not in bus.names()
