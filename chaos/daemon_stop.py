"""Daemon chaos: SIGTERM under load (nothing lost) and kill -9 under load (loss bounded).

Rows lost = trades and depth messages the simulator sent (exact /stats counts, taken after the
daemon's socket closed, so nothing more can be sent to it) minus the rows QuestDB holds.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from common import Options, Outcome
from harness import Stack, missing_rows, wait_settled

RATE = 10_000
FLUSH_INTERVAL_S = 0.1  # questdb.flush_interval_ms default


def _stop_under_load(workdir: Path, sig: int, seconds: float) -> tuple[int, dict[str, int], float, int]:
    """Exit code, missing rows per table, trade+depth messages/s, duplicates."""
    with Stack(workdir, rate=RATE, workload="mix", fast_questdb=True) as stack:
        time.sleep(3)
        first = stack.simulator.sent()
        started = time.monotonic()
        time.sleep(seconds)
        code = stack.daemon.stop(sig, timeout=20)
        time.sleep(0.5)
        sent = stack.simulator.sent()
        elapsed = time.monotonic() - started
        stored = wait_settled(stack.questdb, timeout=30)
    kinds = ("depth", "rtvolume", "tick_by_tick_all_last")
    per_s = sum(sent["by_kind"].get(k, 0) - first["by_kind"].get(k, 0) for k in kinds) / elapsed
    duplicates = sum(v["duplicates"] for v in stored["tables"].values())
    return code, missing_rows(sent, stored), per_s, duplicates


def sigterm(options: Options, workdir: Path) -> Outcome:
    seconds = 10.0 if options.quick else 30.0
    code, missing, _, duplicates = _stop_under_load(workdir, signal.SIGTERM, seconds)
    lost = sum(missing.values())
    return Outcome(
        "sigterm",
        f"SIGTERM after {seconds:g} s at {RATE:,} msgs/s (mix)",
        f"exit code {code}, rows lost {lost} ({missing}), duplicates {duplicates}",
        code == 0 and lost == 0 and duplicates == 0,
    )


def sigkill(options: Options, workdir: Path) -> Outcome:
    seconds = 10.0 if options.quick else 30.0
    code, missing, per_s, _ = _stop_under_load(workdir, signal.SIGKILL, seconds)
    lost = sum(missing.values())
    bound = per_s * 2 * FLUSH_INTERVAL_S
    return Outcome(
        "kill-9",
        f"kill -9 after {seconds:g} s at {RATE:,} msgs/s (mix)",
        f"exit {code}, rows lost {lost} ({missing}); trades+depth {per_s:,.0f}/s x flush interval "
        f"{FLUSH_INTERVAL_S:g} s = {per_s * FLUSH_INTERVAL_S:,.0f}, bound 2 intervals (pending + in flight) "
        f"= {bound:,.0f}",
        0 <= lost <= bound,
    )
