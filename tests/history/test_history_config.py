"""The history section: unknown bar sizes and look-backs are config errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingestion.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_defaults_are_one_day_for_two_years_and_one_minute_for_five_trading_days(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "{}"), environ={})
    assert [(b.bar_size, b.lookback) for b in settings.history.bars] == [("1 day", "2 Y"), ("1 min", "5 D")]
    assert settings.history.backfill.bid_ask is False


@pytest.mark.parametrize(
    ("yaml", "key", "bad"),
    [
        ("history: {bars: [{bar_size: 1 minute, lookback: 5 D}]}", "history.bars[0].bar_size", "1 minute"),
        ("history: {bars: [{bar_size: 1 min, lookback: 5 days}]}", "history.bars[0].lookback", "5 days"),
        ("history: {bars: [{bar_size: 1 day, lookback: 2 Y}, {bar_size: 1 hour, lookback: 0 D}]}",
         "history.bars[1].lookback", "0 D"),
    ],
)  # fmt: skip
def test_an_unknown_bar_size_or_look_back_is_an_error_naming_the_key(
    tmp_path: Path, yaml: str, key: str, bad: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, yaml), environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{key}: '{bad}' is invalid")


def test_check_config_exits_2_with_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "history:\n  bars:\n    - {bar_size: 7 mins, lookback: 1 W}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ingestion.cli", "check-config", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "history.bars[0].bar_size: '7 mins' is invalid" in result.stderr
    assert "Traceback" not in result.stderr
