"""IB system messages change state without dropping the socket."""

from __future__ import annotations

import asyncio

from ibkr_harness import ibkr_stack, wait_for

FULL = {"active": 33, "pending": 0, "rejected": 0, "skipped": 12}


async def test_1100_marks_ib_connectivity_lost_and_degraded() -> None:
    """1100: still connected to the gateway, but IB's own connectivity is lost: degraded, ALERT."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.registry.counts() == FULL, 10, "subscription")
        await stack.post("/error?code=1100")
        await wait_for(lambda: stack.state.broker_connectivity == "lost", 2, "1100")
        assert stack.state.status == "connected"
        assert stack.state.degraded_reasons == ["IB connectivity lost (1100)"]
        (event,) = stack.events_named("ib_connectivity_lost")
        assert event.alert
        assert event.code == 1100


async def test_1101_resubscribes_everything() -> None:
    """1101 (restored, data lost): IB dropped our streams, so every one is requested again."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.registry.counts() == FULL, 10, "subscription")
        await stack.post("/error?code=1100")
        await stack.post("/error?code=1101")
        await wait_for(lambda: stack.state.broker_connectivity == "ok", 2, "1101")
        before = stack.sink.trades.total() + stack.sink.depth.total()
        # Data flows again only because we resubscribed: the simulator dropped every stream.
        await wait_for(lambda: stack.sink.trades.total() + stack.sink.depth.total() > before + 50, 5, "data")
        await wait_for(lambda: stack.registry.counts() == FULL, 5, "every stream live again")
        assert stack.state.status == "connected"
        assert len([e for e in stack.bus_events if e.event == "ib_connectivity_restored"]) == 1


async def test_1102_keeps_subscriptions_and_loses_nothing() -> None:
    """1102 (restored, data maintained): no resubscription, and data keeps coming."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.registry.counts() == FULL, 10, "subscription")
        await stack.post("/error?code=1100")
        await stack.post("/error?code=1102")
        await wait_for(lambda: stack.state.broker_connectivity == "ok", 2, "1102")
        before = stack.sink.trades.total()
        await wait_for(lambda: stack.sink.trades.total() > before + 20, 5, "data after 1102")
        restored = stack.events_named("ib_connectivity_restored")
        assert len(restored) == 1
        assert "data maintained" in restored[0].detail


async def test_10197_competing_session_is_degraded_and_explained() -> None:
    """10197: another session takes the market data: degraded, with what to do about it."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.registry.counts() == FULL, 10, "subscription")
        await stack.post("/error?code=10197")
        await wait_for(lambda: stack.state.competing_session, 2, "10197")
        assert "competing live session (10197)" in stack.state.degraded_reasons
        (event,) = stack.events_named("competing_session")
        assert event.alert
        assert "Log out there" in event.detail


async def test_farm_broken_and_ok_are_kept_per_farm() -> None:
    """2103 marks the market data farm broken (degraded); 2104 makes it ok again."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.state.status == "connected", 10, "connect")
        await wait_for(lambda: "usfarm" in stack.state.farms, 2, "initial farm notices")
        await stack.post("/error?code=2103")
        await wait_for(lambda: stack.state.farms["usfarm"].state == "broken", 2, "2103")
        assert stack.state.degraded_reasons == ["data farm usfarm broken"]
        await stack.post("/error?code=2104")
        await wait_for(lambda: stack.state.farms["usfarm"].state == "ok", 2, "2104")
        assert stack.state.degraded_reasons == []
        assert set(stack.state.snapshot()["ibkr"]["farms"]) >= {"usfarm", "ushmds", "secdefnj"}


async def test_reconnect_clears_stale_ib_connectivity_state() -> None:
    """A 1100 outstanding when the socket drops does not survive into the next connection."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.registry.counts() == FULL, 10, "subscription")
        await stack.post("/error?code=1100")
        await wait_for(lambda: stack.state.broker_connectivity == "lost", 2, "1100")
        await stack.post("/disconnect")
        await wait_for(lambda: stack.state.reconnects == 1, 10, "reconnect")
        assert stack.state.broker_connectivity == "ok"
        await asyncio.sleep(0)
