"""Helpers shared by the simulator tests (importable; fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.server import Simulator
from waiting import wait_for

BASE_CONFIG = SimulatorConfig(port=0, control_port=0, rate=20_000.0)

SimFactory = Callable[..., AbstractAsyncContextManager[Simulator]]


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``within`` seconds."""
    await wait_for(predicate, within, "the simulator test's condition", poll=0.01)


class IbClient:
    """An unmodified ib_async connection and every error it reported: (reqId, code, text)."""

    def __init__(self) -> None:
        from ib_async import IB

        self.ib = IB()
        self.errors: list[tuple[int, int, str]] = []
        self.ib.errorEvent += lambda req_id, code, msg, contract: self.errors.append((req_id, code, msg))

    @classmethod
    async def connect(cls, sim: Simulator, client_id: int = 1) -> IbClient:
        client = cls()
        await client.ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=5)
        return client

    def codes(self, req_id: int | None = None) -> list[int]:
        """Error codes (farm notices left out), of one request when ``req_id`` is given."""
        return [c for r, c, _ in self.errors if not 2100 <= c < 2200 and (req_id is None or r == req_id)]
