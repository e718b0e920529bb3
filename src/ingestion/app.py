"""Composition root: build every component from one Settings object, run them, stop them.

Lifecycle (each step bounded in time)::

    start   sinks start (schema, spool recovery), API listens, then the IBKR supervisor
    run     supervisor, pipeline, sinks, FRED, stale-data monitor, API: one TaskGroup
    stop    on SIGTERM/SIGINT: 1. supervisor cancels subscriptions and disconnects ("Disconnected")
            2. the pipeline hands queued events to the sinks  3. sinks flush (spool what QuestDB
            cannot take)  4. the API stops; all within SHUTDOWN_SECONDS, then exit 0

A second signal while stopping gives up waiting and exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ingestion import __version__
from ingestion.alerts import AlertLog, WebhookNotifier
from ingestion.api import ApiPortInUseError, ApiServer, create_app
from ingestion.bus import EventBus
from ingestion.config import Settings
from ingestion.events import IngestionEvent, ReceiveClock
from ingestion.fred import FredPoller
from ingestion.health import HealthReporter, StaleDataMonitor
from ingestion.history.gaps import GapTracker
from ingestion.history.service import HistoryService
from ingestion.history.windows import AlwaysOpen, Calendar
from ingestion.ibkr.normalise import Normaliser
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.ibkr.supervisor import ConnectionSupervisor
from ingestion.live_events import EventFeed
from ingestion.logging import get_logger
from ingestion.market_session import MarketCalendar
from ingestion.market_summary import MarketSummary
from ingestion.memory import freeze_startup_heap, pin_mmap_threshold, tune_collector
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline
from ingestion.sinks.questdb import QuestDBWriter, http_client
from ingestion.sinks.schema import SchemaMismatchError
from ingestion.sinks.spool import SpoolNotWritableError
from ingestion.sinks.valkey import ValkeyCache
from ingestion.timeline import ConnectionTimeline

SHUTDOWN_SECONDS = 8.0
RECANCEL_SECONDS = 1.0
DRAIN_SECONDS = 1.0
FRED_STATE_FILE = "fred-state.json"
HISTORY_STATE_FILE = "history-gaps.json"

log = get_logger("app")


@dataclass
class Daemon:
    """Every long-lived component of one daemon, built and wired, not yet started."""

    settings: Settings
    bus: EventBus
    metrics: Metrics
    clock: ReceiveClock
    calendar: MarketCalendar
    state: ConnectionState
    registry: SubscriptionRegistry
    questdb: QuestDBWriter
    valkey: ValkeyCache
    pipeline: Pipeline
    normaliser: Normaliser
    supervisor: ConnectionSupervisor
    fred: FredPoller
    stale: StaleDataMonitor
    health: HealthReporter
    alert_log: AlertLog
    webhooks: WebhookNotifier
    api: ApiServer | None = None
    feed: EventFeed = field(default_factory=EventFeed)
    timeline: ConnectionTimeline = field(default_factory=lambda: ConnectionTimeline(None))
    summary: MarketSummary | None = None
    history: HistoryService | None = None


def build(settings: Settings, *, calendar: MarketCalendar | None = None) -> Daemon:
    """Wire the components; nothing starts and no socket opens here."""
    clock = ReceiveClock()
    bus = EventBus(clock)
    metrics = Metrics()
    calendar = calendar or MarketCalendar()
    state = ConnectionState(bus, metrics, settings.ibkr.host, settings.ibkr.port)
    registry = SubscriptionRegistry(settings, bus, metrics)
    questdb = QuestDBWriter(settings.questdb, bus, metrics)
    health_ref: list[HealthReporter] = []
    valkey = ValkeyCache(settings.valkey, bus, metrics, status_provider=lambda: health_ref[0].body())
    history_calendar: Calendar = AlwaysOpen() if settings.history.market_hours == "always" else calendar
    backfill = settings.history.backfill
    tracked = [s.symbol for s in settings.universe if "time_and_sales" in s.data] if backfill.enabled else []
    gaps = GapTracker(backfill, tracked, state, registry, history_calendar)
    # The gap tracker sees live trades as a sink, in the order the QuestDB writer gets them.
    sinks = [questdb, valkey, gaps] if settings.history.enabled else [questdb, valkey]
    # Trades shed under overload are a gap in the record too: the tracker opens it and the backfill fills it.
    pipeline = Pipeline(
        sinks,
        metrics,
        bus,
        settings.pipeline.queue_size,
        backpressure=questdb,
        shed_trades=gaps if settings.history.enabled else None,
    )
    normaliser = Normaliser(registry, pipeline.put, clock, metrics)
    supervisor = ConnectionSupervisor(settings.ibkr, state, registry, normaliser)
    history = HistoryService(
        settings.history,
        gaps,
        list(settings.symbols),
        calendar=history_calendar,
        state=state,
        registry=registry,
        questdb=questdb,
        http=lambda: http_client(settings.questdb),
        connection=supervisor,
        bus=bus,
        metrics=metrics,
        state_path=settings.questdb.spool.dir / HISTORY_STATE_FILE,
    )
    fred = FredPoller(settings.fred, questdb, bus, metrics, settings.questdb.spool.dir / FRED_STATE_FILE)
    stale = StaleDataMonitor(settings.alerts.stale_after_seconds, state, pipeline, calendar, bus)
    health = HealthReporter(
        version=__version__,
        state=state,
        registry=registry,
        pipeline=pipeline,
        calendar=calendar,
        storage={"questdb": questdb, "valkey": valkey},
        stale=stale,
        fred=fred,
        started_monotonic=time.monotonic(),
        history=history,
    )
    health_ref.append(health)
    alert_log = AlertLog()
    webhooks = WebhookNotifier(settings.alerts, metrics)
    bus.subscribe(_record_in(questdb, metrics))
    bus.subscribe(valkey.accept)  # alerts go to the ingestion:events channel
    bus.subscribe(alert_log.record)
    bus.subscribe(webhooks.notify)
    feed = EventFeed()
    timeline = ConnectionTimeline(http_client(settings.questdb))
    bus.subscribe(feed.record)  # GET /events
    bus.subscribe(timeline.record)
    summary = MarketSummary(
        settings.logging.summary_interval_seconds,
        pipeline,
        registry,
        calendar,
        {"questdb": questdb, "valkey": valkey},
    )
    daemon = Daemon(
        settings, bus, metrics, clock, calendar, state, registry, questdb, valkey, pipeline,
        normaliser, supervisor, fred, stale, health, alert_log, webhooks,
        feed=feed, timeline=timeline, summary=summary, history=history,
    )  # fmt: skip
    daemon.api = ApiServer(settings.api, create_app(daemon))
    return daemon


def _record_in(questdb: QuestDBWriter, metrics: Metrics) -> Any:
    def record(event: IngestionEvent) -> None:
        # Every state change becomes a row of ingestion_events (through the spool, if need be).
        questdb.accept(event)
        if event.alert:
            metrics.alerts.labels(event.event).inc()

    return record


async def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code."""
    daemon = build(settings)
    stop = asyncio.Event()
    with _signals_set(stop):
        return await run(daemon, stop)


async def run(daemon: Daemon, stop: asyncio.Event) -> int:
    """Start everything, wait for ``stop``, then shut down in stages."""
    pinned = pin_mmap_threshold()
    log.info(
        "starting data-ingestion",
        version=__version__,
        ibkr=f"{daemon.settings.ibkr.host}:{daemon.settings.ibkr.port}",
        symbols=len(daemon.settings.universe),
        event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
        mmap_threshold_pinned=pinned,
    )
    api = daemon.api
    assert api is not None
    try:
        await daemon.questdb.start()
    except SchemaMismatchError as exc:
        # Writing into a table with other columns would store garbage: refuse to start, say why.
        log.critical("refusing to start: QuestDB schema conflict", problem=str(exc))
        await daemon.questdb.aclose()
        return 1
    except SpoolNotWritableError as exc:
        # Rows could not survive a QuestDB outage: say so now, not at the first spill.
        log.critical("refusing to start: the spool directory is not writable", problem=str(exc))
        await daemon.questdb.aclose()
        return 1
    try:
        await api.start()
    except ApiPortInUseError as exc:
        log.critical("refusing to start: the API port is taken", problem=str(exc))
        await daemon.questdb.aclose()
        return 1
    await daemon.valkey.start()
    freeze_startup_heap()
    tune_collector()
    background = [
        asyncio.create_task(api.serve(), name="api"),
        asyncio.create_task(daemon.webhooks.run(), name="webhooks"),
        asyncio.create_task(daemon.pipeline.run(), name="pipeline"),
        asyncio.create_task(daemon.questdb.run(), name="questdb"),
        asyncio.create_task(daemon.valkey.run(), name="valkey"),
        asyncio.create_task(daemon.fred.run(), name="fred"),
        asyncio.create_task(daemon.stale.run(), name="stale-data"),
    ]
    if daemon.summary is not None:
        background.append(asyncio.create_task(daemon.summary.run(), name="market-summary"))
    if daemon.history is not None:
        background.append(asyncio.create_task(daemon.history.run(), name="history"))
    supervisor = asyncio.create_task(daemon.supervisor.run(), name="ibkr")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    crashed = await _until_stop_or_crash(stopping, [supervisor, *background])
    return await _shutdown(daemon, supervisor, background, stopping, crashed=crashed)


async def _until_stop_or_crash(stopping: asyncio.Task, tasks: list[asyncio.Task]) -> bool:
    """Wait for the stop signal; True if a component raised instead. A component that simply
    returns (FRED without an API key) has nothing more to do and is not a reason to stop."""
    pending: set[asyncio.Task] = {stopping, *tasks}
    while True:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            return False
        crashed = [t for t in done if not t.cancelled() and t.exception() is not None]
        for task in crashed:
            log.critical("component crashed", component=task.get_name(), error=repr(task.exception()))
        if crashed:
            return True


async def _shutdown(
    daemon: Daemon,
    supervisor: asyncio.Task,
    background: list[asyncio.Task],
    stopping: asyncio.Task,
    *,
    crashed: bool,
) -> int:
    started = time.monotonic()
    deadline = started + SHUTDOWN_SECONDS
    stopping.cancel()
    await daemon.supervisor.drain(limit_seconds=DRAIN_SECONDS)
    await stop_tasks([supervisor], deadline)
    handed = daemon.pipeline.drain()
    daemon.feed.end_all()  # open event streams would hold the HTTP server's stop
    await stop_tasks(background, deadline)
    for sink in (daemon.questdb, daemon.valkey):
        remaining = max(0.5, deadline - time.monotonic())
        try:
            async with asyncio.timeout(remaining):
                await sink.aclose()
        except TimeoutError:
            # What a sink could not flush stays in its spool (QuestDB) or was only a cache (Valkey).
            log.error("sink did not flush in time", sink=sink.name, seconds=round(remaining, 1))  # noqa: TRY400
    await daemon.webhooks.aclose()
    await daemon.timeline.aclose()
    log.info("stopped", queued_events_flushed=handed, seconds=round(time.monotonic() - started, 2))
    return 1 if crashed else 0


async def stop_tasks(tasks: list[asyncio.Task], deadline: float) -> None:
    """Cancel ``tasks`` and wait until they end, asking again every second until ``deadline``.

    One request is not always enough: on Python 3.11, ``asyncio.wait_for`` returns a result that
    arrived together with the cancellation and drops the cancellation (fixed in 3.12), and redis-py
    sends every command through it. A Valkey writer cancelled mid-send then went on writing, and the
    shutdown waited for it forever. A second request comes only after a second, so that a task busy
    with its own clean-up is not interrupted. What is still running at the deadline is logged.
    """
    pending = {task for task in tasks if not task.done()}
    while pending and (remaining := deadline - time.monotonic()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_SECONDS, remaining))
    for task in pending:
        log.error("component did not stop in time", component=task.get_name())


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``; a second one raises KeyboardInterrupt to leave at once."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        if stop.is_set():
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)
            return
        log.info("stop requested")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, first)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
