"""IB's pacing rules for historical data requests (TWS API docs, "Historical Data Limitations").

A request is a pacing violation (error 162) when it is
- identical to one made within the last 15 seconds,
- the sixth or more for the same contract, exchange and tick type within two seconds, or
- beyond 60 requests within ten minutes;
a BID_ASK request counts twice. Only requests that were let through are counted: a client that
waits after a violation is served again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

IDENTICAL_SECONDS: Final = 15.0
SAME_CONTRACT_SECONDS: Final = 2.0
SAME_CONTRACT_LIMIT: Final = 6  # this many within the window is a violation
WINDOW_SECONDS: Final = 600.0
WINDOW_LIMIT: Final = 60  # more than this many within the window is a violation


class Pacer:
    """Decides, request by request, whether IB would call it a pacing violation."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._identical: dict[Hashable, float] = {}
        self._by_contract: dict[Hashable, deque[tuple[float, int]]] = {}
        self._window: deque[tuple[float, int]] = deque()
        self._window_weight = 0

    def admit(self, identity: Hashable, contract: Hashable, weight: int) -> bool:
        """Count the request and return True, or return False (a violation, not counted).

        ``identity`` names the whole request, ``contract`` its contract, exchange and tick type;
        ``weight`` is 2 for BID_ASK, 1 otherwise.
        """
        now = self._clock()
        self._expire(now)
        last = self._identical.get(identity)
        if last is not None and now - last < IDENTICAL_SECONDS:
            return False
        recent = self._by_contract.setdefault(contract, deque())
        if sum(w for _, w in recent) + weight >= SAME_CONTRACT_LIMIT:
            return False
        if self._window_weight + weight > WINDOW_LIMIT:
            return False
        self._identical[identity] = now
        recent.append((now, weight))
        self._window.append((now, weight))
        self._window_weight += weight
        return True

    def _expire(self, now: float) -> None:
        window = self._window
        while window and now - window[0][0] >= WINDOW_SECONDS:
            self._window_weight -= window.popleft()[1]
        for key, recent in list(self._by_contract.items()):
            while recent and now - recent[0][0] >= SAME_CONTRACT_SECONDS:
                recent.popleft()
            if not recent:
                del self._by_contract[key]
        if len(self._identical) > 1000:
            self._identical = {k: t for k, t in self._identical.items() if now - t < IDENTICAL_SECONDS}
