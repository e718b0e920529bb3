"""Big socket reads reach ib_async in slices: the same ticks, in the same order, at a linear cost.

These drive the real ib_async client (past its handshake, one ticker subscribed) with reads handed to
its connection as asyncio hands them, so what is checked is what ib_async itself makes of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from ib_async import IB, Stock, Ticker

from ib_wire import past_handshake
from ingestion.ibkr.reads import READ_SLICE, bound_socket_reads
from ingestion.simulator.protocol import encode

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
