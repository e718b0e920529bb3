"""The Dockerfile, read statically (no Docker engine here), plus its HEALTHCHECK actually run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from deploy_files import (
    DOCKERIGNORE,
    REPO,
    Dockerfile,
    Instruction,
    daemon_reads,
    read_dockerfile,
)

from ingestion.config import ApiConfig, LoggingConfig, SpoolConfig

# Variables the image sets for the interpreter or the shell, not for the daemon.
IMAGE_PLUMBING_VARIABLES = {"PATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


def healthcheck_command(dockerfile: Dockerfile) -> list[str]:
    instruction = dockerfile.final.last("HEALTHCHECK")
    assert instruction is not None, "the final stage has no HEALTHCHECK"
    _, sep, command = instruction.arguments.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {instruction.arguments}"
    exec_form = Instruction("CMD", command).exec_form()
    assert exec_form is not None, f"HEALTHCHECK CMD is not a JSON array: {command}"
    return exec_form


class TestBuild:
    def test_builds_in_separate_builder_and_runtime_stages(self, dockerfile: Dockerfile) -> None:
        """The venv is built in one stage and only the venv is copied into the final one."""
        assert len(dockerfile.stages) >= 2
        builder_names = {s.name for s in dockerfile.stages[:-1]}
        copies = [i.arguments for i in dockerfile.final.all("COPY") if i.arguments.startswith("--from=")]
        assert any(
            re.match(r"--from=(\S+)\s+/opt/venv\s+/opt/venv$", c) and c.split()[0][7:] in builder_names
            for c in copies
        ), copies

    def test_every_stage_uses_a_pinned_python_311_slim_base(self, dockerfile: Dockerfile) -> None:
        """Each FROM resolves to python:3.11.<patch>-slim[-distro]: pinned, never latest."""
        for stage in dockerfile.stages:
            image = dockerfile.resolved_base(stage)
            assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", image), image

    def test_the_package_is_installed_with_the_pinned_constraints(self, dockerfile: Dockerfile) -> None:
        """`pip install --no-cache-dir -c constraints.txt .` builds the package against constraints.txt."""
        runs = [i.arguments for s in dockerfile.stages for i in s.all("RUN")]
        assert any(
            re.search(r"pip install --no-cache-dir -c constraints\.txt \.(\s|$)", run) for run in runs
        ), runs

    def test_every_pip_install_is_constrained(self, dockerfile: Dockerfile) -> None:
        """No pip install may pull an unpinned version: each one carries `-c constraints.txt`."""
        for stage in dockerfile.stages:
            for run in stage.all("RUN"):
                for command in re.split(r"&&|;", run.arguments):
                    if "pip install" in command:
                        assert "-c constraints.txt" in command, command

    def test_the_build_context_admits_every_file_the_dockerfile_copies(self, dockerfile: Dockerfile) -> None:
        """.dockerignore is an allow-list (`*` first) that re-admits each local COPY source."""
        rules = [
            line.strip()
            for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        assert rules[0] == "*"
        admitted = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
        for stage in dockerfile.stages:
            for copy in stage.all("COPY"):
                words = [w for w in copy.arguments.split() if not w.startswith("--")]
                if copy.arguments.startswith("--from="):
                    continue
                for source in words[:-1]:
                    top = source.rstrip("/").split("/")[0]
                    assert top in admitted, f"COPY {source} is excluded by .dockerignore"

    def test_every_file_the_dockerfile_copies_is_in_the_repository(self, dockerfile: Dockerfile) -> None:
        """The build needs README.md (pyproject's readme), src/ and a non-empty config/."""
        for stage in dockerfile.stages:
            for copy in stage.all("COPY"):
                if copy.arguments.startswith("--from="):
                    continue
                words = [w for w in copy.arguments.split() if not w.startswith("--")]
                for source in words[:-1]:
                    path = REPO / source
                    assert path.exists(), f"COPY {source}: missing from the repository"
                    if path.is_dir():
                        assert any(path.iterdir()), f"COPY {source}: empty directory"

    def test_the_build_context_never_admits_env_files_or_git(self) -> None:
        """Credentials in .env and the git history cannot reach the image."""
        rules = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        admitted = [r.strip()[1:] for r in rules if r.strip().startswith("!")]
        assert not [a for a in admitted if a.startswith((".env", ".git"))]


class TestRuntime:
    def test_final_stage_runs_as_a_fixed_non_root_uid(self, dockerfile: Dockerfile) -> None:
        """USER is numeric (so Kubernetes runAsNonRoot can verify it) and not 0."""
        user = dockerfile.final.last("USER")
        assert user is not None
        uid = user.arguments.split(":")[0]
        assert uid.isdigit(), user.arguments
        assert int(uid) != 0

    def test_the_user_exists_in_the_image_with_that_uid(self, dockerfile: Dockerfile) -> None:
        """useradd creates the account whose uid USER names (ARG default substituted)."""
        user = dockerfile.final.last("USER")
        assert user is not None
        uid = user.arguments.split(":")[0]
        args = dict(i.arguments.partition("=")[::2] for i in dockerfile.final.all("ARG"))
        runs = " ".join(i.arguments for i in dockerfile.final.all("RUN"))
        runs = re.sub(r"\"?\$\{(\w+)\}\"?", lambda m: args.get(m.group(1), m.group(0)), runs)
        assert re.search(rf"useradd\b[^&]*--uid {uid}\b", runs), runs

    def test_entrypoint_and_cmd_are_exec_form_so_sigterm_reaches_the_daemon(
        self, dockerfile: Dockerfile
    ) -> None:
        """ENTRYPOINT ["ingestion"] and CMD ["run"]: no shell in between, the daemon is PID 1."""
        entrypoint = dockerfile.final.last("ENTRYPOINT")
        cmd = dockerfile.final.last("CMD")
        assert entrypoint is not None
        assert cmd is not None
        assert entrypoint.exec_form() == ["ingestion"]
        assert cmd.exec_form() == ["run"]

    def test_the_spool_directory_is_a_volume_at_the_configured_default(self, dockerfile: Dockerfile) -> None:
        """VOLUME and SPOOL_DIR both name SpoolConfig's default directory."""
        spool = str(SpoolConfig().dir)
        volumes = [v for i in dockerfile.final.all("VOLUME") for v in (i.exec_form() or i.arguments.split())]
        assert spool in volumes
        assert dockerfile.final.env()["SPOOL_DIR"] == spool

    def test_the_spool_directory_is_owned_by_the_runtime_user(self, dockerfile: Dockerfile) -> None:
        """The directory is created and chowned before VOLUME, so a new named volume inherits it."""
        instructions = dockerfile.final.instructions
        volume_at = next(n for n, i in enumerate(instructions) if i.keyword == "VOLUME")
        before = " ".join(i.arguments for i in instructions[:volume_at] if i.keyword == "RUN")
        assert "mkdir -p" in before
        assert str(SpoolConfig().dir) in before
        assert re.search(r"chown -R \S+ /var/lib/ingestion\b", before), before

    def test_the_default_config_is_baked_in_where_ingestion_config_points(
        self, dockerfile: Dockerfile
    ) -> None:
        """config/ is copied to /app/config and INGESTION_CONFIG names its config.yaml."""
        copies = [i.arguments.split() for i in dockerfile.final.all("COPY")]
        assert ["config/", "/app/config/"] in copies
        assert dockerfile.final.env()["INGESTION_CONFIG"] == "/app/config/config.yaml"

    def test_logs_are_unbuffered_json(self, dockerfile: Dockerfile) -> None:
        """PYTHONUNBUFFERED=1 and LOG_FORMAT=json, a value LoggingConfig accepts."""
        env = dockerfile.final.env()
        assert env["PYTHONUNBUFFERED"] == "1"
        assert LoggingConfig(format=env["LOG_FORMAT"]).format == "json"

    def test_every_variable_the_image_sets_is_read_by_someone(self, dockerfile: Dockerfile) -> None:
        """ENV names are daemon settings, or plumbing for the interpreter and the shell."""
        for name in dockerfile.final.env():
            assert daemon_reads(name) or name in IMAGE_PLUMBING_VARIABLES, name


class _LiveHandler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/health/live" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def live_endpoint(status: int) -> Iterator[int]:
    """An HTTP server on a free loopback port whose /health/live answers ``status``."""
    handler = type("Handler", (_LiveHandler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(command: list[str], api_port: int) -> int:
    assert command[0] == "python"
    environment = {**os.environ, "API_PORT": str(api_port)}
    completed = subprocess.run(
        [sys.executable, *command[1:]], env=environment, capture_output=True, timeout=30, check=False
    )
    return completed.returncode


def unused_port() -> int:
    with ThreadingHTTPServer(("127.0.0.1", 0), _LiveHandler) as server:
        return server.server_address[1]


class TestHealthcheck:
    def test_the_healthcheck_is_exec_form_python_not_curl(self, dockerfile: Dockerfile) -> None:
        """The slim base has no curl: the probe is `python -c` with urllib."""
        command = healthcheck_command(dockerfile)
        assert command[:2] == ["python", "-c"]
        assert "urllib" in command[2]

    def test_the_healthcheck_probes_health_live_on_the_api_default_port(self, dockerfile: Dockerfile) -> None:
        """The URL is /health/live on 127.0.0.1, at API_PORT falling back to ApiConfig's port."""
        code = healthcheck_command(dockerfile)[2]
        url = re.search(r"'(http://[^']+)'", code)
        assert url is not None, code
        parts = urlsplit(url.group(1))
        assert parts.path == "/health/live"
        assert parts.hostname == "127.0.0.1"
        fallback = re.search(r"os\.environ\.get\('API_PORT', '(\d+)'\)", code)
        assert fallback is not None, code
        assert int(fallback.group(1)) == ApiConfig().port

    def test_the_healthcheck_passes_when_the_live_endpoint_answers_200(self, dockerfile: Dockerfile) -> None:
        """Run verbatim against a real server: exit status 0 means healthy to Docker."""
        with live_endpoint(200) as port:
            assert run_healthcheck(healthcheck_command(dockerfile), port) == 0

    def test_the_healthcheck_fails_when_the_live_endpoint_answers_503(self, dockerfile: Dockerfile) -> None:
        """An error status makes urllib raise, so the command exits non-zero."""
        with live_endpoint(503) as port:
            assert run_healthcheck(healthcheck_command(dockerfile), port) != 0

    def test_the_healthcheck_fails_when_nothing_listens(self, dockerfile: Dockerfile) -> None:
        """A dead process (connection refused) is unhealthy."""
        assert run_healthcheck(healthcheck_command(dockerfile), unused_port()) != 0
