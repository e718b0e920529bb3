"""What one cache round trip costs the event loop: redis-py's pipeline against RoundTrips (run by hand).

    .venv/bin/python bench/bench_valkey_round_trip.py

Each round trip carries what a typical cycle of the cache does at 10,000 msgs/s: two SETs with a TTL
(an L1 and an L2 state) and one EVAL of the trades script with two trades, against a real server of
its own (valkey-server or redis-server). Prints CPU microseconds of this process per round trip (the
event loop's cost: packing, sending, reading the replies, the loop's own turns) and wall microseconds,
for redis-py's ``pipeline(transaction=False).execute()`` with and without a socket timeout, and for
:class:`ingestion.sinks.valkey.RoundTrips`. Three rounds, interleaved, since the machine's speed drifts.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import ValkeyProcess
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ingestion.sinks.valkey import XADD_TRADES, HiredisPackingConnection, RoundTrips

ROUND_TRIPS = 20_000
WARMUP = 2_000
# EVAL's arguments after the script: 2 keys, MAXLEN 1000, then two trades of two fields each.
TRADES = (2, "bench:trades:A", "bench:trades:B", 1000,
          4, "price", 412.37, "size", 300, 4, "price", 412.38, "size", 100)  # fmt: skip
L1_BODY = "x" * 200
L2_BODY = "y" * 400

RoundTrip = Callable[[], Awaitable[Any]]


def by_pipeline(client: Redis) -> RoundTrip:
    async def round_trip() -> Any:
        pipe = client.pipeline(transaction=False)
        pipe.set("bench:l1", L1_BODY, ex=60)
        pipe.set("bench:l2", L2_BODY, ex=60)
        pipe.eval(XADD_TRADES, *TRADES)
        return await pipe.execute(raise_on_error=False)

    return round_trip


def by_round_trips(client: Redis) -> RoundTrip:
    round_trips = RoundTrips(client)
    commands = [
        ("SET", "bench:l1", L1_BODY, "EX", 60),
        ("SET", "bench:l2", L2_BODY, "EX", 60),
        ("EVAL", XADD_TRADES, *TRADES),
    ]
    return lambda: round_trips(commands)


async def measure(url: str, way: str, socket_timeout: float | None) -> tuple[float, float]:
    client = Redis.from_url(
        url,
        connection_class=HiredisPackingConnection,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    round_trip = by_pipeline(client) if way == "pipeline" else by_round_trips(client)
    try:
        for _ in range(WARMUP):
            await round_trip()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(ROUND_TRIPS):
            await round_trip()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.aclose()
    return cpu / ROUND_TRIPS * 1e6, wall / ROUND_TRIPS * 1e6


def main() -> None:
    ways = [("pipeline", 2.0), ("pipeline", None), ("round_trips", None)]
    with tempfile.TemporaryDirectory() as workdir:
        valkey = ValkeyProcess(Path(workdir))
        valkey.start()
        try:
            for round_number in range(1, 4):
                for way, socket_timeout in ways:
                    cpu_us, wall_us = asyncio.run(measure(valkey.url, way, socket_timeout))
                    print(
                        f"round {round_number}  {way:11}  socket_timeout={socket_timeout!s:4}  "
                        f"cpu {cpu_us:6.1f} us  wall {wall_us:6.1f} us per round trip"
                    )
        finally:
            valkey.stop()


if __name__ == "__main__":
    main()
