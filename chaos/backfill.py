"""History chaos: 60 s holes in the live trades at 3,000 msgs/s, filled back from IB's history.

For each of three faults (a gateway down 60 s, a gateway silent 60 s, the daemon itself stopped 60 s) on
a fresh stack (the daemon as `ingestion run` with ``history.market_hours: always`` against the simulator's
always-open market): after recovery and every gap filled, the market is paused, and per symbol the trades
in time_and_sales (live + backfill) from the first whole second the daemon saw are compared, as a multiset
of (second, price, size), with the trades the simulator's market produced (its /tape). PASS: equal for
every symbol, 0 duplicate rows, 0 pacing errors from the simulator.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import Options, Outcome
from harness import Stack, wait_settled

RATE = 3000
# No bars here: their requests would share IB's 60-per-10-minutes budget with the backfill measured.
HISTORY_ENV = {"INGESTION__HISTORY__MARKET_HOURS": "always", "INGESTION__HISTORY__BARS": "[]"}


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _history(stack: Stack) -> dict[str, Any]:
    _, body = stack.daemon.health()
    return body.get("history", {})


def _wait_filled(stack: Stack, at_least: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            history = _history(stack)
            done = history["gaps_filled"] + history["gaps_unfilled"]
            if done >= at_least and history["gaps_pending"] == 0:
                return time.monotonic() - started
        time.sleep(0.5)
    msg = f"gaps not filled within {timeout:g} s: {_history(stack)}"
    raise TimeoutError(msg)


def _compare(stack: Stack) -> tuple[int, int, int, list[str]]:
    """(trades produced, stored, recovered by backfill, per-symbol problems)."""
    produced_total = stored_total = backfilled = 0
    problems = []
    symbols = sorted(stack.simulator.stats()["market"]["trades"])
    for symbol in symbols:
        sql = f"SELECT exchange_time, price, size, source FROM time_and_sales WHERE symbol = '{symbol}'"
        answer = stack.questdb.http.get("/exec", params={"query": sql}).json()
        rows = answer.get("dataset", [])
        live = [_micros(r[0]) // 1_000_000 for r in rows if r[3] != "backfill" and r[0]]
        if not live:
            continue
        first = min(live) + 1
        stored = Counter(
            (_micros(r[0]) // 1_000_000, round(float(r[1]) * 100), float(r[2]))
            for r in rows
            if r[0] and _micros(r[0]) // 1_000_000 >= first
        )
        tape = stack.simulator.http.get(
            "/tape", params={"symbol": symbol, "start": first, "end": first + 86400}
        )
        produced = Counter(
            (int(t["time_ms"]) // 1000, round(float(t["price"]) * 100), float(t["size"]))
            for t in tape.json()["trades"]
        )
        produced_total += sum(produced.values())
        stored_total += sum(stored.values())
        backfilled += sum(1 for r in rows if r[3] == "backfill")
        missing, extra = produced - stored, stored - produced
        if missing or extra:
            problems.append(f"{symbol}: {sum(missing.values())} missing, {sum(extra.values())} extra")
    return produced_total, stored_total, backfilled, problems


def _verdict(name: str, done: str, stack: Stack, fill_seconds: float, expected_gaps: int) -> Outcome:
    stack.simulator.post("/pause")
    settled = wait_settled(stack.questdb, timeout=60)
    produced, stored, backfilled, problems = _compare(stack)
    duplicates = settled["tables"]["time_and_sales"]["duplicates"]
    history = _history(stack)
    pacing = stack.simulator.stats()["hmds"]["pacing"]
    measured = (
        f"produced {produced:,}, stored {stored:,} ({backfilled:,} backfill), duplicates {duplicates}, "
        f"gaps filled {history['gaps_filled']}/{expected_gaps} in {fill_seconds:.0f} s after recovery with "
        f"{history['requests']} requests, pacing waits {history['pacing_waits']}, simulator's 162s {pacing}"
        + (f"; {'; '.join(problems[:3])}" if problems else "")
    )
    passed = not problems and duplicates == 0 and pacing == 0 and backfilled > 0
    return Outcome(name, done, measured, passed)


def _stack(workdir: Path) -> Stack:
    return Stack(workdir, rate=RATE, workload="mix", daemon_env=HISTORY_ENV)


def _gateway_fault(name: str, what: str, path: str, param: str, options: Options, workdir: Path) -> Outcome:
    seconds = 10 if options.quick else 60
    with _stack(workdir) as stack:
        time.sleep(5)
        stack.simulator.post(path, **{param: seconds})
        time.sleep(seconds)
        filled_in = _wait_filled(stack, 15, 900)
        return _verdict(name, f"gateway {what} {seconds} s at {RATE:,} msgs/s", stack, filled_in, 15)


def outage(options: Options, workdir: Path) -> Outcome:
    return _gateway_fault("history-outage", "down", "/restart", "down", options, workdir)


def stall(options: Options, workdir: Path) -> Outcome:
    return _gateway_fault("history-stall", "silent", "/silence", "seconds", options, workdir)


def daemon_down(options: Options, workdir: Path) -> Outcome:
    down = 10 if options.quick else 60
    with _stack(workdir) as stack:
        time.sleep(5)
        stack.daemon.stop()
        time.sleep(down)
        stack.daemon.start()
        if stack.daemon.wait_healthy(33, 60) is None:
            msg = "the daemon did not come back healthy within 60 s"
            raise RuntimeError(msg)
        seconds = _wait_filled(stack, 15, 900)
        return _verdict(
            "history-daemon-down", f"daemon stopped {down} s at {RATE:,} msgs/s", stack, seconds, 15
        )


def history(options: Options, workdir: Path) -> list[Outcome]:
    outcomes = []
    for index, scenario in enumerate((outage, stall, daemon_down)):
        place = workdir / str(index)
        place.mkdir()
        outcomes.append(scenario(options, place))
    return outcomes
