"""Trades the pipeline sheds under overload are a gap like any other: it opens the moment the first trade of
a symbol is shed, covers every second in which one was, closes when trades go through again, and is then
filled back once. Level 1 quotes shed on their own leave no gap in time_and_sales."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from history_helpers import live_trade
from test_gaps import T0, World, connected_world

from ingestion.bus import EventBus
from ingestion.events import Event, Quote, Trade
from ingestion.history.gaps import LATENCY_SECONDS
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline

SETTLE = 5  # World's settle_seconds


def shed(world: World, *trades: tuple[str, float]) -> None:
    """The pipeline sheds these trades (symbol, exchange second) in one read."""
    world.tracker.trades_shed([live_trade(symbol, second, 9.0) for symbol, second in trades])


def test_the_first_shed_trade_opens_a_gap_at_the_last_live_second_and_it_is_reported_once() -> None:
    world = connected_world()
    world.trade("SPY", T0 + 0.2, 1.0)
    world.trade("SPY", T0 + 0.7, 1.1)
    world.now = T0 + 1.5
    shed(world, ("SPY", T0 + 1.2), ("SPY", T0 + 1.4))
    gap = world.tracker.open["SPY"]
    assert (gap.start_s, gap.causes, gap.first_cause) == (int(T0), {"overload"}, "overload")
    assert [s.trade.price for s in gap.stored()] == [1.0, 1.1], "the live trades of the first second"
    assert "QQQ" not in world.tracker.open
    assert [(g.symbol, g.first_cause) for g in world.tracker.check()] == [("SPY", "overload")]
    assert world.tracker.check() == [], "found once, not at every check"
    assert world.tracker.open["SPY"].end_s is None, "open while trades are still shed"


def test_with_no_live_trade_seen_the_window_starts_at_the_first_shed_trades_second() -> None:
    world = connected_world()
    world.now = T0 + 5.5
    shed(world, ("SPY", T0 + 3.9))  # stamped by the exchange before it arrived
    assert world.tracker.open["SPY"].start_s == int(T0) + 3


def test_each_symbol_opens_its_own_gap_from_its_own_seconds_and_untracked_symbols_none() -> None:
    world = connected_world()
    world.trade("SPY", T0 + 1.1, 1.0)
    world.trade("QQQ", T0 + 2.1, 1.0)
    world.now = T0 + 2.5
    shed(world, ("QQQ", T0 + 2.3), ("IWM", T0 + 2.3), ("SPY", T0 + 2.4))
    assert {s: g.start_s for s, g in world.tracker.open.items()} == {"SPY": int(T0) + 1, "QQQ": int(T0) + 2}
    assert {g.symbol for g in world.tracker.check()} == {"SPY", "QQQ"}


def test_an_episode_that_sheds_then_stops_is_one_window_with_every_live_trade_of_it_recorded() -> None:
    world = connected_world()
    world.trade("SPY", T0 + 0.5, 1.0)
    world.now = T0 + 1
    shed(world, ("SPY", T0 + 1))
    world.trade("SPY", T0 + 0.9, 1.1)  # queued before the shedding began, handed over after
    world.now = T0 + 2
    shed(world, ("SPY", T0 + 2))  # the same shedding: no second gap
    world.trade("QQQ", T0 + 2, 1.0)
    world.tracker.check()
    assert len(world.tracker.open) == 1
    world.now = T0 + 3.5
    world.tracker.trade_shedding_over()
    world.trade("SPY", T0 + 3.4, 1.2)  # through again
    world.tracker.check()
    gap = world.tracker.open["SPY"]
    assert (gap.start_s, gap.end_s) == (int(T0), int(T0 + 3.5) + SETTLE)
    world.now = T0 + 3.5 + SETTLE + 1 + LATENCY_SECONDS
    world.trade("QQQ", world.now, 1.0)
    (ready,) = world.tracker.take_ready()
    assert [s.trade.price for s in ready.stored()] == [1.0, 1.1, 1.2]
    assert world.tracker.take_ready() == [], "filled back once"
    assert world.tracker.open == {}
    shed(world, ("SPY", world.now))  # the next overload: a new gap after the window already handed over
    assert ready.end_s is not None
    assert world.tracker.open["SPY"].start_s == ready.end_s + 1


def test_overload_on_top_of_a_disconnect_keeps_the_gap_open_until_both_are_over() -> None:
    world = connected_world()
    world.trade("SPY", T0, 1.0)
    world.state.lost("socket closed")
    world.tracker.check()
    shed(world, ("SPY", T0 + 0.5))
    world.now = T0 + 2
    world.connect()
    world.trade("QQQ", T0 + 2, 1.0)
    world.tracker.check()
    assert world.tracker.open["SPY"].causes == {"overload"}
    assert world.tracker.open["SPY"].end_s is None
    assert world.tracker.open["QQQ"].end_s == int(T0 + 2) + SETTLE, "QQQ had no trade shed"
    world.now = T0 + 3
    world.tracker.trade_shedding_over()
    world.tracker.check()
    assert world.tracker.open["SPY"].end_s == int(T0 + 3) + SETTLE


# -- through the pipeline ------------------------------------------------------------------------


@dataclass
class Backlog:
    """The QuestDB writer's side of the pipeline's question, set by the test (capacity 1,000 rows)."""

    backlog_rows: int = 0
    capacity_rows: int = 1000
    stalled: bool = False


def pipeline_into(world: World, backlog: Backlog) -> Pipeline:
    tracker = world.tracker
    return Pipeline(
        [tracker], Metrics(), EventBus(), queue_size=10_000, backpressure=backlog, shed_trades=tracker
    )


def read(symbol: str, second: float) -> list[Event]:
    quote = Quote(symbol, int(second * 1e9), 1.0, 2.0, None, None, None, None, None, None, None, None, None)
    return [quote, live_trade(symbol, second, 1.5), quote]


def trades(events: Sequence[Event]) -> list[Trade]:
    return [e for e in events if isinstance(e, Trade)]


def test_trades_shed_by_the_pipeline_open_a_gap_and_the_end_of_trade_shedding_closes_it() -> None:
    world = connected_world()
    backlog = Backlog()
    pipeline = pipeline_into(world, backlog)
    pipeline.put(read("SPY", T0 + 0.5))
    pipeline.drain()
    world.now = T0 + 1
    backlog.backlog_rows = 800  # everything is shed from 80 %
    pipeline.put(read("SPY", T0 + 1.2) + read("QQQ", T0 + 1.3))
    assert pipeline.depth == 0
    assert {s: (g.start_s, g.causes) for s, g in world.tracker.open.items()} == {
        "SPY": (int(T0), {"overload"}),
        "QQQ": (int(T0) + 1, {"overload"}),
    }
    assert {g.symbol for g in world.tracker.check()} == {"SPY", "QQQ"}
    world.now = T0 + 2
    backlog.backlog_rows = 0
    pipeline.put(read("SPY", T0 + 2))  # trades go through again
    pipeline.drain()
    world.tracker.check()
    assert {s: g.end_s for s, g in world.tracker.open.items()} == {
        "SPY": int(T0 + 2) + SETTLE,
        "QQQ": int(T0 + 2) + SETTLE,
    }
    assert [s.trade.second for s in world.tracker.open["SPY"].stored()] == [int(T0), int(T0) + 2]


def test_shedding_only_level_1_quotes_opens_no_gap() -> None:
    world = connected_world()
    backlog = Backlog(backlog_rows=400)  # quotes are shed from 40 %, trades go through
    pipeline = pipeline_into(world, backlog)
    for offset in (0.2, 0.6, 1.0):
        world.now = T0 + offset
        pipeline.put(read("SPY", T0 + offset))
    assert pipeline.overload is not None
    assert pipeline.overload.level == "shedding_quotes"
    assert pipeline.dropped == 6
    pipeline.drain()
    assert world.tracker.check() == []
    assert world.tracker.open == {}
