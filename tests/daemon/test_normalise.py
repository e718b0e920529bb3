"""The normaliser: IB's market data messages, as they come off the socket, become events.

One Quote per Level 1 message that changes the top of book, one DepthUpdate per depth message, one
Trade per trade message; no NaN or IB sentinel values; IB's exchange time kept; messages that are
not ours left to ib_async.
"""

from __future__ import annotations

import math

import pytest
from ib_async import IB

from ib_wire import L1, WiredClient, all_last, depth_l2, rtvolume, tick_price, tick_size
from ingestion.events import DepthUpdate, Quote, ReceiveClock, Trade
from ingestion.ibkr.normalise import clean_price, clean_size, tap_market_data

EXCHANGE_SECONDS = 1_795_532_399  # 2026-11-23 14:59:59 UTC


@pytest.mark.parametrize("value", [math.nan, -1.0, 0.0, 1.7976931348623157e308, None])
def test_sentinel_prices_become_none(value) -> None:
    """NaN, IB's -1 'empty' price, zero and UNSET_DOUBLE are not prices."""
    assert clean_price(value) is None


@pytest.mark.parametrize(("value", "clean"), [(0.0, 0.0), (100.0, 100.0), (-1.0, None), (math.nan, None)])
def test_sizes_keep_zero_but_drop_sentinels(value, clean) -> None:
    """A size of zero is real (volume before the open); negatives and NaN are not."""
    assert clean_size(value) == clean


def test_each_level1_tick_gives_one_quote_with_the_full_top_of_book() -> None:
    """Three Level 1 messages in one socket read give three quotes, each the book after its message."""
    wire = WiredClient()
    first, second, third = wire.read(
        tick_price(1, "600.01", 300), tick_price(2, "600.03", 200), tick_size(8, 12345)
    )
    assert all(isinstance(e, Quote) for e in (first, second, third))
    assert (first.bid, first.bid_size, first.ask) == (600.01, 300, None)
    assert (second.bid, second.ask, second.ask_size) == (600.01, 600.03, 200)
    assert third.volume == 12345
    assert first.timestamp_ns < second.timestamp_ns < third.timestamp_ns


def test_a_size_tick_repeating_its_price_ticks_size_gives_no_second_quote() -> None:
    """IB follows each bid/ask/last price with a size message of the same size: one quote, not two.
    A size that does change the book is a quote of its own."""
    wire = WiredClient()
    events = wire.read(
        tick_price(1, "600.01", 300), tick_size(0, 300),
        tick_price(4, "600.02", 100), tick_size(5, 100),
        tick_size(0, 400),
    )  # fmt: skip
    assert [(e.bid, e.bid_size, e.last, e.last_size) for e in events] == [
        (600.01, 300, None, None),
        (600.01, 300, 600.02, 100),
        (600.01, 400, 600.02, 100),
    ]


def test_an_emptied_side_is_none_not_minus_one() -> None:
    """IB empties a side with price -1 and size 0, or with a size of 0: None for both."""
    wire = WiredClient()
    (*_, emptied_by_price) = wire.read(tick_price(1, "600.00", 5), tick_price(1, "-1", 0))
    assert (emptied_by_price.bid, emptied_by_price.bid_size) == (None, None)
    (*_, emptied_by_size) = wire.read(tick_price(2, "600.05", 5), tick_size(3, 0))
    assert (emptied_by_size.ask, emptied_by_size.ask_size) == (None, None)


def test_depth_messages_map_side_operation_and_position() -> None:
    """side 1 is bid and 0 ask; operation 0/1/2 is insert/update/delete; deletes carry no price."""
    wire = WiredClient()
    events = wire.read(
        depth_l2(0, "ARCA", 0, 1, "600.00", 100),
        depth_l2(3, "NSDQ", 1, 0, "600.05", 50),
        depth_l2(9, "BATS", 2, 0, "601.00", 0),
        (12, 1, 2, 4, 1, 1, "599.99", 10),  # updateMktDepth: no market maker
    )
    assert [(e.side, e.operation, e.position, e.market_maker) for e in events] == [
        ("bid", "insert", 0, "ARCA"),
        ("ask", "update", 3, "NSDQ"),
        ("ask", "delete", 9, "BATS"),
        ("bid", "update", 4, None),
    ]
    assert all(isinstance(e, DepthUpdate) and e.is_smart_depth for e in events)
    assert (events[2].price, events[2].size) == (None, None)
    assert (events[3].price, events[3].size) == (599.99, 10)


def test_tick_by_tick_trades_keep_exchange_time_and_flags() -> None:
    """A tick-by-tick trade carries IB's time (not the time of the read), exchange, conditions and
    the two attribute flags (mask bit 1 past limit, bit 2 unreported)."""
    wire = WiredClient("tick_by_tick")
    (event,) = wire.read(all_last(EXCHANGE_SECONDS, "600.02", 100, mask=1, conditions="I"))
    assert isinstance(event, Trade)
    assert event.exchange_time_ns == EXCHANGE_SECONDS * 1_000_000_000
    assert (event.price, event.size, event.exchange, event.conditions) == (600.02, 100, "ARCA", "I")
    assert (event.past_limit, event.unreported, event.source) == (True, False, "tick_by_tick")


def test_rtvolume_trades_keep_the_trade_time_in_milliseconds() -> None:
    """RTVolume carries the trade's time in milliseconds since the epoch; the trade keeps it."""
    wire = WiredClient("rtvolume")
    (event,) = wire.read(rtvolume("600.02", 7, EXCHANGE_SECONDS * 1000 + 250))
    assert (event.source, event.price, event.size) == ("rtvolume", 600.02, 7)
    assert event.exchange_time_ns == EXCHANGE_SECONDS * 1_000_000_000 + 250_000_000


def test_rtvolume_trades_only_where_rtvolume_is_the_source() -> None:
    """RTVolume becomes trades for symbols without tick-by-tick, and is ignored where tick-by-tick
    already reports every trade (no double counting); a volume-only RTVolume is no trade."""
    assert WiredClient("tick_by_tick").read(rtvolume("600.02", 7, 1)) == []
    assert WiredClient("rtvolume").read((46, 6, L1, 48, ";;1795532399000;1000;600.0;true")) == []


def test_tick_by_tick_after_falling_back_to_rtvolume_is_not_counted_twice() -> None:
    """Once a symbol's trades come from RTVolume, late tick-by-tick messages give no trade."""
    wire = WiredClient("rtvolume")
    assert wire.read(all_last(EXCHANGE_SECONDS, "600.02", 100)) == []


def test_one_socket_read_is_one_batch() -> None:
    """The events of one read reach the pipeline as one list; a read with none hands nothing on."""
    wire = WiredClient()
    wire.read(tick_price(1, "600.01", 300), depth_l2(0, "ARCA", 0, 1, "600.00", 100))
    wire.read((58, 1, L1, 1))  # marketDataType: not market data
    assert (len(wire.events), wire.batches) == (2, 1)


def test_events_count_on_their_subscription() -> None:
    """Each event updates its subscription's count and last tick time (what /subscriptions shows)."""
    wire = WiredClient()
    (event,) = wire.read(tick_price(1, "600.00", 1))
    l1 = wire.registry.streams["SPY"].l1
    assert (l1.count, l1.last_tick_ns, l1.state) == (1, event.timestamp_ns, "active")


def test_events_received_metric_counts_every_event() -> None:
    """ingestion_events_received counts each emitted event by symbol and type (added per read)."""
    wire = WiredClient("rtvolume")
    wire.read(tick_price(1, "600.00", 1), tick_price(2, "600.02", 1), rtvolume("600.01", 5, 1))
    wire.read(depth_l2(0, "ARCA", 0, 1, "600.00", 100), tick_price(4, "600.01", 5))
    sample = wire.metrics.registry.get_sample_value
    assert sample("ingestion_events_received_total", {"symbol": "SPY", "type": "quote"}) == 3
    assert sample("ingestion_events_received_total", {"symbol": "SPY", "type": "trade"}) == 1
    assert sample("ingestion_events_received_total", {"symbol": "SPY", "type": "depth"}) == 1


def test_messages_for_other_requests_and_ticks_we_do_not_use_go_to_ib_async() -> None:
    """An unknown request id and a generic tick (49, halted) are ib_async's to handle: no event."""
    wire = WiredClient()
    ticker = wire.ib.wrapper.startTicker(77, None, "mktData")
    events = wire.read(tick_price(1, "10.00", 5, request_id=77), (45, 6, L1, 49, "0"))
    assert events == []
    assert ticker.bid == 10.0


def test_a_malformed_message_is_logged_by_ib_async_and_the_rest_of_the_read_kept(caplog) -> None:
    """A trade with a missing field cannot be decoded: it is logged with its fields, and the
    messages around it in the same read still become events."""
    wire = WiredClient()
    events = wire.read(
        tick_price(1, "600.00", 1), (99, 3, 2, EXCHANGE_SECONDS, "600.0"), tick_price(2, "600.02", 1)
    )
    assert [type(e) for e in events] == [Quote, Quote]
    assert "Error handling fields" in caplog.text


def test_a_new_connection_starts_from_an_empty_book() -> None:
    """After reset (a reconnect), the status page shows no quote until IB sends the book again."""
    wire = WiredClient()
    wire.read(tick_price(1, "600.00", 1))
    assert wire.normaliser.top_of_book("SPY")["bid"] == 600.0
    wire.normaliser.reset()
    assert wire.normaliser.top_of_book("SPY") is None
    (event,) = wire.read(tick_price(2, "600.02", 3))
    assert (event.bid, event.ask) == (None, 600.02)


def test_requests_recorded_after_the_first_message_are_routed() -> None:
    """A resubscription's new request ids are ours from their first message."""
    wire = WiredClient()
    wire.registry.record_request(41, "SPY", "l1")
    (event,) = wire.read(tick_price(1, "600.00", 1, request_id=41))
    assert event.bid == 600.0


def test_receive_clock_gives_unique_whole_microseconds() -> None:
    """QuestDB stores microseconds: readings in the same nanosecond, or after the wall clock
    stepped back, still differ by at least a microsecond and never go backwards."""
    readings = iter([5_000_123, 5_000_123, 5_000_999, 4_000_000, 9_000_000])
    clock = ReceiveClock(source=lambda: next(readings))
    assert [clock.now_ns() for _ in range(5)] == [5_000_000, 5_001_000, 5_002_000, 5_003_000, 9_000_000]


def test_an_ib_async_without_the_decoder_table_is_refused_with_a_reason() -> None:
    """The handlers go into ib_async's decoder table; an ib_async without one must not start silently
    with no market data at all."""
    wire = WiredClient()
    ib = IB()
    del ib.client.decoder.handlers
    with pytest.raises(RuntimeError, match=r"Decoder\.handlers"):
        tap_market_data(ib, wire.normaliser)


def test_delayed_tick_types_fill_the_same_fields_and_mark_the_quote_delayed() -> None:
    """66-76 are the delayed bid, ask, last, their sizes, high, low, volume, close and open."""
    wire = WiredClient(source="rtvolume")
    events = wire.read(
        tick_price(66, "600.01", 300), tick_price(67, "600.03", 200), tick_price(68, "600.02", 100),
        tick_size(74, 5000), tick_price(72, "601.00", 0), tick_price(73, "599.00", 0),
        tick_price(75, "598.00", 0), tick_price(76, "598.50", 0), tick_size(69, 400),
        tick_size(70, 500), tick_size(71, 50),
    )  # fmt: skip
    last = events[-1]
    assert (last.bid, last.ask, last.last) == (600.01, 600.03, 600.02)
    assert (last.bid_size, last.ask_size, last.last_size, last.volume) == (400, 500, 50, 5000)
    assert (last.high, last.low, last.close, last.open) == (601.0, 599.0, 598.0, 598.5)
    assert all(isinstance(e, Quote) and e.delayed for e in events)
    assert wire.registry.delayed_request(L1)
    assert wire.registry.streams["SPY"].l1.state == "delayed"
    (trade,) = wire.read(rtvolume("600.02", 100, 1_795_532_399_000))
    assert trade.delayed, "a delayed request's RTVolume trades are delayed too"


def test_market_data_type_message_tells_live_from_delayed_before_any_tick() -> None:
    """IB's marketDataType (58) for a request, live tick types and all: 1 live, 3 delayed."""
    wire = WiredClient()
    (live,) = wire.read((58, 1, L1, 1), tick_price(1, "600.01", 300))
    assert not live.delayed
    assert wire.registry.streams["SPY"].l1.state == "active"
    (delayed,) = wire.read((58, 1, L1, 3), tick_price(2, "600.03", 200))
    assert delayed.delayed
    assert wire.registry.streams["SPY"].l1.state == "delayed"
    (live_again,) = wire.read((58, 1, L1, 1), tick_price(1, "600.02", 300))
    assert not live_again.delayed
    assert wire.registry.streams["SPY"].l1.state == "active"
    (depth,) = wire.read(depth_l2(0, "ARCA", 0, 1, "600.00", 100))
    assert isinstance(depth, DepthUpdate)
    assert wire.registry.streams["SPY"].l2.state == "active", "depth has no delayed form"
