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

from daemon_stack import DaemonStack, StackFactory, module_stack


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
        async with module_stack(tmp_path / "spool", valkey or valkey_url, webhooks, questdb) as stack:
            yield stack

    return make
