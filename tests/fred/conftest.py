"""Fixtures for the FRED tests: a real local FRED server and the poller's real collaborators."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fred_fakes import FakeFred, FakeSeries, FredServer

from ingestion.bus import EventBus
from ingestion.events import IngestionEvent
from ingestion.metrics import Metrics


def _dgs10() -> FakeSeries:
    return FakeSeries(
        title="Market Yield on U.S. Treasury Securities at 10-Year Constant Maturity",
        units="Percent",
        frequency="Daily",
        last_updated="2026-02-27 16:18:03-06",
        observations=[
            ("2026-02-23", "4.05"),
            ("2026-02-24", "4.07"),
            ("2026-02-25", "."),  # FRED's missing-value marker
            ("2026-02-26", "4.01"),
        ],
    )


def _unrate() -> FakeSeries:
    return FakeSeries(
        title="Unemployment Rate",
        units="Percent",
        frequency="Monthly",
        last_updated="2026-02-06 07:44:02-06",
        observations=[("2025-12-01", "4.4"), ("2026-01-01", "4.3")],
    )


@pytest.fixture
def fake_fred() -> Iterator[FakeFred]:
    """A FRED answering for DGS10 and UNRATE on a free loopback port."""
    fake = FakeFred(series={"DGS10": _dgs10(), "UNRATE": _unrate()})
    server = FredServer(fake)
    server.start()
    try:
        yield fake
    finally:
        server.stop()


@pytest.fixture
def bus_events() -> tuple[EventBus, list[IngestionEvent]]:
    bus = EventBus()
    events: list[IngestionEvent] = []
    bus.subscribe(events.append)
    return bus, events


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()
