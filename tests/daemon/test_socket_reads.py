"""Big socket reads reach ib_async in slices: the same ticks, in the same order, at a linear cost.

These drive the real ib_async client (past its handshake, one ticker subscribed) with reads handed to
its connection as asyncio hands them, so what is checked is what ib_async itself makes of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from ib_async import IB, Stock, Ticker

from ib_wire import SERVER_VERSION, past_handshake
from ingestion.ibkr.reads import MAX_FRAME, READ_SLICE, bound_socket_reads
from ingestion.simulator.protocol import encode, error_frame

TICKER_REQ_ID = 1


def price_ticks(count: int) -> bytes:
    """``count`` bid ticks with distinct prices; frames of varying length, so some straddle a slice."""
    return b"".join(encode((1, 6, TICKER_REQ_ID, 1, f"{100 + i / 1000:g}", 100 + i, 0)) for i in range(count))


class Recorder:
    def __init__(self, ib: IB) -> None:
        self.prices: list[float] = []
        self.batches: list[int] = []
        ib.pendingTickersEvent += self.on_pending

    def on_pending(self, tickers: Iterable[Ticker]) -> None:
        ticks = [tick for ticker in tickers for tick in ticker.ticks if tick.tickType == 1]
        self.batches.append(len(ticks))
        self.prices.extend(tick.price for tick in ticks)


def ready_client(*, sliced: bool) -> tuple[IB, Recorder]:
    ib = past_handshake(IB())
    ib.wrapper.startTicker(TICKER_REQ_ID, Stock("SPY", "SMART", "USD", conId=756733), "mktData")
    if sliced:
        assert bound_socket_reads(ib)
    return ib, Recorder(ib)


def test_a_256_kib_read_gives_every_tick_in_order_as_a_whole_read_does() -> None:
    data = price_ticks(8000)
    assert len(data) > 200_000
    whole, whole_seen = ready_client(sliced=False)
    sliced, sliced_seen = ready_client(sliced=True)
    whole.client.conn.data_received(data)
    sliced.client.conn.data_received(data)
    assert len(whole_seen.prices) == 8000
    assert sliced_seen.prices == whole_seen.prices


def test_ib_async_parses_no_more_than_a_slice_at_a_time() -> None:
    """pendingTickersEvent comes once per slice, each with at most a slice's worth of whole frames."""
    data = price_ticks(8000)
    ib, seen = ready_client(sliced=True)
    ib.client.conn.data_received(data)
    smallest_frame = len(encode((1, 6, TICKER_REQ_ID, 1, "100", 100, 0)))
    assert len(seen.batches) >= len(data) // READ_SLICE
    assert max(seen.batches) <= READ_SLICE // smallest_frame + 1
    assert sum(seen.batches) == 8000


def test_a_small_read_is_parsed_as_it_came() -> None:
    ib, seen = ready_client(sliced=True)
    ib.client.conn.data_received(price_ticks(10))
    assert seen.batches == [10]


def test_messages_split_across_reads_of_any_size_arrive_whole_and_in_order() -> None:
    """TCP cuts the stream anywhere: a length prefix or a message may span two or more reads."""
    data = price_ticks(3000)
    whole, whole_seen = ready_client(sliced=False)
    whole.client.conn.data_received(data)
    ib, seen = ready_client(sliced=True)
    cuts = [0, 1, 3, 4, 5, 29, 30, 31, 100, 8191, 8192, 8193, 20_000, 20_003, 50_000, len(data)]
    for start, end in pairwise(cuts):
        ib.client.conn.data_received(data[start:end])
    assert seen.prices == whole_seen.prices
    assert (ib.client._numMsgRecv, ib.client._numBytesRecv) == (3000, len(data))
    assert ib.client._data == b""


def test_a_handler_that_disconnects_stops_the_read_as_ib_async_does() -> None:
    """After a disconnect in mid-read the rest of the read belongs to no connection: it is dropped,
    and what was read before it is still handed on."""
    results = []
    for sliced in (False, True):
        ib, seen = ready_client(sliced=sliced)
        original = ib.client.decoder.handlers[1]

        def fifth_disconnects(fields: list[str], ib: IB = ib, original=original) -> None:
            original(fields)
            if len(ib.wrapper.reqId2Ticker[TICKER_REQ_ID].ticks) == 5:
                ib.client.reset()

        ib.client.decoder.handlers[1] = fifth_disconnects
        ib.client.conn.data_received(price_ticks(50))
        results.append((seen.prices, ib.client._data))
    assert results[1] == results[0]
    assert len(results[1][0]) == 5


# --- before the API is ready, and messages no gateway sends ---------------------------------------------
class Wire:
    """Stands in for the socket under ib_async's Connection: keeps what the client writes."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def connecting_client() -> tuple[IB, Wire, list[str]]:
    """A client that has sent its version range and waits for the gateway's answer."""
    ib, wire, api_errors = IB(), Wire(), []
    ib.client.conn.transport = wire
    ib.client.connState = ib.client.CONNECTING
    ib.client.apiError += api_errors.append
    assert bound_socket_reads(ib)
    return ib, wire, api_errors


HANDSHAKE = encode((SERVER_VERSION, "20250102 09:30:00 EST"))
API_READY = encode((9, 1, 1)) + encode((15, 1, "DU123"))  # nextValidId, managedAccounts


async def test_a_long_message_before_the_api_is_ready_reaches_ib_async_whole_and_ticks_go_the_fast_way() -> (
    None
):
    """A 1 MiB message in 8 KiB reads during the handshake is one message to ib_async (which is handed
    whole frames, so its copying stays linear); the ticks that follow the ready messages in the same
    read are parsed by the daemon's reader, and every byte and message is counted once. (Async only
    because ib_async's answer to the handshake asks for the running loop's clock: in a plain test it
    would make an event loop that nothing closes.)"""
    ib, wire, _ = connecting_client()
    ib.wrapper.startTicker(TICKER_REQ_ID, Stock("SPY", "SMART", "USD", conId=756733), "mktData")
    seen, errors = Recorder(ib), []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append((code, len(text)))
    long_notice = error_frame(SERVER_VERSION, -1, 2104, "x" * (1 << 20))
    data = HANDSHAKE + long_notice + API_READY + price_ticks(100)
    for start in range(0, len(data), 8192):
        ib.client.conn.data_received(data[start : start + 8192])
    assert ib.client.isReady()
    assert wire.sent, "ib_async answered the handshake (startApi)"
    assert errors == [(2104, 1 << 20)]
    assert len(seen.prices) == 100
    assert (ib.client._numMsgRecv, ib.client._numBytesRecv) == (104, len(data))
    assert ib.client._data == b""


def too_long_header(length: int = MAX_FRAME + 1) -> bytes:
    return length.to_bytes(4, "big") + b"4\0" * 100


async def test_a_message_over_the_maximum_during_the_handshake_ends_the_connection_at_its_header() -> None:
    """No gateway sends more than 0xFFFFFF bytes in one message: the header alone ends the connection,
    with a reason that names both sizes, and nothing of it is kept. (Async as above.)"""
    ib, wire, api_errors = connecting_client()
    ib.client.conn.data_received(HANDSHAKE + too_long_header(32 << 20))
    assert ib.client.connState == ib.client.DISCONNECTED
    assert wire.closed
    (reason,) = [error for error in api_errors if "bytes" in error]
    assert "33,554,432 bytes" in reason
    assert "16,777,215" in reason
    assert ib.client._data == b""


def test_a_message_over_the_maximum_in_a_stream_ends_the_connection_after_the_ticks_before_it() -> None:
    """The ticks read before the bad header are handed on; then the connection ends, as above."""
    ib, seen = ready_client(sliced=True)
    wire, api_errors = Wire(), []
    ib.client.conn.transport = wire
    ib.client.apiError += api_errors.append
    ib.client.conn.data_received(price_ticks(10) + too_long_header())
    assert seen.prices == [100 + i / 1000 for i in range(10)]
    assert not ib.client.isConnected()
    assert wire.closed
    assert any("16,777,216 bytes" in error for error in api_errors)
    assert ib.client._data == b""


def test_a_message_of_exactly_the_maximum_is_waited_for() -> None:
    """The limit is the protocol's own: a header of 0xFFFFFF bytes is legal, and its bytes are awaited."""
    ib, _ = ready_client(sliced=True)
    ib.client.conn.data_received(too_long_header(MAX_FRAME))
    assert ib.client.isReady()
    assert len(ib.client._data) == 204
