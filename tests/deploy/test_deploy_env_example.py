""".env.example against docker-compose.yml and the daemon, and the IBKR guide's troubleshooting table."""

from __future__ import annotations

import re

import pytest
from deploy_files import (
    COMPOSE_CLI_VARIABLES,
    GUIDE,
    INGESTION_SERVICE,
    REPO,
    compose_references,
    daemon_reads,
    env_example_assignments,
    raw_service_environment,
)

SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return env_example_assignments()


@pytest.fixture(scope="module")
def references() -> dict[str, str]:
    return compose_references()


class TestEnvExample:
    def test_every_variable_compose_interpolates_is_documented(
        self, example: dict[str, str], references: dict[str, str]
    ) -> None:
        """Each ${VAR} in docker-compose.yml has a commented line in .env.example."""
        assert set(references) - set(example) == set()

    def test_every_variable_in_the_example_is_used(
        self, example: dict[str, str], references: dict[str, str]
    ) -> None:
        """No dead settings: each one feeds docker-compose.yml or compose itself (COMPOSE_*)."""
        assert set(example) - set(references) - COMPOSE_CLI_VARIABLES == set()

    def test_the_example_changes_nothing_until_edited(
        self, example: dict[str, str], references: dict[str, str]
    ) -> None:
        """Each value equals the default compose falls back to, so `cp .env.example .env` is a no-op."""
        for name, default in references.items():
            assert example[name] == default, name

    def test_every_example_variable_that_reaches_the_daemon_is_one_it_reads(self) -> None:
        """Variables interpolated into data-ingestion's environment are daemon settings."""
        for key, value in raw_service_environment(INGESTION_SERVICE).items():
            for name in re.findall(r"\$\{(\w+)", value):
                assert daemon_reads(key), f"{name} feeds {key}, which the daemon does not read"
                assert name == key, f"{name} is renamed to {key}: keep one name"

    def test_no_secret_has_a_value(self, example: dict[str, str]) -> None:
        """Passwords, keys and tokens are empty in the committed example."""
        for name, value in example.items():
            if any(word in name for word in SECRET_WORDS):
                assert value == "", name

    def test_the_real_env_file_is_ignored_by_git(self) -> None:
        """.env holds credentials and must never be committed."""
        ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
        assert ".env" in [line.strip() for line in ignored]


class TestSetupGuide:
    @pytest.mark.parametrize(
        "code", ["326", "502", "504", "1100", "2103", "10197", "354", "10167", "309", "10190"]
    )
    def test_the_troubleshooting_table_covers_the_ib_code(self, code: str) -> None:
        """Each IB message code the daemon logs has a row (a line starting with `|`) that names it."""
        rows = [line for line in GUIDE.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
        assert any(re.search(rf"\b{code}\b", row) for row in rows), code

    @pytest.mark.parametrize(
        "log_line",
        ["Connected to IBKR at", "IBKR Connection Lost at", "Attempting reconnection... (attempt"],
    )
    def test_the_troubleshooting_table_uses_the_contract_log_lines(self, log_line: str) -> None:
        """Rows quote the exact words users grep for in `docker logs`."""
        rows = [line for line in GUIDE.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
        assert any(log_line in row for row in rows), log_line

    @pytest.mark.parametrize("port", ["4001", "4002", "7496", "7497"])
    def test_the_guide_names_every_standard_api_port(self, port: str) -> None:
        """Gateway live/paper 4001/4002 and TWS live/paper 7496/7497."""
        assert port in GUIDE.read_text(encoding="utf-8")
