"""The deployment files through the tools of the field: hadolint on the Dockerfile (its rules, as
.hadolint.yaml configures them), and two Compose implementations on docker-compose.yml: podman-compose,
which parses, interpolates and resolves it per profile, and Docker's own `docker-compose config`, which
validates it against the compose-spec JSON schema. Each tool is also shown failing on a broken copy,
so a pass means something."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_files import COMPOSE_FILE, DOCKERFILE, REPO

BIN = Path(sys.executable).parent
HADOLINT_CONFIG = REPO / ".hadolint.yaml"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hadolint"), "--config", str(HADOLINT_CONFIG), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose_config(compose_file: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    """`podman-compose config`: --dry-run so that it needs no podman, only the file."""
    options = [word for profile in profiles for word in ("--profile", profile)]
    return subprocess.run(
        [str(BIN / "podman-compose"), "--dry-run", "--file", str(compose_file), *options, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=compose_file.parent,
    )


def docker_compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is missing: scripts/ensure-system-deps.sh installs Debian's docker-compose"
        )
    return subprocess.run(
        [binary, "--file", str(compose_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=compose_file.parent,
    )


def broken_copy(source: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = source.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not in {source.name} exactly once"
    copy = tmp_path / source.name
    copy.write_text(text.replace(old, new), encoding="utf-8")
    return copy


class TestHadolint:
    def test_the_dockerfile_passes_every_rule(self) -> None:
        result = hadolint(DOCKERFILE)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_ignored_rule_has_its_reason_on_the_line_above(self) -> None:
        lines = HADOLINT_CONFIG.read_text(encoding="utf-8").splitlines()
        ignored = yaml.safe_load("\n".join(lines)).get("ignored") or []
        for rule in ignored:
            (at,) = [n for n, line in enumerate(lines) if line.strip() == f"- {rule}"]
            assert lines[at - 1].strip().startswith("#"), f"{rule} is ignored without a reason"
        inline = [
            line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines() if "hadolint ignore" in line
        ]
        assert not inline, f"inline ignores belong in .hadolint.yaml with a reason: {inline}"

    def test_it_fails_a_dockerfile_whose_last_user_is_root(self, tmp_path: Path) -> None:
        """DL3002: the check is live, and it is the configured one that runs."""
        result = hadolint(broken_copy(DOCKERFILE, tmp_path, "USER 10001:10001", "USER root"))
        assert result.returncode != 0
        assert "DL3002" in result.stdout


class TestComposeImplementation:
    @pytest.mark.parametrize(
        "profiles", [(), ("sim",), ("ib-gateway",)], ids=["default", "sim", "ib-gateway"]
    )
    def test_podman_compose_resolves_the_file_with_each_profile(self, profiles: tuple[str, ...]) -> None:
        result = compose_config(COMPOSE_FILE, *profiles)
        assert result.returncode == 0, result.stderr
        resolved = yaml.safe_load(result.stdout)
        expected = {"questdb", "valkey", "data-ingestion"} | {
            {"sim": "ib-gateway-sim", "ib-gateway": "ib-gateway"}[p] for p in profiles
        }
        assert set(resolved["services"]) == expected
        assert set(resolved["volumes"]) == {"questdb-data", "ingestion-spool"}
        assert resolved["services"]["data-ingestion"]["build"]["dockerfile"] == "Dockerfile"

    def test_it_fails_a_compose_file_that_mounts_an_undeclared_volume(self, tmp_path: Path) -> None:
        broken = broken_copy(COMPOSE_FILE, tmp_path, "- ingestion-spool:", "- ingestion-spol:")
        result = compose_config(broken)
        assert result.returncode != 0
        assert "ingestion-spol" in result.stderr

    def test_it_fails_a_dependency_condition_compose_does_not_know(self, tmp_path: Path) -> None:
        text = COMPOSE_FILE.read_text(encoding="utf-8").replace("service_healthy", "service_healty")
        broken = tmp_path / COMPOSE_FILE.name
        broken.write_text(text, encoding="utf-8")
        result = compose_config(broken)
        assert result.returncode != 0
        assert "service_healty" in result.stderr


class TestComposeSchema:
    """`docker-compose config` validates the whole file, every profile's services included, against the
    compose-spec JSON schema (Debian's docker-compose 1.29.2 ships it as compose/config/compose_spec.json;
    Compose v2 checks the same way): an unknown key or an undefined service fails it."""

    def test_docker_compose_finds_the_file_valid(self) -> None:
        result = docker_compose_config(COMPOSE_FILE)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_it_fails_a_misspelled_key(self, tmp_path: Path) -> None:
        broken = broken_copy(COMPOSE_FILE, tmp_path, "stop_grace_period: 30s", "stop_grace_perod: 30s")
        result = docker_compose_config(broken)
        assert result.returncode != 0
        assert "stop_grace_perod" in result.stdout + result.stderr

    def test_it_fails_a_dependency_on_an_undefined_service(self, tmp_path: Path) -> None:
        broken = broken_copy(
            COMPOSE_FILE, tmp_path, "      valkey:\n        condition", "      valky:\n        condition"
        )
        result = docker_compose_config(broken)
        assert result.returncode != 0
        assert "valky" in result.stdout + result.stderr
