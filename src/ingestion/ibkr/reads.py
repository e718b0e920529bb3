"""Parse the gateway's socket reads in linear time, a bounded batch of messages at a time.

ib_async 2.1 appends each socket read to a ``bytes`` buffer and cuts every message off its front with
``self._data = self._data[msgEnd:]`` (``Client._onSocketHasData``), which copies the rest of the buffer
each time: a read of n bytes costs O(n^2 / message size). asyncio reads up to 256 KiB at once, and it
does when the loop is busy. Measured with the real client (bench/bench_socket_reads.py): 2.9 us per
price tick in 8 KiB reads, 6.6 us in 256 KiB reads. So the daemon fell off a cliff rather than slowing
down: once it lagged, its reads grew, each message cost more, and it lagged further (45,000 msgs/s
kept up, 50,000 collapsed to 17,000 events/s on a 2-core EPYC).

:func:`bound_socket_reads` gives the one ``IB`` instance's connection a reader of its own. Until the
API is ready (the handshake, and ib_async's watch for the first ids and accounts) it hands ib_async
the bytes in slices of at most ``limit``. From then on it walks the frames by offset, without
copying what follows each one, and hands each message's fields to ib_async's decoder exactly as
ib_async would (the same decoding of the bytes, the same counters, ``tcpDataArrived`` and
``tcpDataProcessed`` around each batch). A batch ends after ``limit`` bytes of whole messages, so
``updateEvent`` (and with it the normaliser's hand-over) still comes at least every ``limit`` bytes.
What ib_async does per message beyond that is one ``logger.isEnabledFor(DEBUG)`` test and a debug
line of every message, which we leave out.
"""

from __future__ import annotations

from collections.abc import Callable

from ib_async import IB

from ingestion.logging import get_logger

log = get_logger("ibkr")

READ_SLICE = 8192
# What the reader uses of ib_async's Client; without any of it, ib_async parses reads itself.
_CLIENT_PARTS = ("_onSocketHasData", "_data", "_apiReady", "_numBytesRecv", "_numMsgRecv", "decoder",
                 "_tcpDataArrived", "_tcpDataProcessed")  # fmt: skip


def bound_socket_reads(ib: IB, limit: int = READ_SLICE) -> bool:
    """Parse ``ib``'s reads linearly, ``limit`` bytes a batch; False if this ib_async has no such parser."""
    client = ib.client
    if not all(hasattr(client, part) for part in _CLIENT_PARTS):
        log.warning("ib_async's Client is not the one this reader knows; socket reads are parsed whole")
        return False
    parse: Callable[[bytes | memoryview], None] = client._onSocketHasData
    interpret = client.decoder.interpret

    def parse_in_slices(data: bytes) -> None:
        if len(data) <= limit:
            parse(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), limit):
            parse(view[start : start + limit])

    def parse_frames(data: bytes) -> None:
        if not client._apiReady:
            parse_in_slices(data)
            return
        buffer = client._data + data if client._data else data
        client._numBytesRecv += len(data)
        size, start, more = len(buffer), 0, True
        while more:
            if client._tcpDataArrived:
                client._tcpDataArrived()
            batch_end, count, more = start + limit, 0, False
            while size - start > 4:
                end = start + 4 + int.from_bytes(buffer[start : start + 4], "big")
                if end > size:
                    break  # the rest of this message comes with the next read
                fields = buffer[start + 4 : end].decode(errors="backslashreplace").split("\0")
                fields.pop()  # the empty string after the last NUL
                start = end
                count += 1
                interpret(fields)
                if not client._apiReady:
                    # A handler disconnected: ib_async's reset() emptied its buffer, and with it
                    # the rest of this read, which belongs to no connection now.
                    size = start = 0
                    buffer = b""
                    break
                if start >= batch_end:
                    more = size - start > 4
                    break
            client._numMsgRecv += count
            if client._tcpDataProcessed:
                client._tcpDataProcessed()
        client._data = buffer[start:]

    client.conn.hasData -= parse
    client.conn.hasData += parse_frames
    return True
