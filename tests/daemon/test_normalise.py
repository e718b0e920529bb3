"""The normaliser: one event per IB message, no NaN or IB sentinel values, exchange times kept."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from ib_async import Stock, TickAttribLast, TickByTickAllLast, TickData, Ticker
from ib_async.objects import MktDepthData

from ingestion.bus import EventBus
from ingestion.config import Settings, SymbolConfig
from ingestion.events import DepthUpdate, Quote, ReceiveClock, Trade
from ingestion.ibkr.normalise import Normaliser, TopOfBook, clean_price, clean_size
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.metrics import Metrics

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def make_normaliser(
    source: str = "tick_by_tick",
) -> tuple[Normaliser, list, SubscriptionRegistry]:
    settings = Settings(universe=(SymbolConfig(symbol="SPY"),))
    registry = SubscriptionRegistry(settings, EventBus(), Metrics())
    registry.streams["SPY"].time_and_sales.source = source  # as the plan would set it
    events: list = []
    return Normaliser(registry, events.extend, ReceiveClock(), Metrics()), events, registry


def ticker(**lists) -> Ticker:
    t = Ticker(contract=Stock("SPY", "SMART", "USD"))
    t.ticks = lists.get("ticks", [])
    t.domTicks = lists.get("dom", [])
    t.tickByTicks = lists.get("tbt", [])
    return t


@pytest.mark.parametrize("value", [math.nan, -1.0, 0.0, 1.7976931348623157e308, None])
def test_sentinel_prices_become_none(value) -> None:
    """NaN, IB's -1 'empty' price, zero and UNSET_DOUBLE are not prices."""
    assert clean_price(value) is None


@pytest.mark.parametrize(("value", "clean"), [(0.0, 0.0), (100.0, 100.0), (-1.0, None), (math.nan, None)])
def test_sizes_keep_zero_but_drop_sentinels(value, clean) -> None:
    """A size of zero is real (volume before the open); negatives and NaN are not."""
    assert clean_size(value) == clean


def test_each_level1_tick_gives_one_quote_with_the_full_top_of_book() -> None:
    """Three L1 ticks in one socket read give three quotes, each showing the book after its tick."""
    normaliser, events, _ = make_normaliser()
    normaliser.on_pending_tickers(
        [
            ticker(
                ticks=[TickData(T0, 1, 600.01, 300), TickData(T0, 2, 600.03, 200), TickData(T0, 8, -1, 12345)]
            )
        ]
    )
    assert [type(e) for e in events] == [Quote, Quote, Quote]
    first, second, third = events
    assert (first.bid, first.bid_size, first.ask) == (600.01, 300, None)
    assert (second.bid, second.ask, second.ask_size) == (600.01, 600.03, 200)
    assert third.volume == 12345
    assert first.timestamp_ns < second.timestamp_ns < third.timestamp_ns


def test_an_emptied_side_is_none_not_minus_one() -> None:
    """IB empties a side with price -1 and size 0; the quote shows None for both."""
    normaliser, events, _ = make_normaliser()
    normaliser.on_pending_tickers([ticker(ticks=[TickData(T0, 1, 600.0, 5), TickData(T0, 1, -1, 0)])])
    assert (events[-1].bid, events[-1].bid_size) == (None, None)


def test_depth_messages_map_side_operation_and_position() -> None:
    """side 1 is bid and 0 ask; operation 0/1/2 is insert/update/delete; deletes carry no price."""
    normaliser, events, _ = make_normaliser()
    normaliser.on_pending_tickers(
        [
            ticker(
                dom=[
                    MktDepthData(T0, 0, "ARCA", 0, 1, 600.0, 100),
                    MktDepthData(T0, 3, "NSDQ", 1, 0, 600.05, 50),
                    MktDepthData(T0, 9, "BATS", 2, 0, 601.0, 0),
                ]
            )
        ]
    )
    assert [(e.side, e.operation, e.position, e.market_maker) for e in events] == [
        ("bid", "insert", 0, "ARCA"),
        ("ask", "update", 3, "NSDQ"),
        ("ask", "delete", 9, "BATS"),
    ]
    assert all(isinstance(e, DepthUpdate) and e.is_smart_depth for e in events)
    assert (events[2].price, events[2].size) == (None, None)


def test_tick_by_tick_trades_keep_exchange_time_and_flags() -> None:
    """A tick-by-tick trade carries IB's time, exchange, conditions and the two attribute flags."""
    normaliser, events, _ = make_normaliser("tick_by_tick")
    exchange_time = datetime(2026, 11, 23, 14, 59, 59, tzinfo=UTC)
    trade = TickByTickAllLast(2, exchange_time, 600.02, 100, TickAttribLast(True, False), "ARCA", "I")
    normaliser.on_pending_tickers([ticker(tbt=[trade])])
    (event,) = events
    assert isinstance(event, Trade)
    assert event.exchange_time_ns == int(exchange_time.timestamp()) * 1_000_000_000
    assert (event.exchange, event.conditions, event.past_limit, event.unreported) == (
        "ARCA",
        "I",
        True,
        False,
    )
    assert event.source == "tick_by_tick"


def test_rtvolume_trades_only_where_rtvolume_is_the_source() -> None:
    """RTVolume becomes trades for symbols without tick-by-tick, and is ignored where tick-by-tick
    already reports every trade (no double counting)."""
    rtvolume = TickData(T0, 48, 600.02, 7)
    normaliser, events, _ = make_normaliser("rtvolume")
    normaliser.on_pending_tickers([ticker(ticks=[rtvolume])])
    assert [(type(e), e.source, e.size) for e in events] == [(Trade, "rtvolume", 7)]
    normaliser, events, _ = make_normaliser("tick_by_tick")
    normaliser.on_pending_tickers([ticker(ticks=[rtvolume])])
    assert events == []


def test_events_count_on_their_subscription() -> None:
    """Each event updates its subscription's count and last tick time (what /subscriptions shows)."""
    normaliser, events, registry = make_normaliser()
    normaliser.on_pending_tickers([ticker(ticks=[TickData(T0, 1, 600.0, 1)])])
    l1 = registry.streams["SPY"].l1
    assert (l1.count, l1.last_tick_ns, l1.state) == (1, events[0].timestamp_ns, "active")


def test_top_of_book_ignores_non_level1_ticks() -> None:
    """Generic ticks (e.g. 49, halted) are not Level 1 fields and produce no quote."""
    assert TopOfBook().apply(49, 1.0, 0) is False


def test_receive_clock_gives_unique_whole_microseconds() -> None:
    """QuestDB stores microseconds: readings in the same nanosecond, or after the wall clock
    stepped back, still differ by at least a microsecond and never go backwards."""
    readings = iter([5_000_123, 5_000_123, 5_000_999, 4_000_000, 9_000_000])
    clock = ReceiveClock(source=lambda: next(readings))
    assert [clock.now_ns() for _ in range(5)] == [5_000_000, 5_001_000, 5_002_000, 5_003_000, 9_000_000]


def test_events_received_metric_counts_every_event() -> None:
    """ingestion_events_received counts each emitted event by symbol and type (batched per read)."""
    settings = Settings(universe=(SymbolConfig(symbol="SPY"),))
    metrics = Metrics()
    registry = SubscriptionRegistry(settings, EventBus(), metrics)
    registry.streams["SPY"].time_and_sales.source = "rtvolume"
    normaliser = Normaliser(registry, [].extend, ReceiveClock(), metrics)
    ticks = [TickData(T0, 1, 600.0, 1), TickData(T0, 2, 600.02, 1), TickData(T0, 48, 600.01, 5)]
    normaliser.on_pending_tickers([ticker(ticks=ticks, dom=[MktDepthData(T0, 0, "ARCA", 0, 1, 600.0, 100)])])
    normaliser.on_pending_tickers([ticker(ticks=[TickData(T0, 4, 600.01, 5)])])
    sample = metrics.registry.get_sample_value
    assert sample("ingestion_events_received_total", {"symbol": "SPY", "type": "quote"}) == 3
    assert sample("ingestion_events_received_total", {"symbol": "SPY", "type": "trade"}) == 1
    assert sample("ingestion_events_received_total", {"symbol": "SPY", "type": "depth"}) == 1
