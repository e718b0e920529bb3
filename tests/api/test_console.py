"""``ingestion status`` and ``ingestion watch``: the real CLI, in its own process, against a real daemon
and simulator; ``watch`` on a real pseudo-terminal, as a person would run it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon_stack import (
    SIM_RATE,
    DaemonStack,
    connected_and_ticking,
    http_clients,
    running_daemon,
    stack_settings,
    wait_for,
)
from ingestion.config import ApiConfig, Settings
from ingestion.console import BELL, Style, default_url, event_name
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import running_simulator
from ports import free_port
from questdb_double import QuestDBDouble

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INGESTION = str(Path(sys.executable).with_name("ingestion"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PtyProcess:
    """A child whose stdin, stdout and stderr are the slave side of a pseudo-terminal."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self._master = master
        self.output = ""
        self.arrived_at = 0.0  # when the line last returned by expect() was read from the terminal
        self._arrivals: list[tuple[int, float]] = []  # (length of the output after a read, when)
        self._seen = 0
        self._changed = asyncio.Event()
        os.set_blocking(master, False)
        asyncio.get_running_loop().add_reader(master, self._readable)

    @classmethod
    async def spawn(cls, *args: str) -> PtyProcess:
        master, slave = pty.openpty()
        env = {**os.environ, "NO_COLOR": "", "TERM": "xterm"}
        process = await asyncio.create_subprocess_exec(
            *args, stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        return cls(process, master)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self._master)
        self.output += chunk.decode(errors="replace")
        self._arrivals.append((len(self.output), time.monotonic()))
        self._changed.set()

    async def expect(self, pattern: str, within: float) -> str:
        """The first new line matching ``pattern``, waiting at most ``within`` seconds."""
        async with asyncio.timeout(within):
            while True:
                lines = self.output[self._seen :].split("\n")
                for index, line in enumerate(lines[:-1]):
                    if re.search(pattern, ANSI.sub("", line)):
                        self._seen += sum(len(x) + 1 for x in lines[: index + 1])
                        self.arrived_at = next(t for end, t in self._arrivals if end >= self._seen)
                        return line
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        async with asyncio.timeout(10):
            code = await self.process.wait()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._master)
        os.close(self._master)
        return code


async def cli(*args: str) -> tuple[int, str]:
    """Run ``ingestion <args>`` with pipes (not a terminal); its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        INGESTION, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


@contextlib.asynccontextmanager
async def fixed_port_stack(tmp_path: Path, valkey_url: str) -> AsyncIterator[tuple[Settings, DaemonStack]]:
    """The daemon on a port chosen in advance, so that it can be stopped and started again there."""
    with QuestDBDouble() as qdb:
        async with running_simulator(SimulatorConfig(port=0, control_port=0, rate=SIM_RATE)) as sim:
            settings = stack_settings(sim, qdb, tmp_path / "spool", valkey_url)
            api = ApiConfig.model_construct(host="127.0.0.1", port=free_port())
            settings = settings.model_copy(update={"api": api})
            async with running_daemon(settings) as daemon, http_clients(daemon, sim) as (client, control):
                stack = DaemonStack(daemon, sim, qdb, client, control)
                await wait_for(lambda: _listening(settings), 10, "the API listening")
                await stack.health_where(connected_and_ticking, 20, "connected, with ticks")
                yield settings, stack


async def _listening(settings: Settings) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", settings.api.port)
    except OSError:
        return False
    writer.close()
    return True


async def test_status_and_watch_through_a_gateway_restart_and_a_daemon_restart(
    tmp_path: Path, valkey_url: str
) -> None:
    """status: 0 healthy; 1 right after the gateway restarts, naming the state and the outage start;
    --json parses; 3 with the daemon stopped. watch (on a pty): the lost line with a bell within 1 s
    of /restart, the restored line with the outage length, "does not answer" within 5 s of the
    daemon stopping, "answers again" once it is back; Ctrl-C exits 0."""
    async with fixed_port_stack(tmp_path, valkey_url) as (settings, stack):
        url = stack.api_url
        healthy = await cli("status", "--url", url)
        as_json = await cli("status", "--url", url, "--json")
        watch = await PtyProcess.spawn(INGESTION, "watch", "--url", url)
        await watch.expect("answers: healthy", 10)

        await stack.simulator("/restart?down=3")
        restarted = time.monotonic()
        unhealthy = await cli("status", "--url", url)
        status_after = time.monotonic() - restarted
        lost = await watch.expect("connection_lost", 5)
        lost_after = watch.arrived_at - restarted
        restored = await watch.expect("connection_restored", 20)
        stopped = time.monotonic()  # leaving the block stops the daemon, as SIGTERM does
    gone = await cli("status", "--url", url)
    silent = await watch.expect("does not answer", 5)
    noticed_after = watch.arrived_at - stopped
    async with running_daemon(settings):
        back = await watch.expect("answers again", 10)
    exit_code = await watch.close()
    print(healthy[1], unhealthy[1], ANSI.sub("", watch.output), sep="\n")  # shown with -s, or on failure
    print(f"measured: status {status_after:.3f} s, lost {lost_after:.3f} s, stop seen {noticed_after:.3f} s")

    assert healthy[0] == 0, healthy[1]
    assert healthy[1].startswith("HEALTHY"), healthy[1]
    assert "\x1b[" not in healthy[1], "plain text when not on a terminal"
    for label in ("IBKR", "IB", "Subscriptions", "Session", "Last tick", "QuestDB", "Valkey", "FRED"):
        assert re.search(rf"^  {label} ", healthy[1], re.M), f"{label} missing:\n{healthy[1]}"
    assert json.loads(as_json[1])["health"]["status"] == "healthy"
    assert as_json[0] == 0

    assert unhealthy[0] == 1, unhealthy[1]
    assert status_after < 1.0, f"status took {status_after:.2f} s after the restart"
    assert re.search(r"IBKR\s+(disconnected|connecting) .*outage since 20\d\d-", unhealthy[1]), unhealthy[1]
    assert "connection_lost" in unhealthy[1], "the last alerts"

    assert BELL in lost
    assert "\x1b[" in watch.output, "colour on a terminal"
    assert lost_after < 1.0, f"the lost line came {lost_after:.2f} s after /restart"
    assert re.search(r"restored after \d+\.\d s outage", restored), restored
    assert gone[0] == 3, gone[1]
    assert "does not answer" in gone[1]
    assert noticed_after < 5.0, f"watch noticed the stopped daemon after {noticed_after:.2f} s"
    assert silent
    assert back
    assert exit_code == 0


def test_default_url_follows_api_port() -> None:
    assert default_url({}) == "http://localhost:8500"
    assert default_url({"API_PORT": "9500"}) == "http://localhost:9500"


@pytest.mark.parametrize("command", ["run", "check-config", "simulate-gateway", "status", "watch"])
def test_every_command_help_shows_an_example(command: str) -> None:
    from ingestion.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    text = sub.format_help()
    assert f"example:\n  ingestion {command}" in text


def test_the_main_help_shows_examples() -> None:
    from ingestion.cli import build_parser

    assert "example:\n  ingestion run --config" in build_parser().format_help()


@pytest.mark.parametrize(
    ("command", "unbuffered", "code"),
    [
        ("check-config --config config/config.yaml", "", 0),
        ("check-config --config config/config.yaml", "1", 0),
        ("--help", "", 0),
        ("status --help", "", 0),
        ("status --url http://127.0.0.1:9", "", 3),
        ("simulate-gateway --help", "1", 0),
    ],
)
async def test_a_closed_pipe_ends_the_command_quietly(command: str, unbuffered: str, code: int) -> None:
    """``ingestion check-config | head``: no BrokenPipeError traceback. The reader here (``true``)
    exits before reading anything, so every write meets a closed pipe, buffered or not."""
    process = await asyncio.create_subprocess_shell(
        f'{INGESTION} {command} | true; echo "exit ${{PIPESTATUS[0]}}"',
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        executable="/bin/bash",
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
    )
    out, err = await process.communicate()
    assert err.decode() == ""
    assert out.decode().strip() == f"exit {code}"


@pytest.mark.parametrize(
    ("name", "colour"),
    [("connection_lost", "\x1b[31m"), ("connection_restored", "\x1b[32m"), ("stale_data_cleared", "\x1b[32m"),
     ("disconnected", "\x1b[1m"), ("gap_found", "\x1b[1m"), ("questdb_down", "\x1b[31m")],
)  # fmt: skip
def test_event_names_are_coloured_by_what_they_mean(name: str, colour: str) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    text = event_name(name, Style(Terminal(), {}))
    assert colour in text
    assert name in text
    assert event_name(name, Style(io.StringIO(), {})) == name, "plain off a terminal"
