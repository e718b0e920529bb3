"""The image test fails on a broken image. Each deliberate break is a copy of the build context with one
line of the Dockerfile changed, built on the same base (podman's cache supplies the layers before the
change), and the check that must catch it is run on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deploy_files import DOCKERFILE, DOCKERIGNORE
from podman_image import REPO, Build, BuildFailed, build, container
from scenario import assert_healthcheck_passes, run_scenario
from test_deploy_dockerfile import live_endpoint

VARIANT_REPOSITORY = "localhost/market-data-ingestion-variant"


def context_with(tmp_path: Path, old: str, new: str) -> Path:
    """The build context (what .dockerignore admits) with ``old`` replaced by ``new`` in the Dockerfile."""
    context = tmp_path / "context"
    context.mkdir()
    admitted = [
        line.strip()[1:]
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    leftovers = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in admitted:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=leftovers)
        else:
            shutil.copy2(source, context / name)
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not in the Dockerfile exactly once"
    (context / "Dockerfile").write_text(text.replace(old, new), encoding="utf-8")
    shutil.copy2(DOCKERIGNORE, context / ".dockerignore")
    return context


@pytest.fixture
def variant_tag(request: pytest.FixtureRequest) -> str:
    """A tag per break, kept: removing the image would take its layers, the next run's cache, with it
    (podman_image.build prunes stale ones)."""
    return f"{VARIANT_REPOSITORY}:{request.node.name.removeprefix('test_').replace('_', '-')}"


def test_a_wrong_copy_path_fails_the_build(base: str, tmp_path: Path, variant_tag: str) -> None:
    context = context_with(tmp_path, "COPY config/ /app/config/", "COPY conf/ /app/config/")
    with pytest.raises(BuildFailed, match="COPY conf/ /app/config/") as failure:
        build(variant_tag, base, context)
    assert "no such file or directory" in str(failure.value)


def test_a_healthcheck_on_the_wrong_port_fails_the_healthcheck_check(
    base: str, image: Build, tmp_path: Path, variant_tag: str
) -> None:
    """Against an endpoint that answers 200 at API_PORT: the real image's probe passes, the variant's,
    which asks a fixed port instead, does not."""
    context = context_with(tmp_path, "os.environ.get('API_PORT', '8500')", "'8501'")
    build(variant_tag, base, context)
    with live_endpoint(200) as port:
        environment = {"API_PORT": str(port)}
        with container(image.tag) as good:
            assert_healthcheck_passes(good, environment)
        with container(variant_tag) as broken, pytest.raises(AssertionError, match="HEALTHCHECK failed"):
            assert_healthcheck_passes(broken, environment)


def test_a_spool_owned_by_root_fails_the_run(
    base: str, tmp_path: Path, variant_tag: str, simulator: tuple[int, int], valkey_url: str
) -> None:
    """Without the chown, a new spool volume belongs to root and the daemon (uid 10001) cannot spill."""
    chown = ' \\\n    && chown -R "${APP_UID}:${APP_GID}" /var/lib/ingestion\n'
    build(variant_tag, base, context_with(tmp_path, chown, "\n"))
    gateway_port, control_port = simulator
    with container(variant_tag) as broken, pytest.raises(AssertionError) as failure:
        run_scenario(broken, gateway_port, control_port, valkey_url, tmp_path / "volumes")
    assert "Permission denied: '/var/lib/ingestion/spool/" in str(failure.value), failure.value
