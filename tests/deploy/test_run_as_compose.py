"""The data-ingestion service run exactly as compose runs it, with compose's host names mapped to
loopback: its command (ENTRYPOINT + CMD), its environment, the shipped config file, against the
simulator (started with the sim profile's command), a real Valkey and the QuestDB double.

What the user does every day is what this test does: `docker compose up`, `curl /health`,
`docker logs --follow`, the verification SQL, and `docker compose stop` (SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from deploy_files import load_compose, read_dockerfile, resolve_defaults, service_environment
from test_deploy_dockerfile import healthcheck_command, run_healthcheck

from ports import free_port
from questdb_double import QuestDBDouble

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
USER_SQL = (
    "SELECT symbol, COUNT(*) AS total_ticks, MIN(timestamp) AS first_tick, MAX(timestamp) AS last_tick "
    "FROM market_data_l1 GROUP BY symbol ORDER BY last_tick DESC"
)


class LogReader:
    """Collects the daemon's stdout lines as `docker logs --follow` would show them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def close(self, process: subprocess.Popen[str]) -> None:
        self._thread.join(5)
        assert process.stdout is not None
        process.stdout.close()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.05)
        tail = "\n".join(self.lines[-20:])
        pytest.fail(f"no log line containing {text!r} within {timeout} s; last lines:\n{tail}")


def compose_service(name: str) -> dict:
    return resolve_defaults(load_compose()["services"][name])


def image_command() -> list[str]:
    """ENTRYPOINT + CMD of the final stage, as Docker runs them."""
    final = read_dockerfile().stages[-1]
    entrypoint = json.loads(final.last("ENTRYPOINT").arguments)
    command = json.loads(final.last("CMD").arguments)
    return [*entrypoint, *command]


def compose_environment(
    gateway_port: int, questdb_port: int, valkey_url: str, api_port: int, **paths: str
) -> dict[str, str]:
    """compose's environment for the daemon, its service host names mapped to loopback ports (and
    ``paths``, such as SPOOL_DIR, to where the daemon runs)."""
    environment = service_environment(compose_service("data-ingestion"))
    loopback = {
        "IBKR_HOST": "127.0.0.1",
        "IBKR_PORT": str(gateway_port),
        "QUESTDB_HOST": "127.0.0.1",
        "QUESTDB_HTTP_PORT": str(questdb_port),
        "VALKEY_URL": valkey_url,
        "API_PORT": str(api_port),
        **paths,
    }
    assert set(loopback) <= set(environment), "only what compose sets is remapped"
    return environment | loopback


@contextmanager
def compose_simulator(*extra_args: str) -> Iterator[tuple[int, int]]:
    """The sim profile's simulator, its command as in compose but bound to loopback on free ports:
    (TWS API port, control port)."""
    command = compose_service("ib-gateway-sim")["command"]
    port, control = free_port(), free_port()
    replaced = {"--host": "127.0.0.1", "--port": str(port), "--control-port": str(control)}
    args = [replaced.get(command[i - 1], word) if i else word for i, word in enumerate(command)]
    process = subprocess.Popen(
        [str(BIN / "ingestion"), *args, *extra_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield port, control
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def simulator_ports() -> Iterator[tuple[int, int]]:
    with compose_simulator() as ports:
        yield ports


@pytest.mark.slow
def test_the_service_runs_as_compose_runs_it(simulator_ports, valkey_url: str, tmp_path: Path) -> None:
    """1. compose's environment with host names mapped to loopback starts the daemon, on uvloop;
    2. the HEALTHCHECK passes and /health is 200 healthy with 15 symbols subscribed;
    3. every stdout line is one JSON object; the contract's log lines appear;
    4. the user's verification SQL returns rows for all 15 symbols;
    5. a dropped gateway gives the ALERT line and reconnection attempts, then recovery;
    6. SIGTERM stops it with exit 0 within 10 s, saying Disconnected."""
    gateway_port, control_port = simulator_ports
    api_port = free_port()
    with QuestDBDouble() as questdb:
        environment = compose_environment(
            gateway_port,
            questdb.port,
            valkey_url,
            api_port,
            SPOOL_DIR=str(tmp_path / "spool"),
            INGESTION_CONFIG=str(REPO / "config" / "config.yaml"),
        )
        base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
        command = image_command()
        assert command == ["ingestion", "run"]
        daemon = subprocess.Popen(
            [str(BIN / command[0]), *command[1:]],
            env={**base, **environment, "PYTHONUNBUFFERED": "1"},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        logs = LogReader(daemon)
        try:
            starting = json.loads(logs.wait_for("starting data-ingestion", 20))
            assert starting["event_loop"] == "uvloop", "the image runs the daemon on uvloop"
            logs.wait_for(f"Connected to IBKR at 127.0.0.1:{gateway_port}", 20)
            logs.wait_for("Subscribed to 15 symbols", 10)
            health = _wait_healthy(api_port)
            assert health["symbols_subscribed"] == 15
            assert health["subscriptions"]["active"] == 33
            assert run_healthcheck(healthcheck_command(read_dockerfile()), api_port) == 0

            rows = _user_sql_rows(questdb.port, USER_SQL, expect_symbols=15)
            assert {row[0] for row in rows} == set(compose_or_default_universe())

            httpx.post(f"http://127.0.0.1:{control_port}/disconnect").raise_for_status()
            lost = logs.wait_for("IBKR Connection Lost at", 5)
            assert "ALERT" in lost
            assert json.loads(lost)["level"] == "alert"
            logs.wait_for("Attempting reconnection... (attempt 1)", 5)
            _wait_healthy(api_port)
        finally:
            daemon.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = daemon.wait(15)
            stopped_in = time.monotonic() - started
            logs.close(daemon)
        assert code == 0
        assert stopped_in < 10
        logs.wait_for('"Disconnected"', 2)
        for line in logs.lines:
            assert isinstance(json.loads(line), dict), f"not a JSON object: {line}"


def compose_or_default_universe() -> tuple[str, ...]:
    from ingestion.config import DEFAULT_UNIVERSE

    return DEFAULT_UNIVERSE


def _wait_healthy(api_port: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2)
            body = response.json()
            if response.status_code == 200 and body["status"] == "healthy":
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"/health not healthy within {timeout} s: {body}")


def _user_sql_rows(port: int, sql: str, expect_symbols: int, timeout: float = 10) -> list[list]:
    deadline = time.monotonic() + timeout
    rows: list[list] = []
    while time.monotonic() < deadline:
        answer = httpx.get(f"http://127.0.0.1:{port}/exec", params={"query": sql}).json()
        rows = answer.get("dataset", [])
        if len(rows) >= expect_symbols:
            return rows
        time.sleep(0.2)
    pytest.fail(f"the verification SQL returned {len(rows)} rows, expected {expect_symbols}")
