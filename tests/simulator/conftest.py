"""Fixtures: an in-process simulator on free ports, its control API, and a raw wire client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

import httpx
import pytest
from sim_support import BASE_CONFIG, SimFactory

from ingestion.simulator.server import Simulator, running_simulator


@pytest.fixture
def sim_factory() -> SimFactory:
    """``async with sim_factory(rate=..., clock=...) as sim``: a simulator with overridden options
    (and, with ``clock``, a clock of its own instead of the wall clock)."""

    def make(
        clock: Callable[[], float] = time.time, **overrides: object
    ) -> AbstractAsyncContextManager[Simulator]:
        return running_simulator(replace(BASE_CONFIG, **overrides), clock)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with default limits, streaming 20,000 messages/s."""
    async with running_simulator(BASE_CONFIG) as simulator:
        yield simulator


@pytest.fixture
async def control(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the simulator's control API."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}", timeout=5) as client:
        yield client
