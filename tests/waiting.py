"""Waiting on a condition in tests: poll until true, fail with what was awaited after a deadline.

Polling, not an Event: the state under test often lives in client libraries or other processes
that offer no hook for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

Condition = Callable[[], Any]


async def wait_for(condition: Condition, within: float, what: str = "a condition", poll: float = 0.02) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy, and return that.

    Fails the test, naming ``what``, once ``within`` seconds have passed.
    """
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(poll)


async def seconds_until(condition: Condition, within: float, what: str = "a condition") -> float:
    """How long ``condition`` took to become true (fails the test after ``within`` seconds)."""
    started = time.monotonic()
    await wait_for(condition, within, what)
    return time.monotonic() - started
