"""Test helper: IB's market data messages, as bytes, through a real ib_async client wired as the daemon's.

The client is past its handshake and has no socket; ``read`` hands it one socket read, the way
asyncio would, so each message goes through ib_async's framing and decoder table into the daemon's
normaliser exactly as in production (the supervisor's ``tap_market_data`` and sliced reads).
"""

from __future__ import annotations

from collections.abc import Sequence

from ib_async import IB

from ingestion.bus import EventBus
from ingestion.config import DataType, Settings, SymbolConfig
from ingestion.events import MarketEvent, ReceiveClock
from ingestion.ibkr.normalise import Normaliser, tap_market_data
from ingestion.ibkr.reads import bound_socket_reads
from ingestion.ibkr.subscriptions import SubscriptionRegistry, TradeSource
from ingestion.metrics import Metrics
from ingestion.simulator.protocol import encode

SERVER_VERSION = 178
# The request ids the wired client's SPY streams answer on.
L1, DEPTH, TICK_BY_TICK = 1, 2, 3


def past_handshake(ib: IB) -> IB:
    """``ib`` as ib_async leaves it once the API is ready, with no socket behind it."""
    client = ib.client
    client._serverVersion = SERVER_VERSION
    client.decoder.serverVersion = SERVER_VERSION
    client._apiReady = True
    return ib


class WiredClient:
    """SPY with Level 1 (request 1), depth (2) and tick-by-tick (3), trades from ``source``."""

    def __init__(
        self,
        source: TradeSource = "tick_by_tick",
        data: Sequence[DataType] = ("l1", "l2", "time_and_sales"),
        metrics: Metrics | None = None,
    ) -> None:
        settings = Settings(universe=(SymbolConfig(symbol="SPY", data=tuple(data)),))
        self.metrics = metrics or Metrics()
        self.registry = SubscriptionRegistry(settings, EventBus(), self.metrics)
        streams = self.registry.streams["SPY"]
        if streams.time_and_sales is not None:
            streams.time_and_sales.source = source  # as the subscription plan would set it
        for request_id, kind in ((L1, "l1"), (DEPTH, "l2"), (TICK_BY_TICK, "tick_by_tick")):
            self.registry.record_request(request_id, "SPY", kind)
        self.events: list[MarketEvent] = []
        self.batches = 0
        self.normaliser = Normaliser(self.registry, self._take, ReceiveClock(), self.metrics)
        self.ib = past_handshake(IB())
        tap_market_data(self.ib, self.normaliser)
        bound_socket_reads(self.ib)

    def _take(self, events: list[MarketEvent]) -> None:
        self.batches += 1
        self.events.extend(events)

    def read(self, *messages: Sequence[object]) -> list[MarketEvent]:
        """Hand the client one socket read holding ``messages``; returns the events it gave."""
        before = len(self.events)
        self.ib.client.conn.data_received(b"".join(encode(m) for m in messages))
        return self.events[before:]


# Messages, as their fields (see ingestion/ibkr/normalise.py for the layouts).
def tick_price(tick_type: int, price: object, size: object, request_id: int = L1) -> tuple[object, ...]:
    return (1, 6, request_id, tick_type, price, size, 0)


def tick_size(tick_type: int, size: object, request_id: int = L1) -> tuple[object, ...]:
    return (2, 6, request_id, tick_type, size)


def rtvolume(price: object, size: object, millis: int, request_id: int = L1) -> tuple[object, ...]:
    return (46, 6, request_id, 48, f"{price};{size};{millis};1000;{price};true")


def depth_l2(
    position: int, maker: str, operation: int, side: int, price: object, size: object
) -> tuple[object, ...]:
    return (13, 1, DEPTH, position, maker, operation, side, price, size, 1)


def all_last(
    seconds: int, price: object, size: object, mask: int = 0, exchange: str = "ARCA", conditions: str = ""
) -> tuple[object, ...]:
    return (99, TICK_BY_TICK, 2, seconds, price, size, mask, exchange, conditions)
