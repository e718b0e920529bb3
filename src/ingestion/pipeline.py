"""The bounded queue between the IB client and the sinks, and its fan-out.

``put`` is called inline from ib_async callbacks with the events of one socket read, so it never
blocks: a full queue means the sinks fall behind, and the events that do not fit are dropped,
counted and reported rather than growing memory without bound. ``run`` hands each read's events to
every sink in one ``accept_many`` call, whose work is non-blocking too (see sinks/base.py).

The queue holds lists, one per read, and is bounded in events. At saturation a read brings a few
hundred messages, so the per-event cost of an ``asyncio.Queue`` put and get and of one call per
sink and event (together about a tenth of the event loop, py-spy) is paid per read instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence

from ingestion.bus import EventBus
from ingestion.events import Event
from ingestion.logging import alert, get_logger
from ingestion.metrics import Metrics
from ingestion.sinks.base import Sink

log = get_logger("pipeline")

DROP_REPORT_INTERVAL_SECONDS = 10.0


class Pipeline:
    """Events in, in order, to every sink."""

    def __init__(self, sinks: Sequence[Sink], metrics: Metrics, bus: EventBus, queue_size: int) -> None:
        self._sinks = tuple(sinks)
        self._metrics = metrics
        self._bus = bus
        self._capacity = queue_size
        self._batches: deque[Sequence[Event]] = deque()
        self._queued = 0
        self._ready = asyncio.Event()
        self.received = 0
        self.dropped = 0
        self.last_event_ns: int | None = None
        self._dropped_reported = 0
        self._last_drop_report = 0.0

    @property
    def depth(self) -> int:
        """Events queued, not yet handed to the sinks."""
        return self._queued

    def put(self, events: Sequence[Event]) -> None:
        """Enqueue the events of one read, in order; never blocks, never raises."""
        room = self._capacity - self._queued  # never negative: put() only queues what fits
        if len(events) > room:
            self._drop(len(events) - room)
            events = events[:room]
            if not events:
                return
        self._batches.append(events)
        self._queued += len(events)
        self.received += len(events)
        self.last_event_ns = events[-1].timestamp_ns
        self._ready.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._metrics.events_dropped.inc(count)
        now = time.monotonic()
        if now - self._last_drop_report >= DROP_REPORT_INTERVAL_SECONDS:
            self._last_drop_report = now
            lost = self.dropped - self._dropped_reported
            self._dropped_reported = self.dropped
            detail = f"pipeline queue full ({self._capacity} events): {lost} events dropped"
            alert(log, detail, dropped_total=self.dropped)
            self._bus.publish("pipeline_overflow", detail, alert=True)

    async def run(self) -> None:
        """Hand queued events to the sinks until cancelled.

        Everything queued goes in one pass. Yielding every few thousand events instead starved the
        fan-out: one 256 KiB read brings about 5,000 messages, so at saturation the queue grew to its
        bound and dropped events while the reader kept up.
        """
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._batches:
                self._hand_over(self._batches.popleft())
            self._metrics.queue_depth.set(self._queued)

    def drain(self) -> int:
        """Hand over what is still queued, at shutdown, after the producers stopped."""
        count = 0
        while self._batches:
            count += self._hand_over(self._batches.popleft())
        return count

    def _hand_over(self, events: Sequence[Event]) -> int:
        self._queued -= len(events)
        for sink in self._sinks:
            sink.accept_many(events)
        return len(events)
