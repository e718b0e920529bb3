"""The simulator's lifecycle: API listener, clients, the market scheduler, faults and stats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from ingestion.simulator import stats as stats_mod
from ingestion.simulator.config import DEFAULT_RATE, SimulatorConfig
from ingestion.simulator.contracts import Universe
from ingestion.simulator.control import ControlServer
from ingestion.simulator.entitlement import Entitlement, parse_entitlement
from ingestion.simulator.history import FARM_STATES_ALL, HistoricalFarm
from ingestion.simulator.hours import trading_hours
from ingestion.simulator.market import DepthSnapshot, SymbolMarket
from ingestion.simulator.protocol import SYSTEM_MESSAGE_CODES, ErrorCode
from ingestion.simulator.session import Session
from ingestion.simulator.tape import Trade

log = logging.getLogger(__name__)

# The throttled scheduler wakes this often; the rate budget accrues in between.
TICK_SECONDS: Final = 0.002
# Never make up for more than this much lost time at once (a stalled loop must not cause a flood).
MAX_CATCH_UP_SECONDS: Final = 0.05
# Messages per client per loop turn when unthrottled or bursting: big enough to amortise the write,
# small enough that other connections and the control API still get turns.
CHUNK: Final = 4096
# Messages per event an observer of every symbol would get: sets the pace before anyone subscribes.
NOMINAL_MESSAGES_PER_EVENT: Final = 3.0
# The pace unobserved symbols keep is measured over this long.
PACE_WINDOW_SECONDS: Final = 0.5
# Unobserved symbols never trade faster than this many events per second (unthrottled benches).
MAX_IDLE_PACE: Final = 1000.0


class Simulator:
    """A running IB Gateway simulator; create it with ``running_simulator(config)``.

    Every fault the control API offers is a method here too, for in-process tests. ``clock``
    (seconds since the epoch, ``time.time`` by default) stamps every market event.
    """

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.universe = Universe(config.universe)
        self.stats = stats_mod.Stats()
        self.rate = config.rate
        self.entitlement = config.entitlement
        self.symbol_entitlements: dict[str, Entitlement] = {}  # POST /entitlement?symbol=: overrides
        self.started_ms = self.now_ms()
        self.hours = trading_hours(config.session, self.started_ms)
        self.markets: dict[str, SymbolMarket] = {
            spec.symbol: SymbolMarket(
                spec,
                config.seed,
                (config.tape_limit, config.quote_limit),
                self.started_ms,
                self.stats.for_symbol(spec.symbol),
            )
            for spec in config.universe
        }
        self.history = HistoricalFarm(config, self.markets, self.hours, self.now_ms, self.started_ms)
        self._market_list = list(self.markets.values())
        self._cursor = 0
        self._pace = self._nominal_pace()
        self._measured = [0.0, 0.0]  # events per observed symbol, seconds: the pace being measured
        self._idle_credit = 0.0
        self.paused = config.paused
        self.connectivity_lost = False
        self.silenced = False
        self.port = config.port
        self.control_port: int | None = None
        self._sessions: set[Session] = set()
        self._clients: dict[int, Session] = {}
        self._listener: asyncio.Server | None = None
        self._burst = 0
        self._credit = 0.0
        self._last_tick = 0.0
        self._scheduler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._silence_handle: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the API listener (port 0 picks one, read back into ``port``) and start streaming."""
        await self._listen()
        self._last_tick = asyncio.get_running_loop().time()
        self._scheduler = asyncio.create_task(self._run_scheduler(), name="simulator-scheduler")
        log.info("IB Gateway simulator listening on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, close every client, then stop the scheduler and pending fault timers."""
        await self._close_listener()
        self.disconnect_all()
        if self._silence_handle is not None:
            self._silence_handle.cancel()
        tasks = [t for t in (self._scheduler, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Let the transports run their close callbacks before the loop may go away.
        await asyncio.sleep(0)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: Session(self), self.config.host, self.port, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await listener.wait_closed()

    # --------------------------------------------------------- sessions (callbacks)

    def session_opened(self, session: Session) -> None:
        self._sessions.add(session)

    def session_closed(self, session: Session) -> None:
        self._sessions.discard(session)
        if session.client_id is not None and self._clients.get(session.client_id) is session:
            del self._clients[session.client_id]

    def claim_client_id(self, client_id: int, session: Session) -> bool:
        """Register ``client_id`` for ``session``; False if another live connection holds it."""
        if client_id in self._clients:
            return False
        self._clients[client_id] = session
        self._wake.set()
        return True

    @property
    def connections(self) -> int:
        """Open API sockets, handshaken or not."""
        return len(self._sessions)

    # ---------------------------------------------------------------- scheduler

    def now_ms(self) -> int:
        """The market's clock, in unix milliseconds."""
        return int(self.clock() * 1000)

    def _nominal_pace(self) -> float:
        """Events per second per symbol before any measurement: ``rate`` spread over the universe."""
        rate = self.rate or DEFAULT_RATE
        return rate / (NOMINAL_MESSAGES_PER_EVENT * len(self.markets))

    async def _run_scheduler(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            elapsed = min(now - self._last_tick, MAX_CATCH_UP_SECONDS)
            self._last_tick = now
            busy = self._market_turn(elapsed)
            if busy:
                # Unthrottled or bursting: yield one loop turn so sockets and other tasks run.
                await asyncio.sleep(0)
            else:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that comes in the
                # same loop turn as its timeout (cpython#86296), and stop() would wait for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_SECONDS):
                        await self._wake.wait()

    def _market_turn(self, elapsed: float) -> bool:
        """Advance the market by one turn and deliver to observers; True if more work is waiting now.

        Observed symbols step in turn until ``rate * elapsed`` messages went out (or a chunk per
        client when unthrottled); every other symbol steps as often as an observed one did on
        average (or at the last such pace), so the whole market keeps one pace whoever listens.
        A symbol whose client does not drain its socket waits for it.
        """
        now_ms = self.now_ms()
        deliver = not self.silenced and not self.connectivity_lost
        markets = self._market_list
        active = [m for m in markets if m.observed and not m.held()] if deliver else []
        more = False
        if self._burst > 0 and active:
            self._burst -= self._step_observed(active, min(self._burst, CHUNK * len(self._sessions)), now_ms)
            self._burst = max(self._burst, 0)
            more = self._burst > 0
        if self.paused or not self.hours.is_open(now_ms):
            self._credit = 0.0
            self._flush()
            return more
        if active:
            if self.rate == 0:
                budget = float(CHUNK * max(1, len(self._sessions)))
                more = True
            else:
                self._credit = min(self._credit + self.rate * elapsed, self.rate)
                budget = self._credit
            events_before = sum(m.events for m in active)
            if budget >= 1:
                sent = self._step_observed(active, budget, now_ms)
                if self.rate:
                    self._credit -= sent
            per_symbol = (sum(m.events for m in active) - events_before) / len(active)
            if self.rate:
                self._measure_pace(per_symbol, elapsed)
            idle_due = min(per_symbol, MAX_IDLE_PACE * elapsed)
        else:
            self._credit = 0.0
            idle_due = self._pace * elapsed
        self._idle_credit += idle_due
        steps = int(self._idle_credit)
        if steps:
            self._idle_credit -= steps
            for market in markets:
                if market.observed and deliver:
                    continue  # active ones stepped above; held ones wait for their client
                for _ in range(steps):
                    market.step(now_ms, deliver=False)
        self._flush()
        return more

    def _measure_pace(self, events: float, elapsed: float) -> None:
        """Average the events per observed symbol over half a second: the pace symbols keep when
        nobody observes them (a single turn may have had no budget at all)."""
        measured = self._measured
        measured[0] += events
        measured[1] += elapsed
        if measured[1] >= PACE_WINDOW_SECONDS:
            if measured[0] > 0:
                self._pace = measured[0] / measured[1]
            measured[0] = measured[1] = 0.0

    def _step_observed(self, markets: list[SymbolMarket], budget: float, now_ms: int) -> int:
        """Step ``markets`` round-robin until ``budget`` messages were rendered; returns how many."""
        n = len(markets)
        i = self._cursor % n
        sent = 0
        while sent < budget:
            sent += markets[i].step(now_ms)
            i += 1
            if i == n:
                i = 0
        self._cursor = i
        return sent

    def _flush(self) -> None:
        for session in self._sessions:
            session.flush()

    # ------------------------------------------------------------------- faults

    def set_rate(self, rate: float) -> None:
        """Total streaming messages per second; 0 means unthrottled."""
        if rate < 0:
            msg = f"rate must be >= 0, got {rate}"
            raise ValueError(msg)
        if rate and self.rate:
            self._pace *= rate / self.rate  # unobserved symbols follow the change at once
            self._measured[0] = self._measured[1] = 0.0
        self.rate = rate
        self._wake.set()

    def set_entitlement(self, value: str, symbol: str | None = None) -> dict[str, str]:
        """What the account (or only ``symbol``) may see from now on (``live``, ``delayed``, ``none``);
        streams that run keep what they got, as IB's do: only later requests are answered under the new
        permission. Setting the account's value drops every symbol's own."""
        entitlement = parse_entitlement(value)
        if symbol is None:
            self.entitlement = entitlement
            self.symbol_entitlements.clear()
            log.info("simulated account entitlement: %s", entitlement)
            return {"entitlement": str(entitlement)}
        if symbol not in self.markets:
            msg = f"unknown symbol {symbol[:20]!r}"
            raise ValueError(msg)
        self.symbol_entitlements[symbol] = entitlement
        log.info("simulated entitlement of %s: %s", symbol, entitlement)
        return {"entitlement": str(entitlement), "symbol": symbol}

    def entitlement_of(self, symbol: str) -> Entitlement:
        """The permission requests for ``symbol`` are answered under now."""
        return self.symbol_entitlements.get(symbol, self.entitlement)

    def burst(self, messages: int) -> None:
        """Advance the observed symbols until ``messages`` extra messages went out, as fast as
        clients drain, on top of the rate.

        Works while paused (the only way the market moves then), which gives tests an exact
        number of updates.
        """
        if messages < 0:
            msg = f"messages must be >= 0, got {messages}"
            raise ValueError(msg)
        self._burst += messages
        self._wake.set()

    def pause(self) -> None:
        """Stop the market: no trades happen until ``resume`` (requests are still answered)."""
        self.paused = True

    def resume(self) -> None:
        """Undo ``pause``."""
        self.paused = False
        self._wake.set()

    @property
    def burst_pending(self) -> int:
        """Burst messages not generated yet."""
        return self._burst

    def disconnect_all(self) -> None:
        """Close every client socket now (what clients see when the gateway drops them)."""
        for session in list(self._sessions):
            session.close()

    async def restart(self, down: float) -> None:
        """Close every client and the listener, stay down ``down`` seconds, then listen again."""
        if down < 0:
            msg = f"down must be >= 0, got {down}"
            raise ValueError(msg)
        await self._close_listener()
        self.disconnect_all()
        self.connectivity_lost = False
        log.info("simulated gateway restart: down for %.1f s", down)
        task = asyncio.create_task(self._come_back(down), name="simulator-restart")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _come_back(self, down: float) -> None:
        await asyncio.sleep(down)
        await self._listen()
        log.info("simulated gateway back on port %d", self.port)

    def send_system_message(self, code: int) -> int:
        """Send IB system message ``code`` to every client, with IB's side effects.

        1100 pauses market data until 1101 or 1102; 1101 also drops every subscription; 10197 goes
        out once per market data subscription. Returns how many messages were sent.
        """
        if code not in SYSTEM_MESSAGE_CODES:
            msg = f"code {code} is not a system message (one of {sorted(SYSTEM_MESSAGE_CODES)})"
            raise ValueError(msg)
        if code == ErrorCode.CONNECTIVITY_LOST:
            self.connectivity_lost = True
        elif code in (ErrorCode.RESTORED_DATA_LOST, ErrorCode.RESTORED_DATA_MAINTAINED):
            self.connectivity_lost = False
            self._wake.set()
        sent = 0
        for session in self._ready_sessions():
            if code == ErrorCode.RESTORED_DATA_LOST:
                session.drop_subscriptions()
            if code == ErrorCode.COMPETING_LIVE_SESSION:
                for req_id in session.market_data_req_ids() or [-1]:
                    session.send_error(req_id, code)
                    sent += 1
            else:
                session.send_error(-1, code)
                sent += 1
            session.flush()
        return sent

    def set_hmds(self, state: str) -> int:
        """Take the historical data farm ``down``, ``up`` or ``inactive``: every client gets 2105,
        2106 or 2107; requests made while it is down are answered once it is up. Returns how many
        messages were sent."""
        code = self.history.set_state(state)
        sessions = self._ready_sessions()
        for session in sessions:
            session.send_error(-1, code)
            session.flush()
        return len(sessions)

    @property
    def hmds_notice(self) -> int:
        """The farm message a client connecting now gets."""
        return FARM_STATES_ALL[self.history.state]

    def reset_depth(self) -> None:
        """Error 317 and a rebuilt book on every depth subscription."""
        for market in self._market_list:
            for book in list(market.depth):
                book.reset()
        self._flush()

    def silence(self, seconds: float) -> None:
        """Keep sockets open but send nothing and answer nothing for ``seconds``."""
        if seconds < 0:
            msg = f"seconds must be >= 0, got {seconds}"
            raise ValueError(msg)
        self.silenced = True
        if self._silence_handle is not None:
            self._silence_handle.cancel()
        self._silence_handle = asyncio.get_running_loop().call_later(seconds, self._end_silence)

    def _end_silence(self) -> None:
        self.silenced = False
        self._silence_handle = None
        for session in list(self._sessions):
            session.resume_held_input()
        self._wake.set()

    # -------------------------------------------------------------- inspection

    def _ready_sessions(self) -> list[Session]:
        return [s for s in self._clients.values() if s.transport is not None]

    def snapshot_stats(self) -> dict[str, object]:
        """The GET /stats body."""
        return {
            "connections": self.connections,
            "clients": sorted(self._clients),
            "rate": self.rate,
            "entitlement": str(self.entitlement),
            "paused": self.paused,
            "silenced": self.silenced,
            "connectivity_lost": self.connectivity_lost,
            "listening": self._listener is not None,
            "burst_pending": self._burst,
            "sent": self.stats.snapshot(),
            "market": self.market_stats(),
            "hmds": self.history.snapshot(),
        }

    def market_stats(self) -> dict[str, object]:
        """What the market produced since the start, sent to anyone or not (not reset by reset_stats)."""
        markets = self.markets.values()
        return {
            "session": self.hours.name,
            "paused": self.paused,
            "started_ms": self.started_ms,
            "trades": {m.symbol: m.trades.count for m in markets},
            "events": {m.symbol: m.events for m in markets},
            "first_retained_ms": {m.symbol: m.trades.first_ms() for m in markets},
        }

    def tape(self, symbol: str, start_ms: int, end_ms: int) -> list[Trade]:
        """The trades ``symbol`` produced with ``start_ms <= time < end_ms`` (still on its tape)."""
        market = self.markets.get(symbol.upper())
        if market is None:
            msg = f"unknown symbol {symbol!r}"
            raise KeyError(msg)
        return market.trades.between(start_ms, end_ms)

    def reset_stats(self) -> None:
        """Zero every message counter."""
        self.stats.reset()

    def depth_book(self, client_id: int, req_id: int) -> DepthSnapshot:
        """The simulator's own book behind a client's reqMktDepth (what the client must hold)."""
        session = self._clients.get(client_id)
        view = session.depth_view(req_id) if session is not None else None
        if view is None:
            msg = f"no depth subscription {req_id} for client id {client_id}"
            raise KeyError(msg)
        return view.book.snapshot()


@contextlib.asynccontextmanager
async def running_simulator(
    config: SimulatorConfig | None = None, clock: Callable[[], float] = time.time
) -> AsyncIterator[Simulator]:
    """Run a simulator (and its control API unless ``control_port`` is None) for the block's duration.

    Ports may be 0; the bound ones are ``sim.port`` and ``sim.control_port``.
    """
    sim = Simulator(config or SimulatorConfig(), clock)
    await sim.start()
    control: ControlServer | None = None
    try:
        if sim.config.control_port is not None:
            control = ControlServer(sim)
            await control.start(sim.config.host, sim.config.control_port)
            sim.control_port = control.port
        yield sim
    finally:
        if control is not None:
            await control.stop()
        await sim.stop()
