"""Subscription plan and states: IB's scarce lines, unknown symbols, missing entitlements."""

from __future__ import annotations

import asyncio

from ibkr_harness import fast_settings, ibkr_stack, universe, wait_for

from ingestion.simulator.config import SimulatorConfig


def states(stack, data_type: str) -> dict[str, str]:
    return {e.symbol: e.state for e in stack.registry.entries() if e.data_type == data_type}


def sim(**overrides) -> SimulatorConfig:
    return SimulatorConfig(port=0, control_port=0, rate=1000, **overrides)


async def test_default_plan_gives_scarce_lines_in_priority_order() -> None:
    """Under the default limits: depth for SPY, QQQ, IWM; tick-by-tick for the same three; the
    other 12 symbols get time & sales from RTVolume and their depth is skipped_limit."""
    async with ibkr_stack() as stack:
        await wait_for(
            lambda: stack.registry.counts()["pending"] == 0 and stack.state.status == "connected", 10, ""
        )
        l2 = states(stack, "l2")
        assert [s for s, state in l2.items() if state == "active"] == ["SPY", "QQQ", "IWM"]
        assert sum(state == "skipped_limit" for state in l2.values()) == 12
        sources = {e.symbol: e.source for e in stack.registry.entries() if e.data_type == "time_and_sales"}
        assert [s for s, src in sources.items() if src == "tick_by_tick"] == ["SPY", "QQQ", "IWM"]
        assert sum(src == "rtvolume" for src in sources.values()) == 12
        assert stack.registry.symbols_subscribed() == 15


async def test_depth_limit_reply_309_ends_in_rejected_limit_without_retry() -> None:
    """If IB allows fewer depth books than configured, the extra one is rejected_limit (309) and
    not asked again on the same connection."""
    settings = lambda port: fast_settings(port, universe=universe("SPY", "QQQ", "IWM"))  # noqa: E731
    async with ibkr_stack(sim(max_depth_books=2), settings=settings) as stack:
        await wait_for(lambda: states(stack, "l2").get("IWM") == "rejected_limit", 10, "309")
        entry = next(e for e in stack.registry.entries() if e.symbol == "IWM" and e.data_type == "l2")
        assert entry.error_code == 309
        errors_before = (await stack.stats())["sent"]["by_kind"].get("error", 0)
        await asyncio.sleep(2)
        assert (await stack.stats())["sent"]["by_kind"].get("error", 0) == errors_before, "no request loop"
        assert states(stack, "l2") == {"SPY": "active", "QQQ": "active", "IWM": "rejected_limit"}


async def test_tick_by_tick_limit_reply_10190_falls_back_to_rtvolume() -> None:
    """A 10190 reply keeps the symbol's time & sales alive from RTVolume, and says why."""
    settings = lambda port: fast_settings(port, universe=universe("SPY", "QQQ", "IWM"))  # noqa: E731
    async with ibkr_stack(sim(max_tick_by_tick=2), settings=settings) as stack:
        await wait_for(
            lambda: stack.sink.trade_sources["IWM", "rtvolume"] > 0, 10, "IWM trades from RTVolume"
        )
        entry = next(
            e for e in stack.registry.entries() if e.symbol == "IWM" and e.data_type == "time_and_sales"
        )
        assert (entry.state, entry.source, entry.error_code) == ("active", "rtvolume", 10190)
        assert stack.sink.trade_sources["SPY", "tick_by_tick"] > 0


async def test_market_data_lines_limit_101() -> None:
    """Beyond IB's market data lines, Level 1 is rejected_limit with code 101."""
    settings = lambda port: fast_settings(port, universe=universe("SPY", "QQQ", "IWM"))  # noqa: E731
    async with ibkr_stack(sim(max_market_data_lines=2), settings=settings) as stack:
        await wait_for(lambda: states(stack, "l1").get("IWM") == "rejected_limit", 10, "101")
        assert states(stack, "l1") == {"SPY": "active", "QQQ": "active", "IWM": "rejected_limit"}


async def test_unknown_symbol_is_invalid_and_the_rest_go_on() -> None:
    """A symbol IB does not know (200) is invalid_symbol for every data type; others subscribe."""
    settings = lambda port: fast_settings(port, universe=universe("SPY", "NOPE", "QQQ"))  # noqa: E731
    async with ibkr_stack(settings=settings) as stack:
        await wait_for(
            lambda: stack.registry.counts()["pending"] == 0 and stack.state.status == "connected", 10, ""
        )
        assert {e.state for e in stack.registry.entries() if e.symbol == "NOPE"} == {"invalid_symbol"}
        assert states(stack, "l2") == {"SPY": "active", "NOPE": "invalid_symbol", "QQQ": "active"}
        assert stack.registry.symbols_subscribed() == 2
        # The scarce lines skipped the invalid symbol: QQQ got NOPE's depth book.
        assert stack.registry.counts()["rejected"] == 3


async def test_not_entitled_symbol_is_reported_with_the_ib_code() -> None:
    """Without a market data subscription IB answers 354: the streams are not_entitled."""
    settings = lambda port: fast_settings(port, universe=universe("SPY", "QQQ"))  # noqa: E731
    async with ibkr_stack(sim(not_entitled=frozenset({"QQQ"})), settings=settings) as stack:
        await wait_for(lambda: states(stack, "l1").get("QQQ") == "not_entitled", 10, "354")
        qqq = {e.data_type: (e.state, e.error_code) for e in stack.registry.entries() if e.symbol == "QQQ"}
        assert qqq == {
            "l1": ("not_entitled", 354),
            "l2": ("not_entitled", 354),
            "time_and_sales": ("not_entitled", 354),
        }
        assert states(stack, "l1")["SPY"] == "active"


async def test_rejections_are_retried_after_a_reconnect() -> None:
    """A rejected subscription is asked again after a reconnect, not before."""
    settings = lambda port: fast_settings(port, universe=universe("SPY", "QQQ", "IWM"))  # noqa: E731
    async with ibkr_stack(sim(max_depth_books=2), settings=settings) as stack:
        await wait_for(lambda: states(stack, "l2").get("IWM") == "rejected_limit", 10, "309")
        await stack.post("/disconnect")
        await wait_for(lambda: stack.state.reconnects == 1, 10, "reconnect")
        # reconnects moves before the new session's subscribe_all resets IWM to pending, so the old
        # rejected_limit would pass for the new one: wait for the second rejection itself.
        await wait_for(lambda: len(stack.events_named("subscription_rejected")) == 2, 10, "309 again")
        assert states(stack, "l2")["IWM"] == "rejected_limit"


def test_ibs_delayed_available_answers_make_level1_delayed_and_depth_not_entitled() -> None:
    """354 or 10089 "...Delayed market data is available." to a live Level 1 request: the account
    has delayed data only (`delayed`). The same words to depth mean nothing: it has no delayed form."""
    from ib_wire import DEPTH, L1, WiredClient

    hint = "Delayed market data is available.SPY ARCA/TOP/ALL"
    wire = WiredClient(source="rtvolume")
    registry = wire.registry
    api_text = "Requested market data requires additional subscription for API. See link in 'Market Data "
    assert registry.on_error(L1, 10089, f"{api_text}Connections' dialog for more details.{hint}")
    assert registry.on_error(DEPTH, 354, f"Requested market data is not subscribed.{hint}")
    spy = registry.streams["SPY"]
    assert (spy.l1.state, spy.l1.error_code) == ("delayed", 10089)
    assert spy.time_and_sales.state == "delayed", "RTVolume trades ride on the Level 1 request"
    assert (spy.l2.state, spy.l2.error_code) == ("not_entitled", 354)
    assert registry.degraded_reasons() == ["delayed market data instead of live (no live subscription): SPY"]
