"""The tables are created with explicit DDL at start, and a conflicting existing schema stops the daemon."""

from __future__ import annotations

import pytest
from sinks_helpers import BASE_NS, ConfigFactory, RecordingBus, eventually, full_quote, running_writer

from ingestion.metrics import Metrics
from ingestion.sinks.questdb import QuestDBWriter
from ingestion.sinks.schema import SchemaMismatchError
from questdb_double import QuestDBDouble

EXPECTED_DDL = [
    "CREATE TABLE IF NOT EXISTS market_data_l1 (timestamp TIMESTAMP, symbol SYMBOL CAPACITY 256 CACHE, "
    "bid DOUBLE, ask DOUBLE, last DOUBLE, bid_size DOUBLE, ask_size DOUBLE, last_size DOUBLE, volume DOUBLE, "
    "high DOUBLE, low DOUBLE, close DOUBLE, open DOUBLE, delayed BOOLEAN) "
    "TIMESTAMP(timestamp) PARTITION BY DAY WAL DEDUP UPSERT KEYS(timestamp, symbol)",
    "CREATE TABLE IF NOT EXISTS market_data_l2 (timestamp TIMESTAMP, symbol SYMBOL CAPACITY 256 CACHE, "
    "side SYMBOL CAPACITY 4 CACHE, position INT, operation SYMBOL CAPACITY 4 CACHE, "
    "price DOUBLE, size DOUBLE, "
    "market_maker SYMBOL CAPACITY 1024 CACHE, is_smart_depth BOOLEAN, delayed BOOLEAN) "
    "TIMESTAMP(timestamp) PARTITION BY DAY WAL DEDUP UPSERT KEYS(timestamp, symbol)",
    "CREATE TABLE IF NOT EXISTS time_and_sales (timestamp TIMESTAMP, exchange_time TIMESTAMP, "
    "symbol SYMBOL CAPACITY 256 CACHE, price DOUBLE, size DOUBLE, exchange SYMBOL CAPACITY 128 CACHE, "
    "conditions VARCHAR, past_limit BOOLEAN, unreported BOOLEAN, source SYMBOL CAPACITY 4 CACHE, "
    "delayed BOOLEAN) "
    "TIMESTAMP(timestamp) PARTITION BY DAY WAL DEDUP UPSERT KEYS(timestamp, symbol)",
    "CREATE TABLE IF NOT EXISTS economic_data (timestamp TIMESTAMP, series_id SYMBOL CAPACITY 256 CACHE, "
    "value DOUBLE) TIMESTAMP(timestamp) PARTITION BY DAY WAL DEDUP UPSERT KEYS(timestamp, series_id)",
    "CREATE TABLE IF NOT EXISTS ingestion_events (timestamp TIMESTAMP, event SYMBOL CAPACITY 256 CACHE, "
    "code INT, detail VARCHAR) TIMESTAMP(timestamp) PARTITION BY DAY WAL DEDUP UPSERT KEYS(timestamp, event)",
    "CREATE TABLE IF NOT EXISTS market_data_historical (timestamp TIMESTAMP, "
    "symbol SYMBOL CAPACITY 256 CACHE, bar_size SYMBOL CAPACITY 32 CACHE, "
    "open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, wap DOUBLE, bar_count INT) "
    "TIMESTAMP(timestamp) PARTITION BY MONTH WAL DEDUP UPSERT KEYS(timestamp, symbol, bar_size)",
]


class TestSchemaAtStart:
    async def test_start_sends_the_exact_ddl_for_every_table(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """start() sends one CREATE TABLE IF NOT EXISTS per table of CONTRACTS.md, exactly as written here."""
        async with running_writer(make_config()):
            assert qdb.ddl() == EXPECTED_DDL

    async def test_start_checks_every_table_with_table_columns(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """After the DDL, start() reads table_columns() of each table to compare the actual schema."""
        async with running_writer(make_config()):
            checks = [q for q in qdb.exec_log if q.startswith("table_columns")]
        assert checks == [
            "table_columns('market_data_l1')",
            "table_columns('market_data_l2')",
            "table_columns('time_and_sales')",
            "table_columns('economic_data')",
            "table_columns('ingestion_events')",
            "table_columns('market_data_historical')",
        ]

    async def test_existing_matching_tables_are_accepted(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A second start against tables this service created before goes through (IF NOT EXISTS)."""
        async with running_writer(make_config()):
            pass
        async with running_writer(make_config()) as writer:
            assert writer.status().details["schema_ready"] is True

    async def test_conflicting_column_type_refuses_to_start(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A table with a column of another type stops start() with the table, column and both types named."""
        qdb.execute(
            "CREATE TABLE market_data_l1 (timestamp TIMESTAMP, symbol VARCHAR, bid DOUBLE) "
            "TIMESTAMP(timestamp) PARTITION BY DAY WAL"
        )
        writer = QuestDBWriter(make_config(), RecordingBus(), Metrics())
        with pytest.raises(SchemaMismatchError) as raised:
            await writer.start()
        message = str(raised.value)
        assert "table market_data_l1" in message
        assert "column symbol: expected SYMBOL, found VARCHAR" in message
        await writer.aclose()

    async def test_missing_column_refuses_to_start(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A table that lacks one of our columns stops start(), naming the missing column."""
        qdb.execute(
            "CREATE TABLE economic_data (timestamp TIMESTAMP, series_id SYMBOL) "
            "TIMESTAMP(timestamp) PARTITION BY DAY WAL DEDUP UPSERT KEYS(timestamp, series_id)"
        )
        writer = QuestDBWriter(make_config(), RecordingBus(), Metrics())
        with pytest.raises(SchemaMismatchError, match="column value: expected DOUBLE, found no such column"):
            await writer.start()
        await writer.aclose()


# market_data_l1 as releases before the delayed column created it.
L1_BEFORE_DELAYED = EXPECTED_DDL[0].replace(", delayed BOOLEAN", "")


class TestAddedColumns:
    async def test_an_existing_table_gains_the_delayed_column_once(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """A deployment's market_data_l1 from before gets `delayed` by ALTER TABLE at start, and a
        second start sends no ALTER (the column is there: plain ADD COLUMN, checked first)."""
        qdb.execute(L1_BEFORE_DELAYED)
        async with running_writer(make_config()) as writer:
            assert writer.status().details["schema_ready"] is True
        alters = [q for q in qdb.exec_log if q.startswith("ALTER")]
        assert alters == ["ALTER TABLE market_data_l1 ADD COLUMN delayed BOOLEAN"]
        columns = qdb.execute("table_columns('market_data_l1')")["dataset"]
        assert ["delayed", "BOOLEAN"] in [row[:2] for row in columns]
        async with running_writer(make_config()):
            pass
        assert [q for q in qdb.exec_log if q.startswith("ALTER")] == alters

    async def test_delayed_rows_are_marked_and_live_rows_leave_the_column_out(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        quote = full_quote("SPY", BASE_NS)
        delayed = full_quote("QQQ", BASE_NS + 1000)
        delayed.delayed = True
        async with running_writer(make_config()) as writer:
            writer.accept(quote)
            writer.accept(delayed)
            await eventually(lambda: qdb.row_count("market_data_l1") == 2, what="both rows")
        rows = {row["symbol"]: row for row in qdb.rows("market_data_l1")}
        assert rows["QQQ"]["delayed"] is True
        assert "delayed" not in rows["SPY"], "live rows omit it: QuestDB reads an unwritten BOOLEAN as false"


class TestSchemaWhenQuestDBIsDown:
    async def test_writer_starts_while_questdb_is_down(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """QuestDB unreachable at start: start() returns, the writer reports 'down' and spools."""
        qdb.refuse_connections()
        async with running_writer(make_config()) as writer:
            writer.accept(full_quote("SPY", BASE_NS))
            await eventually(lambda: writer.status().details["spool_bytes"] > 0, what="rows in the spool")
            assert writer.status().state == "down"
            assert writer.status().details["schema_ready"] is False

    async def test_schema_is_applied_on_recovery_before_any_replayed_row(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """When QuestDB comes back, the DDL goes first and the spooled rows only after it."""
        qdb.outage(503)
        async with running_writer(make_config()) as writer:
            writer.accept(full_quote("SPY", BASE_NS))
            await eventually(lambda: writer.status().details["spool_bytes"] > 0, what="rows in the spool")
            qdb.heal()
            await eventually(lambda: qdb.row_count("market_data_l1") == 1, what="the replayed row")
        kinds = [kind for kind, _ in qdb.timeline]
        first_write = kinds.index("write")
        assert kinds[:first_write].count("exec") == 12  # six CREATE TABLE and six table_columns()
