"""The daemon process as a whole: what makes it refuse to start, and how it says so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ports import free_port
from questdb_double import QuestDBDouble

REPO = Path(__file__).resolve().parents[2]


def run_daemon(
    questdb: QuestDBDouble, tmp_path: Path, api_port: int, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`ingestion run` against the double, with nothing listening for IBKR or Valkey; ``extra`` adds
    environment variables."""
    environment = {
        "PATH": os.environ["PATH"],
        "INGESTION_CONFIG": str(REPO / "config" / "config.yaml"),
        "IBKR_HOST": "127.0.0.1",
        "IBKR_PORT": str(free_port()),
        "QUESTDB_HOST": "127.0.0.1",
        "QUESTDB_HTTP_PORT": str(questdb.port),
        "VALKEY_URL": f"redis://127.0.0.1:{free_port()}/0",
        "API_PORT": str(api_port),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_FORMAT": "json",
    } | extra
    return subprocess.run(
        [sys.executable, "-m", "ingestion.cli", "run"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def the_critical_line(result: subprocess.CompletedProcess[str]) -> dict:
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    (critical,) = [line for line in lines if line["level"] == "critical"]
    assert "Traceback" not in result.stdout + result.stderr
    return critical


def test_api_port_in_use_refuses_to_start_with_exit_1(tmp_path: Path) -> None:
    """Port 8500 taken by another process: exit 1 with one line naming the port, no traceback."""
    with QuestDBDouble() as questdb, socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_daemon(questdb, tmp_path, port)
    assert result.returncode == 1
    refusal = the_critical_line(result)
    assert refusal["event"] == "refusing to start: the API port is taken"
    assert str(port) in refusal["problem"]


@pytest.mark.parametrize(
    ("chosen", "running"), [(None, "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")]
)
def test_the_starting_line_names_the_event_loop_chosen(
    tmp_path: Path, chosen: str | None, running: str
) -> None:
    """By default (auto) the daemon runs on uvloop, which is installed with it on Linux;
    INGESTION__PIPELINE__EVENT_LOOP=asyncio keeps asyncio's own loop. The API port is taken so that
    the daemon stops right after saying which loop it runs on."""
    extra = {} if chosen is None else {"INGESTION__PIPELINE__EVENT_LOOP": chosen}
    with QuestDBDouble() as questdb, socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        result = run_daemon(questdb, tmp_path, taken.getsockname()[1], **extra)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    (starting,) = [line for line in lines if line["event"] == "starting data-ingestion"]
    assert starting["event_loop"] == running
    assert result.returncode == 1


def test_conflicting_questdb_schema_refuses_to_start_with_exit_1(tmp_path: Path) -> None:
    """An existing market_data_l1 with other column types: exit 1 and one critical line naming the
    table, the column and both types, instead of writing garbage or a traceback."""
    with QuestDBDouble() as questdb:
        questdb.execute(
            "CREATE TABLE market_data_l1 (timestamp TIMESTAMP, symbol VARCHAR, bid DOUBLE) "
            "TIMESTAMP(timestamp) PARTITION BY DAY WAL"
        )
        result = run_daemon(questdb, tmp_path, free_port())
    assert result.returncode == 1
    refusal = the_critical_line(result)
    assert refusal["event"] == "refusing to start: QuestDB schema conflict"
    assert "column symbol: expected SYMBOL, found VARCHAR" in refusal["problem"]


def test_a_spool_directory_that_cannot_be_written_refuses_to_start_with_exit_1(tmp_path: Path) -> None:
    """Rows could not survive a QuestDB outage: exit 1 at start with one critical line naming the
    directory, instead of a traceback at the first spill."""
    (tmp_path / "not-a-directory").write_text("a file where the spool volume should be")
    spool = tmp_path / "not-a-directory" / "spool"
    with QuestDBDouble() as questdb:
        result = run_daemon(questdb, tmp_path, free_port(), SPOOL_DIR=str(spool))
    assert result.returncode == 1
    refusal = the_critical_line(result)
    assert refusal["event"] == "refusing to start: the spool directory is not writable"
    assert f"spool directory {spool} is not writable" in refusal["problem"]
    assert "Traceback" not in result.stderr
