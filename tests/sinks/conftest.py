"""Fixtures for the sink tests: the QuestDB double, configs pointing at it, a recording bus, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sinks_helpers import ConfigFactory, RecordingBus

from ingestion.config import QuestDBConfig, SpoolConfig, ValkeyConfig
from ingestion.metrics import Metrics
from questdb_double import QuestDBDouble  # tests/ is on sys.path: the root conftest lives there


@pytest.fixture
def qdb() -> Iterator[QuestDBDouble]:
    """A QuestDB double of the test's own, on a free port."""
    with QuestDBDouble() as double:
        yield double


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def make_config(qdb: QuestDBDouble, spool_dir: Path) -> ConfigFactory:
    """QuestDB settings aimed at the double, with test-sized intervals; keyword overrides apply."""

    def make(spool: dict[str, Any] | None = None, **overrides: Any) -> QuestDBConfig:
        spool_settings = {"dir": spool_dir, "fsync": "never"} | (spool or {})
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "http_port": qdb.port,
            "flush_interval_ms": 20,
            "retry_interval_seconds": 0.1,
            "request_timeout_seconds": 2.0,
            "spool": SpoolConfig(**spool_settings),
        }
        return QuestDBConfig(**(values | overrides))

    return make


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def valkey_config(valkey_url: str) -> ValkeyConfig:
    return ValkeyConfig(url=valkey_url, conflation_ms=20, status_interval_seconds=0.2, status_ttl_seconds=2)
