"""The bounded queue between the IB client and the sinks, and its fan-out.

``put`` is called inline from ib_async callbacks with the events of one socket read, so it never
blocks: a full queue means the sinks fall behind, and the events that do not fit are dropped,
counted and reported rather than growing memory without bound. ``run`` hands each read's events to
every sink in one ``accept_many`` call, whose work is non-blocking too (see sinks/base.py).

The queue holds lists, one per read, and is bounded in events. At saturation a read brings a few
hundred messages, so the per-event cost of an ``asyncio.Queue`` put and get and of one call per
sink and event (together about a tenth of the event loop, py-spy) is paid per read instead.

Past what QuestDB and the machine carry, the pipeline sheds at its intake (see overload.py): an explicit
state, counted per kind (``ingestion_events_dropped_by_type``), alerted when it starts and when it ends.
Every event the normaliser received is then either handed to the sinks or counted as dropped; the trades
shed are also told to a :class:`~ingestion.overload.ShedTrades` listener (the gap tracker), so that they
are filled back from IB's history once the overload is over.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence

from ingestion.bus import EventBus
from ingestion.events import DepthUpdate, Event, Quote, Trade
from ingestion.logging import alert, get_logger
from ingestion.metrics import Metrics
from ingestion.overload import Backpressure, Episode, Level, OverloadState, ShedTrades
from ingestion.sinks.base import Sink

log = get_logger("pipeline")

DROP_REPORT_INTERVAL_SECONDS = 10.0
KINDS: dict[type, str] = {Quote: "quote", DepthUpdate: "depth", Trade: "trade"}


def kind_of(event: Event) -> str:
    return KINDS.get(type(event), "other")


class Pipeline:
    """Events in, in order, to every sink."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        metrics: Metrics,
        bus: EventBus,
        queue_size: int,
        *,
        backpressure: Backpressure | None = None,
        shed_trades: ShedTrades | None = None,
    ) -> None:
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
        self.overload = OverloadState(backpressure) if backpressure is not None else None
        self._shed_trades = shed_trades
        self._count_drops = {
            (kind, reason): metrics.events_dropped_by_type.labels(type=kind, reason=reason).inc
            for kind in (*KINDS.values(), "other")
            for reason in ("overload", "queue_full")
        }

    @property
    def depth(self) -> int:
        """Events queued, not yet handed to the sinks."""
        return self._queued

    def put(self, events: Sequence[Event]) -> None:
        """Enqueue the events of one read, in order; never blocks, never raises."""
        if self.overload is not None and events:
            self.last_event_ns = events[-1].timestamp_ns  # data arrives, whether or not it is shed
            before, level, began = self.overload.update(self._queued, events[-1].timestamp_ns)
            if level != before:
                self._level_changed(before, level, began=began)
            if level == "normal" and (episode := self.overload.calm_episode_over()) is not None:
                self._episode_over(episode)
            if level != "normal":
                events = self._shed(events, level)
                if not events:
                    return
        room = self._capacity - self._queued  # never negative: put() only queues what fits
        if len(events) > room:
            self._count_by_kind(events[room:], "queue_full")
            self._drop(len(events) - room)
            events = events[:room]
            if not events:
                return
        self._batches.append(events)
        self._queued += len(events)
        self.received += len(events)
        self.last_event_ns = events[-1].timestamp_ns
        self._ready.set()

    def _shed(self, events: Sequence[Event], level: Level) -> Sequence[Event]:
        """What ``level`` lets through; the rest counted as dropped, by kind."""
        if level == "shedding_all":
            kept: Sequence[Event] = ()
            shed = events
        else:
            kept = [event for event in events if type(event) is not Quote]
            if len(kept) == len(events):
                return events
            shed = [event for event in events if type(event) is Quote]
        self.dropped += len(shed)
        self._metrics.events_dropped.inc(len(shed))
        by_kind = self._count_by_kind(shed, "overload")
        if "trade" in by_kind and self._shed_trades is not None:
            self._shed_trades.trades_shed([event for event in shed if type(event) is Trade])
        episode = self.overload.episode if self.overload is not None else None
        assert episode is not None  # put() started it before shedding
        for kind, count in by_kind.items():
            episode.shed[kind] = episode.shed.get(kind, 0) + count
        return kept

    def _count_by_kind(self, events: Sequence[Event], reason: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in events:
            kind = kind_of(event)
            counts[kind] = counts.get(kind, 0) + 1
        for kind, count in counts.items():
            self._count_drops[kind, reason](count)
        return counts

    def _level_changed(self, before: Level, level: Level, *, began: bool) -> None:
        self._metrics.overload_state.set({"normal": 0, "shedding_quotes": 1, "shedding_all": 2}[level])
        if before == "shedding_all" and self._shed_trades is not None:
            self._shed_trades.trade_shedding_over()
        if began:
            what = "Level 1 quotes" if level == "shedding_quotes" else "every event"
            detail = f"overloaded: QuestDB and this machine take fewer rows than arrive; shedding {what}"
            alert(log, detail, level=level)
            self._bus.publish("pipeline_overload", detail, alert=True)
        else:
            log.info("overload level changed", before=before, level=level)

    def _episode_over(self, episode: Episode) -> None:
        assert self.overload is not None
        seconds = self.overload.monotonic() - episode.started
        shed = ", ".join(f"{count} {kind}" for kind, count in sorted(episode.shed.items())) or "nothing"
        detail = f"overload over after {seconds:.1f} s; shed {shed}"
        alert(log, detail, shed=episode.total, seconds=round(seconds, 1))
        self._bus.publish("pipeline_overload_cleared", detail, alert=True)

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
