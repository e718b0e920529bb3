"""What the image must do when compose runs it, as one scenario that raises AssertionError at the first
thing it does not do (so a test of the checker can expect it to fail on a broken image).

The daemon runs from the container's filesystem as the image's user, with the image's Env under compose's
``environment`` for the data-ingestion service (host names mapped to loopback) and compose's ``volumes``
(a new spool volume, the repository's config/ read-only), against the simulator, a real Valkey and the
QuestDB double:

1. it becomes healthy with every symbol and every subscription of the shipped config;
2. the image's HEALTHCHECK, run as written in the image, in the container, succeeds;
3. QuestDB refuses connections, so rows spill to the spool volume: spool segments appear there, owned
   by the image's user;
4. SIGTERM stops it with exit 0 within 10 s, and nothing is lost: every event it received is a row in
   QuestDB or in the spool.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from podman_image import REPO, Container, Mount
from test_run_as_compose import LogReader, compose_environment, compose_service

from ingestion.config import DEFAULT_UNIVERSE, SpoolConfig
from ingestion.sinks.rows import from_wire
from ingestion.sinks.spool import SEGMENT_GLOB, Spool
from ports import free_port
from questdb_double import QuestDBDouble

ACTIVE_SUBSCRIPTIONS = 33  # the shipped config: 15 symbols, L1 each, 3 depth books, 15 trade streams
MARKET_TABLES = ("market_data_l1", "market_data_l2", "time_and_sales")
STOP_WITHIN_SECONDS = 10


@dataclass(frozen=True)
class Outcome:
    """What the scenario measured, for the test to report or assert more on."""

    received: int
    written: int
    spooled: int
    spool_files: int
    stopped_in: float


def compose_mounts(container: Container, volumes_dir: Path) -> list[Mount]:
    """compose's ``volumes`` for the daemon: each named volume new (so it takes the image's directory,
    as Docker does on first use), each bind mount from the repository, read-only where compose says."""
    mounts = []
    for entry in compose_service("data-ingestion")["volumes"]:
        source, target, *options = entry.split(":")
        if source.startswith((".", "/")):
            mounts.append(Mount(REPO / source, target, read_only="ro" in options))
        else:
            mounts.append(container.named_volume(target, volumes_dir / source))
    return mounts


def run_scenario(
    container: Container, gateway_port: int, control_port: int, valkey_url: str, volumes_dir: Path
) -> Outcome:
    config = container.config
    api_port = free_port()
    with QuestDBDouble() as questdb:
        environment = compose_environment(gateway_port, questdb.port, valkey_url, api_port)
        mounts = compose_mounts(container, volumes_dir)
        (spool_dir,) = [mount.source for mount in mounts if mount.target == environment["SPOOL_DIR"]]
        daemon = container.start([*config.entrypoint, *config.cmd], environment, mounts)
        logs = LogReader(daemon)
        try:
            _wait(
                lambda: _healthy_with_every_subscription(api_port),
                60, f"healthy with {ACTIVE_SUBSCRIPTIONS} active subscriptions", daemon, logs,
            )  # fmt: skip
            assert_healthcheck_passes(container, environment)
            questdb.refuse_connections()
            segments = _wait(lambda: _spool_segments(spool_dir), 30, "rows in the spool volume", daemon, logs)
            owners = {path.name: path.stat().st_uid for path in segments}
            assert set(owners.values()) == {config.uid}, (
                f"spool files not owned by uid {config.uid}: {owners}"
            )
            httpx.post(f"http://127.0.0.1:{control_port}/pause", timeout=5).raise_for_status()
            received = _wait(lambda: _settled_handed_over(api_port), 20, "the daemon to take the last events")
        finally:
            code, stopped_in = _stop(daemon, logs)
        assert code == 0, f"exit {code} after SIGTERM; last lines:\n" + "\n".join(logs.lines[-15:])
        assert stopped_in < STOP_WITHIN_SECONDS, f"stopping took {stopped_in:.1f} s"

        for table in MARKET_TABLES:
            assert questdb.duplicates(table) == 0, f"{table} received a row twice"
        written = sum(questdb.row_count(table) for table in MARKET_TABLES)
        spooled = _rows_in_spool(spool_dir)
        assert written + spooled == received, (
            f"lost rows: {received} events received, {written} rows in QuestDB + {spooled} in the spool"
        )
        return Outcome(received, written, spooled, len(segments), stopped_in)


def assert_healthcheck_passes(container: Container, environment: dict[str, str]) -> None:
    """The image's HEALTHCHECK, as written in the image, run in the container with its environment
    (Docker runs it with the container's, compose's API_PORT included)."""
    probe = container.run(container.config.healthcheck_argv(), environment, timeout=30)
    assert probe.returncode == 0, f"the image's HEALTHCHECK failed (exit {probe.returncode}): {probe.stdout}"


def _healthy_with_every_subscription(api_port: int) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2)
    except httpx.HTTPError:
        return False
    body = response.json()
    return (
        response.status_code == 200
        and body["status"] == "healthy"
        and body["symbols_subscribed"] == len(DEFAULT_UNIVERSE)
        and body["subscriptions"]["active"] == ACTIVE_SUBSCRIPTIONS
    )


def _spool_segments(spool_dir: Path) -> list[Path]:
    return [path for path in spool_dir.glob(SEGMENT_GLOB) if path.stat().st_size > 0]


def _settled_handed_over(api_port: int, quiet_seconds: float = 1.0) -> int | None:
    """Events the pipeline handed to the sinks (received less dropped, none queued), once that number
    stayed the same for ``quiet_seconds``."""

    def handed_over() -> int | None:
        pipeline = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2).json()["pipeline"]
        return None if pipeline["queue_depth"] else pipeline["events_received"] - pipeline["events_dropped"]

    before = handed_over()
    time.sleep(quiet_seconds)
    after = handed_over()
    return after if after and after == before else None


def _stop(daemon: subprocess.Popen[str], logs: LogReader) -> tuple[int, float]:
    """SIGTERM, as `docker compose stop` sends it: (exit code, seconds to exit); killed after 15 s."""
    daemon.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = daemon.wait(STOP_WITHIN_SECONDS + 5)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(5)
        raise AssertionError(
            f"the daemon did not stop within {STOP_WITHIN_SECONDS + 5} s of SIGTERM"
        ) from None
    finally:
        logs.close(daemon)
    return code, time.monotonic() - started


def _rows_in_spool(spool_dir: Path) -> int:
    """Market-data rows left in the spool after the daemon stopped, read with the daemon's own reader."""
    spool = Spool(SpoolConfig(dir=spool_dir))
    spool.open()
    try:
        rows, _ = spool.read(max_rows=10**9)
    finally:
        spool.close()
    return sum(1 for row in from_wire(rows) if row[0] in MARKET_TABLES)


def _wait(
    condition: Callable[[], Any],
    within: float,
    what: str,
    daemon: subprocess.Popen[str] | None = None,
    logs: LogReader | None = None,
) -> Any:
    """Poll ``condition`` until truthy; fail early, with the daemon's last lines, if it exits."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if daemon is not None and daemon.poll() is not None:
            break
        time.sleep(0.2)
    tail = "\n".join(logs.lines[-15:]) if logs is not None else ""
    exited = (
        f" (the daemon exited {daemon.returncode})"
        if daemon is not None and daemon.poll() is not None
        else ""
    )
    raise AssertionError(f"no {what} within {within} s{exited}; last lines:\n{tail}")
