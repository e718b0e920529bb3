"""Fixtures of the API tests: a real daemon with the simulator, Valkey and the QuestDB double.

``daemon_stack`` is a factory: ``async with daemon_stack() as stack:`` starts everything and
waits until the daemon is connected and ticking; leaving the block stops the daemon the way
SIGTERM does (the stop event) and checks that it exited with code 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from api_stack import (
    SIM_RATE,
    DaemonStack,
    StackFactory,
    connected_and_ticking,
    http_clients,
    running_daemon,
    stack_settings,
)

from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import running_simulator
from questdb_double import QuestDBDouble


@pytest.fixture
def daemon_stack(tmp_path: Path, valkey_url: str) -> StackFactory:
    """Factory of running stacks: simulator + daemon (QuestDB double, Valkey) + HTTP clients."""

    @asynccontextmanager
    async def make(
        *,
        webhooks: tuple[str, ...] = (),
        valkey: str | None = None,
        questdb: dict[str, Any] | None = None,
    ) -> AsyncIterator[DaemonStack]:
        with QuestDBDouble() as qdb:
            async with running_simulator(SimulatorConfig(port=0, control_port=0, rate=SIM_RATE)) as sim:
                spool = tmp_path / "spool"
                settings = stack_settings(sim, qdb, spool, valkey or valkey_url, webhooks, questdb)
                async with running_daemon(settings) as daemon, http_clients(daemon, sim) as (api, control):
                    stack = DaemonStack(daemon, sim, qdb, api, control)
                    await stack.health_where(connected_and_ticking, 20, "connected, with ticks")
                    yield stack

    return make
