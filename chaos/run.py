"""The chaos suite: one command, one line per scenario, PASS or FAIL against its figure.

    .venv/bin/python chaos/run.py [--quick] [--only gateway,questdb-outage,...] [--seed 1]

Scenarios (each on its own fresh stack of loopback processes: simulator, daemon as `ingestion run`,
redis-server, the QuestDB double of bench/questdb_server.py):

    gateway          100 restarts + 20 silences at random moments (quick: 10 + 3)
    questdb-outage   QuestDB down 5 min at 5,000 events/s (quick: 30 s): 0 lost, 0 duplicates
    valkey-outage    Valkey stopped and restarted: QuestDB rows/s during >= 90 % of before
    sigterm          SIGTERM under load: exit 0, 0 rows lost
    kill-9           kill -9 under load: rows lost <= 2 flush intervals of trades+depth
    overload         twice what a QuestDB at its limit takes, 60 s (quick: 20 s): /health/live p99 < 1 s,
                     RSS < 300 MB, back to direct mode within 60 s, stored + dropped = received
    bad-input        fake gateway (garbage, truncated, wrong version, oversized), then proxy;
                     hypothesis over load_settings (3,000 examples; quick: 300) and check-config
    history          gateway down 60 s, gateway silent 60 s, daemon stopped 60 s, at 3,000 msgs/s
                     (quick: 10 s each): time_and_sales (live + backfill) == the market's trades

Run by hand; nothing here is part of the test suite. Exit code 0 when every line passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import backfill
import bad_input
import daemon_stop
import gateway
import overloaded
import storage
from common import Options, Outcome
from harness import machine

Scenario = Callable[[Options, Path], "Outcome | list[Outcome]"]
SCENARIOS: dict[str, Scenario] = {
    "gateway": gateway.run,
    "questdb-outage": storage.questdb_outage,
    "valkey-outage": storage.valkey_outage,
    "sigterm": daemon_stop.sigterm,
    "kill-9": daemon_stop.sigkill,
    "overload": overloaded.overload,
    "bad-input": bad_input.bad_input,
    "history": backfill.history,
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer faults and shorter outages")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    options = Options(quick=args.quick, seed=args.seed)
    print(f"chaos {'quick' if args.quick else 'full'} on {machine()}", flush=True)
    failed = 0
    for name in chosen:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as workdir:
            try:
                result = SCENARIOS[name](options, Path(workdir))
            except (RuntimeError, TimeoutError, OSError, KeyError, ValueError) as exc:
                result = Outcome(name, "scenario could not run", f"{type(exc).__name__}: {exc}", False)
        for outcome in result if isinstance(result, list) else [result]:
            failed += not outcome.passed
            print(f"{outcome.line()}  [{time.monotonic() - started:.0f} s]", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
