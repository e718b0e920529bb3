"""A synchronous in-process publisher for :class:`~ingestion.events.IngestionEvent`.

State owners (the connection supervisor, the sinks, the FRED poller) publish what happened; the
alerting fan-out, the QuestDB writer and the status page subscribe. Handlers run inline and must
not block: anything slow (a webhook POST) is queued by the handler itself.
"""

from __future__ import annotations

from collections.abc import Callable

from ingestion.events import IngestionEvent, ReceiveClock
from ingestion.logging import get_logger

Handler = Callable[[IngestionEvent], None]

log = get_logger("bus")


class EventBus:
    """Fan-out of ingestion events to subscribers, in subscription order."""

    def __init__(self, clock: ReceiveClock | None = None) -> None:
        self._handlers: list[Handler] = []
        self._clock = clock or ReceiveClock()

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def publish(
        self, event: str, detail: str, *, code: int | None = None, alert: bool = False
    ) -> IngestionEvent:
        """Build an event stamped now and hand it to every subscriber."""
        item = IngestionEvent(self._clock.now_ns(), event, detail, code, alert)
        for handler in self._handlers:
            try:
                handler(item)
            except Exception:
                # One broken subscriber must not stop the others from hearing about an outage.
                log.exception("event handler failed", handler=repr(handler), ingestion_event=event)
        return item
