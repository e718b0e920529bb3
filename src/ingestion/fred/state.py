"""Per-series high-water marks: the newest observation date already handed to storage.

The marks survive restarts in a small JSON file, so a restarted daemon asks FRED only for what is
new (plus the revision look-back) instead of downloading decades of history again.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import date
from pathlib import Path

STATE_VERSION = 1


class HighWaterMarks:
    """The newest stored observation date of each series, persisted atomically to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._marks: dict[str, date] = {}

    def load(self) -> None:
        """Read the file; a missing file means nothing is stored yet.

        Raises:
            ValueError: The file exists but is not a state file this version understands.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._marks = {}
            return
        self._marks = _parse(text, self.path)

    def get(self, series_id: str) -> date | None:
        return self._marks.get(series_id)

    def advance(self, series_id: str, newest: date) -> bool:
        """Move the mark forward (never back); True when it moved."""
        current = self._marks.get(series_id)
        if current is not None and current >= newest:
            return False
        self._marks[series_id] = newest
        return True

    def save(self) -> None:
        """Write temp file + fsync + rename, so a crash leaves the old file or the new one, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "version": STATE_VERSION,
            "series": {sid: {"newest_observation": d.isoformat()} for sid, d in sorted(self._marks.items())},
        }
        fd, temp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(body, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, self.path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


def _parse(text: str, path: Path) -> dict[str, date]:
    try:
        body = json.loads(text)
        if body.get("version") != STATE_VERSION:
            msg = f"{path}: unsupported FRED state version {body.get('version')!r}"
            raise ValueError(msg)
        return {sid: date.fromisoformat(entry["newest_observation"]) for sid, entry in body["series"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        msg = f"{path}: not a FRED state file ({exc})"
        raise ValueError(msg) from exc
