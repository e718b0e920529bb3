"""One client connection: handshake, request dispatch, subscriptions and per-client limits."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Protocol, cast

from ingestion.simulator import stats
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.contracts import ContractSpec, Universe
from ingestion.simulator.entitlement import (
    DelayedMarketData,
    Entitlement,
    live_data_type,
    live_only_refusal,
    market_data_answer,
)
from ingestion.simulator.history import HistoricalFarm
from ingestion.simulator.market import DepthView, MarketData, SymbolMarket, TickByTick
from ingestion.simulator.protocol import (
    ERROR_TEXTS,
    GENERIC_TICK_RT_VOLUME,
    HANDSHAKE_PREFIX,
    HEADER_SIZE,
    STARTUP_FARM_NOTICES,
    TICK_BY_TICK_TYPES,
    ErrorCode,
    In,
    Out,
    ProtocolError,
    contract_data_frame,
    encode,
    error_frame,
    parse_version_range,
    split_fields,
)

log = logging.getLogger(__name__)

# The handshake payload is a short version string; anything longer is not a TWS client.
MAX_HANDSHAKE_SIZE: Final = 1024
# Above this much unsent output the client is not keeping up: stop generating for it until it drains.
WRITE_HIGH_WATER: Final = 4 * 1024 * 1024


HistoryHandler = Callable[["Session", int, ContractSpec, list[str]], None]


class Gateway(Protocol):
    """What a connection needs of the simulator it belongs to (``server.Simulator``)."""

    config: SimulatorConfig
    stats: stats.Stats
    universe: Universe
    markets: dict[str, SymbolMarket]
    history: HistoricalFarm
    silenced: bool

    @property
    def hmds_notice(self) -> int: ...
    def now_ms(self) -> int: ...
    def entitlement_of(self, symbol: str) -> Entitlement: ...
    def session_opened(self, session: Session) -> None: ...
    def session_closed(self, session: Session) -> None: ...
    def claim_client_id(self, client_id: int, session: Session) -> bool: ...


class State(enum.Enum):
    """Where a connection is in the handshake."""

    PREFIX = enum.auto()
    VERSION = enum.auto()
    START_API = enum.auto()
    READY = enum.auto()
    CLOSED = enum.auto()


class Session(asyncio.Protocol):
    """The gateway side of one API client socket.

    Output goes into ``out`` and leaves in one ``transport.write`` per flush; subscriptions are
    observers of the symbols' markets, which render into ``out``; the scheduler flushes once per
    event-loop turn.
    """

    def __init__(self, sim: Gateway) -> None:
        self.sim = sim
        self.config = sim.config
        self.transport: asyncio.Transport | None = None
        self.state = State.PREFIX
        self.version = 0
        self.client_id: int | None = None
        self.peer = "?"
        self.out: list[bytes] = []
        self.writing_paused = False
        self._buffer = bytearray()
        self._held: list[bytes] = []
        self._mkt_data: dict[int, tuple[SymbolMarket, MarketData]] = {}
        self._depth: dict[int, DepthView] = {}
        self._tbt: dict[int, tuple[SymbolMarket, TickByTick]] = {}
        self._data_type = 1
        self._next_id = self.config.next_valid_id
        self._pacing_window = 0.0
        self._pacing_count = 0
        self._handlers: dict[int, Callable[[list[str]], None]] = {
            In.REQ_MKT_DATA: self._req_mkt_data,
            In.CANCEL_MKT_DATA: self._cancel_mkt_data,
            In.REQ_MKT_DEPTH: self._req_mkt_depth,
            In.CANCEL_MKT_DEPTH: self._cancel_mkt_depth,
            In.REQ_TICK_BY_TICK: self._req_tick_by_tick,
            In.CANCEL_TICK_BY_TICK: self._cancel_tick_by_tick,
            In.REQ_CONTRACT_DATA: self._req_contract_data,
            In.REQ_MARKET_DATA_TYPE: self._req_market_data_type,
            In.REQ_CURRENT_TIME: self._req_current_time,
            In.REQ_IDS: self._req_ids,
            In.REQ_MANAGED_ACCTS: self._req_managed_accts,
            In.REQ_POSITIONS: self._req_positions,
            In.REQ_OPEN_ORDERS: self._req_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self._req_open_orders,
            In.REQ_AUTO_OPEN_ORDERS: self._ignore,
            In.REQ_COMPLETED_ORDERS: self._req_completed_orders,
            In.REQ_ACCT_DATA: self._req_account_updates,
            In.REQ_ACCOUNT_UPDATES_MULTI: self._req_account_updates_multi,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: self._ignore,
            In.REQ_EXECUTIONS: self._req_executions,
            In.REQ_ACCOUNT_SUMMARY: self._req_account_summary,
            In.CANCEL_ACCOUNT_SUMMARY: self._ignore,
            In.CANCEL_POSITIONS: self._ignore,
            In.REQ_HISTORICAL_DATA: self._req_historical_data,
            In.CANCEL_HISTORICAL_DATA: self._cancel_historical_data,
            In.REQ_HEAD_TIMESTAMP: self._req_head_timestamp,
            In.CANCEL_HEAD_TIMESTAMP: self._cancel_head_timestamp,
            In.REQ_HISTORICAL_TICKS: self._req_historical_ticks,
        }

    # ----------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, as create_server makes; cast, not isinstance: uvloop's TCPTransport is
        # not a subclass of asyncio.Transport, and the simulator runs on either loop.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.sim.session_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self.drop_subscriptions()
        self.sim.history.forget(self)
        self.out.clear()
        self.sim.session_closed(self)
        log.info("client %s (id %s) disconnected", self.peer, self.client_id)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False

    def data_received(self, data: bytes) -> None:
        if self.sim.silenced:
            # A hung gateway reads nothing: the requests wait until the silence ends.
            self._held.append(data)
            return
        try:
            self._feed(data)
        except (ProtocolError, ValueError, IndexError, KeyError) as exc:
            log.warning("closing client %s (id %s): %s", self.peer, self.client_id, exc)
            self.close(abort=True)
            return
        self.flush()

    # ------------------------------------------------------------------- output

    def flush(self) -> None:
        """Hand everything queued to the transport in one write."""
        if self.out and self.transport is not None and not self.sim.silenced:
            data = b"".join(self.out)
            self.out.clear()
            self.transport.write(data)

    def close(self, *, abort: bool = False) -> None:
        """Close the socket: ``abort`` drops unsent output (for broken clients).

        The subscriptions end at once: the market renders nothing more for a closing socket, so
        what the stats count as sent is what was written before the close.
        """
        if self.transport is not None and self.state is not State.CLOSED:
            if abort:
                self.transport.abort()
            else:
                self.flush()
                self.transport.close()
            self.drop_subscriptions()

    def send(self, kind: str, frame: bytes) -> None:
        """Queue a message that belongs to no symbol, counted under ``kind``."""
        self.out.append(frame)
        self.sim.stats.count(kind)

    def send_error(self, req_id: int, code: int, **text_args: object) -> None:
        """Queue IB error ``code`` with its real text."""
        text = ERROR_TEXTS[code].format(**text_args) if text_args else ERROR_TEXTS[code]
        self.send(stats.ERROR, error_frame(self.version, req_id, code, text))

    def resume_held_input(self) -> None:
        """After a silence: process what the client sent meanwhile, in order."""
        held, self._held = self._held, []
        for data in held:
            if self.state is State.CLOSED:
                return
            self.data_received(data)
        self.flush()

    # ------------------------------------------------------------------ framing

    def _feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while self.state is not State.CLOSED:
            if self.state is State.PREFIX:
                if len(buf) < len(HANDSHAKE_PREFIX):
                    return
                if bytes(buf[:4]) != HANDSHAKE_PREFIX:
                    raise ProtocolError("connection does not start with API\\0")
                del buf[:4]
                self.state = State.VERSION
                continue
            if len(buf) < HEADER_SIZE:
                return
            size = int.from_bytes(buf[:HEADER_SIZE], "big")
            limit = MAX_HANDSHAKE_SIZE if self.state is State.VERSION else self.config.max_frame_size
            if size == 0 or size > limit:
                msg = f"frame size {size} out of range 1..{limit}"
                raise ProtocolError(msg)
            if len(buf) < HEADER_SIZE + size:
                return
            payload = bytes(buf[HEADER_SIZE : HEADER_SIZE + size])
            del buf[: HEADER_SIZE + size]
            if self.state is State.VERSION:
                self._handshake(payload)
            else:
                self._dispatch(split_fields(payload))

    def _handshake(self, payload: bytes) -> None:
        low, high = parse_version_range(payload)
        version = min(self.config.server_version, high)
        if version < low:
            log.warning("client %s wants versions %d..%d, closing", self.peer, low, high)
            self.close(abort=True)
            self.state = State.CLOSED
            return
        self.version = version
        self.state = State.START_API
        conn_time = datetime.fromtimestamp(self.sim.now_ms() // 1000, UTC).strftime("%Y%m%d %H:%M:%S GMT")
        self.send("handshake", encode((version, conn_time)))

    def _dispatch(self, fields: list[str]) -> None:
        msg_id = int(fields[0])
        if self.state is State.START_API:
            if msg_id != In.START_API:
                raise ProtocolError(f"message {msg_id} before startApi")
            self._start_api(fields)
            return
        if self.config.pacing_limit is not None and self._over_pacing_limit():
            return
        handler = self._handlers.get(msg_id)
        if handler is None:
            log.info("client %s: message %d is not simulated, ignored", self.peer, msg_id)
            return
        handler(fields)

    def _over_pacing_limit(self) -> bool:
        now = asyncio.get_running_loop().time()
        if now - self._pacing_window >= 1.0:
            self._pacing_window = now
            self._pacing_count = 0
        self._pacing_count += 1
        limit = self.config.pacing_limit
        if limit is not None and self._pacing_count > limit:
            self.send_error(-1, ErrorCode.PACING, limit=limit, received=self._pacing_count)
            return True
        return False

    # ---------------------------------------------------------------- handshake

    def _start_api(self, fields: list[str]) -> None:
        client_id = int(fields[2])
        if not self.sim.claim_client_id(client_id, self):
            # IB refuses a second connection with a client id in use, then drops the socket.
            self.send_error(-1, ErrorCode.CLIENT_ID_IN_USE)
            log.info("client %s: client id %d already in use, closing", self.peer, client_id)
            self.close()
            self.state = State.CLOSED
            return
        self.client_id = client_id
        self.state = State.READY
        accounts = ",".join(self.config.accounts)
        self.send("managed_accounts", encode((Out.MANAGED_ACCTS, 1, accounts)))
        self.send("next_valid_id", encode((Out.NEXT_VALID_ID, 1, self._next_id)))
        for code in STARTUP_FARM_NOTICES:
            self.send_error(-1, self.sim.hmds_notice if code == ErrorCode.HMDS_FARM_OK else code)
        log.info("client %s connected with client id %d, version %d", self.peer, client_id, self.version)

    # ------------------------------------------------------------ startup sync

    def _ignore(self, fields: list[str]) -> None:
        """Requests IB answers with nothing (or that the simulator has nothing to say to)."""

    def _req_positions(self, fields: list[str]) -> None:
        self.send("position_end", encode((Out.POSITION_END, 1)))

    def _req_open_orders(self, fields: list[str]) -> None:
        self.send("open_order_end", encode((Out.OPEN_ORDER_END, 1)))

    def _req_completed_orders(self, fields: list[str]) -> None:
        self.send("completed_orders_end", encode((Out.COMPLETED_ORDERS_END,)))

    def _req_executions(self, fields: list[str]) -> None:
        self.send("execution_end", encode((Out.EXECUTION_DATA_END, 1, int(fields[2]))))

    def _req_account_updates(self, fields: list[str]) -> None:
        if fields[2] != "1":
            return
        account = fields[3] or self.config.accounts[0]
        self.send("account", encode((Out.ACCT_VALUE, 2, "NetLiquidation", "1000000.00", "USD", account)))
        self.send("account", encode((Out.ACCT_UPDATE_TIME, 1, "09:30")))
        self.send("account_download_end", encode((Out.ACCT_DOWNLOAD_END, 1, account)))

    def _req_account_updates_multi(self, fields: list[str]) -> None:
        req_id, account = int(fields[2]), fields[3]
        row = (Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", "NetLiquidation", "1000000.00", "USD")
        self.send("account", encode(row))
        self.send("account_update_multi_end", encode((Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id)))

    def _req_account_summary(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        for account in self.config.accounts:
            for tag, value in (("NetLiquidation", "1000000.00"), ("TotalCashValue", "1000000.00")):
                self.send("account", encode((Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, "USD")))
        self.send("account_summary_end", encode((Out.ACCOUNT_SUMMARY_END, 1, req_id)))

    def _req_current_time(self, fields: list[str]) -> None:
        self.send("current_time", encode((Out.CURRENT_TIME, 1, self.sim.now_ms() // 1000)))

    def _req_ids(self, fields: list[str]) -> None:
        self.send("next_valid_id", encode((Out.NEXT_VALID_ID, 1, self._next_id)))

    def _req_managed_accts(self, fields: list[str]) -> None:
        self.send("managed_accounts", encode((Out.MANAGED_ACCTS, 1, ",".join(self.config.accounts))))

    # ---------------------------------------------------------------- contracts

    def _resolve(self, fields: list[str], first: int) -> ContractSpec | None:
        """The contract of a request whose contract12 block starts at ``fields[first]``."""
        return self.sim.universe.resolve(
            con_id=fields[first],
            symbol=fields[first + 1],
            sec_type=fields[first + 2],
            currency=fields[first + 9],
        )

    def _req_contract_data(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        spec = self._resolve(fields, 3)
        if spec is None:
            self.send_error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        self.out.append(contract_data_frame(self.version, req_id, spec))
        self.sim.stats.for_symbol(spec.symbol)[stats.CONTRACT_DATA] += 1
        self.send("contract_data_end", encode((Out.CONTRACT_DATA_END, 1, req_id)))

    # -------------------------------------------------------------- market data

    def _active(self, req_id: int) -> bool:
        return req_id in self._mkt_data or req_id in self._depth or req_id in self._tbt

    def _market(self, spec: ContractSpec) -> SymbolMarket:
        return self.sim.markets[spec.symbol]

    def _req_market_data_type(self, fields: list[str]) -> None:
        self._data_type = int(fields[2])
        reported = live_data_type(self._data_type)
        # IB reports the new type on every live subscription.
        for req_id, (_, observer) in self._mkt_data.items():
            if isinstance(observer, DelayedMarketData):
                continue
            self.out.append(encode((Out.MARKET_DATA_TYPE, 1, req_id, reported)))
            observer.counts[stats.MARKET_DATA_TYPE] += 1

    def _req_mkt_data(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        spec = self._resolve(fields, 3)
        if spec is None:
            self.send_error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        i = 15
        if fields[i] == "1":  # deltaNeutralContract: conId, delta, price follow
            i += 3
        generic_ticks = fields[i + 1].split(",")
        snapshot = fields[i + 2] == "1" or fields[i + 3] == "1"
        # -- entitlement hook: what this account may see decides IB's answer (entitlement.py)
        answer = market_data_answer(self._entitlement(spec), self._data_type, spec)
        if answer.data_type is None:
            assert answer.error is not None
            self._send_error_text(req_id, *answer.error)
            return
        if not snapshot:
            if self._active(req_id):
                self.send_error(req_id, ErrorCode.DUPLICATE_TICKER_ID)
                return
            if len(self._mkt_data) >= self.config.max_market_data_lines:
                self.send_error(req_id, ErrorCode.MAX_TICKERS)
                return
        counts = self.sim.stats.for_symbol(spec.symbol)
        market = self._market(spec)
        if answer.delayed:  # IB's delayed tick types, and no RTVolume (delayed data has none)
            observer: MarketData = DelayedMarketData(self, req_id, counts, rt_volume=False)
        else:
            observer = MarketData(self, req_id, counts, GENERIC_TICK_RT_VOLUME in generic_ticks)
        out = self.out
        out.append(encode((Out.TICK_REQ_PARAMS, req_id, "0.01", "9c0001", 3)))
        out.append(encode((Out.MARKET_DATA_TYPE, 1, req_id, answer.data_type)))
        counts[stats.TICK_REQ_PARAMS] += 1
        counts[stats.MARKET_DATA_TYPE] += 1
        if answer.error is not None:  # 10167: delayed data follows
            self._send_error_text(req_id, *answer.error)
        observer.initial(market)
        if snapshot:
            out.append(encode((Out.TICK_SNAPSHOT_END, 1, req_id)))
            counts[stats.TICK_SNAPSHOT_END] += 1
            return
        self._mkt_data[req_id] = (market, observer)
        market.l1.append(observer)

    # -- entitlement hooks (the rules live in entitlement.py)

    def _entitlement(self, spec: ContractSpec) -> Entitlement:
        """The account's permission for ``spec`` now; ``not_entitled`` symbols have none."""
        return (
            Entitlement.NONE
            if spec.symbol in self.config.not_entitled
            else self.sim.entitlement_of(spec.symbol)
        )

    def _refuse_not_entitled(self, req_id: int, spec: ContractSpec) -> bool:
        """Depth and tick-by-tick need live data: refuse them as IB does without it."""
        refusal = live_only_refusal(self._entitlement(spec), spec)
        if refusal is None:
            return False
        self._send_error_text(req_id, *refusal)
        return True

    def _send_error_text(self, req_id: int, code: int, text: str) -> None:
        self.send(stats.ERROR, error_frame(self.version, req_id, code, text))

    def _cancel_mkt_data(self, fields: list[str]) -> None:
        entry = self._mkt_data.pop(int(fields[2]), None)
        if entry is not None:
            market, observer = entry
            market.l1.remove(observer)

    def _req_mkt_depth(self, fields: list[str]) -> None:
        req_id = int(fields[2])
        spec = self._resolve(fields, 3)
        if spec is None:
            self.send_error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        if self._active(req_id):
            self.send_error(req_id, ErrorCode.DUPLICATE_TICKER_ID)
            return
        if self._refuse_not_entitled(req_id, spec):
            return
        limit = self.config.max_depth_books
        if len(self._depth) >= limit:
            self.send_error(req_id, ErrorCode.MAX_DEPTH_BOOKS, limit=limit)
            return
        rows = min(max(int(fields[15] or 0), 1), self.config.depth_rows)
        smart = self.version >= 146 and fields[16] == "1"
        counts = self.sim.stats.for_symbol(spec.symbol)
        book = self._market(spec).depth_book(rows, smart, self.config.seed)
        view = DepthView(self, req_id, counts, book, self.version)
        book.add(view)
        self._depth[req_id] = view

    def _cancel_mkt_depth(self, fields: list[str]) -> None:
        # By reqId only: IB.cancelMktDepth defaults the smart flag to False whatever was requested.
        view = self._depth.pop(int(fields[2]), None)
        if view is not None:
            view.book.remove(view)

    def _req_tick_by_tick(self, fields: list[str]) -> None:
        req_id = int(fields[1])
        spec = self._resolve(fields, 2)
        if spec is None:
            self.send_error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        tbt = TICK_BY_TICK_TYPES.get(fields[14])
        if tbt is None:
            msg = f"unknown tick-by-tick type {fields[14][:20]!r}"
            raise ProtocolError(msg)
        if self._active(req_id):
            self.send_error(req_id, ErrorCode.DUPLICATE_TICKER_ID)
            return
        if self._refuse_not_entitled(req_id, spec):
            return
        if len(self._tbt) >= self.config.max_tick_by_tick:
            self.send_error(req_id, ErrorCode.MAX_TICK_BY_TICK)
            return
        ignore_size = len(fields) > 16 and fields[16] == "1"
        counts = self.sim.stats.for_symbol(spec.symbol)
        market = self._market(spec)
        observer = TickByTick(self, req_id, counts, tbt, ignore_size)
        self._tbt[req_id] = (market, observer)
        market.observe_tick_by_tick(observer)

    def _cancel_tick_by_tick(self, fields: list[str]) -> None:
        entry = self._tbt.pop(int(fields[1]), None)
        if entry is not None:
            market, observer = entry
            market.forget_tick_by_tick(observer)

    # ------------------------------------------------------------------ history

    def _history_request(self, fields: list[str], serve: HistoryHandler) -> None:
        """reqHistoricalData, reqHeadTimeStamp, reqHistoricalTicks: reqId, then the contract."""
        req_id = int(fields[1])
        spec = self._resolve(fields, 2)
        if spec is None:
            self.send_error(req_id, ErrorCode.NO_SECURITY_DEFINITION)
            return
        serve(self, req_id, spec, fields)

    def _req_historical_data(self, fields: list[str]) -> None:
        self._history_request(fields, self.sim.history.historical_data)

    def _req_head_timestamp(self, fields: list[str]) -> None:
        self._history_request(fields, self.sim.history.head_timestamp)

    def _req_historical_ticks(self, fields: list[str]) -> None:
        self._history_request(fields, self.sim.history.historical_ticks)

    def _cancel_historical_data(self, fields: list[str]) -> None:
        self.sim.history.cancel(self, int(fields[2]))

    def _cancel_head_timestamp(self, fields: list[str]) -> None:
        self.sim.history.cancel(self, int(fields[1]))

    # ------------------------------------------------------------------- faults

    def drop_subscriptions(self) -> None:
        """What IB does after 1101 (data lost): every subscription is gone, nothing is sent about it."""
        for market, observer in self._mkt_data.values():
            market.l1.remove(observer)
        for market, tbt in self._tbt.values():
            market.forget_tick_by_tick(tbt)
        for view in self._depth.values():
            view.book.remove(view)
        self._mkt_data.clear()
        self._depth.clear()
        self._tbt.clear()

    def market_data_req_ids(self) -> list[int]:
        """The reqIds of this client's streaming reqMktData subscriptions."""
        return list(self._mkt_data)

    def depth_view(self, req_id: int) -> DepthView | None:
        """The depth subscription behind a reqMktDepth of this client."""
        return self._depth.get(req_id)
