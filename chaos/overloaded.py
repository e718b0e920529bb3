"""Overload chaos: twice what a QuestDB at its limit takes, for a minute; the daemon sheds, stays
answerable, and recovers on its own (bench/overload.py has the scenario and its criteria)."""

from __future__ import annotations

from pathlib import Path

from common import Options, Outcome
from overload import run_overload

QUESTDB_ROWS_PER_S = 10_000


def overload(options: Options, workdir: Path) -> Outcome:
    hold = 20.0 if options.quick else 60.0
    f = run_overload(workdir, rows_per_s=QUESTDB_ROWS_PER_S, hold=hold)
    live, health = f["live_p50_p99_max_ms"], f["health_p50_p99_max_ms"]
    return Outcome(
        "overload",
        f"QuestDB takes {QUESTDB_ROWS_PER_S:,} rows/s; {f['asked_msgs_per_s']:,} msgs/s asked (twice the "
        f"sustainable {f['sustainable_msgs_per_s']:,}) for {hold:g} s, then 2,000",
        f"/health/live p50/p99/max {live[0]}/{live[1]}/{live[2]} ms (limit p99 1000), /health "
        f"{health[0]}/{health[1]}/{health[2]} ms, RSS max {f['rss_mb_max']} MB (limit 300), recovery "
        f"{f['recovery_seconds']} s (limit 60), spooled {f['rows_spooled']}, stored + dropped = received: "
        f"{f['balanced']} {f['accounting']}",
        f["passed"],
    )
