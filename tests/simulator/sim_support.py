"""Helpers shared by the simulator tests (importable; fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import Simulator
from waiting import wait_for

BASE_CONFIG = SimulatorConfig(port=0, control_port=0, rate=20_000.0)

SimFactory = Callable[..., AbstractAsyncContextManager[Simulator]]


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``within`` seconds."""
    await wait_for(predicate, within, "the simulator test's condition", poll=0.01)
