"""The image built from the repository's Dockerfile, run as compose runs it (see podman_image.py for how,
and scenario.py for what is checked while it runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from podman_image import Build, Container, container, image_size_bytes
from scenario import ACTIVE_SUBSCRIPTIONS, run_scenario

from ingestion.config import ApiConfig, SpoolConfig

SPOOL_DIR = str(SpoolConfig().dir)


@pytest.fixture(scope="module")
def built(image: Build) -> Iterator[Container]:
    with container(image.tag) as mounted:
        yield mounted


class TestWhatTheImageDeclares:
    def test_it_runs_ingestion_run_as_uid_10001_in_app(self, built: Container) -> None:
        config = built.config
        assert config.user == "10001:10001"
        assert config.working_dir == "/app"
        assert [*config.entrypoint, *config.cmd] == ["ingestion", "run"]

    def test_it_keeps_its_healthcheck_spool_volume_and_api_port(self, built: Container) -> None:
        """Docker's image format keeps HEALTHCHECK; VOLUME and EXPOSE name the configured defaults."""
        config = built.config
        assert config.healthcheck[:2] == ["CMD", "python"]
        assert config.volumes == [SPOOL_DIR]
        assert config.env["SPOOL_DIR"] == SPOOL_DIR
        assert config.exposed_ports == [f"{ApiConfig().port}/tcp"]

    def test_the_spool_directory_belongs_to_the_image_user(self, built: Container) -> None:
        """What a new named volume inherits (Docker copies the image's directory into it)."""
        status = built.path(SPOOL_DIR).stat()
        assert (status.st_uid, status.st_gid) == (built.config.uid, built.config.uid)

    def test_the_venv_interpreter_is_the_base_image_python(self, built: Container) -> None:
        """The venv copied from the builder stage runs in the runtime stage, on Python 3.11."""
        result = built.run(["python", "-c", "import sys, ingestion; print(sys.prefix, sys.version_info[:2])"])
        assert result.returncode == 0, result.stdout
        assert result.stdout.split() == ["/opt/venv", "(3,", "11)"]


def test_check_config_exits_0_with_the_image_defaults(built: Container) -> None:
    """`docker run --rm market-data-ingestion:local check-config`: the baked-in config is valid."""
    result = built.run([*built.config.entrypoint, "check-config"])
    assert result.returncode == 0, result.stdout
    assert "universe: [SPY, QQQ" in result.stdout


def test_the_daemon_from_the_image_is_healthy_spills_as_its_user_and_stops_losing_nothing(
    built: Container, simulator: tuple[int, int], valkey_url: str, image: Build, tmp_path: Path
) -> None:
    """scenario.py: healthy with 33 subscriptions, HEALTHCHECK passes, rows spill to the spool volume
    owned by uid 10001 while QuestDB refuses, SIGTERM exits 0 within 10 s, rows in + spooled == received."""
    gateway_port, control_port = simulator
    outcome = run_scenario(built, gateway_port, control_port, valkey_url, tmp_path)
    assert outcome.spooled > 0
    assert outcome.written > 0
    print(  # figures for README.md, shown with `pytest -s`
        f"\nimage: built in {image.seconds:.1f} s, {image_size_bytes(image.tag) / 1e6:.0f} MB; "
        f"{ACTIVE_SUBSCRIPTIONS} subscriptions; {outcome.received} events = {outcome.written} rows written "
        f"+ {outcome.spooled} spooled ({outcome.spool_files} files); stopped in {outcome.stopped_in:.1f} s"
    )
