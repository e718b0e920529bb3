"""The ceiling: a bare ib_async client that only counts ticks (run by the harness, or by hand).

    .venv/bin/python bench/bare_client.py --port 4002 --seconds 20 [--warmup 5]

Same subscriptions as the daemon under IB's default limits: reqMktData with generic tick 233
(RTVolume) for the 15 ETFs, reqMktDepth (10 rows, SMART) for SPY, QQQ, IWM, reqTickByTickData
AllLast for SPY, QQQ, IWM. ``pendingTickersEvent`` adds up ``ticks + domTicks + tickByTicks``;
nothing else happens per tick. Prints one JSON line: ticks counted in the window after warm-up,
the window's length, and the process's CPU seconds in that window.

``--sliced`` gives the client the daemon's socket reader (ingestion.ibkr.reads.bound_socket_reads:
linear in the size of a read, handed on in batches of 8 KiB; it was 8 KiB slices of each read until the
tenth round): stock ib_async parses a read in time quadratic in its size, so once it lags and its reads
grow, it slows further; how far depends on the machine. The stock client is the issue's ceiling; the
sliced one is the stricter one, what ib_async's decoding itself can drain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterable

from harness import ETFS, LOOPBACK, TBT_SYMBOLS, cpu_seconds
from ib_async import IB, Stock, Ticker

from ingestion.ibkr.reads import bound_socket_reads


class TickCounter:
    """What ``pendingTickersEvent`` delivered, and nothing more."""

    def __init__(self) -> None:
        self.ticks = 0

    def on_pending(self, tickers: Iterable[Ticker]) -> None:
        for ticker in tickers:
            self.ticks += len(ticker.ticks) + len(ticker.domTicks) + len(ticker.tickByTicks)


async def subscribe(ib: IB, port: int, client_id: int) -> None:
    await ib.connectAsync(LOOPBACK, port, clientId=client_id, timeout=20)
    contracts = [Stock(symbol, "SMART", "USD") for symbol in ETFS]
    await ib.qualifyContractsAsync(*contracts)
    for contract in contracts:
        ib.reqMktData(contract, "233", False, False)
    for contract in contracts[: len(TBT_SYMBOLS)]:
        ib.reqMktDepth(contract, 10, True)
        ib.reqTickByTickData(contract, "AllLast", 0, False)


async def measure(port: int, seconds: float, warmup: float, client_id: int, sliced: bool) -> dict[str, float]:
    ib = IB()
    if sliced:
        bound_socket_reads(ib)
    counter = TickCounter()
    ib.pendingTickersEvent += counter.on_pending
    await subscribe(ib, port, client_id)
    try:
        await asyncio.sleep(warmup)
        ticks0, cpu0, t0 = counter.ticks, cpu_seconds_self(), time.monotonic()
        await asyncio.sleep(seconds)
        ticks1, cpu1, t1 = counter.ticks, cpu_seconds_self(), time.monotonic()
    finally:
        ib.disconnect()
    return {"ticks": ticks1 - ticks0, "seconds": t1 - t0, "cpu_seconds": cpu1 - cpu0}


def cpu_seconds_self() -> float:
    return cpu_seconds(os.getpid())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=4002)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--client-id", type=int, default=77)
    parser.add_argument("--sliced", action="store_true", help="the daemon's socket reader")
    args = parser.parse_args()
    result = asyncio.run(measure(args.port, args.seconds, args.warmup, args.client_id, args.sliced))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
