"""Fixtures shared by every test: a real Valkey-protocol server process on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from api.headless_chromium import INSTALL_HINT as CHROMIUM_INSTALL_HINT
from api.headless_chromium import find_chromium
from ports import free_port

VALKEY_URL_VARIABLE = "INGESTION_TEST_VALKEY_URL"
INSTALL_HINT = (
    "No Valkey-protocol server found: tests need a real `valkey-server` or `redis-server` binary. "
    "Install one (Debian/Ubuntu: `apt-get install redis-server` or `apt-get install valkey-server`; "
    "macOS: `brew install valkey`), or point INGESTION_TEST_VALKEY_URL at a running server."
)


class ValkeyServer:
    """A throwaway server process with persistence off; ``stop``/``start`` simulate an outage."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        msg = f"{self.binary} did not answer PING on port {self.port} within 10 s"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


def _server_binary() -> str | None:
    return shutil.which("valkey-server") or shutil.which("redis-server")


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    """A real Valkey (or Redis) server for the whole run; fails loudly rather than skipping."""
    binary = _server_binary()
    if binary is None:
        if os.environ.get(VALKEY_URL_VARIABLE):
            pytest.fail("valkey_server needs a local binary it can stop; use valkey_url instead")
        pytest.fail(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="ingestion-valkey-") as workdir:
        server = ValkeyServer(binary, free_port(), Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def restartable_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A server of the test's own, so the test may stop and restart it."""
    binary = _server_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT)
    server = ValkeyServer(binary, free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def valkey_url(request: pytest.FixtureRequest) -> str:
    """URL of a real server: $INGESTION_TEST_VALKEY_URL, else the session's own process."""
    configured = os.environ.get(VALKEY_URL_VARIABLE)
    if configured:
        return configured
    if _server_binary() is None:
        pytest.fail(INSTALL_HINT)
    return request.getfixturevalue("valkey_server").url


# --- the event loops the tests run on ---------------------------------------------------------------------
# The daemon runs on uvloop by default (cli.event_loop_factory), so every async test does too. Where the
# loop's own I/O and timers are what a test is about, it runs on asyncio's loop as well, the daemon's loop
# with pipeline.event_loop: asyncio (and wherever uvloop is not installed). TEST_EVENT_LOOPS picks the loops
# for the whole suite: asyncio (526 passed in 363 s, 2026-11-25), or asyncio,uvloop for both.
EVENT_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
BOTH_LOOPS = {
    "test_shutdown.py", "test_subscriptions.py", "test_ib_messages.py",
    "test_sinks_valkey.py", "test_sinks_valkey_outage.py", "test_sinks_questdb_outage.py",
    "test_endpoints.py", "test_health_states.py", "test_webhooks.py",
}  # fmt: skip


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    chosen = os.environ.get("TEST_EVENT_LOOPS")
    if chosen:
        return {name: EVENT_LOOPS[name] for name in chosen.split(",")}
    if item.path.name in BOTH_LOOPS:
        return EVENT_LOOPS
    return {"uvloop": EVENT_LOOPS["uvloop"]}


@pytest.fixture
def chromium() -> str:
    """Debian's chromium for the status page checks; missing, it is a failure with the way to install it."""
    binary = find_chromium()
    if binary is None:
        pytest.fail(CHROMIUM_INSTALL_HINT)
    return binary
