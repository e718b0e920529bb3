"""The QuestDB double of tests/questdb_double.py in a process of its own, with a bench endpoint.

    .venv/bin/python bench/questdb_server.py --port 9000 [--fast]

Run by the harness (bench/harness.py), never by the test suite. A process of its own so that the
double's ILP parsing does not share a GIL with whoever measures. Two modes:

- default: the double exactly as the tests use it (full ILP parse, types checked, DEDUP upsert,
  sqlite mirror for /exec), plus measurement.
- ``--fast``: the double's /settings and /exec (DDL, schema checks, SELECT) but a cheap ``/write``
  that only reads each line's table, ``symbol`` tag and designated timestamp: it counts rows per
  table and symbol and counts repeated (table, symbol, timestamp) keys as duplicates. For the
  saturation run, where the full double (pure-Python parsing) would be the bottleneck, not the daemon.

Both modes answer ``GET /bench/stats``: rows and duplicates per table and symbol, write requests,
and a histogram of "acknowledged now minus the row's designated timestamp" (the daemon's receive
time) for every row: receipt-to-QuestDB-acknowledgement measured outside the daemon (same host,
same wall clock). ``POST /bench/outage?status=503``, ``/bench/heal``, ``/bench/refuse``,
``/bench/accept`` drive the double's faults from another process; ``POST /bench/throttle?rows_per_s=N``
(0: off), or ``--rows-per-s N`` at start, makes it accept rows at most that fast (a QuestDB at its limit).
"""

from __future__ import annotations

import argparse
import bisect
import json
import signal
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from questdb_double import QuestDBDouble

# Latency buckets in microseconds: 50 us .. ~100 s, 8 per factor of 10.
LATENCY_BOUNDS_US: tuple[float, ...] = tuple(50 * 10 ** (i / 8) for i in range(50))
_UNIT_NS = {"n": 1, "t": 1_000, "u": 1_000, "m": 1_000_000, "s": 1_000_000_000}


class LatencyHistogram:
    """Counts per bucket of :data:`LATENCY_BOUNDS_US` (the last bucket is everything above)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS_US) + 1)
        self.max_us = 0.0

    def observe_many(self, values_us: list[float]) -> None:
        counts = self.counts
        for value in values_us:
            counts[bisect.bisect_left(LATENCY_BOUNDS_US, value)] += 1
        if values_us:
            self.max_us = max(self.max_us, max(values_us))

    def reset(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS_US) + 1)
        self.max_us = 0.0


def line_key(line: bytes) -> tuple[str, str, int]:
    """(table, symbol tag or "", designated timestamp in ns) of one ILP line, read cheaply."""
    head = line.split(b" ", 1)[0]
    table, _, tags = head.partition(b",")
    symbol = b""
    start = tags.find(b"symbol=")
    if start == 0 or (start > 0 and tags[start - 1 : start] == b","):
        symbol = tags[start + 7 :].split(b",", 1)[0]
    raw = line.rsplit(b" ", 1)[1]
    if raw[-1:].isalpha():
        return table.decode(), symbol.decode(), int(raw[:-1]) * _UNIT_NS.get(chr(raw[-1]), 1)
    return table.decode(), symbol.decode(), int(raw)


class SeenKeys:
    """The designated timestamps (us) one (table, symbol) has received, to count rows sent twice.

    Its cost must not grow with what it holds, or the double slows down through a long run and the bench
    measures the double: a set of (table, symbol, us) tuples did (0.11 cores at 80,000 rows/s in a fresh
    run, 0.21 at the end of a stepped saturation run). Rows of one symbol arrive in increasing order,
    since the daemon's receive clock is strictly increasing, so an in-order key is appended to a sorted
    array (8 bytes, no hashing). Only a late key (a replay from the spool) is looked up there by bisection,
    and kept in a set of its own.
    """

    __slots__ = ("_late", "_sorted")

    def __init__(self) -> None:
        self._sorted = array("q")
        self._late: set[int] = set()

    def add(self, key: int) -> bool:
        """Record ``key``; False if it was seen before (a duplicate)."""
        keys = self._sorted
        if not keys or key > keys[-1]:
            keys.append(key)
            return True
        at = bisect.bisect_left(keys, key)
        if (at < len(keys) and keys[at] == key) or key in self._late:
            return False
        self._late.add(key)
        return True


class BenchDouble(QuestDBDouble):
    """The double, measuring every acknowledged row; ``fast`` swaps the full parse for counting."""

    def __init__(self, port: int, *, fast: bool) -> None:
        super().__init__(port)
        self.fast = fast
        self.latency = LatencyHistogram()
        self.counts: dict[str, dict[str, int]] = {}
        self.fast_duplicates: dict[str, int] = {}
        self._seen: dict[tuple[str, str], SeenKeys] = {}
        self._bench_lock = threading.Lock()

    def _write(self, body: bytes) -> tuple[int, dict[str, Any] | None]:
        lines = [line for line in body.split(b"\n") if line]
        keys = [line_key(line) for line in lines]
        if self.fast:
            status, answer = 204, None
        else:
            status, answer = super()._write(body)
        if status != 204:
            return status, answer
        now_ns = time.time_ns()
        with self._bench_lock:
            self.latency.observe_many([(now_ns - ts) / 1000 for _, _, ts in keys])
            for table, symbol, ts in keys:
                per_table = self.counts.setdefault(table, {})
                if self.fast:
                    seen = self._seen.get((table, symbol))
                    if seen is None:
                        seen = self._seen[table, symbol] = SeenKeys()
                    if not seen.add(ts // 1000):
                        self.fast_duplicates[table] = self.fast_duplicates.get(table, 0) + 1
                        continue
                per_table[symbol] = per_table.get(symbol, 0) + 1
        return status, answer

    def bench_stats(self) -> dict[str, Any]:
        """Rows per table and symbol (distinct keys), duplicates per table, the latency histogram."""
        with self._bench_lock:
            tables: dict[str, Any] = {}
            for table, per_symbol in self.counts.items():
                if self.fast:
                    rows = dict(per_symbol)
                    duplicates = self.fast_duplicates.get(table, 0)
                else:
                    rows = self._stored_by_symbol(table)
                    duplicates = self.duplicates(table)
                tables[table] = {"rows": sum(rows.values()), "by_symbol": rows, "duplicates": duplicates}
            return {
                "tables": tables,
                "write_requests": self.write_requests,
                "failed_writes": self.failed_writes,
                "latency_bounds_us": list(LATENCY_BOUNDS_US),
                "latency_counts": list(self.latency.counts),
                "latency_max_us": self.latency.max_us,
            }

    def _stored_by_symbol(self, table: str) -> dict[str, int]:
        with self._lock:
            found = self.catalogue.tables.get(table)
            out: dict[str, int] = {}
            for row in found.rows if found else ():
                symbol = str(row.get("symbol", ""))
                out[symbol] = out.get(symbol, 0) + 1
            return out

    def _handle_get(self, handler: Any, path: str, query: dict[str, list[str]]) -> None:
        if path == "/bench/stats":
            handler.reply(200, self.bench_stats())
            return
        super()._handle_get(handler, path, query)

    def _handle_post(self, handler: Any, path: str, body: bytes) -> None:
        if path.startswith("/bench/"):
            handler.reply(200, self._bench_control(path, parse_qs(urlsplit(handler.path).query)))
            return
        super()._handle_post(handler, path, body)

    def _bench_control(self, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        if path == "/bench/throttle":
            rate = float(query.get("rows_per_s", ["0"])[0])
            self.throttle(rate or None)
        elif path == "/bench/outage":
            self.outage(503)
        elif path == "/bench/heal":
            self.heal()
        elif path == "/bench/latency-reset":
            with self._bench_lock:
                self.latency.reset()
        else:
            return {"error": f"no endpoint {path}"}
        return {"ok": True}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fast", action="store_true", help="count rows instead of the full double")
    parser.add_argument("--rows-per-s", type=float, default=0.0, help="accept rows at most this fast")
    args = parser.parse_args()
    double = BenchDouble(args.port, fast=args.fast)
    if args.rows_per_s:
        double.throttle(args.rows_per_s)
    double.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"ready": True, "port": double.port, "fast": args.fast}), flush=True)
    while not stop.wait(0.5):
        pass
    double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
