"""HighWaterMarks: the per-series newest stored date, persisted across restarts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ingestion.fred.state import HighWaterMarks


class TestHighWaterMarks:
    def test_saved_marks_load_in_a_new_instance(self, tmp_path: Path) -> None:
        """What one process saves, the next one reads back."""
        marks = HighWaterMarks(tmp_path / "state.json")
        marks.advance("DGS10", date(2026, 2, 26))
        marks.save()
        again = HighWaterMarks(tmp_path / "state.json")
        again.load()

        assert again.get("DGS10") == date(2026, 2, 26)

    def test_a_missing_file_means_nothing_stored(self, tmp_path: Path) -> None:
        """First start: no file, no marks, no error."""
        marks = HighWaterMarks(tmp_path / "absent.json")
        marks.load()

        assert marks.get("DGS10") is None

    def test_marks_never_move_back(self, tmp_path: Path) -> None:
        """A revision window that ends earlier than the mark leaves the mark alone."""
        marks = HighWaterMarks(tmp_path / "state.json")
        marks.advance("DGS10", date(2026, 2, 26))

        assert marks.advance("DGS10", date(2026, 2, 20)) is False
        assert marks.get("DGS10") == date(2026, 2, 26)

    def test_save_leaves_only_the_state_file(self, tmp_path: Path) -> None:
        """The temp file of the atomic write is renamed away, not left behind."""
        marks = HighWaterMarks(tmp_path / "state.json")
        marks.advance("UNRATE", date(2026, 1, 1))
        marks.save()
        marks.save()

        assert [p.name for p in tmp_path.iterdir()] == ["state.json"]

    def test_a_corrupt_file_is_reported_not_guessed(self, tmp_path: Path) -> None:
        """A half-edited file raises ValueError naming the path."""
        path = tmp_path / "state.json"
        path.write_text('{"version": 1, "series": {"DGS10": {}}}')

        with pytest.raises(ValueError, match="not a FRED state file"):
            HighWaterMarks(path).load()
