"""The image, built once per run from the repository's Dockerfile, and the simulator it runs against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from podman_image import BUILD_TIMEOUT_SECONDS, IMAGE_TAG, Build, base_image, build, builder_available
from test_run_as_compose import compose_simulator

# Gentler than the simulator's default 2,000 messages/s: the daemon, the simulator and the test share
# two CPUs with whatever else runs, and the checks count rows, not throughput.
SIMULATOR_RATE = "500"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test here may make the base and build the image from nothing: more than the suite's
    120 s per test. Its own bound is that of a build."""
    for item in items:
        if "deploy/image" in item.path.as_posix():
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_SECONDS))


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
    """The sim profile's `simulate-gateway` on free loopback ports: (TWS API port, control port)."""
    with compose_simulator("--rate", SIMULATOR_RATE) as ports:
        yield ports
