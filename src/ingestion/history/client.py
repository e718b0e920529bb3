"""Historical requests over the supervisor's live IB connection, each through the pacer.

ib_async ends a failed request with an empty result and reports the error on ``errorEvent``; each
request here gets its own copy of the contract, so the error that names that very object is this
request's. IB's answers are classified into the exceptions below; what the caller does with each
(wait, retry, report) is in backfill.py and bars.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ib_async import IB, Contract

from ingestion.history.pacer import PacedRequest, Pacer
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.metrics import Metrics

TICKS_PER_REQUEST = 1000
PACING_VIOLATION = "pacing violation"
NO_DATA = "no data"


class HistoryError(Exception):
    """A historical request did not succeed."""

    retry = True


class NotConnected(HistoryError):
    """No live IB connection (or it dropped during the request): try again once connected."""


class RequestTimedOut(HistoryError):
    """No answer in time (the HMDS farm is down, or the gateway stalls)."""


class HmdsDown(RequestTimedOut):
    """IB says its historical data farm is down (2105): nothing is sent until it is back (2106)."""


class PacingViolation(HistoryError):
    """IB answered 162 for pacing."""


class NoData(HistoryError):
    """IB has nothing for the request ("HMDS query returned no data")."""

    retry = False


class Refused(HistoryError):
    """IB refused the request for what it is (unknown contract, invalid parameters)."""

    retry = False


class ConnectionSource(Protocol):
    """What the client needs of the connection supervisor: its live ``IB`` object, or None."""

    @property
    def ib(self) -> IB | None: ...


class HistoryClient:
    """reqHistoricalTicks, reqHistoricalData and reqHeadTimeStamp, paced and classified."""

    def __init__(
        self,
        connection: ConnectionSource,
        registry: SubscriptionRegistry,
        pacer: Pacer,
        metrics: Metrics,
        *,
        timeout_seconds: float,
        hmds_down: Callable[[], bool] = lambda: False,
    ) -> None:
        self._hmds_down = hmds_down
        self._connection = connection
        self._registry = registry
        self._pacer = pacer
        self._metrics = metrics
        self._timeout = timeout_seconds

    def contract(self, symbol: str) -> Contract | None:
        streams = self._registry.streams.get(symbol)
        return streams.contract if streams is not None else None

    async def trade_ticks(self, symbol: str, start: int, what: str = "TRADES") -> list[Any]:
        """Up to 1,000 historical trades from second ``start`` on (more to complete the last second)."""
        moment = datetime.fromtimestamp(start, UTC)
        paced = PacedRequest((symbol, "ticks", what, start), (symbol, what), 2 if what == "BID_ASK" else 1)

        def send(ib: IB, contract: Contract) -> Awaitable[Any]:
            return ib.reqHistoricalTicksAsync(contract, moment, "", TICKS_PER_REQUEST, what, False)

        return await self._request(symbol, "ticks", paced, send)

    async def bars(
        self, symbol: str, end: datetime | None, duration: str, bar_size: str, what: str, use_rth: bool
    ) -> list[Any]:
        """Bars of ``bar_size`` over ``duration`` ending at ``end`` (None: now); dates in UTC."""
        paced = PacedRequest(
            (symbol, "bars", end, duration, bar_size, what, use_rth),
            (symbol, what),
            2 if what == "BID_ASK" else 1,
        )

        def send(ib: IB, contract: Contract) -> Awaitable[Any]:
            return ib.reqHistoricalDataAsync(
                contract, end or "", duration, bar_size, what, use_rth, formatDate=2, timeout=0
            )

        return await self._request(symbol, "bars", paced, send)

    async def _request(
        self,
        symbol: str,
        kind: str,
        paced: PacedRequest,
        send: Callable[[IB, Contract], Awaitable[Any]],
    ) -> list[Any]:
        qualified = self.contract(symbol)
        if qualified is None:
            raise NotConnected(f"{symbol} is not qualified yet")
        if self._hmds_down():
            # A request now would wait unanswered in the gateway, holding one of IB's 50 open slots.
            raise HmdsDown("IB's historical data farm is down (2105); waiting for it (2106)")
        async with self._pacer.slot(paced):
            ib = self._connection.ib
            if ib is None or not ib.isConnected():
                raise NotConnected("not connected to IBKR")
            contract = copy.copy(qualified)
            errors: list[tuple[int, str]] = []

            def on_error(_request_id: int, code: int, text: str, about: Any) -> None:
                if about is contract:
                    errors.append((code, text))

            ib.errorEvent += on_error
            self._metrics.history_requests.labels(kind).inc()
            try:
                async with asyncio.timeout(self._timeout):
                    result = await send(ib, contract)
            except TimeoutError as exc:
                msg = f"no answer within {self._timeout:g} s (is the HMDS farm down?)"
                raise RequestTimedOut(msg) from exc
            except ConnectionError as exc:
                raise NotConnected(f"connection lost during the request: {exc}") from exc
            finally:
                ib.errorEvent -= on_error
        if errors:
            code, text = errors[0]
            lowered = text.lower()
            if code == 162 and PACING_VIOLATION in lowered:
                raise PacingViolation(f"{code}: {text}")
            if NO_DATA in lowered:
                raise NoData(f"{code}: {text}")
            if code in (1100, 2105, 2103):
                raise RequestTimedOut(f"{code}: {text}")
            raise Refused(f"{code}: {text}")
        return list(result or [])
