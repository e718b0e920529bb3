"""The pacer sends nothing IB would answer with 162, and never waits longer than its rules require."""

from __future__ import annotations

import asyncio

from ingestion.config import PacingConfig
from ingestion.history.pacer import GROUP_WINDOW_SECONDS, TEN_MINUTES, PacedRequest, Pacer


class FakeTime:
    """A clock that moves only when the pacer sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make_pacer(**overrides: object) -> tuple[Pacer, FakeTime]:
    fake = FakeTime()
    return Pacer(PacingConfig(**overrides), clock=fake.clock, sleep=fake.sleep), fake


def request(n: int, contract: str = "SPY", kind: str = "TRADES") -> PacedRequest:
    return PacedRequest(
        identity=(contract, kind, n), group=(contract, "SMART", kind), cost=2 if kind == "BID_ASK" else 1
    )


async def send(pacer: Pacer, req: PacedRequest, fake: FakeTime) -> float:
    async with pacer.slot(req):
        return fake.now


def violates_ib(sends: list[tuple[float, PacedRequest]]) -> str | None:
    """IB's three rules, checked on a record of (time, request)."""
    for i, (at, req) in enumerate(sends):
        earlier = sends[:i]
        if any(r.identity == req.identity and at - t < 15 for t, r in earlier):
            return f"identical within 15 s at {at}"
        if sum(1 for t, r in earlier if r.group == req.group and at - t < 2) + 1 >= 6:
            return f"six for one contract within 2 s at {at}"
        if sum(r.cost for t, r in earlier if at - t < 600) + req.cost > 60:
            return f"more than 60 in ten minutes at {at}"
    return None


async def test_a_burst_for_one_contract_goes_five_at_a_time() -> None:
    pacer, fake = make_pacer()
    sends = [(await send(pacer, request(n), fake), request(n)) for n in range(12)]
    assert violates_ib(sends) is None
    assert [t - 1000 for t, _ in sends[:5]] == [0, 0, 0, 0, 0]
    assert sends[5][0] - sends[0][0] == GROUP_WINDOW_SECONDS + 0.5  # waits only as long as the rule says


async def test_different_contracts_do_not_wait_for_each_other() -> None:
    pacer, fake = make_pacer()
    for n, symbol in enumerate(["SPY", "QQQ", "IWM", "DIA", "XLK", "XLF", "XLE", "XLV"]):
        await send(pacer, request(n, symbol), fake)
    assert fake.slept == []


async def test_an_identical_request_waits_fifteen_seconds() -> None:
    pacer, fake = make_pacer()
    first = await send(pacer, request(1), fake)
    again = await send(pacer, request(1), fake)
    assert again - first >= 15


async def test_sixty_in_ten_minutes_then_the_oldest_must_leave_the_window() -> None:
    pacer, fake = make_pacer()
    symbols = [f"S{i}" for i in range(70)]
    sends = [(await send(pacer, request(0, s), fake), request(0, s)) for s in symbols]
    assert violates_ib(sends) is None
    assert sends[59][0] == 1000.0
    assert sends[60][0] >= 1000.0 + TEN_MINUTES
    assert pacer.waits >= 1


async def test_bid_ask_counts_twice() -> None:
    pacer, fake = make_pacer()
    sends = [
        (await send(pacer, request(0, f"S{i}", "BID_ASK"), fake), request(0, f"S{i}", "BID_ASK"))
        for i in range(31)
    ]
    assert violates_ib(sends) is None
    assert sends[29][0] == 1000.0
    assert sends[30][0] > 1000.0 + TEN_MINUTES - 1


async def test_a_mixed_load_of_a_thousand_requests_never_breaks_a_rule() -> None:
    pacer, fake = make_pacer()
    sends = []
    for n in range(300):
        req = request(n % 7, ["SPY", "QQQ", "IWM"][n % 3], "BID_ASK" if n % 5 == 0 else "TRADES")
        sends.append((await send(pacer, req, fake), req))
    assert violates_ib(sends) is None


async def test_a_penalty_after_162_holds_every_request() -> None:
    pacer, fake = make_pacer()
    await send(pacer, request(1), fake)
    pacer.penalise(30)
    at = await send(pacer, request(2, "QQQ"), fake)
    assert at >= 1030


async def test_at_most_max_open_requests_are_open_at_once() -> None:
    pacer, _ = make_pacer(max_open=2)
    release = asyncio.Event()
    open_now = 0
    most = 0

    async def one(n: int) -> None:
        nonlocal open_now, most
        async with pacer.slot(request(0, f"S{n}")):
            open_now += 1
            most = max(most, open_now)
            await release.wait()
            open_now -= 1

    tasks = [asyncio.create_task(one(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert open_now == 2
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2
