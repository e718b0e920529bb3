"""The QuestDB sink: every event lands exactly once, or is counted as lost and reported.

Flow, all driven from :meth:`QuestDBWriter.run` on the event loop:

- :meth:`accept` appends the event to ``pending``: O(1), no await. Its row (see rows.py) is built where it
  goes: in the ILP writer process for a send, in the disk thread for the spool.
- Every ``flush_interval_ms``, or as soon as ``flush_rows`` rows wait, the pending rows go out as one batch.
  *Direct* mode: the batch is sent (one transaction per table) by :class:`IlpLink` in a child process
  (ilp_process.py), driven from a worker thread. Up to ``SENDS_IN_FLIGHT`` batches are on their way at
  once, so one is handed to the child while it sends the one before; when both slots are taken, the
  next batch waits, and grows, until one is free.
  If QuestDB fails, the unsent rows go to the on-disk spool and the writer switches to *spool* mode.
- *Spool* mode: new batches are appended to the spool (so they stay behind the older rows), and every
  ``retry_interval_seconds`` the writer tries QuestDB again: schema first if it was never applied, then
  the oldest spooled rows, chunk after chunk, until the spool is empty; then back to direct mode.
- Memory stays bounded: if ``pending`` reaches ``max_pending_rows`` while a send is stuck (a slow QuestDB
  holds a request for up to ``request_timeout_seconds``), the pending rows are spilled to the spool at
  once. A spill is overload, not an outage: the writer stays in direct mode, and replays the spilled rows
  after a send that left fewer than ``flush_rows`` rows waiting. Switching to spool mode instead sent every
  later row through JSON on the disk thread as well, which cost the event loop more than it saved: past
  saturation, rows acknowledged fell from 60,000/s to 18,000-31,000/s. Rows carry their own designated
  timestamp, so spilled rows landing after newer ones, or after a batch that was in flight, is harmless.
  In the daemon the pipeline sheds at its intake before the backlog gets there, unless the writer is
  *stalled* (a send unanswered for half the request timeout): so the spool takes what a slow or silent
  QuestDB cannot, and never what the daemon's own CPU cannot carry (overload.py).
- Spool writes, reads and fsyncs happen in a second worker thread: the loop never touches the disk.

Replays are idempotent because every table has DEDUP UPSERT KEYS: a chunk re-sent after a failure in
its middle, or a segment replayed again after a crash, replaces rows with themselves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from ingestion.bus import EventBus
from ingestion.config import QuestDBConfig
from ingestion.events import Event
from ingestion.logging import alert, get_logger
from ingestion.metrics import Metrics
from ingestion.sinks.base import SinkStatus
from ingestion.sinks.ilp import DeadLetter, Delivery
from ingestion.sinks.ilp_process import IlpProcess
from ingestion.sinks.rows import Item, as_row, holdable
from ingestion.sinks.schema import ECONOMIC_DATA, QuestDBUnavailableError, apply_schema
from ingestion.sinks.spool import Spool

log = get_logger("questdb")

T = TypeVar("T")

DEAD_LETTER_FILE = "dead-letter.jsonl"
# Batches handed to the ILP writer process and not yet answered. Two let the network thread pickle one
# while the child encodes and sends the other; more would only queue in the pipe.
SENDS_IN_FLIGHT = 2


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class _Outage:
    started: float  # monotonic
    started_at: str  # ISO 8601, for people
    spooled: int = 0
    replayed: int = 0


@dataclass(slots=True)
class _Counts:
    rows_written: int = 0
    rows_lost: int = 0
    dead_lettered: int = 0
    rows_spooled: int = 0
    rows_replayed: int = 0
    last_error: str | None = None
    last_flush_at: str | None = None
    last_overflow_at: str | None = None


class QuestDBWriter:
    """The QuestDB sink. Wire it as ``QuestDBWriter(settings.questdb, bus, metrics)``.

    Args:
        config: QuestDB and spool settings.
        bus: Where outages, recoveries, overflows and rejections are published (alerts).
        metrics: The daemon's metrics.
        max_pending_rows: Rows held in memory before spilling to the spool; default 5 x ``flush_rows``.
        now_ns: Wall clock for latency (injected in tests).
    """

    name = "questdb"

    def __init__(
        self,
        config: QuestDBConfig,
        bus: EventBus,
        metrics: Metrics,
        *,
        max_pending_rows: int | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._bus = bus
        self._metrics = metrics
        self._now_ns = now_ns
        self._max_pending = max_pending_rows or 5 * config.flush_rows
        self._pending: list[Item] = []
        self._in_flight: dict[Future[Delivery], list[Item]] = {}  # in the order they were handed over
        self._sent_at: dict[Future[Delivery], float] = {}  # monotonic, when each was handed over
        self._stall_seconds = config.request_timeout_seconds / 2
        self._answered = asyncio.Event()  # a send came back: its slot is free
        self._sends: asyncio.TaskGroup | None = None  # run()'s, so that cancelling run() cancels them
        self._wake = asyncio.Event()
        self._spill = asyncio.Event()
        self._spool = Spool(config.spool)
        self._link = IlpProcess(config)
        self._net = ThreadPoolExecutor(SENDS_IN_FLIGHT, thread_name_prefix="questdb-ilp")
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="questdb-spool")
        self._http: httpx.AsyncClient | None = None
        self._direct = True
        self._reachable = True
        self._schema_ready = False
        self._next_attempt = 0.0
        self._outage: _Outage | None = None
        self._counts = _Counts()

    # --- the Sink interface -------------------------------------------------------------------------------
    def accept(self, event: Event) -> None:
        """Queue the event; never blocks, never awaits."""
        self.accept_many((event,))

    def accept_many(self, events: Sequence[Event]) -> None:
        """Queue the events, in order; never blocks, never awaits. Raises TypeError for a non-event."""
        self._pending.extend(holdable(events))
        waiting = len(self._pending)
        if waiting >= self._config.flush_rows:
            self._wake.set()
        if waiting >= self._max_pending:
            self._spill.set()

    # --- backpressure, read by the pipeline (overload.py) -------------------------------------------------
    @property
    def backlog_rows(self) -> int:
        """Rows in memory: waiting for a send, and on their way."""
        return len(self._pending) + sum(len(batch) for batch in self._in_flight.values())

    @property
    def capacity_rows(self) -> int:
        """Rows held in memory before they are spilled to the spool."""
        return self._max_pending

    @property
    def stalled(self) -> bool:
        """A send has waited for QuestDB's answer for half the request timeout: QuestDB is slow, not us."""
        sent_at = self._sent_at
        return bool(sent_at) and time.monotonic() - min(sent_at.values()) >= self._stall_seconds

    async def start(self) -> None:
        """Open the spool (replaying what a crash left) and apply the schema if QuestDB answers.

        Raises:
            SchemaMismatchError: A table exists with conflicting columns; the daemon must not start.
        """
        self._http = http_client(self._config)
        recovery = await self._on_disk(self._spool.open)
        self._update_spool_gauge()
        if recovery.rows:
            log.warning(
                "spool left by an earlier run; replaying it", rows=recovery.rows, segments=recovery.segments
            )
            self._direct = False
        try:
            await apply_schema(self._http)
        except QuestDBUnavailableError as exc:
            self._failed_attempt(str(exc))
        except BaseException:
            await self._http.aclose()
            raise
        else:
            self._schema_ready = True

    async def run(self) -> None:
        """Flush, spool and replay until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            self._sends = tasks
            tasks.create_task(self._guard_memory(), name="questdb-memory-guard")
            tasks.create_task(self._flush_loop(), name="questdb-flush")

    async def aclose(self) -> None:
        """Deliver what is pending (or spool it), then close the spool, the threads and the HTTP client."""
        pending = self._take()
        in_flight, self._in_flight = self._in_flight, {}
        self._sent_at = {}
        rows = [item for batch in in_flight.values() for item in batch] + pending
        try:
            if in_flight:
                # run() was cancelled during sends: their outcomes decide what still needs a home.
                unsent: list[Item] = []
                for future, batch in in_flight.items():
                    unsent += await self._settle(batch, future)
                rows = unsent + pending
            if rows and self._direct:
                delivery = await self._on_net(self._link.deliver, rows)
                self._record(delivery)
                rows = delivery.unsent
            if rows:
                await self._to_spool(rows)
                rows = []
            await self._on_disk(self._spool.close)
        except asyncio.CancelledError:
            # Out of time: the disk thread still writes these rows before the process exits (a row that
            # did land meanwhile is replayed next start, which DEDUP makes harmless).
            if rows:
                self._disk.submit(self._spool_items, rows)
            self._disk.submit(self._spool.close)
            raise
        finally:
            self._net.submit(self._link.close)
            self._net.shutdown(wait=False)
            self._disk.shutdown(wait=False)
            if self._http is not None:
                await self._http.aclose()

    async def _settle(self, batch: list[Item], future: Future[Delivery]) -> list[Item]:
        """Wait for an interrupted send to finish; return the rows it did not deliver."""
        if future.cancelled():  # it never started
            return batch
        delivery = await asyncio.wrap_future(future)
        self._record(delivery)
        if delivery.failed:
            self._failed_attempt(delivery.error or "unknown error")
        return delivery.unsent

    def status(self) -> SinkStatus:
        spooled = self._spool.pending_rows
        state = "ok" if self._direct and not spooled else "spooling" if self._reachable else "down"
        c = self._counts
        details: dict[str, Any] = {
            "pending_rows": len(self._pending) + spooled,
            "rows_in_memory": len(self._pending),
            "spool_bytes": self._spool.bytes,
            "rows_written": c.rows_written,
            "rows_lost": c.rows_lost,
            "dead_lettered": c.dead_lettered,
            "rows_spooled": c.rows_spooled,
            "rows_replayed": c.rows_replayed,
            "last_error": c.last_error,
            "last_flush_at": c.last_flush_at,
            "last_overflow_at": c.last_overflow_at,
            "outage_since": self._outage.started_at if self._outage else None,
            "schema_ready": self._schema_ready,
        }
        return SinkStatus(state, details)

    # --- the loops ----------------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        interval = self._config.flush_interval_ms / 1000
        while True:
            replaying = not self._direct and self._reachable and self._schema_ready
            await self._wait(0.0 if replaying else interval)
            await self._cycle()

    async def _wait(self, seconds: float) -> None:
        if seconds <= 0 or self._wake.is_set():
            await asyncio.sleep(0)
        else:
            try:
                async with asyncio.timeout(seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass  # the flush interval elapsed: flush whatever is pending
        self._wake.clear()

    async def _cycle(self) -> None:
        if self._direct:
            await self._send_slot()
        batch = self._take()
        if self._direct:
            if batch:
                self._start_send(batch)
            if self._direct and self._spool.pending_rows and len(self._pending) < self._config.flush_rows:
                await self._replay_step()  # what an overload spilled, now that there is room
            return
        if batch:
            await self._to_spool(batch)
        if time.monotonic() >= self._next_attempt:
            await self._replay_step()
        else:
            await self._on_disk(self._spool.sync_if_due)

    async def _guard_memory(self) -> None:
        while True:
            await self._spill.wait()
            self._spill.clear()
            if len(self._pending) >= self._max_pending:
                batch = self._take()
                log.warning(
                    "QuestDB slower than the feed; spilling pending rows to the spool", rows=len(batch)
                )
                await self._to_spool(batch, outage=False)

    def _take(self) -> list[Item]:
        batch, self._pending = self._pending, []
        return batch

    # --- direct sends -------------------------------------------------------------------------------------
    async def _send_slot(self) -> None:
        """Return when fewer than ``SENDS_IN_FLIGHT`` batches are on their way."""
        while len(self._in_flight) >= SENDS_IN_FLIGHT:
            self._answered.clear()
            await self._answered.wait()

    def _start_send(self, batch: list[Item]) -> None:
        assert self._sends is not None  # run() made it
        future = self._net.submit(self._link.deliver, batch)
        self._in_flight[future] = batch
        self._sent_at[future] = time.monotonic()
        self._sends.create_task(self._finish_send(future), name="questdb-send")

    async def _finish_send(self, future: Future[Delivery]) -> None:
        # Cancelled while it waits (run() stops), the batch stays in _in_flight for aclose() to settle.
        delivery = await asyncio.wrap_future(future)
        self._in_flight.pop(future, None)
        self._sent_at.pop(future, None)
        self._answered.set()
        self._record(delivery)
        if delivery.failed:
            self._failed_attempt(delivery.error or "unknown error")
            await self._to_spool(delivery.unsent)

    # --- the spool ----------------------------------------------------------------------------------------
    def _spool_items(self, items: list[Item]) -> int:
        """In the disk thread: the items' rows into the spool (see Spool.append)."""
        return self._spool.append([as_row(item) for item in items])

    async def _to_spool(self, rows: list[Item], *, outage: bool = True) -> None:
        """Spool rows; after a failed write (``outage``) later batches follow them there, in order."""
        if not rows:
            return
        lost = await self._on_disk(self._spool_items, rows)
        if outage:
            self._direct = False
        self._counts.rows_spooled += len(rows)
        if self._outage is not None:
            self._outage.spooled += len(rows)
        self._update_spool_gauge()
        if lost:
            self._overflowed(lost)

    async def _replay_step(self) -> None:
        if not self._schema_ready and not await self._apply_schema():
            return
        rows, mark = await self._on_disk(self._spool.read, self._config.flush_rows)
        if mark is not None:
            delivery = await self._on_net(self._link.deliver, rows)
            self._record(delivery)
            if delivery.failed:
                self._failed_attempt(delivery.error or "unknown error")
                return
            await self._on_disk(self._spool.commit, mark)
            self._counts.rows_replayed += len(rows)
            if self._outage is not None:
                self._outage.replayed += len(rows)
            self._reachable = True
            self._update_spool_gauge()
        # Asked on the disk thread, so a spill queued before this question is counted.
        if await self._on_disk(lambda: self._spool.empty):
            self._restored()

    async def _apply_schema(self) -> bool:
        assert self._http is not None  # start() made it
        try:
            await apply_schema(self._http)
        except QuestDBUnavailableError as exc:
            self._failed_attempt(str(exc))
            return False
        self._schema_ready = True
        log.info("QuestDB schema applied")
        return True

    # --- outage bookkeeping -------------------------------------------------------------------------------
    def _failed_attempt(self, error: str) -> None:
        self._direct = False
        self._reachable = False
        self._counts.last_error = error
        self._next_attempt = time.monotonic() + self._config.retry_interval_seconds
        if self._outage is None:
            self._outage = _Outage(time.monotonic(), _iso(time.time()))
            alert(log, "QuestDB down: spooling rows to disk", error=error)
            detail = (
                f"QuestDB not accepting writes ({error}); rows go to the spool in {self._spool.directory}"
            )
            self._bus.publish("questdb_down", detail, alert=True)

    def _restored(self) -> None:
        self._direct = True
        self._reachable = True
        outage, self._outage = self._outage, None
        if outage is None:
            log.info("spool drained")
            return
        seconds = time.monotonic() - outage.started
        alert(
            log,
            "QuestDB restored",
            outage_seconds=round(seconds, 1),
            spooled=outage.spooled,
            replayed=outage.replayed,
        )
        detail = (
            f"QuestDB restored after {seconds:.1f} s; {outage.spooled} rows spooled, "
            f"{outage.replayed} rows replayed"
        )
        self._bus.publish("questdb_restored", detail, alert=True)

    def _overflowed(self, lost: int) -> None:
        self._counts.rows_lost += lost
        self._counts.last_overflow_at = _iso(time.time())
        self._metrics.rows_lost.labels(reason="spool_overflow").inc(lost)
        cap = self._config.spool.max_bytes
        alert(log, "spool over its cap: oldest rows dropped", rows_lost=lost, max_bytes=cap)
        detail = f"spool reached its cap of {cap} bytes: dropped the {lost} oldest rows"
        self._bus.publish("spool_overflow", detail, alert=True)

    # --- accounting ---------------------------------------------------------------------------------------
    def _record(self, delivery: Delivery) -> None:
        now_ns = self._now_ns()
        for table, count in delivery.acked.items():
            self._metrics.rows_written.labels(table=table).inc(count)
            self._counts.rows_written += count
            if table != ECONOMIC_DATA.name:  # its timestamp is an observation date, not a receipt
                self._metrics.latency_questdb.observe(max(now_ns - delivery.oldest_ns[table], 0) / 1e9)
        if delivery.acked:
            self._metrics.flush_seconds.observe(delivery.seconds)
            self._counts.last_flush_at = _iso(now_ns / 1e9)
        if delivery.dead:
            self._dead_lettered(delivery.dead)

    def _dead_lettered(self, dead: list[DeadLetter]) -> None:
        self._counts.dead_lettered += len(dead)
        self._metrics.rows_dead_lettered.inc(len(dead))
        self._disk.submit(_append_dead_letters, self._spool.directory / DEAD_LETTER_FILE, dead)
        first = dead[0]
        alert(
            log, "QuestDB rejected rows; written to the dead-letter file", rows=len(dead), error=first.error
        )
        detail = f"QuestDB rejected {len(dead)} rows of {first.row[0]}: {first.error}"
        self._bus.publish("questdb_rejected", detail, alert=True)

    def _update_spool_gauge(self) -> None:
        self._metrics.spool_bytes.set(self._spool.bytes)

    async def _on_net(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._net, fn, *args)

    async def _on_disk(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)


def http_client(config: QuestDBConfig) -> httpx.AsyncClient:
    auth = None
    headers = {}
    if config.username and config.password is not None:
        auth = httpx.BasicAuth(config.username, config.password.get_secret_value())
    if config.token is not None:
        headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
    return httpx.AsyncClient(
        base_url=f"http://{config.host}:{config.http_port}",
        timeout=config.request_timeout_seconds,
        auth=auth,
        headers=headers,
    )


def _append_dead_letters(path: Any, dead: list[DeadLetter]) -> None:
    at = _iso(time.time())
    with path.open("a", encoding="utf-8") as file:
        for letter in dead:
            record = {
                "at": at,
                "table": letter.row[0],
                "error": letter.error,
                "ilp": letter.ilp,
                "row": letter.row,
            }
            file.write(json.dumps(record) + "\n")
