"""Keep ib_async's message parsing linear in the size of a socket read.

ib_async 2.1 appends each socket read to a ``bytes`` buffer and cuts every message off its front with
``self._data = self._data[msgEnd:]`` (``Client._onSocketHasData``), which copies the rest of the buffer
each time: a read of n bytes costs O(n^2 / message size). asyncio reads up to 256 KiB at once, and it
does when the loop is busy. Measured with the real client (bench/bench_socket_reads.py): 2.9 us per
price tick in 8 KiB reads, 6.6 us in 256 KiB reads, and 2.9 us again when those are sliced. So the
daemon fell off a cliff rather than slowing down: once it lagged, its reads grew, each message cost
more, and it lagged further (45,000 msgs/s kept up, 50,000 collapsed to 17,000 events/s on a 2-core
EPYC).

:func:`bound_socket_reads` hands ib_async the same bytes in the same order, in slices of at most
``READ_SLICE`` bytes. Each slice is parsed as a read of its own, so ``pendingTickersEvent`` comes once
per slice. As with exchange_time.py, nothing global is patched: the one ``IB`` instance's connection
gets the slicing function in place of the client's handler.
"""

from __future__ import annotations

from collections.abc import Callable

from ib_async import IB

from ingestion.logging import get_logger

log = get_logger("ibkr")

READ_SLICE = 8192


def bound_socket_reads(ib: IB, limit: int = READ_SLICE) -> bool:
    """Feed ``ib``'s parser at most ``limit`` bytes at a time; False if this ib_async has no such parser."""
    client = ib.client
    parse: Callable[[bytes | memoryview], None] | None = getattr(client, "_onSocketHasData", None)
    if parse is None:
        log.warning("ib_async has no Client._onSocketHasData; socket reads are parsed whole")
        return False

    def parse_in_slices(data: bytes) -> None:
        if len(data) <= limit:
            parse(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), limit):
            parse(view[start : start + limit])

    client.conn.hasData -= parse
    client.conn.hasData += parse_in_slices
    return True
