"""What the official client sends for each event, as QuestDB (the double) parses and stores it."""

from __future__ import annotations

import httpx
from sinks_helpers import (
    BASE_NS,
    ConfigFactory,
    depth,
    eventually,
    full_quote,
    ingestion_event,
    observation,
    quote,
    running_writer,
    trade,
)

from ingestion.events import ReceiveClock
from ingestion.metrics import Metrics
from questdb_double import QuestDBDouble, parse_ilp

US = 1000  # nanoseconds per microsecond


class TestEveryColumnArrives:
    async def test_quote_row_carries_the_full_top_of_book(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A Quote becomes one market_data_l1 row with every field, symbol as SYMBOL, µs timestamp."""
        async with running_writer(make_config()) as writer:
            writer.accept(full_quote("SPY", BASE_NS + 123_456_789))
            await eventually(lambda: qdb.row_count("market_data_l1") == 1)
        assert qdb.rows("market_data_l1") == [
            {
                "timestamp": (BASE_NS + 123_456_789) // US,
                "symbol": "SPY",
                "bid": 99.99, "ask": 100.01, "last": 100.0, "bid_size": 300.0, "ask_size": 200.0,
                "last_size": 50.0, "volume": 1_000_000.0, "high": 101.0, "low": 99.0, "close": 99.5,
                "open": 99.75,
            }
        ]  # fmt: skip

    async def test_absent_values_are_left_out_of_the_line(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """None values are not sent at all, so QuestDB stores NULL rather than a sentinel."""
        async with running_writer(make_config()) as writer:
            writer.accept(quote("QQQ", BASE_NS, bid=400.5))
            await eventually(lambda: qdb.row_count("market_data_l1") == 1)
        assert qdb.rows("market_data_l1") == [{"timestamp": BASE_NS // US, "symbol": "QQQ", "bid": 400.5}]

    async def test_depth_row_has_symbols_int_position_and_boolean(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A DepthUpdate is one market_data_l2 row: side/operation/market_maker symbols, INT position."""
        async with running_writer(make_config()) as writer:
            writer.accept(depth("IWM", BASE_NS, position=3, operation="update", side="ask", price=220.1))
            await eventually(lambda: qdb.row_count("market_data_l2") == 1)
        assert qdb.rows("market_data_l2") == [
            {
                "timestamp": BASE_NS // US, "symbol": "IWM", "side": "ask", "operation": "update",
                "market_maker": "NSDQ", "position": 3, "price": 220.1, "size": 100.0, "is_smart_depth": True,
            }
        ]  # fmt: skip

    async def test_trade_row_sends_exchange_time_as_a_timestamp(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A Trade's exchange_time travels as an ILP timestamp (t suffix), booleans as t/f, text quoted."""
        exchange_ns = BASE_NS - 5_000_000
        async with running_writer(make_config()) as writer:
            writer.accept(trade("DIA", BASE_NS, price=430.25, exchange_time_ns=exchange_ns))
            await eventually(lambda: qdb.row_count("time_and_sales") == 1)
        assert qdb.rows("time_and_sales") == [
            {
                "timestamp": BASE_NS // US, "symbol": "DIA", "exchange": "ARCA", "source": "tick_by_tick",
                "exchange_time": exchange_ns // US, "price": 430.25, "size": 10.0, "conditions": "@ T",
                "past_limit": False, "unreported": True,
            }
        ]  # fmt: skip

    async def test_economic_observation_and_ingestion_event_rows(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """FRED observations land in economic_data, state changes in ingestion_events (INT code)."""
        async with running_writer(make_config()) as writer:
            writer.accept(observation("DGS10", BASE_NS, 4.25))
            writer.accept(ingestion_event(BASE_NS, "ib_connectivity_lost", 1100))
            await eventually(lambda: qdb.row_count("economic_data") + qdb.row_count("ingestion_events") == 2)
        assert qdb.rows("economic_data") == [
            {"timestamp": BASE_NS // US, "series_id": "DGS10", "value": 4.25}
        ]
        assert qdb.rows("ingestion_events") == [
            {
                "timestamp": BASE_NS // US,
                "event": "ib_connectivity_lost",
                "code": 1100,
                "detail": "Connected to IBKR at 127.0.0.1:4002",
            }
        ]

    async def test_written_rows_are_counted_per_table(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, metrics: Metrics
    ) -> None:
        """rows_written counts acknowledged rows by table; latency is observed per acknowledged batch."""
        async with running_writer(make_config(), metrics=metrics) as writer:
            for i in range(5):
                writer.accept(full_quote("SPY", BASE_NS + i * US))
            writer.accept(trade("SPY", BASE_NS))
            await eventually(lambda: writer.status().details["rows_written"] == 6)
        sample = metrics.registry.get_sample_value
        assert sample("ingestion_rows_written_total", {"table": "market_data_l1"}) == 5
        assert sample("ingestion_rows_written_total", {"table": "time_and_sales"}) == 1
        assert sample("ingestion_latency_to_questdb_seconds_count") >= 2


class TestRowsStayDistinct:
    async def test_updates_received_within_one_microsecond_all_land(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """Ten depth messages received in the same wall-clock nanosecond are stamped a microsecond
        apart by the receive clock, so all ten are kept rather than deduplicated away."""
        clock = ReceiveClock(source=lambda: BASE_NS + 123)
        async with running_writer(make_config()) as writer:
            for i in range(10):
                writer.accept(depth("SPY", clock.now_ns(), position=i))
            await eventually(lambda: qdb.row_count("market_data_l2") == 10)
        assert qdb.conflicts("market_data_l2") == 0
        assert sorted(r["position"] for r in qdb.rows("market_data_l2")) == list(range(10))

    async def test_economic_revisions_replace_the_earlier_value(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A revised FRED observation for the same date upserts (DEDUP on timestamp, series_id)."""
        async with running_writer(make_config()) as writer:
            writer.accept(observation("UNRATE", BASE_NS, 4.1))
            await eventually(lambda: qdb.row_count("economic_data") == 1)
            writer.accept(observation("UNRATE", BASE_NS, 4.2))
            await eventually(lambda: qdb.duplicates("economic_data") == 1)
        assert qdb.rows("economic_data") == [
            {"timestamp": BASE_NS // US, "series_id": "UNRATE", "value": 4.2}
        ]


class TestTheUsersQueries:
    """The two SQL statements of CONTRACTS.md, verbatim, against the rows the writer sent."""

    async def _write_ticks(self, qdb: QuestDBDouble, make_config: ConfigFactory) -> None:
        minute = 60_000_000_000
        async with running_writer(make_config()) as writer:
            for i in range(3):  # SPY: 14:29:00, 14:29:01, 14:29:02 (before the cutoff)
                writer.accept(full_quote("SPY", BASE_NS + i * 1_000_000_000))
            for i in range(2):  # QQQ: 14:30:30 and 14:30:31 (after the cutoff)
                writer.accept(full_quote("QQQ", BASE_NS + minute + 30_000_000_000 + i * 1_000_000_000))
            writer.accept(full_quote("SPY", BASE_NS + 2 * minute))  # SPY once more at 14:31:00
            await eventually(lambda: qdb.row_count("market_data_l1") == 6)

    async def test_verification_query_counts_ticks_per_symbol(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """The verification query returns ticks, first and last tick per symbol, latest first."""
        await self._write_ticks(qdb, make_config)
        sql = (
            "SELECT symbol, COUNT(*) AS total_ticks, MIN(timestamp) AS first_tick, "
            "MAX(timestamp) AS last_tick FROM market_data_l1 GROUP BY symbol ORDER BY last_tick DESC"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{qdb.port}") as client:
            body = (await client.get("/exec", params={"query": sql})).json()
        assert [c["name"] for c in body["columns"]] == ["symbol", "total_ticks", "first_tick", "last_tick"]
        assert body["dataset"] == [
            ["SPY", 4, "2026-11-23T14:29:00.000000Z", "2026-11-23T14:31:00.000000Z"],
            ["QQQ", 2, "2026-11-23T14:30:30.000000Z", "2026-11-23T14:30:31.000000Z"],
        ]

    async def test_last_five_minutes_query_honours_the_cutoff(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """The cutoff query counts only ticks after the literal '2026-11-23T14:30:00'."""
        await self._write_ticks(qdb, make_config)
        sql = (
            "SELECT symbol, COUNT(*) AS ticks, MAX(timestamp) AS latest FROM market_data_l1 "
            "WHERE timestamp > '2026-11-23T14:30:00' GROUP BY symbol ORDER BY latest DESC"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{qdb.port}") as client:
            body = (await client.get("/exec", params={"query": sql})).json()
        assert body["dataset"] == [
            ["SPY", 1, "2026-11-23T14:31:00.000000Z"],
            ["QQQ", 2, "2026-11-23T14:30:31.000000Z"],
        ]
        assert body["count"] == 2


class TestTheDoubleParsesLineProtocol:
    def test_escapes_in_names_tags_and_strings(self) -> None:
        """The double's parser undoes ILP escaping: spaces, commas, equals, quotes, backslashes, newlines."""
        text = 't\\ a,symbol=SP\\ Y\\,\\=x f=1.0,i=3i,b=t,s="he said \\"hi\\"\\\\ \\\n, = x",ts=5t 17\n'
        [line] = parse_ilp(text)
        assert line.table == "t a"
        assert line.tags == {"symbol": "SP Y,=x"}
        assert line.fields["s"] == 'he said "hi"\\ \n, = x'
        assert (line.fields["f"], line.fields["i"], line.fields["b"]) == (1.0, 3, True)
        assert line.fields["ts"].micros == 5
        assert line.timestamp_ns == 17
