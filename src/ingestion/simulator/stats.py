"""Exact counts of what the simulator sent, by message kind and symbol (GET /stats)."""

from __future__ import annotations

from typing import Final

# Message kinds. Trades a consumer stores are exactly TRADE_KINDS; depth rows are DEPTH.
TICK_PRICE: Final = "tick_price"
TICK_SIZE: Final = "tick_size"
TICK_STRING: Final = "tick_string"
RTVOLUME: Final = "rtvolume"
TICK_REQ_PARAMS: Final = "tick_req_params"
MARKET_DATA_TYPE: Final = "market_data_type"
TICK_SNAPSHOT_END: Final = "tick_snapshot_end"
DEPTH: Final = "depth"
DEPTH_RESET: Final = "depth_reset"
TBT_LAST: Final = "tick_by_tick_last"
TBT_ALL_LAST: Final = "tick_by_tick_all_last"
TBT_BID_ASK: Final = "tick_by_tick_bid_ask"
TBT_MIDPOINT: Final = "tick_by_tick_midpoint"
CONTRACT_DATA: Final = "contract_data"
ERROR: Final = "error"

SYMBOL_KINDS: Final = (
    TICK_PRICE,
    TICK_SIZE,
    TICK_STRING,
    RTVOLUME,
    TICK_REQ_PARAMS,
    MARKET_DATA_TYPE,
    TICK_SNAPSHOT_END,
    DEPTH,
    DEPTH_RESET,
    TBT_LAST,
    TBT_ALL_LAST,
    TBT_BID_ASK,
    TBT_MIDPOINT,
    CONTRACT_DATA,
)
TRADE_KINDS: Final = (TBT_LAST, TBT_ALL_LAST, RTVOLUME)


class Stats:
    """Message counters; the hot path increments plain dicts it was handed once."""

    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[str, int]] = {}
        self._other: dict[str, int] = {}

    def for_symbol(self, symbol: str) -> dict[str, int]:
        """The counter dict of one symbol (kept for the simulator's lifetime, reset in place)."""
        counts = self._by_symbol.get(symbol)
        if counts is None:
            counts = dict.fromkeys(SYMBOL_KINDS, 0)
            self._by_symbol[symbol] = counts
        return counts

    def count(self, kind: str, n: int = 1) -> None:
        """Count a message that belongs to no symbol (handshake, errors, account messages...)."""
        self._other[kind] = self._other.get(kind, 0) + n

    def reset(self) -> None:
        """Zero every counter in place: markets and subscriptions hold the per-symbol dicts."""
        for counts in self._by_symbol.values():
            for kind in counts:
                counts[kind] = 0
        self._other.clear()

    def snapshot(self) -> dict[str, object]:
        """``{"by_kind": {...}, "by_symbol": {sym: {kind: n}}, "trades": {sym: n}, "total": n}``."""
        by_kind = dict(self._other)
        by_symbol: dict[str, dict[str, int]] = {}
        trades: dict[str, int] = {}
        for symbol, counts in self._by_symbol.items():
            by_symbol[symbol] = dict(counts)
            trades[symbol] = sum(counts[kind] for kind in TRADE_KINDS)
            for kind, n in counts.items():
                by_kind[kind] = by_kind.get(kind, 0) + n
        return {
            "by_kind": by_kind,
            "by_symbol": by_symbol,
            "trades": trades,
            "total": sum(by_kind.values()),
        }
