"""Cost of the QuestDB sink's per-row work, stage by stage, without network or daemon (run by hand).

    .venv/bin/python bench/bench_rows_spool.py [--rows 10000] [--repeat 15]
    .venv/bin/python bench/bench_rows_spool.py --digest              # fingerprints of what each stage makes
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/bench_rows_spool.py --only rows --repeat 3   # instruction counts, see below

Stages, each over the same ``--rows`` events of a saturation-like mix (70 % quotes, 20 % depth, 10 %
trades, with the None fields real feeds have):

- ``rows``: ``row_for`` on every event (the writer's ``accept``, on the event loop);
- ``add_row``: every row into a fresh questdb ``Buffer`` (``IlpLink._flush``, in the network thread);
- ``append``: the rows as one batch into a ``Spool`` with fsync off (framing + page-cache write, in
  the disk thread while QuestDB is down);
- ``read``: that batch read back from the spool (replay, in the disk thread).

Timing mode prints, per stage, the best of ``--repeat`` runs and the median, per 10,000 rows: the
machine is shared, so the best run is the one least disturbed by other work.

Instruction mode (``--only STAGE``) runs the setup, one warm-up run of STAGE, then ``--repeat`` runs,
and prints nothing useful itself: run it under callgrind twice, with ``--repeat 1`` and ``--repeat 3``,
and halve the difference of the two "Collected" totals to get the instructions of one run of the stage
(setup, warm-up and interpreter start cancel out). ``PYTHONHASHSEED=0`` keeps the two runs alike.

``--digest`` prints a SHA-256 of the rows, of the ILP bytes (protocol versions 1 and 2) and of the rows
read back from the spool: equal digests before and after a change mean the change altered no output.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingestion.config import SpoolConfig
from ingestion.events import DepthUpdate, Event, Quote, Trade
from ingestion.ibkr.normalise import clean_price, clean_size
from ingestion.sinks.rows import add_row, row_for
from ingestion.sinks.spool import Spool

with warnings.catch_warnings():
    # questdb 6 deprecates the module, not the Buffer the writer's sender hands out.
    warnings.simplefilter("ignore", DeprecationWarning)
    from questdb.ingress import Buffer

BASE_NS = 1_795_962_540_000_000_000  # 2026-11-23T14:29:00Z
SYMBOLS = ("SPY", "QQQ", "IWM", "DIA", "XLK", "XLF", "XLE", "XLV", "XLY", "XLI", "XLP", "XLB", "XLU")
STAGES = ("rows", "add_row", "append", "read")


def _quote(rng: random.Random, symbol: str, ts: int) -> Quote:
    mid = round(rng.uniform(50, 600), 2)
    # IB sizes arrive as Decimal; the normaliser's clean_size makes them floats, as in the daemon.
    size = clean_size(Decimal(rng.randrange(1, 5000)))
    pre_open = rng.random() < 0.1  # before the open, IB has no open and sometimes no last
    return Quote(
        symbol, ts, clean_price(mid - 0.01), clean_price(mid + 0.01), None if pre_open else mid,
        size, clean_size(Decimal(rng.randrange(1, 5000))), None if pre_open else clean_size(100),
        float(rng.randrange(10**6, 10**8)), mid + 1.5, mid - 1.5, mid - 0.25, None if pre_open else mid + 0.1,
    )  # fmt: skip


def _depth(rng: random.Random, symbol: str, ts: int) -> DepthUpdate:
    operation = rng.choice(("insert", "update", "update", "update", "delete"))
    deleted = operation == "delete"
    return DepthUpdate(
        symbol, ts, rng.choice(("bid", "ask")), rng.randrange(10), operation,  # type: ignore[arg-type]
        None if deleted else clean_price(round(rng.uniform(50, 600), 2)),
        None if deleted else clean_size(Decimal(rng.randrange(1, 2000))),
        rng.choice(("NSDQ", "ARCA", "BATS", None)), True,
    )  # fmt: skip


def _trade(rng: random.Random, symbol: str, ts: int) -> Trade:
    price = round(rng.uniform(50, 600), 2)
    size = clean_size(Decimal(rng.randrange(1, 1000)))
    if rng.random() < 0.5:
        return Trade(symbol, ts, ts - 3_000_000, price, size, "ARCA", "@ T", False, False, "tick_by_tick")
    return Trade(symbol, ts, ts - 5_000_000, price, size, None, None, False, False, "rtvolume")


def events(count: int, seed: int = 7) -> list[Event]:
    """A reproducible saturation-like mix: 70 % quotes, 20 % depth updates, 10 % trades."""
    rng = random.Random(seed)
    out: list[Event] = []
    for i in range(count):
        ts = BASE_NS + i * 1000
        symbol = rng.choice(SYMBOLS)
        pick = rng.random()
        if pick < 0.7:
            out.append(_quote(rng, symbol, ts))
        elif pick < 0.9:
            out.append(_depth(rng, symbol[:3], ts))
        else:
            out.append(_trade(rng, symbol, ts))
    return out


def fill(buffer: Any, rows: list[Any]) -> None:
    buffer.clear()
    for row in rows:
        add_row(buffer, row)


class Bench:
    """The fixtures of every stage, built once."""

    def __init__(self, count: int, directory: Path, protocol_version: int) -> None:
        self.events = events(count)
        self.rows = [row_for(e) for e in self.events]
        self.buffer = Buffer(protocol_version=protocol_version)
        self.writer = Spool(SpoolConfig(dir=directory / "write", fsync="never"))
        self.writer.open()
        self.reader = Spool(SpoolConfig(dir=directory / "read", fsync="never"))
        self.reader.open()
        self.reader.append(self.rows)
        self.count = count

    def stage(self, name: str) -> Callable[[], object]:
        return {
            "rows": lambda: [row_for(e) for e in self.events],
            "add_row": lambda: fill(self.buffer, self.rows),
            "append": lambda: self.writer.append(self.rows),
            "read": lambda: self.reader.read(self.count),
        }[name]


def best_of(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median wall time of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def digest(bench: Bench) -> dict[str, str]:
    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    out = {"rows": sha(repr(bench.rows).encode())}
    for version in (1, 2):
        buffer = Buffer(protocol_version=version)
        fill(buffer, bench.rows)
        out[f"ilp_v{version}"] = sha(bytes(buffer))
        # A replayed row is the list JSON made of the tuple: it must encode to the same bytes.
        replayed, _ = bench.reader.read(bench.count)
        fill(buffer, replayed)
        out[f"ilp_v{version}_replayed"] = sha(bytes(buffer))
    read_back, _ = bench.reader.read(bench.count)
    out["spool_read_back"] = sha(repr([tuple(r) for r in read_back]).encode())
    out["spool_equals_rows"] = str([tuple(r) for r in read_back] == bench.rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--protocol-version", type=int, default=2, choices=(1, 2))
    parser.add_argument("--only", choices=(*STAGES, "none"), help="instruction mode: this stage only")
    parser.add_argument("--digest", action="store_true", help="fingerprints of every stage's output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as tmp:
        bench = Bench(args.rows, Path(tmp), args.protocol_version)
        if args.digest:
            for name, value in digest(bench).items():
                print(f"{name:22} {value}")
            return
        if args.only:
            if args.only != "none":
                run = bench.stage(args.only)
                for _ in range(args.repeat + 1):
                    run()
            return
        scale = 10_000 / args.rows * 1000  # seconds per run -> ms per 10,000 rows
        python = sys.version.split()[0]
        print(f"{args.rows} rows, best / median of {args.repeat} runs, ms per 10,000 rows (python {python})")
        for name in STAGES:
            best, median = best_of(bench.stage(name), args.repeat)
            print(f"{name:8} {best * scale:8.2f} {median * scale:8.2f}")
        frame = bench.writer.bytes / max(bench.writer.pending_rows, 1)
        print(f"spool bytes per row: {frame:.1f}")


if __name__ == "__main__":
    main()
