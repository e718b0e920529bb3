"""Which streams we hold with IB, in what state, and how to request them again.

One :class:`Subscription` per symbol and data type (``l1``, ``l2``, ``time_and_sales``). The
registry plans IB's scarce lines (depth books, tick-by-tick streams) in universe priority order,
requests everything after each (re)connect, routes IB's error replies by request id to the entry
they concern, and is what ``/subscriptions`` and the ``subscriptions`` field of ``/health`` read.

A stream refused for want of market data permission is asked for again every
``ibkr.retry_not_entitled_seconds`` (:meth:`SubscriptionRegistry.retry_not_entitled`), so a permission
bought meanwhile streams without waiting for a reconnect; a refusal again is not reported again. Other
rejections (IB's line limits, unknown symbols) are asked again only after a reconnect, which replays the
whole plan.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ib_async import IB, Stock, Ticker

from ingestion.bus import EventBus
from ingestion.config import DataType, Settings, SymbolConfig
from ingestion.ibkr import codes
from ingestion.logging import alert, get_logger
from ingestion.metrics import Metrics
from ingestion.timefmt import iso_ns

State = Literal[
    "pending", "active", "delayed", "skipped_limit", "rejected_limit", "invalid_symbol", "not_entitled"
]  # fmt: skip
STATES: tuple[State, ...] = (
    "active", "delayed", "pending", "skipped_limit", "rejected_limit", "invalid_symbol", "not_entitled",
)  # fmt: skip
LIVE_STATES = frozenset({"active", "delayed"})
# Market data types whose data is delayed: asked for in config, or reported by IB (message 58).
DELAYED_DATA_TYPES = frozenset({3, 4})
TradeSource = Literal["tick_by_tick", "rtvolume"]

MARKET_DATA_TYPES = {"live": 1, "frozen": 2, "delayed": 3, "delayed_frozen": 4}
RTVOLUME_GENERIC_TICK = "233"
TICK_BY_TICK_TYPE = "AllLast"
# Entitlement answers that come after the settle (a loaded gateway) are gathered this long into one alert.
ALERT_BATCH_SECONDS = 1.0
# ib_async keys its request ids per stream kind (wrapper.ticker2ReqId).
_STREAM_KEY = {"l1": "mktData", "l2": "mktDepth", "tick_by_tick": TICK_BY_TICK_TYPE}

log = get_logger("subscriptions")


@dataclass(slots=True)
class Subscription:
    """One symbol and data type, its state, and what has arrived on it."""

    symbol: str
    data_type: DataType
    state: State = "pending"
    source: TradeSource | None = None
    error_code: int | None = None
    error_text: str | None = None
    last_tick_ns: int | None = None
    count: int = 0

    def tick(self, timestamp_ns: int, count: int = 1) -> None:
        """Count ``count`` events, the last received at ``timestamp_ns``: data proves a stream live."""
        self.count += count
        self.last_tick_ns = timestamp_ns
        if self.state == "pending":
            self.state = "active"

    def reject(self, state: State, code: int, text: str) -> None:
        self.state = state
        self.error_code = code
        self.error_text = text

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "symbol": self.symbol,
            "data_type": self.data_type,
            "state": self.state,
            "error_code": self.error_code,
            "error_text": self.error_text,
            "last_tick_at": iso_ns(self.last_tick_ns),
            "count": self.count,
        }
        if self.data_type == "time_and_sales":
            data["source"] = self.source
        return data


@dataclass(slots=True)
class SymbolStreams:
    """Everything the normaliser needs for one symbol, found with one dict lookup per ticker."""

    config: SymbolConfig
    l1: Subscription | None
    l2: Subscription | None
    time_and_sales: Subscription | None
    contract: Stock | None = None
    wants_depth: bool = False
    wants_tick_by_tick: bool = False

    @property
    def symbol(self) -> str:
        return self.config.symbol

    def entries(self) -> list[Subscription]:
        return [s for s in (self.l1, self.l2, self.time_and_sales) if s is not None]


class SubscriptionRegistry:
    """The plan, the per-stream state, and the replay of both after each connect."""

    def __init__(
        self, settings: Settings, bus: EventBus, metrics: Metrics, settle_seconds: float = 3.0
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._metrics = metrics
        self._settle_seconds = settle_seconds
        self.streams: dict[str, SymbolStreams] = {
            s.symbol: SymbolStreams(
                config=s,
                l1=Subscription(s.symbol, "l1") if "l1" in s.data else None,
                l2=Subscription(s.symbol, "l2") if "l2" in s.data else None,
                time_and_sales=Subscription(s.symbol, "time_and_sales")
                if "time_and_sales" in s.data
                else None,
            )
            for s in settings.universe
        }
        self.smart_depth = settings.limits.smart_depth
        # Every request of this connection. Cancelled ones stay until the next subscribe: what IB sent
        # before it saw the cancel is still data (a stop drains it), though no longer ours to cancel
        # again or to route errors to.
        self._routes: dict[int, tuple[SymbolStreams, str]] = {}
        self._cancelled = False
        self._routes_version = 0
        # Level 1 requests whose data IB reports (message 58) or sends (ticks 66-76) as delayed.
        self._delayed_requests: set[int] = set()
        self._wants_delayed = MARKET_DATA_TYPES[settings.ibkr.market_data_type] in DELAYED_DATA_TYPES
        # Symbols already alerted for, per entitlement alert: each alerts once until it clears.
        self._alerted: dict[str, set[str]] = {"delayed_market_data": set(), "market_data_not_entitled": set()}
        self._settling = False
        self._subscribed_ns = 0
        self._alert_handle: asyncio.TimerHandle | None = None
        self._export()

    # -- after every connect -------------------------------------------------------------

    async def subscribe_all(self, ib: IB) -> None:
        """Qualify (once per symbol), plan the scarce lines, request everything, report the outcome."""
        self._forget_requests()
        ib.reqMarketDataType(MARKET_DATA_TYPES[self._settings.ibkr.market_data_type])
        await self._qualify(ib)
        self._plan()
        self._settling = True
        self._subscribed_ns = time.time_ns()
        try:
            for streams in self.streams.values():
                self._request(ib, streams)
            self._export()
            await self._settle()
        finally:
            self._settling = False
        self.report()
        self.alert_entitlements()

    async def _qualify(self, ib: IB) -> None:
        # conIds are stable: qualify only what has never been qualified, so a reconnect costs
        # no contract-details round trips. Unknown symbols are asked again after a reconnect.
        todo = [s for s in self.streams.values() if s.contract is None]
        if not todo:
            return
        contracts = [self._contract_for(s.config) for s in todo]
        results = await ib.qualifyContractsAsync(*contracts)
        for streams, result in zip(todo, results, strict=True):
            if isinstance(result, Stock) and result.conId:
                streams.contract = result
            else:
                self._mark_invalid(streams)

    def _contract_for(self, config: SymbolConfig) -> Stock:
        return Stock(
            config.symbol, config.exchange, config.currency, primaryExchange=config.primary_exchange or ""
        )

    def _mark_invalid(self, streams: SymbolStreams) -> None:
        text = "IB does not know this contract (no security definition, error 200)"
        for entry in streams.entries():
            entry.reject("invalid_symbol", next(iter(codes.UNKNOWN_CONTRACT)), text)
        log.error("unknown symbol: not subscribed", symbol=streams.symbol, reason=text)
        self._bus.publish("invalid_symbol", f"{streams.symbol}: {text}", code=200)

    def _plan(self) -> None:
        """Hand out depth books and tick-by-tick streams in universe priority order."""
        depth_left = self._settings.limits.max_depth_books
        tbt_left = self._settings.limits.max_tick_by_tick
        for streams in self.streams.values():
            for entry in streams.entries():
                if entry.state != "invalid_symbol":
                    entry.state, entry.error_code, entry.error_text = "pending", None, None
            streams.wants_depth = streams.wants_tick_by_tick = False
            if streams.contract is None:
                continue
            if streams.l2 is not None:
                streams.wants_depth = depth_left > 0
                depth_left -= streams.wants_depth
                if not streams.wants_depth:
                    streams.l2.state = "skipped_limit"
                    streams.l2.error_text = (
                        f"limits.max_depth_books={self._settings.limits.max_depth_books} used up"
                    )
            if streams.time_and_sales is not None:
                streams.wants_tick_by_tick = tbt_left > 0
                tbt_left -= streams.wants_tick_by_tick
                streams.time_and_sales.source = "tick_by_tick" if streams.wants_tick_by_tick else "rtvolume"

    def _request(self, ib: IB, streams: SymbolStreams) -> None:
        contract = streams.contract
        if contract is None:
            return
        if streams.l1 is not None or streams.time_and_sales is not None:
            self._send(ib, streams, contract, "l1")
        if streams.wants_depth:
            self._send(ib, streams, contract, "l2")
        if streams.wants_tick_by_tick:
            self._send(ib, streams, contract, "tick_by_tick")

    def _send(self, ib: IB, streams: SymbolStreams, contract: Stock, kind: str) -> None:
        limits = self._settings.limits
        if kind == "l1":
            # Level 1 with RTVolume (233): quotes, plus the trades of every symbol without tick-by-tick.
            ticker = ib.reqMktData(contract, RTVOLUME_GENERIC_TICK, False, False)
        elif kind == "l2":
            ticker = ib.reqMktDepth(contract, limits.depth_rows, limits.smart_depth)
        else:
            ticker = ib.reqTickByTickData(contract, TICK_BY_TICK_TYPE, 0, False)
        self._remember(ib, ticker, kind, streams)

    def _remember(self, ib: IB, ticker: Ticker, kind: str, streams: SymbolStreams) -> None:
        request_id = ib.wrapper.ticker2ReqId[_STREAM_KEY[kind]].get(ticker)
        if request_id:
            self.record_request(request_id, streams.symbol, kind)

    def record_request(self, request_id: int, symbol: str, kind: str) -> None:
        """IB's data and errors for ``request_id`` belong to ``symbol``'s ``kind`` stream."""
        self._routes[request_id] = (self.streams[symbol], kind)
        self._routes_version += 1

    def _forget_requests(self) -> None:
        self._routes.clear()
        self._delayed_requests.clear()
        self._cancelled = False
        self._routes_version += 1

    @property
    def routes(self) -> Mapping[int, tuple[SymbolStreams, str]]:
        """Our request ids on this connection -> (symbol's streams, "l1" | "l2" | "tick_by_tick")."""
        return self._routes

    @property
    def routes_version(self) -> int:
        """Changes whenever :attr:`routes` does, so a reader can keep a copy of its own."""
        return self._routes_version

    async def _settle(self) -> None:
        # IB acknowledges no stream. A stream is active once data arrives on it, or once it has
        # gone this long without an error reply: quiet books (a closed market) are not failures.
        deadline = time.monotonic() + self._settle_seconds
        # Polled at 20 Hz for a few seconds per connect: an Event set per tick would instead put
        # work on the hot path for the whole life of the connection.
        while time.monotonic() < deadline and any(e.state == "pending" for e in self.entries()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for entry in self.entries():
            if entry.state == "pending":
                entry.state = "active"
        self._export()

    async def retry_not_entitled(self, ib: IB) -> None:
        """Request again every stream IB refused for want of market data permission on this connection.

        Its entries wait as ``pending`` (keeping IB's last answer) until data or a refusal comes, as after
        a connect; a refusal with the same code again is not reported again, a stream that now delivers is.
        """
        if self._settling or self._cancelled:
            return  # a (re)subscription is under way: it asks for everything itself
        retried: list[Subscription] = []
        for streams in self.streams.values():
            contract = streams.contract
            if contract is None:
                continue
            for kind in _refused_kinds(streams):
                entries = [e for e in _carried_by(streams, kind) if e.state == "not_entitled"]
                for entry in entries:
                    entry.state = "pending"
                self._forget_route(streams, kind)
                self._send(ib, streams, contract, kind)
                retried += entries
        if not retried:
            return
        self._settling = True
        try:
            self._export()
            await self._settle()
        finally:
            self._settling = False
        for entry in retried:
            if entry.state in LIVE_STATES:
                log.info("subscription accepted now", symbol=entry.symbol, data_type=entry.data_type)
                self._bus.publish("subscription_live", f"{entry.symbol} {entry.data_type}: IB accepts it now")
                entry.error_code = entry.error_text = None
        self.alert_entitlements()

    def _forget_route(self, streams: SymbolStreams, kind: str) -> None:
        """A refused request is over: only its successor is ours to cancel."""
        for request_id in [r for r, route in self._routes.items() if route == (streams, kind)]:
            del self._routes[request_id]
        self._routes_version += 1

    def cancel_all(self, ib: IB) -> None:
        """Cancel every stream we requested on this connection (clean stop, or before 1101 replay)."""
        if self._cancelled:
            return
        limits = self._settings.limits
        for streams, kind in self._routes.values():
            contract = streams.contract
            if contract is None:
                continue
            if kind == "l1":
                ib.cancelMktData(contract)
            elif kind == "l2":
                ib.cancelMktDepth(contract, limits.smart_depth)
            else:
                ib.cancelTickByTickData(contract, TICK_BY_TICK_TYPE)
        self._cancelled = True

    # -- IB error replies ----------------------------------------------------------------

    def on_error(self, request_id: int, code: int, text: str) -> bool:
        """Apply an error reply to the stream it names. Returns whether it was ours."""
        found = None if self._cancelled else self._routes.get(request_id)
        if found is None:
            return False
        streams, kind = found
        carried = _carried_by(streams, kind)
        if code in codes.TICK_BY_TICK_LIMIT and kind == "tick_by_tick":
            self._fall_back_to_rtvolume(streams, code, text)
        elif code in codes.DEPTH_LIMIT or code in codes.MARKET_DATA_LINES_LIMIT:
            for entry in carried:
                self._reject(entry, "rejected_limit", code, text)
        elif code in codes.DELAYED_INSTEAD or (kind == "l1" and codes.offers_delayed(code, text)):
            self._mark_delayed(request_id, streams, carried, code, text)
        elif code in codes.NOT_ENTITLED:
            for entry in carried:
                self._reject(entry, "not_entitled", code, text)
        else:
            return False
        self._export()
        self._alert_soon()
        return True

    # -- delayed data --------------------------------------------------------------------

    def on_market_data_type(self, request_id: int, data_type: int) -> bool:
        """IB's marketDataType (message 58) for a Level 1 request: whether its data is delayed."""
        found = self._routes.get(request_id)
        if found is None or found[1] != "l1":
            return False
        delayed = data_type in DELAYED_DATA_TYPES
        if delayed:
            streams = found[0]
            text = f"IB reports market data type {data_type} (delayed) for this request"
            self._mark_delayed(request_id, streams, _carried_by(streams, "l1"), None, text)
            self._export()
            self._alert_soon()
        elif request_id in self._delayed_requests:
            self._delayed_requests.discard(request_id)
            self._live_again(found[0])
        return delayed

    def _live_again(self, streams: SymbolStreams) -> None:
        """IB reports live data again for a request it had sent delayed: its entries are active."""
        for entry in _carried_by(streams, "l1"):
            if entry.state == "delayed":
                entry.state, entry.error_code, entry.error_text = "active", None, None
        log.info("live market data again", symbol=streams.symbol)
        self._bus.publish("subscription_live", f"{streams.symbol}: IB reports live market data again")
        self._export()

    def on_delayed_ticks(self, request_id: int) -> None:
        """Delayed tick types (66-76) arrived on a Level 1 request IB had not reported as delayed."""
        self.on_market_data_type(request_id, 3)

    def delayed_request(self, request_id: int) -> bool:
        """Whether IB sends this Level 1 request's data delayed."""
        return request_id in self._delayed_requests

    def _mark_delayed(
        self,
        request_id: int,
        streams: SymbolStreams,
        carried: list[Subscription],
        code: int | None,
        text: str,
    ) -> None:
        """IB sends (or, for live requests, only offers) this Level 1 request's data delayed."""
        self._delayed_requests.add(request_id)
        changed = False
        for entry in carried:
            if entry.state == "delayed" and code is None:
                continue  # IB's own words (10167, 354) say more than a data type
            changed |= entry.state != "delayed"
            entry.state, entry.error_code, entry.error_text = "delayed", code, text
        if not changed:
            return
        if not self._wants_delayed:
            log.warning("delayed market data instead of live", symbol=streams.symbol, code=code, text=text)
        self._bus.publish("subscription_delayed", f"{streams.symbol}: {text}", code=code)

    def _delivering(self, entry: Subscription) -> bool:
        return entry.state == "active" or (entry.state == "delayed" and self._wants_delayed)

    def entitlement_problems(self) -> dict[str, list[str]]:
        """Symbols whose data is not what was asked for: delayed instead of live, or none at all."""
        delayed: list[str] = []
        not_entitled: list[str] = []
        for symbol, streams in self.streams.items():
            entries = streams.entries()
            if not self._wants_delayed and any(e.state == "delayed" for e in entries):
                delayed.append(symbol)
            elif any(e.state == "not_entitled" for e in entries) and not any(
                self._delivering(e) or e.state == "pending" for e in entries
            ):
                not_entitled.append(symbol)
        return {"delayed_market_data": delayed, "market_data_not_entitled": not_entitled}

    def degraded_reasons(self) -> list[str]:
        """Why /health is degraded because of market data permissions (empty when it is not)."""
        problems = self.entitlement_problems()
        reasons = []
        if symbols := problems["delayed_market_data"]:
            reasons.append(
                f"delayed market data instead of live (no live subscription): {', '.join(symbols)}"
            )
        if symbols := problems["market_data_not_entitled"]:
            reasons.append(f"no market data permission: {', '.join(symbols)}")
        return reasons

    def _alert_soon(self) -> None:
        """An entitlement answer outside the settle: alert after a short batch (at once without a loop)."""
        if self._settling or self._alert_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.alert_entitlements()
            return
        self._alert_handle = loop.call_later(ALERT_BATCH_SECONDS, self.alert_entitlements)

    def alert_entitlements(self) -> None:
        """Alert once per symbol for data that is delayed instead of live, or not permitted at all.

        A symbol is alerted for again only after it has had live data since the last subscribe: an
        answer that comes late, or a resubscription, does not repeat the alert.
        """
        if self._alert_handle is not None:
            self._alert_handle.cancel()
            self._alert_handle = None
        for event, symbols in self.entitlement_problems().items():
            alerted = self._alerted[event]
            alerted -= {s for s in alerted if s not in symbols and self._live_since_subscribe(s)}
            if set(symbols) <= alerted:
                continue
            alerted |= set(symbols)
            count = f"{len(symbols)} symbol" + ("s" if len(symbols) > 1 else "")
            detail = _ENTITLEMENT_ALERTS[event].format(count=count, symbols=", ".join(symbols))
            codes_seen = {e.error_code for s in symbols for e in self.streams[s].entries() if e.error_code}
            code = min(codes_seen) if len(codes_seen) == 1 else None
            alert(log, detail, symbols=symbols, code=code)
            self._bus.publish(event, detail, code=code, alert=True)

    def _live_since_subscribe(self, symbol: str) -> bool:
        return any(
            e.state == "active" and (e.last_tick_ns or 0) >= self._subscribed_ns
            for e in self.streams[symbol].entries()
        )

    def _reject(self, entry: Subscription, state: State, code: int, text: str) -> None:
        again = entry.state == "pending" and entry.error_code == code  # a retry refused as before
        entry.reject(state, code, text)
        if again:
            log.debug("subscription refused again", symbol=entry.symbol, data_type=entry.data_type, code=code)
            return
        log.error(
            "subscription rejected", symbol=entry.symbol, data_type=entry.data_type, code=code, text=text
        )
        self._bus.publish("subscription_rejected", f"{entry.symbol} {entry.data_type}: {text}", code=code)

    def _fall_back_to_rtvolume(self, streams: SymbolStreams, code: int, text: str) -> None:
        entry = streams.time_and_sales
        assert entry is not None
        entry.source = "rtvolume"
        entry.error_code, entry.error_text = code, f"{text} (trades now come from RTVolume)"
        streams.wants_tick_by_tick = False
        if streams.l1 is None or streams.l1.state not in LIVE_STATES | {"pending"}:
            entry.state = "rejected_limit"
        log.error("tick-by-tick rejected, using RTVolume", symbol=streams.symbol, code=code, text=text)
        self._bus.publish("subscription_rejected", f"{streams.symbol} tick-by-tick: {text}", code=code)

    # -- reading -------------------------------------------------------------------------

    def entries(self) -> list[Subscription]:
        return [e for streams in self.streams.values() for e in streams.entries()]

    def counts(self) -> dict[str, int]:
        """By state; ``active`` counts delayed streams only when delayed data is what was asked for."""
        by_state = Counter(e.state for e in self.entries())
        return {
            "active": by_state["active"] + (by_state["delayed"] if self._wants_delayed else 0),
            "pending": by_state["pending"],
            "rejected": sum(by_state[s] for s in ("rejected_limit", "invalid_symbol", "not_entitled")),
            "skipped": by_state["skipped_limit"],
        }

    def symbols_subscribed(self) -> int:
        return sum(any(self._delivering(e) for e in s.entries()) for s in self.streams.values())

    def snapshot(self) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.entries()]

    def report(self) -> None:
        """The log line users grep for, with exactly what was subscribed and what was not."""
        active = {t: [] for t in ("l1", "l2", "time_and_sales")}
        other: dict[str, list[str]] = {}
        for entry in self.entries():
            if self._delivering(entry):
                active[entry.data_type].append(entry.symbol)
            else:
                reason = f"{entry.state}" + (f" ({entry.error_code})" if entry.error_code else "")
                other.setdefault(f"{entry.symbol} {entry.data_type}", []).append(reason)
        tas = [self.streams[s].time_and_sales for s in active["time_and_sales"]]
        tbt = sum(1 for e in tas if e is not None and e.source == "tick_by_tick")
        log.info(
            f"Subscribed to {self.symbols_subscribed()} symbols",
            level1=len(active["l1"]),
            depth=len(active["l2"]),
            depth_symbols=active["l2"],
            time_and_sales=len(active["time_and_sales"]),
            tick_by_tick=tbt,
            rtvolume=len(active["time_and_sales"]) - tbt,
            not_subscribed={k: ", ".join(v) for k, v in other.items()},
        )

    def _export(self) -> None:
        by_state = Counter(e.state for e in self.entries())
        for state in STATES:
            self._metrics.subscriptions.labels(state).set(by_state[state])


_ENTITLEMENT_ALERTS = {
    "delayed_market_data": (
        "Delayed market data instead of live for {count}: {symbols}. The account has no live market "
        "data subscription for them: subscribe in IBKR Client Portal, or set ibkr.market_data_type: delayed "
        "to store delayed data (its rows are marked delayed)"
    ),
    "market_data_not_entitled": (
        "No market data permission for {count}: {symbols}. IB sends nothing for them: subscribe to "
        "market data in IBKR Client Portal (GET /subscriptions shows IB's answer per stream)"
    ),
}


def _refused_kinds(streams: SymbolStreams) -> list[str]:
    """The requests of ``streams`` that IB refused for want of permission: what a retry sends again."""
    kinds = ["l1", "l2"] + (["tick_by_tick"] if streams.wants_tick_by_tick else [])
    return [k for k in kinds if any(e.state == "not_entitled" for e in _carried_by(streams, k))]


def _carried_by(streams: SymbolStreams, kind: str) -> list[Subscription]:
    """The entries one IB request feeds: Level 1 also carries the trades of RTVolume symbols."""
    if kind == "l2":
        entries = [streams.l2]
    elif kind == "tick_by_tick":
        entries = [streams.time_and_sales]
    else:
        tas = streams.time_and_sales
        entries = [streams.l1, tas if tas is not None and tas.source == "rtvolume" else None]
    return [e for e in entries if e is not None]
