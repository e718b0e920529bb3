"""Fixtures of the history tests."""

from __future__ import annotations

import pytest

from api.headless_chromium import INSTALL_HINT, find_chromium


@pytest.fixture
def chromium() -> str:
    """The browser of the status page check (as in tests/api)."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(INSTALL_HINT)
    return binary
