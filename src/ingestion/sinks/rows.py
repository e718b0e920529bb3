"""Events as QuestDB rows: plain tuples that go into an ILP buffer, or as JSON into the spool.

A row is ``(table, timestamp_ns, symbols, columns)``; ``None`` values are left out, so QuestDB stores NULL
and no column is created for a value never seen. Rows are built once, in :meth:`QuestDBWriter.accept`,
and never change afterwards: what is spooled is exactly what would have been sent.
"""

from __future__ import annotations

from typing import Any

from questdb import TimestampMicros, TimestampNanos

from ingestion.events import DepthUpdate, EconomicObservation, Event, IngestionEvent, Quote, Trade
from ingestion.sinks.schema import (
    ECONOMIC_DATA,
    INGESTION_EVENTS,
    MARKET_DATA_L1,
    MARKET_DATA_L2,
    TABLES_BY_NAME,
    TIME_AND_SALES,
)

Row = tuple[str, int, dict[str, str], dict[str, Any]]


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _floats(**values: float | None) -> dict[str, float]:
    # IB hands over sizes that may be ints or Decimals; a DOUBLE column wants an ILP float, never "5i".
    return {k: float(v) for k, v in values.items() if v is not None}


def row_for(event: Event) -> Row:
    """The row one event becomes. Raises TypeError for an object that is no event."""
    match event:
        case Quote():
            columns = _floats(
                bid=event.bid, ask=event.ask, last=event.last, bid_size=event.bid_size,
                ask_size=event.ask_size, last_size=event.last_size, volume=event.volume,
                high=event.high, low=event.low, close=event.close, open=event.open,
            )  # fmt: skip
            return (MARKET_DATA_L1.name, event.timestamp_ns, {"symbol": event.symbol}, columns)
        case DepthUpdate():
            symbols = _present(
                symbol=event.symbol,
                side=event.side,
                operation=event.operation,
                market_maker=event.market_maker,
            )
            columns = {
                "position": int(event.position),
                **_floats(price=event.price, size=event.size),
                "is_smart_depth": bool(event.is_smart_depth),
            }
            return (MARKET_DATA_L2.name, event.timestamp_ns, symbols, columns)
        case Trade():
            symbols = _present(symbol=event.symbol, exchange=event.exchange, source=event.source)
            columns = {
                **_present(exchange_time=event.exchange_time_ns),
                **_floats(price=event.price, size=event.size),
                **_present(conditions=event.conditions),
                "past_limit": bool(event.past_limit),
                "unreported": bool(event.unreported),
            }
            return (TIME_AND_SALES.name, event.timestamp_ns, symbols, columns)
        case EconomicObservation():
            columns = {"value": float(event.value)}
            return (ECONOMIC_DATA.name, event.timestamp_ns, {"series_id": event.series_id}, columns)
        case IngestionEvent():
            columns = _present(code=event.code, detail=event.detail)
            return (INGESTION_EVENTS.name, event.timestamp_ns, {"event": event.event}, columns)
    msg = f"not an event: {type(event).__name__}"
    raise TypeError(msg)


_TIMESTAMP_COLUMNS = {name: table.timestamp_columns for name, table in TABLES_BY_NAME.items()}


def add_row(buffer: Any, row: Row | list[Any]) -> None:
    """Append one row (a tuple, or the list JSON made of it) to a questdb ``Buffer``."""
    table, ts, symbols, columns = row
    stamps = _TIMESTAMP_COLUMNS.get(table)
    if stamps:
        columns = {k: TimestampMicros(v // 1000) if k in stamps else v for k, v in columns.items()}
    buffer.row(table, symbols=symbols, columns=columns, at=TimestampNanos(ts))
