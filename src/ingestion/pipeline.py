"""The bounded queue between the IB client and the sinks, and its fan-out.

``put`` is called inline from ib_async callbacks, so it never blocks: a full queue means the
sinks fall behind, and the event is dropped, counted and reported rather than growing memory
without bound. ``run`` drains the queue in batches and hands every event to every sink, whose
``accept`` is non-blocking too (see sinks/base.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ingestion.bus import EventBus
from ingestion.events import Event
from ingestion.logging import alert, get_logger
from ingestion.metrics import Metrics
from ingestion.sinks.base import Sink

log = get_logger("pipeline")

DRAIN_BATCH = 4096
DROP_REPORT_INTERVAL_SECONDS = 10.0


class Pipeline:
    """Events in, in order, to every sink."""

    def __init__(self, sinks: Sequence[Sink], metrics: Metrics, bus: EventBus, queue_size: int) -> None:
        self._sinks = tuple(sinks)
        self._metrics = metrics
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self.received = 0
        self.dropped = 0
        self.last_event_ns: int | None = None
        self._dropped_reported = 0
        self._last_drop_report = 0.0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def put(self, event: Event) -> None:
        """Enqueue one event; never blocks, never raises."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop()
            return
        self.received += 1
        self.last_event_ns = event.timestamp_ns

    def _drop(self) -> None:
        self.dropped += 1
        self._metrics.events_dropped.inc()
        now = time.monotonic()
        if now - self._last_drop_report >= DROP_REPORT_INTERVAL_SECONDS:
            self._last_drop_report = now
            lost = self.dropped - self._dropped_reported
            self._dropped_reported = self.dropped
            detail = f"pipeline queue full ({self._queue.maxsize} events): {lost} events dropped"
            alert(log, detail, dropped_total=self.dropped)
            self._bus.publish("pipeline_overflow", detail, alert=True)

    async def run(self) -> None:
        """Hand queued events to the sinks until cancelled."""
        queue = self._queue
        sinks = self._sinks
        while True:
            batch = [await queue.get()]
            while len(batch) < DRAIN_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            for event in batch:
                for sink in sinks:
                    sink.accept(event)
            self._metrics.queue_depth.set(queue.qsize())

    def drain(self) -> int:
        """Hand over what is still queued, at shutdown, after the producers stopped."""
        count = 0
        while not self._queue.empty():
            event = self._queue.get_nowait()
            for sink in self._sinks:
                sink.accept(event)
            count += 1
        return count
