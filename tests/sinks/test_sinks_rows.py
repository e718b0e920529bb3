"""Events as rows: exactly which symbols and columns each event becomes, and how a row is encoded as ILP."""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sinks_helpers import BASE_NS, depth, full_quote, ingestion_event, observation, quote, trade

from ib_wire import WiredClient, all_last, depth_l2, tick_price, tick_size
from ingestion.events import DepthUpdate, Event, Quote, Trade
from ingestion.sinks.rows import Row, add_row, as_row, from_wire, holdable, row_for, to_wire
from ingestion.sinks.schema import TABLES_BY_NAME

with warnings.catch_warnings():
    # questdb 6 deprecates the module name, not the Buffer that Sender.new_buffer() hands out.
    warnings.simplefilter("ignore", DeprecationWarning)
    from questdb.ingress import Buffer

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def ilp(*rows: Row | list[object]) -> str:
    """The ILP text (protocol version 1, floats in decimal) the client makes of the rows."""
    buffer = Buffer(protocol_version=1)
    for row in rows:
        add_row(buffer, row)
    return bytes(buffer).decode()


one_event_of_each_kind = pytest.mark.parametrize(
    "event",
    [
        full_quote("SPY", BASE_NS),
        depth("SPY", BASE_NS),
        trade("SPY", BASE_NS, exchange_time_ns=BASE_NS),
        observation("DGS10", BASE_NS, 4.25),
        ingestion_event(BASE_NS, code=1),
    ],
    ids=lambda e: type(e).__name__,
)


class TestEachEventType:
    def test_a_full_quote_has_every_level1_column(self) -> None:
        assert row_for(full_quote("SPY", BASE_NS)) == (
            "market_data_l1",
            BASE_NS,
            {"symbol": "SPY"},
            {
                "bid": 99.99, "ask": 100.01, "last": 100.0, "bid_size": 300.0, "ask_size": 200.0,
                "last_size": 50.0, "volume": 1_000_000.0, "high": 101.0, "low": 99.0, "close": 99.5,
                "open": 99.75,
            },
        )  # fmt: skip

    def test_a_quote_leaves_out_every_absent_value(self) -> None:
        """None means "not known": no column at all, so QuestDB stores NULL, never a sentinel."""
        assert row_for(quote("QQQ", BASE_NS, bid=400.5, volume=0.0)) == (
            "market_data_l1",
            BASE_NS,
            {"symbol": "QQQ"},
            {"bid": 400.5, "volume": 0.0},  # a zero is a value, not an absence
        )

    def test_a_quote_with_nothing_known_has_no_columns(self) -> None:
        assert row_for(quote("QQQ", BASE_NS)) == ("market_data_l1", BASE_NS, {"symbol": "QQQ"}, {})

    def test_a_depth_update_has_its_side_operation_and_market_maker_as_symbols(self) -> None:
        event = depth("IWM", BASE_NS, position=3, operation="update", side="ask", price=220.1, size=7.0)
        assert row_for(event) == (
            "market_data_l2",
            BASE_NS,
            {"symbol": "IWM", "side": "ask", "operation": "update", "market_maker": "NSDQ"},
            {"position": 3, "price": 220.1, "size": 7.0, "is_smart_depth": True},
        )

    def test_a_depth_delete_has_no_price_size_or_market_maker(self) -> None:
        event = depth("IWM", BASE_NS, operation="delete", price=None, size=None, mm=None)
        assert row_for(event) == (
            "market_data_l2",
            BASE_NS,
            {"symbol": "IWM", "side": "bid", "operation": "delete"},
            {"position": 0, "is_smart_depth": True},
        )

    def test_a_tick_by_tick_trade_keeps_exchange_time_conditions_and_flags(self) -> None:
        assert row_for(trade("DIA", BASE_NS, price=430.25, exchange_time_ns=BASE_NS - 5000)) == (
            "time_and_sales",
            BASE_NS,
            {"symbol": "DIA", "exchange": "ARCA", "source": "tick_by_tick"},
            {
                "exchange_time": BASE_NS - 5000, "price": 430.25, "size": 10.0, "conditions": "@ T",
                "past_limit": False, "unreported": True,
            },
        )  # fmt: skip

    def test_an_rtvolume_trade_has_no_exchange_conditions_or_size_when_ib_gave_none(self) -> None:
        event = Trade("SPY", BASE_NS, None, 600.5, None, None, None, False, False, "rtvolume")
        assert row_for(event) == (
            "time_and_sales",
            BASE_NS,
            {"symbol": "SPY", "source": "rtvolume"},
            {"price": 600.5, "past_limit": False, "unreported": False},
        )

    def test_an_economic_observation_value_is_a_float_even_when_given_as_an_int(self) -> None:
        row = row_for(observation("UNRATE", BASE_NS, 4))  # type: ignore[arg-type]
        assert row == ("economic_data", BASE_NS, {"series_id": "UNRATE"}, {"value": 4.0})
        assert type(row[3]["value"]) is float

    def test_an_ingestion_event_has_its_code_only_when_there_is_one(self) -> None:
        detail = "Connected to IBKR at 127.0.0.1:4002"
        assert row_for(ingestion_event(BASE_NS, "ib_connectivity_lost", 1100)) == (
            "ingestion_events", BASE_NS, {"event": "ib_connectivity_lost"}, {"code": 1100, "detail": detail}
        )  # fmt: skip
        assert row_for(ingestion_event(BASE_NS))[3] == {"detail": detail}

    def test_anything_else_is_refused(self) -> None:
        with pytest.raises(TypeError, match="not an event: dict"):
            row_for({"symbol": "SPY"})  # type: ignore[arg-type]

    @one_event_of_each_kind
    def test_the_wire_form_gives_the_same_row_after_a_pickle(self, event: Event) -> None:
        """What the ILP writer process builds from an event's wire form is the row built here."""
        assert from_wire(pickle.loads(pickle.dumps(to_wire([event])))) == [row_for(event)]

    @one_event_of_each_kind
    def test_symbols_and_columns_come_in_the_tables_column_order(self, event: Event) -> None:
        """The order of a row's dicts is the order of its ILP line: the same event, the same bytes."""
        table, _, symbols, columns = row_for(event)
        order = [c.name for c in TABLES_BY_NAME[table].columns]
        assert list(symbols) == [name for name in order if name in symbols]
        assert list(columns) == [name for name in order if name in columns]


class TestSizesAreDoubles:
    """Prices and sizes reach QuestDB as ILP floats whatever type they started as.

    IB writes whole sizes and prices without a decimal point, and other code may build events from ints or
    Decimals; an int would go out as an ILP integer ("5i"), which QuestDB refuses for a DOUBLE column, and
    the client refuses a Decimal outright under ILP protocol versions 1 and 2. The normaliser makes them
    floats, and row_for converts again for events from anywhere else.
    """

    def test_row_for_makes_floats_of_int_and_decimal_quote_values(self) -> None:
        event = quote("SPY", BASE_NS, bid=600, bid_size=Decimal(300), volume=12345)  # type: ignore[arg-type]
        columns = row_for(event)[3]
        assert columns == {"bid": 600.0, "bid_size": 300.0, "volume": 12345.0}
        assert all(type(value) is float for value in columns.values())
        assert " bid=600.0,bid_size=300.0,volume=12345.0 " in ilp(row_for(event))

    def test_row_for_makes_floats_of_int_and_decimal_depth_and_trade_values(self) -> None:
        book = depth("SPY", BASE_NS, price=599, size=Decimal(7))  # type: ignore[arg-type]
        sale = Trade("SPY", BASE_NS, None, 601, Decimal(5), None, None, False, False, "rtvolume")  # type: ignore[arg-type]
        for row, expected in ((row_for(book), (599.0, 7.0)), (row_for(sale), (601.0, 5.0))):
            values = (row[3]["price"], row[3]["size"])
            assert values == expected
            assert [type(v) for v in values] == [float, float]

    def test_row_for_makes_bools_of_trade_flags(self) -> None:
        """BOOLEAN columns get ILP t/f: a 0 or 1 would be the integer 0i/1i."""
        sale = Trade("SPY", BASE_NS, None, 601.0, None, None, None, 0, 1, "rtvolume")  # type: ignore[arg-type]
        assert row_for(sale)[3] == {"price": 601.0, "past_limit": False, "unreported": True}
        assert " price=601.0,past_limit=f,unreported=t " in ilp(row_for(sale))

    def test_whole_sizes_of_quotes_on_the_wire_reach_the_line_as_floats(self) -> None:
        [_, event] = WiredClient().read(tick_price(1, 600, 300), tick_size(8, 12345))
        assert isinstance(event, Quote)
        columns = row_for(event)[3]
        assert columns == {"bid": 600.0, "bid_size": 300.0, "volume": 12345.0}
        assert all(type(value) is float for value in columns.values())
        assert " bid=600.0,bid_size=300.0,volume=12345.0 " in ilp(row_for(event))

    def test_whole_sizes_of_depth_and_trades_on_the_wire_reach_the_line_as_floats(self) -> None:
        events = WiredClient().read(depth_l2(2, "", 0, 1, 599, 7), all_last(1_795_532_400, 601, 5))
        assert [type(e) for e in events] == [DepthUpdate, Trade]
        depth_row, trade_row = (row_for(e) for e in events)
        assert (depth_row[3]["price"], depth_row[3]["size"]) == (599.0, 7.0)
        assert (trade_row[3]["price"], trade_row[3]["size"]) == (601.0, 5.0)
        assert all(type(row[3][k]) is float for row in (depth_row, trade_row) for k in ("price", "size"))
        text = ilp(depth_row, trade_row)
        assert "price=599.0,size=7.0," in text
        assert "price=601.0,size=5.0," in text


class TestEncoding:
    def test_exchange_time_travels_as_a_microsecond_timestamp_and_the_row_is_not_changed(self) -> None:
        row = row_for(trade("DIA", BASE_NS, exchange_time_ns=BASE_NS - 5_000_000))
        kept = repr(row)
        line = ilp(row)
        assert f"exchange_time={(BASE_NS - 5_000_000) // 1000}t," in line
        assert line.endswith(f" {BASE_NS}\n")  # the designated timestamp, in nanoseconds
        assert repr(row) == kept  # the same row may still be spooled or re-sent

    def test_a_trade_without_exchange_time_is_encoded_without_it(self) -> None:
        assert "exchange_time" not in ilp(row_for(trade("DIA", BASE_NS)))

    def test_a_row_read_back_from_json_encodes_to_the_same_bytes(self) -> None:
        """Spooled rows come back as lists of JSON values; QuestDB must see the very same line."""
        rows = [
            row_for(e)
            for e in (full_quote("SPY", BASE_NS), depth("SPY", BASE_NS), trade("SPY", BASE_NS, 1.5, BASE_NS))
        ]
        assert ilp(*json.loads(json.dumps(rows))) == ilp(*rows)


class TestWhatTheWriterHolds:
    def test_rows_cross_the_wire_unchanged_beside_events(self) -> None:
        spooled = ["market_data_l1", BASE_NS, {"symbol": "SPY"}, {"bid": 1.0}]  # as JSON gives it back
        built = row_for(depth("SPY", BASE_NS + 1000))
        items = [full_quote("SPY", BASE_NS + 2000), spooled, built]
        assert from_wire(to_wire(items)) == [row_for(items[0]), spooled, built]
        assert [as_row(item) for item in items] == from_wire(to_wire(items))

    def test_a_subclass_of_an_event_is_held_as_its_row_and_a_non_event_is_refused(self) -> None:
        class SpecialQuote(Quote):
            __slots__ = ()

        special = SpecialQuote(*dataclasses.astuple(full_quote("SPY", BASE_NS)))
        assert holdable([special]) == [row_for(special)]
        plain = [full_quote("SPY", BASE_NS)]
        assert holdable(plain) is plain
        with pytest.raises(TypeError, match="not an event: dict"):
            holdable([{"symbol": "SPY"}])
