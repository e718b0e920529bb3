"""Events as QuestDB rows: plain tuples that go into an ILP buffer, or as JSON into the spool.

A row is ``(table, timestamp_ns, symbols, columns)``; ``None`` values are left out, so QuestDB stores NULL
and no column is created for a value never seen. Rows are built once, in :meth:`QuestDBWriter.accept`,
and never change afterwards: what is spooled is exactly what would have been sent.

This runs once per event on the event loop; it was about a tenth of the loop at saturation when every
row went through a keyword dict and a filtered comprehension per group of fields. So each builder fills
its dicts field by field, in the column order of the table, and row_for picks the builder by the exact
class of the event.

The conversions stay (``float()`` on prices and sizes, ``int()``/``bool()`` on the INT and BOOLEAN columns)
although the normaliser already hands floats and bools: ``accept`` takes events from anywhere (the tests'
factories pass ints, for one), an int would go out as an ILP integer ("5i") that a DOUBLE column refuses,
and the client refuses a Decimal outright, so a type slip would dead-letter rows instead of storing them.
On floats they are 18 % of the instructions of row building (bench/bench_rows_spool.py under callgrind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any

from questdb import TimestampMicros, TimestampNanos

from ingestion.events import (
    DepthUpdate,
    EconomicObservation,
    Event,
    HistoricalBar,
    IngestionEvent,
    Quote,
    Trade,
)
from ingestion.sinks.schema import (
    ECONOMIC_DATA,
    INGESTION_EVENTS,
    MARKET_DATA_HISTORICAL,
    MARKET_DATA_L1,
    MARKET_DATA_L2,
    TABLES_BY_NAME,
    TIME_AND_SALES,
)

Row = tuple[str, int, dict[str, str], dict[str, Any]]
# What the writer holds: an event whose row is not built yet, or a row (read from the spool, or handed
# back unsent). A row read from the spool's JSON is a list of the same four items.
Item = Event | Row | list[Any]

_L1 = MARKET_DATA_L1.name
_L2 = MARKET_DATA_L2.name
_TRADES = TIME_AND_SALES.name
_ECONOMIC = ECONOMIC_DATA.name
_EVENTS = INGESTION_EVENTS.name
_BARS = MARKET_DATA_HISTORICAL.name


def _quote_row(event: Quote) -> Row:
    columns: dict[str, Any] = {}
    if (value := event.bid) is not None:
        columns["bid"] = float(value)
    if (value := event.ask) is not None:
        columns["ask"] = float(value)
    if (value := event.last) is not None:
        columns["last"] = float(value)
    if (value := event.bid_size) is not None:
        columns["bid_size"] = float(value)
    if (value := event.ask_size) is not None:
        columns["ask_size"] = float(value)
    if (value := event.last_size) is not None:
        columns["last_size"] = float(value)
    if (value := event.volume) is not None:
        columns["volume"] = float(value)
    if (value := event.high) is not None:
        columns["high"] = float(value)
    if (value := event.low) is not None:
        columns["low"] = float(value)
    if (value := event.close) is not None:
        columns["close"] = float(value)
    if (value := event.open) is not None:
        columns["open"] = float(value)
    if event.delayed:
        columns["delayed"] = True  # left out when live: a QuestDB BOOLEAN is false when not written
    return (_L1, event.timestamp_ns, {"symbol": event.symbol}, columns)


def _depth_row(event: DepthUpdate) -> Row:
    symbols = {"symbol": event.symbol, "side": event.side, "operation": event.operation}
    if (maker := event.market_maker) is not None:
        symbols["market_maker"] = maker
    columns: dict[str, Any] = {"position": int(event.position)}
    if (value := event.price) is not None:
        columns["price"] = float(value)
    if (value := event.size) is not None:
        columns["size"] = float(value)
    columns["is_smart_depth"] = bool(event.is_smart_depth)
    return (_L2, event.timestamp_ns, symbols, columns)


def _trade_row(event: Trade) -> Row:
    symbols = {"symbol": event.symbol}
    if (exchange := event.exchange) is not None:
        symbols["exchange"] = exchange
    symbols["source"] = event.source
    columns: dict[str, Any] = {}
    if (value := event.exchange_time_ns) is not None:
        columns["exchange_time"] = value
    if (value := event.price) is not None:
        columns["price"] = float(value)
    if (value := event.size) is not None:
        columns["size"] = float(value)
    if (value := event.conditions) is not None:
        columns["conditions"] = value
    columns["past_limit"] = bool(event.past_limit)
    columns["unreported"] = bool(event.unreported)
    if event.delayed:
        columns["delayed"] = True
    return (_TRADES, event.timestamp_ns, symbols, columns)


def _observation_row(event: EconomicObservation) -> Row:
    return (_ECONOMIC, event.timestamp_ns, {"series_id": event.series_id}, {"value": float(event.value)})


def _bar_row(event: HistoricalBar) -> Row:
    columns: dict[str, Any] = {
        "open": float(event.open),
        "high": float(event.high),
        "low": float(event.low),
        "close": float(event.close),
    }
    if (value := event.volume) is not None:
        columns["volume"] = float(value)
    if (value := event.wap) is not None:
        columns["wap"] = float(value)
    if (count := event.bar_count) is not None:
        columns["bar_count"] = int(count)
    return (_BARS, event.timestamp_ns, {"symbol": event.symbol, "bar_size": event.bar_size}, columns)


def _ingestion_event_row(event: IngestionEvent) -> Row:
    columns: dict[str, Any] = {}
    if event.code is not None:
        columns["code"] = event.code
    if event.detail is not None:
        columns["detail"] = event.detail
    return (_EVENTS, event.timestamp_ns, {"event": event.event}, columns)


# Dispatch on the exact class: one dict lookup instead of a chain of isinstance checks per event.
_BUILDERS: dict[type, Callable[[Any], Row]] = {
    Quote: _quote_row,
    DepthUpdate: _depth_row,
    Trade: _trade_row,
    EconomicObservation: _observation_row,
    HistoricalBar: _bar_row,
    IngestionEvent: _ingestion_event_row,
}


def row_for(event: Event) -> Row:
    """The row one event becomes. Raises TypeError for an object that is no event."""
    builder = _BUILDERS.get(type(event))
    if builder is None:
        # A subclass of an event is still that event; anything else is a programming error.
        builder = next((b for cls, b in _BUILDERS.items() if isinstance(event, cls)), None)
        if builder is None:
            msg = f"not an event: {type(event).__name__}"
            raise TypeError(msg)
    return builder(event)


# Non-designated TIMESTAMP columns per table, only for the tables that have any (time_and_sales).
_TIMESTAMP_COLUMNS = {
    name: tuple(sorted(table.timestamp_columns))
    for name, table in TABLES_BY_NAME.items()
    if table.timestamp_columns
}


def _with_timestamps(columns: dict[str, Any], stamps: tuple[str, ...]) -> dict[str, Any]:
    """``columns`` with nanosecond integers of TIMESTAMP columns as ``TimestampMicros`` (ILP ``t``)."""
    converted = columns
    for name in stamps:
        value = columns.get(name)
        if value is not None:
            if converted is columns:
                # The row itself may still be spooled, re-sent or dead-lettered: change a copy.
                converted = dict(columns)
            converted[name] = TimestampMicros(value // 1000)
    return converted


def add_row(buffer: Any, row: Row | list[Any]) -> None:
    """Append one row (a tuple, or the list JSON made of it) to a questdb ``Buffer``."""
    table, ts, symbols, columns = row
    stamps = _TIMESTAMP_COLUMNS.get(table)
    if stamps is not None:
        columns = _with_timestamps(columns, stamps)
    buffer.row(table, symbols=symbols, columns=columns, at=TimestampNanos(ts))


def as_row(item: Item) -> Row | list[Any]:
    """The row of an item: built from an event, or the row itself."""
    if isinstance(item, tuple | list):
        return item
    return row_for(item)


# --- the wire form, to the ILP writer process ------------------------------------------------------------
# An event crosses the pipe as (class index, field values): attrgetter builds that tuple in C, and a tuple
# of plain values pickles in 0.23 us where the event itself takes 3.1 us and its row 0.5 us (timeit). The
# row is then built in the writer process, off the event loop's GIL. A row stays as it is (4 items, where
# an event's wire form has 2).
WIRE_CLASSES: tuple[type, ...] = (
    Quote,
    DepthUpdate,
    Trade,
    EconomicObservation,
    IngestionEvent,
    HistoricalBar,
)
_TO_WIRE = {
    cls: (index, attrgetter(*(f.name for f in fields(cls)))) for index, cls in enumerate(WIRE_CLASSES)
}
_WIRE_TYPES = frozenset(WIRE_CLASSES)


def holdable(items: Sequence[Any]) -> Sequence[Item]:
    """``items`` as the writer may hold them: events of the exact classes stay, anything else becomes its row
    now, so a subclass still works and a non-event raises TypeError in ``accept``, not in the writer."""
    if _WIRE_TYPES.issuperset(map(type, items)):
        return items
    return [item if type(item) in _WIRE_TYPES else row_for(item) for item in items]


def to_wire(items: Sequence[Item]) -> list[Any]:
    """Items for the pipe: events in their wire form, rows as they are."""
    wire = _TO_WIRE
    out: list[Any] = []
    append = out.append
    for item in items:
        form = wire.get(type(item))
        append(item if form is None else (form[0], form[1](item)))
    return out


def from_wire(items: Sequence[Any]) -> list[Row | list[Any]]:
    """The rows of what :func:`to_wire` sent."""
    classes = WIRE_CLASSES
    return [row_for(classes[item[0]](*item[1])) if len(item) == 2 else item for item in items]
