"""What every chaos scenario shares: the bench harness on the path, and the one line it prints."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


@dataclass(frozen=True)
class Outcome:
    """One scenario's line: what was done, what was measured, and the verdict against the figure."""

    name: str
    done: str
    measured: str
    passed: bool

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.done} | {self.measured}"


@dataclass(frozen=True)
class Options:
    """Scale of a run: --quick shrinks counts and durations, never the criteria."""

    quick: bool
    seed: int
