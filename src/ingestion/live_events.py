"""Live events for ``GET /events``: every ingestion event, numbered, with a bounded history to resume from.

An :class:`EventFeed` is an :class:`~ingestion.bus.EventBus` subscriber. Each event becomes one
Server-Sent Events message whose data is the ``ingestion:events`` JSON (``event``, ``at``,
``detail``) and whose id is ``<boot>-<n>``: ``n`` counts up within one daemon process, ``boot``
tells processes apart, so a ``Last-Event-ID`` from before a restart replays the new process's
whole history instead of skipping it.

Publishing never waits for a reader. Each :class:`Listener` has a bounded queue; a reader too
slow to take what arrives is dropped (its stream ends, it reconnects with ``Last-Event-ID`` and
resumes from the history), so a stuck browser tab never holds the daemon or its memory.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time

from ingestion.events import IngestionEvent
from ingestion.logging import get_logger
from ingestion.sinks.valkey import event_body

HISTORY_SIZE = 1000
MAX_CLIENTS = 32
# Alerts come a handful per outage; this many unread means the reader has stopped reading.
CLIENT_QUEUE = 256

log = get_logger("api")


class TooManyListeners(Exception):
    """Every listener slot is taken."""


def event_json(event: IngestionEvent) -> str:
    """The ``ingestion:events`` body (``event``, ``at``, ``detail``), as one line of JSON."""
    return json.dumps(event_body(event))


def sse_message(event_id: str, data: str) -> bytes:
    """One SSE message; ``data`` is one line of JSON, so it needs one ``data:`` field."""
    return f"id: {event_id}\ndata: {data}\n\n".encode()


class Listener:
    """One reader's queue of SSE messages; ``None`` from :meth:`next` means it was dropped."""

    def __init__(self, limit: int) -> None:
        self._queue: collections.deque[bytes] = collections.deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._finishing = False
        self.dropped = False
        self.ended = asyncio.Event()  # set when dropped

    def offer(self, message: bytes) -> bool:
        """Queue ``message``; False (and the listener is dropped) when the queue is full."""
        if self.dropped:
            return False
        if len(self._queue) >= self._limit:
            self.end()
            return False
        self._queue.append(message)
        self._ready.set()
        return True

    def end(self) -> None:
        """End the stream: :meth:`next` answers None from now on."""
        self.dropped = True
        self._queue.clear()
        self._ready.set()
        self.ended.set()

    def finish(self) -> None:
        """End the stream after what is queued (the daemon stops: its last events still go out)."""
        self._finishing = True
        self._ready.set()

    async def next(self) -> bytes | None:
        """The next message, waiting for one; None once dropped, or finished and empty."""
        while not self._queue and not self.dropped and not self._finishing:
            self._ready.clear()
            await self._ready.wait()
        if self.dropped or not self._queue:
            return None
        return self._queue.popleft()


class EventFeed:
    """Numbers each event, keeps the last ``history`` of them, and hands them to every listener."""

    def __init__(
        self, *, history: int = HISTORY_SIZE, max_listeners: int = MAX_CLIENTS, queue: int = CLIENT_QUEUE
    ) -> None:
        self.boot = f"{time.time_ns() // 1_000_000:x}"
        self._history: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=history)
        self._listeners: set[Listener] = set()
        self._max = max_listeners
        self._queue = queue
        self._next = 1
        self.dropped_listeners = 0

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    @property
    def last_id(self) -> str | None:
        return f"{self.boot}-{self._history[-1][0]}" if self._history else None

    def record(self, event: IngestionEvent) -> None:
        """Bus handler: number the event, keep it, offer it to every listener. Never blocks."""
        number = self._next
        self._next += 1
        message = sse_message(f"{self.boot}-{number}", event_json(event))
        self._history.append((number, message))
        for listener in list(self._listeners):
            if not listener.offer(message):
                self._drop(listener)

    def listen(self, last_event_id: str | None = None) -> Listener:
        """A new listener, primed with what followed ``last_event_id``.

        Without an id, only events from now on. With an id of this process, the events after it
        that the history still holds; with an id of another process (the daemon restarted), the
        whole history.

        Raises:
            TooManyListeners: All :data:`MAX_CLIENTS` slots are taken.
        """
        if len(self._listeners) >= self._max:
            raise TooManyListeners(f"{self._max} event streams are open already")
        listener = Listener(self._queue)
        for message in self._missed(last_event_id):
            listener.offer(message)
        self._listeners.add(listener)
        return listener

    def close(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def end_all(self) -> None:
        """At shutdown: end every stream once its queue is sent, so that no open page holds the HTTP
        server's stop."""
        for listener in self._listeners:
            listener.finish()
        self._listeners.clear()

    def _missed(self, last_event_id: str | None) -> list[bytes]:
        if not last_event_id:
            return []
        boot, _, number = last_event_id.strip().rpartition("-")
        if boot != self.boot or not number.isdigit():
            return [message for _, message in self._history][-self._queue :]
        after = int(number)
        return [message for n, message in self._history if n > after][-self._queue :]

    def _drop(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        self.dropped_listeners += 1
        log.warning("event stream reader too slow: dropped", queued_limit=self._queue)
