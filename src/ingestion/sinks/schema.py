"""The QuestDB tables of CONTRACTS.md: their DDL, and the check that an existing table matches it.

Every table is created explicitly at start, never by ILP auto-creation, so the column types are the ones
chosen here and not whatever the first row happened to look like.

Syntax checked against the QuestDB documentation (questdb.com/docs/query/sql/create-table,
/docs/concept/deduplication, /docs/concept/symbol, /docs/query/sql/alter-table-change-symbol-capacity):
``CREATE TABLE [IF NOT EXISTS] t (col type, ...) TIMESTAMP(col) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(col, ...)``; a symbol column takes ``SYMBOL CAPACITY n CACHE`` (capacity is rounded up
to a power of two; CACHE is the default, written out so the intent is visible); DEDUP needs a WAL table
and the designated timestamp among its keys. ``SHOW CREATE TABLE`` on QuestDB 8 and 9 prints symbol columns
as ``SYMBOL CAPACITY 256 CACHE``, i.e. this very form. VARCHAR exists since QuestDB 7.3.10, so 8 and 9
both accept it. ``TIMESTAMP`` (microseconds) is used rather than 9.1's ``TIMESTAMP_NS``, which QuestDB 8
lacks; see rows.py for how rows stay unique at microsecond precision.

Columns added after a table's first release (:data:`ADDED_COLUMNS`) reach an existing table through
``ALTER TABLE t ADD COLUMN c type`` (questdb.com/docs/query/sql/alter-table-add-column: the column is
added atomically and not back-populated; a BOOLEAN is not nullable (questdb.com/docs/reference/sql/datatypes),
so older rows, and rows that leave it out, read false), issued only when
``table_columns()`` lacks the column. Not ``ADD COLUMN IF NOT EXISTS``: QuestDB has it only since 8.2
(questdb/questdb#5080), and until questdb/questdb#5675 (May 2025) it failed on a WAL table whose column
did exist ("statements containing multiple transactions ... are currently not supported for WAL tables",
questdb/questdb#5369 on 8.2.2): every start after the first would have been refused there.

``table_columns('t')`` answers one row per column with at least ``column``, ``type``, ``designated`` and
``upsertKey`` (checked against QuestDB's own tests of ``SHOW COLUMNS``, which shares that metadata cursor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

DESIGNATED = "timestamp"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # as QuestDB reports it in table_columns(): SYMBOL, DOUBLE, BOOLEAN, INT, TIMESTAMP, VARCHAR
    symbol_capacity: int = 0

    def ddl(self) -> str:
        if self.type == "SYMBOL":
            return f"{self.name} SYMBOL CAPACITY {self.symbol_capacity} CACHE"
        return f"{self.name} {self.type}"


@dataclass(frozen=True, slots=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    dedup_keys: tuple[str, ...]
    partition_by: str = "DAY"

    def ddl(self) -> str:
        columns = ", ".join(c.ddl() for c in self.columns)
        keys = ", ".join(self.dedup_keys)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} ({columns}) "
            f"TIMESTAMP({DESIGNATED}) PARTITION BY {self.partition_by} WAL DEDUP UPSERT KEYS({keys})"
        )

    @property
    def timestamp_columns(self) -> frozenset[str]:
        """Non-designated TIMESTAMP columns: their values travel as ILP timestamps, not integers."""
        return frozenset(c.name for c in self.columns if c.type == "TIMESTAMP" and c.name != DESIGNATED)


def _ts() -> Column:
    return Column(DESIGNATED, "TIMESTAMP")


def _double(*names: str) -> tuple[Column, ...]:
    return tuple(Column(n, "DOUBLE") for n in names)


# Capacities: the universe is 15 ETFs and may grow to a few hundred symbols; sides, operations and
# sources are 2-3 values; market makers and exchanges are venue codes (dozens, MPIDs a few hundred);
# event names are a fixed vocabulary. A symbol past its capacity still works, only slower.
SYMBOL = Column("symbol", "SYMBOL", 256)
# True for a row of data IB sent delayed (market data type 3/4, ticks 66-76). Live rows leave it out and
# read false. Always false in market_data_l2: IB has no delayed market depth.
DELAYED = Column("delayed", "BOOLEAN")

MARKET_DATA_L1 = TableSchema(
    "market_data_l1",
    (_ts(), SYMBOL, *_double("bid", "ask", "last", "bid_size", "ask_size", "last_size", "volume",
                             "high", "low", "close", "open"), DELAYED),
    (DESIGNATED, "symbol"),
)  # fmt: skip
MARKET_DATA_L2 = TableSchema(
    "market_data_l2",
    (_ts(), SYMBOL, Column("side", "SYMBOL", 4), Column("position", "INT"), Column("operation", "SYMBOL", 4),
     *_double("price", "size"), Column("market_maker", "SYMBOL", 1024), Column("is_smart_depth", "BOOLEAN"),
     DELAYED),
    (DESIGNATED, "symbol"),
)  # fmt: skip
TIME_AND_SALES = TableSchema(
    "time_and_sales",
    (_ts(), Column("exchange_time", "TIMESTAMP"), SYMBOL, *_double("price", "size"),
     Column("exchange", "SYMBOL", 128), Column("conditions", "VARCHAR"), Column("past_limit", "BOOLEAN"),
     Column("unreported", "BOOLEAN"), Column("source", "SYMBOL", 4), DELAYED),
    (DESIGNATED, "symbol"),
)  # fmt: skip
ECONOMIC_DATA = TableSchema(
    "economic_data",
    (_ts(), Column("series_id", "SYMBOL", 256), Column("value", "DOUBLE")),
    (DESIGNATED, "series_id"),
)
# CONTRACTS.md names no keys for this table; (timestamp, event) makes a replay from the spool as
# idempotent here as everywhere else, and event timestamps come from the strictly increasing clock.
INGESTION_EVENTS = TableSchema(
    "ingestion_events",
    (_ts(), Column("event", "SYMBOL", 256), Column("code", "INT"), Column("detail", "VARCHAR")),
    (DESIGNATED, "event"),
)

# Bars: one row per symbol, bar size and bar start. The defaults (1 min over 5 trading days, 1 day over 2
# years, 15 symbols) come to about 15,000 rows a trading day; QuestDB's schema guide recommends MONTH or YEAR
# partitions below 100K rows a day, and a partition of a few hundred MB at most
# (questdb.com/docs/guides/schema-design-essentials, "Partitioning"; /docs/concept/partitions). MONTH keeps
# a month of 1-min bars (about 300,000 rows) in one partition and lets old months be dropped whole.
# The DEDUP keys include bar_size, so bars of different sizes that start at the same moment are distinct
# rows and a bar asked for again replaces itself (/docs/concept/deduplication).
MARKET_DATA_HISTORICAL = TableSchema(
    "market_data_historical",
    (_ts(), SYMBOL, Column("bar_size", "SYMBOL", 32),
     *_double("open", "high", "low", "close", "volume", "wap"), Column("bar_count", "INT")),
    (DESIGNATED, "symbol", "bar_size"),
    partition_by="MONTH",
)  # fmt: skip

TABLES: tuple[TableSchema, ...] = (
    MARKET_DATA_L1,
    MARKET_DATA_L2,
    TIME_AND_SALES,
    ECONOMIC_DATA,
    INGESTION_EVENTS,
    MARKET_DATA_HISTORICAL,
)
TABLES_BY_NAME = {t.name: t for t in TABLES}
# Columns a table gained after its first release, by table name: an existing table gets them at start.
ADDED_COLUMNS: dict[str, tuple[Column, ...]] = {
    MARKET_DATA_L1.name: (DELAYED,),
    MARKET_DATA_L2.name: (DELAYED,),
    TIME_AND_SALES.name: (DELAYED,),
}


class SchemaMismatchError(RuntimeError):
    """An existing table does not have the columns this service writes; writing would store garbage."""


class QuestDBUnavailableError(RuntimeError):
    """/exec could not be reached or answered with a server error: try again later."""


async def apply_schema(client: httpx.AsyncClient, tables: tuple[TableSchema, ...] = TABLES) -> None:
    """Create every table if missing, then check that each one has the expected columns and types.

    Raises:
        SchemaMismatchError: A table exists with a missing column or a column of another type.
        QuestDBUnavailableError: QuestDB did not answer, or answered 5xx.
    """
    for table in tables:
        await execute(client, table.ddl())
    for table in tables:
        answer = await execute(client, f"table_columns('{table.name}')")
        if await add_missing_columns(client, table, answer):
            answer = await execute(client, f"table_columns('{table.name}')")
        verify_columns(table, answer)


async def add_missing_columns(client: httpx.AsyncClient, table: TableSchema, answer: dict[str, Any]) -> bool:
    """Add the :data:`ADDED_COLUMNS` of ``table`` that its ``table_columns()`` answer lacks; True if any."""
    present = set(_columns_by_name(answer))
    missing = [c for c in ADDED_COLUMNS.get(table.name, ()) if c.name not in present]
    for column in missing:
        await execute(client, f"ALTER TABLE {table.name} ADD COLUMN {column.ddl()}")
    return bool(missing)


def _columns_by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [c["name"] for c in answer.get("columns", [])]
    found: dict[str, dict[str, Any]] = {}
    for row in answer.get("dataset", []):
        record = dict(zip(names, row, strict=False))
        found[str(record.get("column"))] = record
    return found


async def execute(client: httpx.AsyncClient, sql: str) -> dict[str, Any]:
    """Run one statement through ``GET /exec`` and return QuestDB's JSON answer."""
    try:
        response = await client.get("/exec", params={"query": sql})
    except httpx.HTTPError as exc:
        raise QuestDBUnavailableError(f"QuestDB /exec unreachable: {exc!r}") from exc
    if response.status_code >= 500:
        raise QuestDBUnavailableError(f"QuestDB /exec answered {response.status_code}: {response.text[:200]}")
    try:
        body = response.json()
    except ValueError as exc:
        raise QuestDBUnavailableError(f"QuestDB /exec answered non-JSON: {response.text[:200]}") from exc
    if response.status_code >= 400 or "error" in body:
        msg = f"QuestDB refused {sql[:120]!r}: {body.get('error', response.text[:200])}"
        raise SchemaMismatchError(msg)
    return body


def verify_columns(table: TableSchema, answer: dict[str, Any]) -> None:
    """Compare a ``table_columns()`` answer with the schema; extra columns are fine, others are not."""
    found = _columns_by_name(answer)
    problems = []
    for column in table.columns:
        actual = found.get(column.name)
        if actual is None:
            problems.append(f"column {column.name}: expected {column.type}, found no such column")
        elif str(actual.get("type", "")).upper() != column.type:
            problems.append(f"column {column.name}: expected {column.type}, found {actual.get('type')}")
    designated = found.get(DESIGNATED, {})
    if designated and designated.get("designated") is False:
        problems.append(f"column {DESIGNATED}: expected the designated timestamp, found a plain column")
    if problems:
        msg = f"table {table.name} exists with a conflicting schema: " + "; ".join(problems)
        raise SchemaMismatchError(msg)
