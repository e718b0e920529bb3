"""Stale data: no ticks for 60 s during the regular session while connected is an alert;
quiet while the market is closed, or while disconnected, is not."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ingestion.bus import EventBus
from ingestion.events import IngestionEvent
from ingestion.health import StaleDataMonitor
from ingestion.ibkr.state import ConnectionState
from ingestion.market_session import MarketCalendar
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline

REGULAR = datetime(2026, 11, 23, 15, 0, tzinfo=UTC).timestamp()  # Monday, 10:00 New York
THANKSGIVING = datetime(2026, 11, 26, 15, 0, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def calendar() -> MarketCalendar:
    return MarketCalendar(start=date(2026, 11, 1), end=date(2026, 12, 31))


class World:
    """A monitor with a settable clock, a real connection state, pipeline and bus."""

    def __init__(self, calendar: MarketCalendar, start: float) -> None:
        self.now = start
        self.events: list[IngestionEvent] = []
        bus = EventBus()
        bus.subscribe(self.events.append)
        metrics = Metrics()
        self.state = ConnectionState(bus, metrics, "gw", 4002)
        self.pipeline = Pipeline([], metrics, bus, 100)
        self.monitor = StaleDataMonitor(60, self.state, self.pipeline, calendar, bus, now=lambda: self.now)

    def connect(self) -> None:
        self.state.connecting()
        self.state.connected(178)

    def tick(self) -> None:
        self.pipeline.last_event_ns = int(self.now * 1e9)

    def after(self, seconds: float) -> None:
        self.now += seconds
        self.monitor.check()

    def named(self, name: str) -> list[IngestionEvent]:
        return [e for e in self.events if e.event == name]


def test_sixty_quiet_seconds_in_the_regular_session_raise_one_alert(calendar: MarketCalendar) -> None:
    """Connected, regular session, last tick 60 s ago: one stale_data alert, not one per check."""
    world = World(calendar, REGULAR)
    world.connect()
    world.after(0)
    world.tick()
    world.after(59)
    assert world.named("stale_data") == []
    world.after(1)
    world.after(5)
    world.after(5)
    (alert,) = world.named("stale_data")
    assert alert.alert
    assert world.monitor.stale


def test_ticks_resuming_clear_the_alert(calendar: MarketCalendar) -> None:
    """When data flows again the episode ends with one stale_data_cleared event."""
    world = World(calendar, REGULAR)
    world.connect()
    world.after(0)
    world.after(61)
    world.tick()
    world.after(1)
    assert not world.monitor.stale
    assert len(world.named("stale_data_cleared")) == 1


def test_quiet_on_a_holiday_is_not_stale(calendar: MarketCalendar) -> None:
    """Thanksgiving: no ticks all day is what a closed market looks like."""
    world = World(calendar, THANKSGIVING)
    world.connect()
    world.after(0)
    world.after(3600)
    assert world.named("stale_data") == []


def test_quiet_while_disconnected_is_not_stale(calendar: MarketCalendar) -> None:
    """A lost connection has its own alert; it is not also reported as stale data."""
    world = World(calendar, REGULAR)
    world.after(600)
    assert world.named("stale_data") == []


def test_the_quiet_period_counts_from_the_connect_not_from_the_last_tick_before_it(
    calendar: MarketCalendar,
) -> None:
    """After a reconnect, an old last tick does not make the fresh connection stale at once."""
    world = World(calendar, REGULAR)
    world.tick()
    world.now += 3600
    world.connect()
    world.after(1)
    assert world.named("stale_data") == []
