"""What the operator sees without asking: the daemon's stdout (``docker logs``), webhooks and /events,
from a start with no gateway through the first connection, and the ``Market data:`` summary line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sse_client import open_events
from structlog.testing import capture_logs
from webhook_receiver import webhook_receiver

from daemon_stack import SIM_RATE, connected_and_ticking, stack_settings, wait_for
from ingestion.app import build, run
from ingestion.config import LoggingConfig
from ingestion.market_summary import PREFIX
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import running_simulator
from ports import free_port
from questdb_double import QuestDBDouble

pytestmark = pytest.mark.slow

INGESTION = str(Path(sys.executable).with_name("ingestion"))
CONNECT_TIMEOUT = 2.0
# The contract's 60 s, scaled down: three intervals of data flow must give exactly three lines.
SUMMARY_SECONDS = 2.0
USER_GREP = re.compile(r"tick|price|market", re.IGNORECASE)  # grep -i "tick\|price\|market"


@dataclass
class DaemonProcess:
    """``ingestion run`` as its own process; stdout lines as JSON, with when each arrived."""

    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    async def pump(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            text = line.decode().rstrip("\n")
            self.raw.append(text)
            with contextlib.suppress(ValueError):
                self.lines.append({**json.loads(text), "_arrived": time.monotonic()})

    def find(self, pattern: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if re.search(pattern, str(line.get("event", "")))]


def _seconds(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


@contextlib.asynccontextmanager
async def daemon_process(config: Path) -> AsyncIterator[DaemonProcess]:
    process = await asyncio.create_subprocess_exec(
        INGESTION,
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    daemon = DaemonProcess(process)
    pump = asyncio.create_task(daemon.pump())
    try:
        yield daemon
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await process.wait()
            await pump


def _config(
    tmp_path: Path, gateway_port: int, api_port: int, qdb: QuestDBDouble, valkey: str, hook: str
) -> Path:
    config = {
        "ibkr": {
            "host": "127.0.0.1",
            "port": gateway_port,
            "connect_timeout_seconds": CONNECT_TIMEOUT,
            "heartbeat_interval_seconds": 1,
            "heartbeat_timeout_seconds": 1,
            "reconnect": {"initial_seconds": 0.2, "max_seconds": 0.5},
        },
        "universe": ["SPY", "QQQ", "IWM"],
        "questdb": {"host": "127.0.0.1", "http_port": qdb.port, "spool": {"dir": str(tmp_path / "spool")}},
        "valkey": {"url": valkey},
        "api": {"host": "127.0.0.1", "port": api_port},
        "alerts": {"webhooks": [hook]},
        "logging": {"format": "json", "summary_interval_seconds": SUMMARY_SECONDS},
        "fred": {"api_key": None},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_start_without_gateway_alerts_everywhere_then_restores_and_logs_market_data(
    tmp_path: Path, valkey_url: str
) -> None:
    """1. No gateway: an ALERT line, a webhook and an /events event within connect_timeout + 1 s of the
    start, once, although the attempts go on  2. the simulator starts: one connection_restored,
    carrying the wait  3. three summary intervals of data flow give exactly three ``Market data:``
    lines, each matching the user's grep, and no line per tick."""
    gateway_port, api_port = free_port(), free_port()
    with QuestDBDouble() as qdb:
        async with webhook_receiver() as hook:
            config = _config(tmp_path, gateway_port, api_port, qdb, valkey_url, hook.url)
            async with daemon_process(config) as daemon:
                await wait_for(lambda: daemon.find("^starting data-ingestion"), 20, "the start line")
                started = _seconds(daemon.find("^starting data-ingestion")[0])
                await wait_for(lambda: daemon.find("HTTP API listening"), 10, "the API")
                events = await open_events(api_port, last_event_id="0-0")  # another boot: the whole history
                lost_event = await events.until("connection_lost", CONNECT_TIMEOUT + 1)
                await wait_for(lambda: "connection_lost" in hook.events(), CONNECT_TIMEOUT + 1, "the webhook")
                webhook_seconds = time.monotonic() - daemon.find("^starting data-ingestion")[0]["_arrived"]
                await wait_for(lambda: len(daemon.find("^Attempting reconnection")) >= 3, 10, "more attempts")

                async with running_simulator(
                    SimulatorConfig(port=gateway_port, control_port=0, rate=SIM_RATE)
                ):
                    restored_event = await events.until("connection_restored", 15)
                    connected = _seconds(daemon.find("^Connected to IBKR")[0])
                    await asyncio.sleep(3 * SUMMARY_SECONDS + 0.5)
                    await wait_for(
                        lambda: any(_seconds(x) > connected + 3 * SUMMARY_SECONDS for x in daemon.lines),
                        5,
                        "the log past the third interval",
                    )
                await events.close()
            exit_code = daemon.process.returncode
            webhooks = list(hook.events())

    alerts = [x for x in daemon.lines if x.get("level") == "alert"]
    lost_lines = [x for x in alerts if "IBKR Connection Lost at" in x["event"]]
    assert len(lost_lines) == 1, lost_lines
    assert lost_lines[0]["event"].startswith("ALERT IBKR Connection Lost at ")
    print(f"measured: ALERT line {_seconds(lost_lines[0]) - started:.3f} s, webhook {webhook_seconds:.3f} s")
    assert _seconds(lost_lines[0]) - started <= CONNECT_TIMEOUT + 1
    assert lost_event.data is not None
    assert datetime.fromisoformat(lost_event.data["at"].replace("Z", "+00:00")).timestamp() - started <= (
        CONNECT_TIMEOUT + 1
    )
    assert webhook_seconds <= CONNECT_TIMEOUT + 1, f"the webhook came {webhook_seconds:.2f} s after the start"
    assert webhooks.count("connection_lost") == 1
    assert webhooks.count("connection_restored") == 1
    assert restored_event.data is not None
    waited = float(re.search(r"after (\d+\.\d) s outage", restored_event.data["detail"])[1])  # type: ignore[index]
    assert waited == pytest.approx(connected - started, abs=1.0)

    window = [
        x for x in daemon.find(f"^{PREFIX}") if connected < _seconds(x) <= connected + 3 * SUMMARY_SECONDS
    ]
    assert len(window) == 3, [x["event"] for x in daemon.find(f"^{PREFIX}")]
    for line in window:
        assert USER_GREP.search(line["event"])
        assert line["level"] == "info"
        assert line["symbols_subscribed"] == 3
    ticks = sum(x["ticks"] for x in window)
    grep_matches = [text for text in daemon.raw if USER_GREP.search(text) and PREFIX not in text]
    assert ticks > 100
    assert len(grep_matches) < 20, "nothing per tick: only start-up and state lines besides the summary"
    assert exit_code == 0


class FixedSession:
    """A calendar that says whatever session the test sets."""

    def __init__(self, session: str) -> None:
        self.session = session

    def now(self) -> str:
        return self.session

    def session_at(self, moment: Any) -> str:
        return self.session


async def test_no_summary_with_the_stream_paused_and_the_market_closed(
    tmp_path: Path, valkey_url: str
) -> None:
    """Paused simulator, closed market: no ``Market data:`` line. The session opens: one line says so,
    and the interval lines come although no tick arrives."""
    calendar = FixedSession("closed")
    with QuestDBDouble() as qdb:
        async with running_simulator(SimulatorConfig(port=0, control_port=0, rate=SIM_RATE)) as sim:
            settings = stack_settings(sim, qdb, tmp_path / "spool", valkey_url)
            settings = settings.model_copy(update={"logging": LoggingConfig(summary_interval_seconds=0.5)})
            daemon = build(settings, calendar=calendar)  # type: ignore[arg-type]
            stop = asyncio.Event()
            task = asyncio.create_task(run(daemon, stop))
            try:
                await wait_for(
                    lambda: connected_and_ticking(daemon.health.body()), 20, "connected, with ticks"
                )
                sim.pause()
                await asyncio.sleep(1.0)  # what was in flight arrives and is counted
                with capture_logs() as closed_and_paused:
                    await asyncio.sleep(2.0)
                calendar.session = "regular"
                with capture_logs() as open_and_paused:
                    await asyncio.sleep(2.0)  # the session is looked at with every interval
            finally:
                stop.set()
                async with asyncio.timeout(15):
                    assert await task == 0

    def summaries(logs: list[dict[str, Any]]) -> list[str]:
        return [x["event"] for x in logs if str(x.get("event", "")).startswith(PREFIX)]

    assert summaries(closed_and_paused) == []
    opened = summaries(open_and_paused)
    assert f"{PREFIX} regular session open" in opened
    assert any("0 ticks" in line for line in opened)


def test_the_summary_interval_defaults_to_sixty_seconds() -> None:
    assert LoggingConfig().summary_interval_seconds == 60.0
