"""The naive baseline: an IB-to-database script written the way most of them are (run by the harness).

    .venv/bin/python bench/naive_baseline.py --port 4002 --questdb-port 9000 --valkey-url redis://... \
        --seconds 20 [--warmup 5]

Same subscriptions as bench/bare_client.py. For every tick, inside ib_async's
``pendingTickersEvent`` callback: one synchronous ILP/HTTP POST /write of that tick's row
(httpx.Client, keep-alive) and one synchronous cache SET (redis-py). No batching, no queue, no
thread: the event loop waits for both answers before it reads the socket again. Prints one JSON
line: ticks written in the window after warm-up, the window's length, and CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterable

import httpx
import redis
from bare_client import subscribe
from harness import LOOPBACK, cpu_seconds
from ib_async import IB, Ticker


class NaiveWriter:
    """One POST and one SET per tick, synchronously."""

    def __init__(self, questdb_port: int, valkey_url: str) -> None:
        self.http = httpx.Client(base_url=f"http://{LOOPBACK}:{questdb_port}", timeout=10)
        self.cache = redis.Redis.from_url(valkey_url)
        self.ticks = 0

    def on_pending(self, tickers: Iterable[Ticker]) -> None:
        for ticker in tickers:
            symbol = ticker.contract.symbol if ticker.contract else "?"
            for tick in ticker.ticks:
                line = f"market_data_l1,symbol={symbol} price={float(tick.price)},size={float(tick.size)}"
                self.write(line, symbol, tick.price)
            for dom in ticker.domTicks:
                line = f"market_data_l2,symbol={symbol} price={float(dom.price)},size={float(dom.size)}"
                self.write(line, symbol, dom.price)
            for tbt in ticker.tickByTicks:
                price = float(getattr(tbt, "price", 0.0))
                self.write(f"time_and_sales,symbol={symbol} price={price}", symbol, price)

    def write(self, line: str, symbol: str, price: float) -> None:
        self.http.post("/write", content=f"{line} {time.time_ns()}\n").raise_for_status()
        self.cache.set(f"naive:{symbol}", json.dumps({"symbol": symbol, "price": price}))
        self.ticks += 1

    def close(self) -> None:
        self.http.close()
        self.cache.close()


async def measure(args: argparse.Namespace) -> dict[str, float]:
    ib = IB()
    writer = NaiveWriter(args.questdb_port, args.valkey_url)
    ib.pendingTickersEvent += writer.on_pending
    await subscribe(ib, args.port, args.client_id)
    try:
        await asyncio.sleep(args.warmup)
        ticks0, cpu0, t0 = writer.ticks, cpu_seconds(os.getpid()), time.monotonic()
        await asyncio.sleep(args.seconds)
        ticks1, cpu1, t1 = writer.ticks, cpu_seconds(os.getpid()), time.monotonic()
    finally:
        ib.disconnect()
        writer.close()
    return {"ticks": ticks1 - ticks0, "seconds": t1 - t0, "cpu_seconds": cpu1 - cpu0}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=4002)
    parser.add_argument("--questdb-port", type=int, default=9000)
    parser.add_argument("--valkey-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--client-id", type=int, default=78)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
