"""The image, built once per run from the repository's Dockerfile, and the simulator it runs against."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from podman_image import IMAGE_TAG, Build, base_image, build, builder_available
from test_run_as_compose import compose_service

from ports import free_port

BIN = Path(sys.executable).parent
# Gentler than the simulator's default 2,000 messages/s: the daemon, the simulator and the test share
# two CPUs with whatever else runs, and the checks count rows, not throughput.
SIMULATOR_RATE = "500"


@pytest.fixture(scope="session")
def base() -> str:
    if not builder_available():
        pytest.fail(
            "the image test needs podman and debootstrap: scripts/ensure-system-deps.sh installs them"
        )
    return base_image()


@pytest.fixture(scope="session")
def image(base: str) -> Build:
    """The Dockerfile as it is, built on the Debian-made base through PYTHON_IMAGE."""
    return build(IMAGE_TAG, base)


@pytest.fixture
def simulator() -> Iterator[tuple[int, int]]:
    """The sim profile's `simulate-gateway` (compose's command) on free loopback ports: (API, control)."""
    command = compose_service("ib-gateway-sim")["command"]
    port, control = free_port(), free_port()
    replaced = {"--host": "127.0.0.1", "--port": str(port), "--control-port": str(control)}
    args = [replaced.get(command[i - 1], word) if i else word for i, word in enumerate(command)]
    process = subprocess.Popen(
        [str(BIN / "ingestion"), *args, "--rate", SIMULATOR_RATE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, control
    finally:
        process.terminate()
        process.wait(10)
