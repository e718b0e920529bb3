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


async def wait_for(
    condition: Condition, within: float, what: str = "a condition", poll: float = 0.02
) -> float:
    """Poll ``condition`` until true; returns the seconds it took, fails the test after ``within``."""
    started = time.monotonic()
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(poll)
