"""Parse the gateway's socket reads in linear time, a bounded batch of messages at a time.

ib_async 2.1 appends each socket read to a ``bytes`` buffer and cuts every message off its front with
``self._data = self._data[msgEnd:]`` (``Client._onSocketHasData``), which copies the rest of the buffer
each time: a read of n bytes costs O(n^2 / message size). asyncio reads up to 256 KiB at once, and it
does when the loop is busy. Measured with the real client (bench/bench_socket_reads.py): 2.9 us per
price tick in 8 KiB reads, 6.6 us in 256 KiB reads. So the daemon fell off a cliff rather than slowing
down: once it lagged, its reads grew, each message cost more, and it lagged further (45,000 msgs/s
kept up, 50,000 collapsed to 17,000 events/s on a 2-core EPYC).

:func:`bound_socket_reads` gives the one ``IB`` instance's connection a reader of its own. Until the API
is ready (the handshake, and ib_async's watch for the first ids and accounts) it hands ib_async's own
parser one whole frame at a time, so its copying costs no more than the frame. From then on it walks the
frames by offset, without copying what follows each one, and hands each message's fields to ib_async's
decoder exactly as ib_async would (the same decoding of the bytes, the same counters, ``tcpDataArrived``
and ``tcpDataProcessed`` around each batch). A batch ends after ``limit`` bytes of whole messages, so
``updateEvent`` (and with it the normaliser's hand-over) still comes at least every ``limit`` bytes. What
ib_async does per message beyond that is one ``logger.isEnabledFor(DEBUG)`` test and a debug line of every
message, which we leave out.

In both phases a frame whose length prefix is over the TWS API's maximum (0xFFFFFF bytes, as IB's own
client) ends the connection at once, with the reason, the way ib_async ends one that refuses our version:
no gateway sends one, and waiting for its bytes would hold up to 4 GiB. (When the reader still handed
ib_async 8 KiB slices before the API was ready, a 32 MiB one kept the loop busy for seconds: each slice
copied all that had come so far.)
"""

from __future__ import annotations

from collections.abc import Callable

from ib_async import IB

from ingestion.logging import get_logger

log = get_logger("ibkr")

READ_SLICE = 8192
# The longest message the TWS API has: ibapi's MAX_MSG_LEN (ibapi/const.py).
MAX_FRAME = 0xFFFFFF
# In the reason a too long message gives (ib_async's apiError), for the supervisor to recognise.
TOO_LONG = "over the TWS API's maximum"
# What the reader uses of ib_async's Client; without any of it, ib_async parses reads itself.
_CLIENT_PARTS = ("_onSocketHasData", "_onSocketDisconnected", "_data", "_apiReady", "_numBytesRecv",
                 "_numMsgRecv", "decoder", "_tcpDataArrived", "_tcpDataProcessed", "connState")  # fmt: skip


def bound_socket_reads(ib: IB, limit: int = READ_SLICE) -> bool:
    """Parse ``ib``'s reads linearly, ``limit`` bytes a batch; False if this ib_async has no such parser."""
    client = ib.client
    if not all(hasattr(client, part) for part in _CLIENT_PARTS):
        log.warning("ib_async's Client is not the one this reader knows; socket reads are parsed whole")
        return False
    parse: Callable[[bytes], None] = client._onSocketHasData
    interpret = client.decoder.interpret

    def too_long(length: int) -> None:
        reason = (
            f"the gateway sent a message of {length:,} bytes, {TOO_LONG} of {MAX_FRAME:,}: "
            "a corrupted stream, or not IB Gateway/TWS"
        )
        log.error("IBKR message too long; closing the connection", length=length, maximum=MAX_FRAME)
        client._onSocketDisconnected(reason)  # as ib_async ends a connection that refuses our version
        client.conn.disconnect()

    def parse_until_ready(data: bytes) -> None:
        """ib_async's own parser, one whole frame at a time; the rest the fast way once it is ready."""
        if client._tcpDataArrived:
            client._tcpDataArrived()  # the time of the last read: whether the port answered at all
        buffer = client._data + data if client._data else data
        client._data = b""
        size, start = len(buffer), 0
        while size - start >= 4:
            length = int.from_bytes(buffer[start : start + 4], "big")
            if length > MAX_FRAME:
                too_long(length)
                return
            end = start + 4 + length
            if end > size:
                break  # the rest of this message comes with the next read
            parse(buffer[start:end])
            start = end
            if client.connState == client.DISCONNECTED:
                return  # ib_async refused the gateway (its version): the rest belongs to no connection
            if client._apiReady:
                parse_frames(buffer[start:])
                return
        client._data = buffer[start:]

    def parse_frames(data: bytes) -> None:
        if not client._apiReady:
            parse_until_ready(data)
            return
        buffer = client._data + data if client._data else data
        client._numBytesRecv += len(data)
        size, start, more = len(buffer), 0, True
        while more:
            if client._tcpDataArrived:
                client._tcpDataArrived()
            batch_end, count, more = start + limit, 0, False
            while size - start > 4:
                length = int.from_bytes(buffer[start : start + 4], "big")
                if length > MAX_FRAME:
                    client._numMsgRecv += count
                    if client._tcpDataProcessed:
                        client._tcpDataProcessed()  # the messages before it are genuine: handed on
                    too_long(length)
                    return
                end = start + 4 + length
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
