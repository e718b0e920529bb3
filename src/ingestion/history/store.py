"""What history needs to read back from QuestDB: the newest bars, and the newest trades before a restart.

Every statement is plain QuestDB SQL, valid on QuestDB 8 and 9, checked against questdb.com/docs:
/query/sql/select and /query/sql/group-by (an explicit ``GROUP BY`` must list exactly the non-aggregated
columns of the SELECT, as here; ``max()`` of a TIMESTAMP is a TIMESTAMP), /query/operators/date-time
(timestamps compared with ISO 8601 string literals such as ``'2026-12-06T05:00:00.000000Z'``, the form the
user's own query in CONTRACTS.md uses) and /concept/interval-scan (a range on the designated timestamp
becomes an interval scan, so each query reads only the partitions it needs). Symbols come from the
validated configuration (``[A-Z0-9 .-]``), so they cannot break out of their quotes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from ingestion.history.edges import StoredTrade, TapeTrade
from ingestion.sinks.schema import execute

BARS_NEWEST = (
    "SELECT symbol, bar_size, max(timestamp) AS newest FROM market_data_historical GROUP BY symbol, bar_size"
)


def literal(seconds: float) -> str:
    """A timestamp literal as QuestDB prints them: microseconds and ``Z``."""
    micros = round(seconds * 1_000_000)
    moment = datetime.fromtimestamp(micros // 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros % 1_000_000:06d}Z"


def parse_micros(value: Any) -> int | None:
    """QuestDB's JSON timestamp (ISO 8601 text) in microseconds since the epoch."""
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _records(answer: dict[str, Any]) -> list[dict[str, Any]]:
    names = [c["name"] for c in answer.get("columns", [])]
    return [dict(zip(names, row, strict=False)) for row in answer.get("dataset", [])]


class HistoryStore:
    """Reads over QuestDB's /exec (the writer's client settings)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def newest_bars(self) -> dict[tuple[str, str], int]:
        """(symbol, bar_size) -> start of the newest stored bar, in nanoseconds."""
        newest = {}
        for record in _records(await execute(self._client, BARS_NEWEST)):
            micros = parse_micros(record.get("newest"))
            if micros is not None:
                newest[(str(record["symbol"]), str(record["bar_size"]))] = micros * 1000
        return newest

    async def newest_trades(self, since: float, before: float) -> dict[str, int]:
        """symbol -> second of the newest trade (exchange time) stored between ``since`` and ``before``
        (this process's start: its own live trades are not the end of an earlier run)."""
        sql = (
            "SELECT symbol, max(exchange_time) AS newest FROM time_and_sales "
            f"WHERE timestamp >= '{literal(since)}' AND timestamp < '{literal(before)}' GROUP BY symbol"
        )
        newest = {}
        for record in _records(await execute(self._client, sql)):
            micros = parse_micros(record.get("newest"))
            if micros is not None:
                newest[str(record["symbol"])] = micros // 1_000_000
        return newest

    async def trades_of_second(self, symbol: str, second: int) -> list[StoredTrade]:
        """The stored trades of ``symbol`` whose exchange time falls in ``second``."""
        return await self.trades_between(symbol, second, second)

    async def trades_between(self, symbol: str, first: int, last: int) -> list[StoredTrade]:
        """The stored trades of ``symbol`` whose exchange time falls in seconds ``first``..``last``."""
        # Receive times follow exchange times by well under two minutes; the range keeps it an interval scan.
        sql = (
            "SELECT timestamp, exchange_time, price, size, exchange FROM time_and_sales "
            f"WHERE symbol = '{symbol}' AND timestamp >= '{literal(first - 120)}' "
            f"AND timestamp < '{literal(last + 121)}' "
            f"AND exchange_time >= '{literal(first)}' AND exchange_time < '{literal(last + 1)}'"
        )
        stored = []
        for record in _records(await execute(self._client, sql)):
            stamp = parse_micros(record.get("timestamp"))
            exchange_time = parse_micros(record.get("exchange_time"))
            price = record.get("price")
            if stamp is None or exchange_time is None or price is None:
                continue
            size = record.get("size")
            trade = TapeTrade(
                exchange_time // 1_000_000,
                float(price),
                None if size is None else float(size),
                record.get("exchange"),
            )
            stored.append(StoredTrade(trade, stamp))
        return stored
