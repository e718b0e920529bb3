"""The `ingestion` command line, run as the user runs it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ingestion.cli import event_loop_factory

REPO = Path(__file__).resolve().parents[2]


def ingestion(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTION", "IBKR_", "FRED_", "LOG_"))}
    return subprocess.run(
        [sys.executable, "-m", "ingestion.cli", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestCheckConfig:
    def test_prints_effective_config_and_exits_0(self) -> None:
        """`ingestion check-config --config config/config.yaml` prints YAML that loads back, exit 0."""
        result = ingestion("check-config", "--config", "config/config.yaml")
        assert result.returncode == 0, result.stderr
        printed = yaml.safe_load(result.stdout)
        assert printed["ibkr"]["port"] == 4002
        assert printed["universe"][:3] == ["SPY", "QQQ", "IWM"]

    def test_masks_secrets(self) -> None:
        """Keys and passwords from the environment are printed masked."""
        env = {"FRED_API_KEY": "0123456789abcdef", "VALKEY_URL": "redis://:hunter2@cache:6379/0"}
        result = ingestion("check-config", "--config", "config/config.yaml", env=env)
        assert result.returncode == 0, result.stderr
        assert "0123456789abcdef" not in result.stdout
        assert "hunter2" not in result.stdout
        assert "redis://:********@cache:6379/0" in result.stdout

    def test_default_path_comes_from_ingestion_config(self, tmp_path: Path) -> None:
        """Without --config, $INGESTION_CONFIG is the file."""
        path = tmp_path / "c.yaml"
        path.write_text("ibkr:\n  port: 4001\n")
        result = ingestion("check-config", env={"INGESTION_CONFIG": str(path)})
        assert result.returncode == 0, result.stderr
        assert yaml.safe_load(result.stdout)["ibkr"]["port"] == 4001

    def test_default_path_is_config_config_yaml(self) -> None:
        """Without --config or $INGESTION_CONFIG, config/config.yaml in the working directory is read."""
        result = ingestion("check-config")
        assert result.returncode == 0, result.stderr

    def test_bad_config_exits_2_with_one_line_per_problem_and_no_traceback(self, tmp_path: Path) -> None:
        """Wrong type, unknown key, out-of-range port and empty universe: exit 2, four lines on stderr."""
        path = tmp_path / "bad.yaml"
        path.write_text("ibkr:\n  port: 99999\n  client_id: ten\n  colour: blue\nuniverse: []\n")
        result = ingestion("check-config", "--config", str(path))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 4
        assert all(line.startswith("config error: ") for line in lines)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""

    def test_run_with_bad_config_exits_2(self, tmp_path: Path) -> None:
        """`ingestion run` refuses a bad configuration the same way, before starting anything."""
        path = tmp_path / "bad.yaml"
        path.write_text("ibkr:\n  port: -1\n")
        result = ingestion("run", "--config", str(path))
        assert result.returncode == 2
        assert "ibkr.port" in result.stderr
        assert "Traceback" not in result.stderr


class TestArguments:
    def test_unknown_command_exits_2(self) -> None:
        """A typo in the command is a usage error, exit 2."""
        result = ingestion("rnu")
        assert result.returncode == 2
        assert "invalid choice" in result.stderr

    def test_version(self) -> None:
        """--version prints the package version."""
        result = ingestion("--version")
        assert result.returncode == 0
        assert result.stdout.startswith("ingestion ")


class TestSimulateGateway:
    def test_bad_log_format_exits_2(self) -> None:
        """The simulator reads LOG_FORMAT like the daemon, and refuses a bad one with exit 2."""
        args = ("simulate-gateway", "--port", "0", "--control-port", "0")
        result = ingestion(*args, env={"LOG_FORMAT": "xml"})
        assert result.returncode == 2
        assert "logging.format" in result.stderr


class TestEventLoop:
    """Which loop `ingestion run` builds for each pipeline.event_loop (the daemon's own choice is
    checked end to end in tests/daemon/test_app.py)."""

    def test_auto_and_uvloop_build_uvloop_where_it_is_installed(self) -> None:
        import uvloop

        assert event_loop_factory("auto") is uvloop.new_event_loop
        assert event_loop_factory("uvloop") is uvloop.new_event_loop

    def test_asyncio_is_the_standard_library_loop(self) -> None:
        assert event_loop_factory("asyncio") is None  # asyncio.Runner's default

    def test_auto_without_uvloop_falls_back_to_asyncio(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "uvloop", None)
        assert event_loop_factory("auto") is None
        with pytest.raises(ImportError):
            event_loop_factory("uvloop")
