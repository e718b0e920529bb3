"""One pacer for every historical request, keeping within IB's limits by construction.

IB answers error 162 ("Historical data request pacing violation") when a client

- sends a request identical to one of the last 15 seconds,
- sends six or more requests for the same contract, exchange and tick type within two seconds,
- sends more than 60 requests within any ten minutes (a BID_ASK request counts twice),

and it serves at most 50 requests at once. :meth:`Pacer.slot` waits until a request breaks none of
these (with the margins of :class:`~ingestion.config.PacingConfig`), then records it; callers hold the
slot while the request is open. Waits are FIFO, so no caller starves. A 162 that comes anyway (another
client of the same gateway, a gateway restarted with our requests still counted) is met with
:meth:`Pacer.penalise`: nothing is sent until the penalty is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ingestion.config import PacingConfig

GROUP_WINDOW_SECONDS = 2.0
TEN_MINUTES = 600.0
# Added to IB's windows: the gateway's clock and ours see the same send a little apart.
WINDOW_MARGIN_SECONDS = 0.5

Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PacedRequest:
    """What the pacer needs to know of one request.

    ``identity`` is every parameter of the request (two equal identities are IB's "identical requests");
    ``group`` is (contract, exchange, tick type); ``cost`` is 2 for BID_ASK, else 1.
    """

    identity: Hashable
    group: Hashable
    cost: int = 1


class Pacer:
    """Admits historical requests at the pace IB allows."""

    def __init__(
        self,
        config: PacingConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_wait: Callable[[], Any] | None = None,
    ) -> None:
        self._config = config
        self._on_wait = on_wait
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()  # FIFO: the first to wait is the first admitted
        self._open = 0
        self._opened = asyncio.Event()
        self._sent: deque[tuple[float, int]] = deque()  # (when, cost), the last ten minutes
        self._by_group: dict[Hashable, deque[float]] = {}
        self._by_identity: dict[Hashable, float] = {}
        self._blocked_until = 0.0
        self.sent = 0
        self.waits = 0
        self.waited_seconds = 0.0

    @contextlib.asynccontextmanager
    async def slot(self, request: PacedRequest) -> AsyncIterator[None]:
        """Wait until ``request`` may go, count it as sent, and hold one of the open slots meanwhile."""
        async with self._lock:
            while (wait := self.wait_for(request)) > 0:
                self.waits += 1
                self.waited_seconds += wait
                if self._on_wait is not None:
                    self._on_wait()
                await self._sleep(wait)
            while self._open >= self._config.max_open:
                self._opened.clear()
                await self._opened.wait()
            self._record(request)
        try:
            yield
        finally:
            self._open -= 1
            self._opened.set()

    def wait_for(self, request: PacedRequest) -> float:
        """Seconds until ``request`` breaks none of IB's rules; 0 when it may go now."""
        now = self._clock()
        self._forget(now)
        config = self._config
        waits = [self._blocked_until - now]
        last_identical = self._by_identity.get(request.identity)
        if last_identical is not None:
            waits.append(last_identical + config.identical_seconds - now)
        group = self._by_group.get(request.group)
        if group is not None and len(group) >= config.per_contract_in_2_seconds:
            waits.append(
                group[-config.per_contract_in_2_seconds] + GROUP_WINDOW_SECONDS + WINDOW_MARGIN_SECONDS - now
            )
        waits.append(self._ten_minute_wait(request.cost, now))
        return max(0.0, *waits)

    def penalise(self, seconds: float) -> None:
        """IB answered 162 anyway: send nothing for ``seconds``."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def used_in_ten_minutes(self) -> int:
        self._forget(self._clock())
        return sum(cost for _, cost in self._sent)

    def _ten_minute_wait(self, cost: int, now: float) -> float:
        budget = self._config.requests_per_10_minutes
        used = sum(c for _, c in self._sent)
        if used + cost <= budget:
            return 0.0
        # The oldest sends leave the window first: wait until enough of them have.
        free = budget - used
        for when, spent in self._sent:
            free += spent
            if free >= cost:
                return when + TEN_MINUTES + WINDOW_MARGIN_SECONDS - now
        return TEN_MINUTES  # a cost above the whole budget: never happens with costs 1 and 2

    def _record(self, request: PacedRequest) -> None:
        now = self._clock()
        self._open += 1
        self.sent += 1
        self._sent.append((now, request.cost))
        self._by_group.setdefault(request.group, deque()).append(now)
        self._by_identity[request.identity] = now

    def _forget(self, now: float) -> None:
        horizon = now - TEN_MINUTES - WINDOW_MARGIN_SECONDS
        while self._sent and self._sent[0][0] <= horizon:
            self._sent.popleft()
        for key, sends in list(self._by_group.items()):
            while sends and sends[0] <= now - GROUP_WINDOW_SECONDS - WINDOW_MARGIN_SECONDS:
                sends.popleft()
            if not sends:
                del self._by_group[key]
        identical = self._config.identical_seconds
        for key, when in list(self._by_identity.items()):
            if when + identical <= now:
                del self._by_identity[key]
