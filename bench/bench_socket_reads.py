"""What a socket read costs ib_async per message, by read size: its own parser, the daemon's (run by hand).

    .venv/bin/python bench/bench_socket_reads.py

The real ib_async client parses reads of Level 1 price ticks (TWS message 1, 29-byte frames, for one
subscribed ticker) handed to its connection as asyncio would hand them: to ib_async's own parser, or
through ingestion.ibkr.reads.bound_socket_reads. Prints microseconds per message for each read size.
ib_async cuts each message off the front of a bytes buffer, so its reads cost O(n^2); the daemon's reader
walks the frames by offset.
"""

from __future__ import annotations

import time

from ib_async import IB, Stock

from ingestion.ibkr.reads import bound_socket_reads
from ingestion.simulator.protocol import encode

READ_SIZES = (4096, 8192, 16384, 65536, 262144)
SERVER_VERSION = 178


def past_handshake(ib: IB) -> IB:
    """``ib`` as ib_async leaves it once the API is ready, with no socket behind it."""
    client = ib.client
    client._serverVersion = SERVER_VERSION
    client.decoder.serverVersion = SERVER_VERSION
    client._apiReady = True
    return ib


def ready_client(sliced: bool) -> IB:
    """An IB whose client is past the handshake, with ticker 1 subscribed; nothing on the network."""
    ib = past_handshake(IB())
    ib.wrapper.startTicker(1, Stock("SPY", "SMART", "USD", conId=756733), "mktData")
    if sliced:
        bound_socket_reads(ib)
    return ib


def per_message_us(read_size: int, *, sliced: bool) -> float:
    tick = encode((1, 6, 1, 1, "500.25", 100, 0))  # tickPrice: bid 500.25 x 100
    read = tick * (read_size // len(tick))
    ib = ready_client(sliced)
    messages = read_size // len(tick)
    repeats = max(3, 4_000_000 // read_size)
    started = time.perf_counter()
    for _ in range(repeats):
        ib.client.conn.data_received(read)
    return (time.perf_counter() - started) / (repeats * messages) * 1e6


def main() -> None:
    print(f"{'read':>8} {'ib_async us/msg':>16} {'daemon us/msg':>14}")
    for size in READ_SIZES:
        whole = per_message_us(size, sliced=False)
        sliced = per_message_us(size, sliced=True)
        print(f"{size:>8} {whole:>16.2f} {sliced:>14.2f}")


if __name__ == "__main__":
    main()
