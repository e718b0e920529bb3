"""The pipeline: each read's events reach every sink in order; a full queue drops, counts and says so."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ingestion.bus import EventBus
from ingestion.events import Event, IngestionEvent, Quote
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline
from ingestion.sinks.base import SinkStatus


class RecordingSink:
    """Implements the sink interface and keeps what it is handed, and in how many calls."""

    name = "recording"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls = 0

    def accept(self, event: Event) -> None:
        self.accept_many((event,))

    def accept_many(self, events: Sequence[Event]) -> None:
        self.calls += 1
        self.events.extend(events)

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def status(self) -> SinkStatus:
        return SinkStatus("ok")


def quotes(first: int, count: int) -> list[Quote]:
    return [Quote("SPY", (first + i) * 1000, 1.0, 2.0, None, None, None, None, None, None, None, None, None)
            for i in range(count)]  # fmt: skip


async def test_every_sink_gets_every_read_in_order_with_one_call_per_read() -> None:
    first, second = RecordingSink(), RecordingSink()
    pipeline = Pipeline([first, second], Metrics(), EventBus(), queue_size=1000)
    reads = [quotes(0, 3), quotes(3, 5), quotes(8, 1)]
    for read in reads:
        pipeline.put(read)
    assert pipeline.depth == 9
    runner = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0)
    runner.cancel()
    expected = [event for read in reads for event in read]
    assert first.events == expected
    assert second.events == expected
    assert first.calls == 3
    assert pipeline.depth == 0
    assert pipeline.received == 9
    assert pipeline.last_event_ns == 8000


async def test_a_backlog_of_a_hundred_thousand_events_goes_in_one_turn_of_the_loop() -> None:
    """A yield every few thousand events let the reader outrun the fan-out until the queue overflowed."""
    sink = RecordingSink()
    pipeline = Pipeline([sink], Metrics(), EventBus(), queue_size=200_000)
    for read in range(20):
        pipeline.put(quotes(read * 5000, 5000))
    runner = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0)
    runner.cancel()
    assert len(sink.events) == 100_000
    assert pipeline.depth == 0


async def test_a_full_queue_keeps_what_fits_drops_the_rest_and_alerts_once() -> None:
    sink = RecordingSink()
    bus = EventBus()
    published: list[IngestionEvent] = []
    bus.subscribe(published.append)
    metrics = Metrics()
    pipeline = Pipeline([sink], metrics, bus, queue_size=100)
    pipeline.put(quotes(0, 80))
    pipeline.put(quotes(80, 50))  # 20 fit, 30 are dropped
    pipeline.put(quotes(130, 10))  # nothing fits
    assert pipeline.depth == 100
    assert pipeline.dropped == 40
    assert metrics.registry.get_sample_value("ingestion_events_dropped_total") == 40
    assert [event.event for event in published] == ["pipeline_overflow"]
    assert "30 events dropped" in published[0].detail
    assert pipeline.drain() == 100
    assert [event.timestamp_ns for event in sink.events] == [i * 1000 for i in range(100)]
