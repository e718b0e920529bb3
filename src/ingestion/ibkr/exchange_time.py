"""Give trades IB's own exchange time back.

ib_async 2.1 stamps ``TickByTickAllLast.time`` with the time the socket read happened and drops
the exchange time that IB sends (ib_insync kept it), and stamps RTVolume ``TickData`` the same
way although RTVolume carries the trade time in milliseconds. ``time_and_sales.exchange_time``
needs IB's time, so :func:`restore_exchange_times` wraps the two wrapper methods of one ``IB``
instance: each calls the original, then puts IB's time on the tick it appended. Nothing global
is patched; the decoder looks the methods up on the instance at call time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ib_async import IB

RTVOLUME_TICK_TYPES = frozenset({48, 77})


def restore_exchange_times(ib: IB) -> None:
    wrapper = ib.wrapper
    tick_by_tick_all_last = wrapper.tickByTickAllLast
    tick_string = wrapper.tickString

    def on_tick_by_tick_all_last(req_id: int, tick_type: int, time: int, *rest: Any) -> None:
        tick_by_tick_all_last(req_id, tick_type, time, *rest)
        ticker = wrapper.reqId2Ticker.get(req_id)
        if ticker is not None and ticker.tickByTicks:
            ticker.tickByTicks[-1] = ticker.tickByTicks[-1]._replace(time=datetime.fromtimestamp(time, UTC))

    def on_tick_string(req_id: int, tick_type: int, value: str) -> None:
        ticker = wrapper.reqId2Ticker.get(req_id)
        before = len(ticker.ticks) if ticker is not None else 0
        tick_string(req_id, tick_type, value)
        if ticker is None or tick_type not in RTVOLUME_TICK_TYPES or len(ticker.ticks) == before:
            return
        exchange_time = _rtvolume_time(value)
        if exchange_time is not None:
            ticker.ticks[-1] = ticker.ticks[-1]._replace(time=exchange_time)

    wrapper.tickByTickAllLast = on_tick_by_tick_all_last
    wrapper.tickString = on_tick_string


def _rtvolume_time(value: str) -> datetime | None:
    # price;size;ms since epoch;total volume;VWAP;single trade
    parts = value.split(";")
    if len(parts) < 3 or not parts[2].isdigit():
        return None
    return datetime.fromtimestamp(int(parts[2]) / 1000, UTC)
