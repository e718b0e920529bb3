"""Gaps open from the state the daemon owns (connection, 1100, stall, rejection), close when live is whole."""

from __future__ import annotations

from history_helpers import AlwaysOpen, live_trade

from ingestion.bus import EventBus
from ingestion.config import BackfillConfig, Settings
from ingestion.history.gaps import LATENCY_SECONDS, QUIET_SECONDS, GapTracker
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.metrics import Metrics

T0 = 1_765_000_000.0


class World:
    def __init__(self) -> None:
        self.now = T0
        bus = EventBus()
        metrics = Metrics()
        settings = Settings.model_validate({"universe": ["SPY", "QQQ"]})
        self.state = ConnectionState(bus, metrics, "127.0.0.1", 4002)
        self.registry = SubscriptionRegistry(settings, bus, metrics)
        config = BackfillConfig(settle_seconds=5, stall_seconds=3)
        self.tracker = GapTracker(
            config,
            ["SPY", "QQQ"],
            self.state,
            self.registry,
            AlwaysOpen(),
            now=lambda: self.now,
        )

    def connect(self) -> None:
        self.state.connected(178)

    def outage(self, until: float) -> None:
        """The connection drops now and is back at ``until``."""
        self.state.lost("socket closed")
        self.tracker.check()
        self.now = until
        self.connect()
        self.tracker.check()

    def trade(self, symbol: str, second: float, price: float) -> None:
        self.tracker.accept_many([live_trade(symbol, second, price)])


def connected_world() -> World:
    world = World()
    for symbol in ("SPY", "QQQ"):
        world.tracker.resolve_start(symbol, None, [])  # a fresh install: no downtime gap
    world.connect()
    world.tracker.check()
    return world


def test_a_fresh_install_has_no_gap_and_a_restart_starts_at_the_newest_stored_trade() -> None:
    world = World()
    assert sorted(world.tracker.pending_start()) == ["QQQ", "SPY"]
    world.tracker.resolve_start("SPY", int(T0) - 100, [])
    world.tracker.resolve_start("QQQ", None, [])
    assert list(world.tracker.open) == ["SPY"]
    world.connect()
    world.tracker.check()
    world.now += 5 + 1 + LATENCY_SECONDS
    world.trade("QQQ", world.now, 1.0)  # data received after the window's end has reached the tracker
    (gap,) = world.tracker.take_ready()
    assert gap.start_s == int(T0) - 100
    assert gap.end_s == int(T0) + 5
    assert gap.first_cause == "downtime"


def test_a_disconnect_opens_a_gap_at_the_last_live_second_with_its_trades() -> None:
    world = connected_world()
    world.trade("SPY", T0 + 0.2, 1.0)
    world.trade("SPY", T0 + 0.7, 1.1)
    world.now = T0 + 1.5
    world.state.lost("socket closed")
    opened = world.tracker.check()
    assert {g.symbol for g in opened} == {"SPY", "QQQ"}
    gap = world.tracker.open["SPY"]
    assert gap.start_s == int(T0)
    assert [s.trade.price for s in gap.stored()] == [1.0, 1.1]


def test_the_gap_closes_settle_seconds_after_the_cause_clears_and_is_ready_once_late_trades_are_in() -> None:
    world = connected_world()
    world.trade("SPY", T0, 1.0)
    world.state.lost("socket closed")
    world.tracker.check()
    world.now = T0 + 20
    world.connect()
    world.tracker.check()
    gap = world.tracker.open["SPY"]
    assert gap.end_s == int(T0 + 20) + 5
    world.trade("SPY", T0 + 22, 2.0)  # live again, recorded for the edge rule
    world.now = T0 + 25 + 1 + LATENCY_SECONDS + 5
    assert world.tracker.take_ready() == [], "nothing received after the window's end has been seen yet"
    world.trade("QQQ", T0 + 25 + 1 + LATENCY_SECONDS - 0.1, 1.0)
    assert world.tracker.take_ready() == []
    world.trade("QQQ", T0 + 25 + 1 + LATENCY_SECONDS + 0.1, 1.0)  # e.g. a queue backlog has drained
    ready = {g.symbol: g for g in world.tracker.take_ready()}
    assert [s.trade.price for s in ready["SPY"].stored()] == [1.0, 2.0]
    assert world.tracker.open == {}


def test_with_no_data_at_all_after_the_window_the_gap_is_filled_a_little_later() -> None:
    world = connected_world()
    world.outage(until=T0 + 20)
    world.now = T0 + 25 + 1 + LATENCY_SECONDS + QUIET_SECONDS - 0.1
    assert world.tracker.take_ready() == []
    world.now += 0.2
    assert {g.symbol for g in world.tracker.take_ready()} == {"SPY", "QQQ"}


def test_a_new_cause_before_the_gap_is_ready_extends_it() -> None:
    world = connected_world()
    world.outage(until=T0 + 10)
    world.now = T0 + 12
    world.state.lost("again")
    world.tracker.check()
    assert world.tracker.open["SPY"].end_s is None
    assert len(world.tracker.open) == 2


def test_ib_connectivity_lost_is_a_gap_until_restored() -> None:
    world = connected_world()
    world.state.system_message(1100, "Connectivity between IB and TWS has been lost")
    assert {g.first_cause for g in world.tracker.check()} == {"ib_connectivity"}
    world.now = T0 + 4
    world.state.system_message(1102, "restored, data maintained")
    world.trade("SPY", T0 + 4, 1.0)  # data flows again, so this is no stall either
    world.tracker.check()
    assert world.tracker.open["SPY"].end_s == int(T0 + 4) + 5


def test_a_silent_stall_in_the_regular_session_is_a_gap() -> None:
    world = connected_world()
    world.trade("SPY", T0, 1.0)
    world.now = T0 + 2.9
    assert world.tracker.check() == []
    world.now = T0 + 3.1
    assert {g.first_cause for g in world.tracker.check()} == {"stall"}
    world.trade("QQQ", T0 + 6, 1.0)
    world.now = T0 + 6.1
    world.tracker.check()
    assert world.tracker.open["SPY"].end_s == int(T0 + 6.1) + 5


def test_a_rejected_trade_stream_is_a_gap_for_that_symbol_only() -> None:
    world = connected_world()
    entry = world.registry.streams["QQQ"].time_and_sales
    assert entry is not None
    entry.reject("not_entitled", 10089, "not entitled")
    assert [g.symbol for g in world.tracker.check()] == ["QQQ"]
    world.now = T0 + 30
    entry.state = "active"
    world.trade("SPY", T0 + 30, 1.0)
    world.tracker.check()
    assert world.tracker.open["QQQ"].end_s == int(T0 + 30) + 5


def test_a_quiet_symbols_next_gap_starts_after_the_window_already_filled_back() -> None:
    world = connected_world()
    world.trade("QQQ", T0, 1.0)  # QQQ's last live trade
    world.state.lost("first")
    world.tracker.check()
    world.now = T0 + 10
    world.connect()
    world.tracker.check()
    world.now = T0 + 10 + 5 + 1 + LATENCY_SECONDS
    world.trade("SPY", world.now, 1.0)
    first = {g.symbol: g for g in world.tracker.take_ready()}["QQQ"]
    world.state.lost("second")  # QQQ has not traded since: the new window must not cover the first again
    world.tracker.check()
    assert first.end_s is not None
    assert world.tracker.open["QQQ"].start_s == first.end_s + 1
    assert world.tracker.open["SPY"].start_s == int(world.now)
