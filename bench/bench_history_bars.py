"""How long the default bars take to land in market_data_historical for all 15 symbols, and how many
requests, next to the floor IB's pacing allows.

    .venv/bin/python bench/bench_history_bars.py [--session nyse|always]

The whole daemon (`ingestion run`, default history configuration: 1 day over 2 years and 1 min over
5 trading days) against the simulator's history, the QuestDB double, redis-server. The floor: with R
requests in all, IB's 60-per-10-minutes rule alone needs (ceil(R / 60) - 1) x 600 s before the last one
may go. Run by hand; figures into docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import tempfile
import time
from pathlib import Path

from harness import (
    BIN,
    LOOPBACK,
    DaemonProcess,
    QuestDBProcess,
    SimulatorProcess,
    ValkeyProcess,
    machine,
    print_json,
    wait_port,
)


class SessionSimulator(SimulatorProcess):
    def __init__(self, session: str) -> None:
        super().__init__(rate=100)
        self.session = session

    def start(self) -> None:
        command = [str(BIN / "ingestion"), "simulate-gateway", "--host", LOOPBACK, "--port", str(self.port),
                   "--control-port", str(self.control_port), "--rate", "100",
                   "--session", self.session]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.control_port)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--session", choices=("nyse", "always"), default="nyse")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    print_json("machine", machine())
    with tempfile.TemporaryDirectory(prefix="bench-history-") as workdir:
        valkey, questdb, sim = ValkeyProcess(Path(workdir)), QuestDBProcess(), SessionSimulator(args.session)
        env = {"INGESTION__HISTORY__MARKET_HOURS": "nyse" if args.session == "nyse" else "always"}
        daemon = DaemonProcess(Path(workdir), sim.port, questdb, valkey.url, "mix", env)
        valkey.start()
        questdb.start()
        sim.start()
        try:
            started = time.monotonic()
            daemon.start()
            history: dict = {}
            while time.monotonic() - started < args.timeout:
                try:
                    _, body = daemon.health()
                    history = body.get("history", {})
                except Exception:  # noqa: BLE001 (starting up)
                    history = {}
                if history.get("bars_up_to_date") and all(history["bars_up_to_date"].values()):
                    break
                time.sleep(1)
            seconds = time.monotonic() - started
            requests = history.get("requests", 0)
            sql = (
                "SELECT bar_size, symbol, count(*) AS bars FROM market_data_historical "
                "GROUP BY bar_size, symbol"
            )
            answer = questdb.http.get("/exec", params={"query": sql}).json()
            floor = (math.ceil(requests / 60) - 1) * 600 if requests else 0
            print_json(
                "history-bars",
                {
                    "session": args.session,
                    "seconds_to_all_bars": round(seconds, 1),
                    "requests": requests,
                    "pacing_floor_seconds": floor,
                    "pacing_waits": history.get("pacing_waits"),
                    "pacing_violations_seen": history.get("pacing_violations"),
                    "simulator_162": sim.stats()["hmds"]["pacing"],
                    "bars": answer.get("dataset"),
                    "up_to_date": history.get("bars_up_to_date"),
                },
            )
        finally:
            daemon.stop()
            sim.stop()
            questdb.stop()
            valkey.stop()


if __name__ == "__main__":
    main()
