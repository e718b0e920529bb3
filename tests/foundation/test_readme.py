"""README.md stays true: the generated configuration table, the test command, the commands it shows."""

from __future__ import annotations

import re
from pathlib import Path

from ingestion.config_reference import END, START, render

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
GUIDE = (REPO / "docs" / "IBKR_SETUP_GUIDE.md").read_text(encoding="utf-8")

# Commands shown in the docs and the test that runs each one (a test file that must exist).
EXERCISED = {
    "make test": ".ci/run",
    "make image-test": ".ci/run",  # make test calls it
    "curl http://localhost:8500/health": "tests/deploy/test_run_as_compose.py",
    "curl http://localhost:8500/subscriptions": "tests/api/test_endpoints.py",
    "curl -G http://localhost:9000/exec": "tests/deploy/test_run_as_compose.py",
    "ingestion check-config": "tests/foundation/test_cli.py",
    "ingestion status": "tests/api/test_console.py",
    "ingestion watch": "tests/api/test_console.py",
    "ingestion simulate-gateway": "tests/deploy/test_run_as_compose.py",
    'curl -X POST "http://127.0.0.1:4080/restart': "tests/simulator/test_control_api.py",
    "curl http://127.0.0.1:4080/stats": "tests/simulator/test_control_api.py",
    ".venv/bin/pytest": ".ci/run",
    "python -m ingestion.config_reference": "tests/foundation/test_readme.py",
    "python bench/": "bench/bench_simulator.py",
}


def commands(text: str) -> list[str]:
    """Lines of indented (4-space) code blocks outside fenced blocks: the commands a reader types."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and not line.startswith("     "):
            found.append(line.strip())
    return found


def test_configuration_reference_is_generated_from_the_models() -> None:
    """The table between the markers is exactly what the pydantic models say today."""
    block = README.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render(), "stale: run `python -m ingestion.config_reference README.md`"


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run's last command is the README's test command."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    ci = [line for line in lines if line and not line.startswith("#")]
    assert ci[-1] == "make test"
    assert "\n    make test\n" in README


def test_every_command_is_exercised_by_a_test_or_marked_as_needing_docker() -> None:
    """Each command in README and the setup guide is run by a test, or says it needs Docker."""
    unexplained = []
    for source, text in (("README.md", README), ("docs/IBKR_SETUP_GUIDE.md", GUIDE)):
        for command in commands(text):
            if command.startswith(("#", "|", "-", "{", "}", '"')) or not re.match(r"^[A-Za-z.]", command):
                continue
            if "docker" in command:
                assert "needs Docker" in text, f"{source} shows {command!r} without saying it needs Docker"
                continue
            runner = next((path for prefix, path in EXERCISED.items() if command.startswith(prefix)), None)
            if runner is None:
                unexplained.append(f"{source}: {command}")
            else:
                assert (REPO / runner).exists(), f"{runner} (which runs {command!r}) is missing"
    assert unexplained == []


def test_user_queries_are_the_contract_queries() -> None:
    """The README shows the user's verification SQL exactly as CONTRACTS.md has it."""
    assert (
        "SELECT symbol, COUNT(*) AS total_ticks, MIN(timestamp) AS first_tick, MAX(timestamp) AS last_tick "
        "FROM market_data_l1 GROUP BY symbol ORDER BY last_tick DESC" in README
    )
