"""The interface every sink implements, and the status it reports to /health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ingestion.events import Event

StorageState = Literal["ok", "spooling", "down"]


@dataclass(slots=True)
class SinkStatus:
    """What a sink tells /health: ``state`` plus free-form details (counts, bytes, last error)."""

    state: StorageState
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.state, **self.details}


class Sink(Protocol):
    """A consumer at the end of the pipeline.

    The pipeline calls :meth:`accept_many` from the event loop with the events of each socket read,
    in order; other producers call :meth:`accept` with one event. Both must return at once (append
    to a batch, update a conflation map) and never raise for backend trouble. Slow work happens in
    :meth:`run`, which the daemon runs as a task until it is cancelled.
    :meth:`aclose` flushes what is pending and releases resources; the caller bounds it in time
    with ``asyncio.timeout``, so it must be cancellable at every await.
    """

    name: str

    def accept(self, event: Event) -> None: ...

    def accept_many(self, events: Sequence[Event]) -> None: ...

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def aclose(self) -> None: ...

    def status(self) -> SinkStatus: ...
