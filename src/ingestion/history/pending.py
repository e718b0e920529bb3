"""Gaps waiting for the backfill, kept in a small JSON file so that a restart does not forget them.

Only closed windows are kept (symbol, first and last second, cause, when found): a gap still open when
the daemon stops is part of its downtime, which the next start finds from the newest stored trade. The
trades live stored for a restored window are read back from QuestDB before it is filled, and the edge
rule does the rest; a window that was in fact filled just before the stop stores nothing new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ingestion.history.gaps import Gap

STATE_VERSION = 1


def save(path: Path, gaps: list[Gap]) -> None:
    """Replace the file with ``gaps`` (a rename, so a reader sees the old list or the new one)."""
    entries = [
        {
            "symbol": g.symbol,
            "first": g.start_s,
            "last": g.end_s,
            "cause": g.first_cause,
            "found": g.opened_at,
        }
        for g in gaps
        if g.start_s is not None and g.end_s is not None
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({"version": STATE_VERSION, "gaps": entries}), encoding="utf-8")
    os.replace(temporary, path)


def load(path: Path, settle_seconds: float) -> list[Gap]:
    """The gaps of the file, closed and ready to fill; none when there is no file.

    Raises:
        ValueError: The file is not a list of gaps this version wrote.
    """
    try:
        body: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    if not isinstance(body, dict) or body.get("version") != STATE_VERSION:
        msg = f"{path}: not a history state file of version {STATE_VERSION}"
        raise ValueError(msg)
    gaps = []
    for entry in body.get("gaps", []):
        first, last = int(entry["first"]), int(entry["last"])
        gap = Gap(str(entry["symbol"]), first, float(entry["found"]), set(), str(entry["cause"]),
                  settle_seconds=settle_seconds)  # fmt: skip
        gap.cleared_at = last - settle_seconds + 0.5  # so that end_s is ``last`` again
        gaps.append(gap)
    return gaps
