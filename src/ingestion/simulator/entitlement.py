"""What the simulated account may see: live, delayed or no market data, and how IB says so.

IB's behaviour (TWS API docs, "Market Data Types" and "Delayed Streaming Data"; the answers as
clients log them):

- reqMarketDataType sets the type of later reqMktData requests of that client: 1 live, 2 frozen,
  3 delayed, 4 delayed-frozen. The default is 1.
- An account with live data gets live data whatever it asked for ("if live data is available, it
  will always be returned instead of delayed data"), and since TWS 970 a marketDataType message
  (58) of 1 (2 when frozen was asked) follows every reqMktData.
- An account without a live subscription that asked for 3 or 4 gets the marketDataType 3 (or 4),
  the warning 10167 "Requested market data is not subscribed. Displaying delayed market data." and
  then the delayed tick types: 66-76 for bid, ask, last, their sizes, high, low, volume, close and
  open, 88 for the last timestamp. Delayed data takes only a few generic ticks (101, 106, 165, 221,
  232, 236, 258): no RTVolume (233).
- The same account asking for live data (type 1 or 2) gets error 354 "Requested market data is not
  subscribed.Delayed market data is available." followed by the contract's venue, and no data.
- An account with no market data permission at all gets 354 without the delayed hint for type 1
  or 2, and 10168 "Requested market data is not subscribed. Delayed market data is not enabled."
  for 3 or 4.
- Market depth and tick-by-tick have no delayed form: without a live subscription both are refused
  with 354, whatever the market data type.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ingestion.simulator.contracts import ContractSpec
from ingestion.simulator.market import MarketData
from ingestion.simulator.protocol import ErrorCode, TickType


class Entitlement(enum.StrEnum):
    """The account's market data permissions (``--entitlement``, ``POST /entitlement``)."""

    LIVE = "live"
    DELAYED = "delayed"
    NONE = "none"


NOT_SUBSCRIBED: Final = ErrorCode.NOT_SUBSCRIBED
DISPLAYING_DELAYED: Final = 10167
DELAYED_NOT_ENABLED: Final = 10168

_NOT_SUBSCRIBED_TEXT: Final = "Requested market data is not subscribed."
_DELAYED_AVAILABLE_TEXT: Final = "Delayed market data is available."
_DISPLAYING_DELAYED_TEXT: Final = "Requested market data is not subscribed. Displaying delayed market data."
_DELAYED_NOT_ENABLED_TEXT: Final = (
    "Requested market data is not subscribed. Delayed market data is not enabled."
)

# marketDataType as IB reports it for each requested type, on an account with live data.
_LIVE_REPORTED: Final = {1: 1, 2: 2, 3: 1, 4: 2}
_DELAYED_TYPES: Final = frozenset({3, 4})

# Live tick type -> IB's delayed tick type (TWS API "Available Tick Types").
DELAYED_TICK_TYPES: Final = {
    TickType.BID: 66,
    TickType.ASK: 67,
    TickType.LAST: 68,
    TickType.BID_SIZE: 69,
    TickType.ASK_SIZE: 70,
    TickType.LAST_SIZE: 71,
    TickType.HIGH: 72,
    TickType.LOW: 73,
    TickType.VOLUME: 74,
    TickType.CLOSE: 75,
    TickType.OPEN: 76,
    TickType.LAST_TIMESTAMP: 88,
}


def parse_entitlement(value: str) -> Entitlement:
    """``live``, ``delayed`` or ``none``; ValueError for anything else."""
    try:
        return Entitlement(value)
    except ValueError:
        msg = f"entitlement must be one of {', '.join(e.value for e in Entitlement)}, got {value[:20]!r}"
        raise ValueError(msg) from None


@dataclass(frozen=True, slots=True)
class MarketDataAnswer:
    """How IB answers one reqMktData: an error first (or instead), then data of ``data_type``."""

    error: tuple[int, str] | None
    data_type: int | None  # the marketDataType (58) to report; None: no data at all
    delayed: bool = False


def _venue(spec: ContractSpec) -> str:
    return f"{spec.symbol} {spec.primary_exchange}/TOP/ALL"


def live_data_type(requested_type: int) -> int:
    """The marketDataType an account with live data is reported for ``requested_type``."""
    return _LIVE_REPORTED.get(requested_type, 1)


def market_data_answer(entitlement: Entitlement, requested_type: int, spec: ContractSpec) -> MarketDataAnswer:
    """IB's answer to reqMktData on ``spec`` after reqMarketDataType(``requested_type``)."""
    if entitlement is Entitlement.LIVE:
        return MarketDataAnswer(None, live_data_type(requested_type))
    wants_delayed = requested_type in _DELAYED_TYPES
    if entitlement is Entitlement.DELAYED:
        if wants_delayed:
            return MarketDataAnswer(
                (DISPLAYING_DELAYED, _DISPLAYING_DELAYED_TEXT), requested_type, delayed=True
            )
        text = f"{_NOT_SUBSCRIBED_TEXT}{_DELAYED_AVAILABLE_TEXT}{_venue(spec)}"
        return MarketDataAnswer((NOT_SUBSCRIBED, text), None)
    if wants_delayed:
        return MarketDataAnswer((DELAYED_NOT_ENABLED, _DELAYED_NOT_ENABLED_TEXT), None)
    return MarketDataAnswer((NOT_SUBSCRIBED, f"{_NOT_SUBSCRIBED_TEXT}{_venue(spec)}"), None)


def live_only_refusal(entitlement: Entitlement, spec: ContractSpec) -> tuple[int, str] | None:
    """IB's refusal of market depth or tick-by-tick (no delayed form) without live data; else None."""
    if entitlement is Entitlement.LIVE:
        return None
    return NOT_SUBSCRIBED, f"{_NOT_SUBSCRIBED_TEXT}{_venue(spec)}"


class DelayedMarketData(MarketData):
    """Level 1 as a delayed-data account receives it: the tape's events under IB's delayed tick types.

    The market model stays one piece of code: only the tick type of each rendered frame changes.
    Built without RTVolume, which delayed data lacks.
    """

    __slots__ = ()

    def _price(self, tick: int, cents: int, size: int) -> bytes:
        return super()._price(DELAYED_TICK_TYPES.get(tick, tick), cents, size)  # type: ignore[call-overload]

    def _size(self, tick: int, size: int) -> bytes:
        return super()._size(DELAYED_TICK_TYPES.get(tick, tick), size)  # type: ignore[call-overload]

    def _string(self, tick: int, text: str) -> bytes:
        return super()._string(DELAYED_TICK_TYPES.get(tick, tick), text)  # type: ignore[call-overload]
