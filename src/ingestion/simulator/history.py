"""IB's historical data farm (HMDS) over the TWS protocol, served from the market's tape.

reqHistoricalData (bars 1 secs .. 1 day of TRADES, MIDPOINT, BID_ASK; under a minute from the tape,
from a minute up from minute aggregates and the synthetic past), reqHeadTimestamp and
reqHistoricalTicks (TRADES, BID_ASK, MIDPOINT), with IB's rules: the step-size table, pacing
(``pacing.Pacer``), at most 50 open requests, "HMDS query returned no data", one trading session per
tick request, at most 1,000 ticks plus whatever completes the last second. Requests are answered
``hmds_latency`` seconds after they arrive; while the farm is down they stay open until it is up.
Ticks exist for the time the simulator ran (its tape); bars reach back years (``bars.SyntheticPast``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingestion.simulator import stats
from ingestion.simulator.bars import (
    BAR_SIZES,
    DAY,
    MINUTE_MS,
    Bar,
    Duration,
    Minute,
    SyntheticPast,
    aggregate,
    bucket_start,
    label,
    live_minute,
    step_allowed,
    tape_bars,
)
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.contracts import ContractSpec
from ingestion.simulator.hours import NEW_YORK, TradingHours, TradingSession
from ingestion.simulator.market import SymbolMarket
from ingestion.simulator.pacing import Pacer
from ingestion.simulator.protocol import ErrorCode, Out, encode, error_frame, format_price

log = logging.getLogger(__name__)

MAX_OPEN_REQUESTS: Final = 50
MAX_TICKS: Final = 1000
WHAT_TO_SHOW: Final = ("TRADES", "MIDPOINT", "BID_ASK")
FARM_STATES: Final = {"down": ErrorCode.HMDS_FARM_BROKEN, "up": ErrorCode.HMDS_FARM_OK}
FARM_STATES_ALL: Final = {**FARM_STATES, "inactive": ErrorCode.HMDS_FARM_INACTIVE}

PACING_VIOLATION: Final = "Historical data request pacing violation"
TOO_MANY_OPEN: Final = "Error processing request:Only 50 simultaneous API historical data requests allowed."
KEEP_UP_TO_DATE: Final = "keepUpToDate is not served by this simulator"
BAR_SIZE_INVALID: Final = (
    "Historical data bar size setting is invalid. Legal ones are: 1 secs, 5 secs, 10 secs, 15 secs, "
    "30 secs, 1 min, 2 mins, 3 mins, 5 mins, 10 mins, 15 mins, 20 mins, 30 mins, 1 hour, 2 hours, "
    "3 hours, 4 hours, 8 hours, 1 day, 1W, 1M"
)


class Client(Protocol):
    """The connection a request came from."""

    version: int
    out: list[bytes]

    def send(self, kind: str, frame: bytes) -> None: ...
    def send_error(self, req_id: int, code: int, **text_args: object) -> None: ...
    def flush(self) -> None: ...


@dataclass(slots=True)
class OpenRequest:
    """A request the farm has accepted and not answered yet."""

    client: Client
    req_id: int
    answer: Callable[[], None]
    handle: asyncio.TimerHandle | None = None


class BadRequestError(Exception):
    """A field IB would refuse; ``code`` and ``text_args`` make the error message."""

    def __init__(self, code: int, **text_args: object) -> None:
        super().__init__(code)
        self.code = code
        self.text_args = text_args


def parse_time(text: str, hours: TradingHours) -> int | None:
    """An IB date/time field in unix ms; None for "" (now). Naive times are the gateway's zone."""
    text = text.strip()
    if not text:
        return None
    try:
        if "-" in text and " " not in text:  # yyyymmdd-hh:mm:ss is UTC
            parsed = dt.datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=dt.UTC)
        else:
            parts = text.split(" ")
            zone: dt.tzinfo = NEW_YORK if hours.name == "nyse" else dt.UTC
            if len(parts) == 3:
                zone = ZoneInfo(parts[2])
            elif len(parts) == 1:
                parts = [parts[0], "23:59:59"]
            parsed = dt.datetime.strptime(f"{parts[0]} {parts[1]}", "%Y%m%d %H:%M:%S").replace(tzinfo=zone)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise BadRequestError(ErrorCode.INVALID_END_DATE) from exc
    return int(parsed.timestamp() * 1000)


class HistoricalFarm:
    """The HMDS farm of one simulator: every client's historical requests."""

    def __init__(
        self,
        config: SimulatorConfig,
        markets: dict[str, SymbolMarket],
        hours: TradingHours,
        now_ms: Callable[[], int],
        started_ms: int,
    ) -> None:
        self._config = config
        self._markets = markets
        self._hours = hours
        self._now_ms = now_ms
        self._started_ms = started_ms
        self._pacer = Pacer(lambda: asyncio.get_running_loop().time())
        self._open: dict[tuple[int, int], OpenRequest] = {}
        self._pasts: dict[str, SyntheticPast] = {}
        self.state = "up"
        self.answered = 0
        self.violations = 0
        self.requests = {"head_timestamp": 0, "historical_data": 0, "historical_ticks": 0}

    # --------------------------------------------------------------- the farm

    def set_state(self, state: str) -> int:
        """Take the farm down, up, or inactive; returns the farm message clients must get."""
        code = FARM_STATES_ALL.get(state)
        if code is None:
            msg = f"state must be one of {sorted(FARM_STATES_ALL)}, got {state!r}"
            raise ValueError(msg)
        self.state = state
        if state != "down":
            for request in self._open.values():
                if request.handle is None:
                    self._schedule(request)
        return code

    def forget(self, client: Client) -> None:
        """A client went away: its open requests die with it."""
        for key in [k for k, r in self._open.items() if r.client is client]:
            self._drop(key)

    def cancel(self, client: Client, req_id: int) -> None:
        """cancelHistoricalData / cancelHeadTimeStamp: the request is dropped without an answer."""
        self._drop((id(client), req_id))

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state,
            "open": len(self._open),
            "answered": self.answered,
            "pacing": self.violations,
            "requests": dict(self.requests),
        }

    def _drop(self, key: tuple[int, int]) -> None:
        request = self._open.pop(key, None)
        if request is not None and request.handle is not None:
            request.handle.cancel()

    def _submit(
        self,
        client: Client,
        req_id: int,
        answer: Callable[[], None],
        pace: tuple[tuple[object, ...], tuple[object, ...], int] | None,
    ) -> None:
        if len(self._open) >= MAX_OPEN_REQUESTS:
            client.send(stats.ERROR, error_frame(client.version, req_id, ErrorCode.PROCESSING, TOO_MANY_OPEN))
            return
        if pace is not None and not self._pacer.admit(*pace):
            self.violations += 1
            client.send_error(req_id, ErrorCode.HISTORICAL_DATA, detail=PACING_VIOLATION)
            return
        request = OpenRequest(client, req_id, answer)
        self._open[(id(client), req_id)] = request
        if self.state != "down":
            self._schedule(request)

    def _schedule(self, request: OpenRequest) -> None:
        loop = asyncio.get_running_loop()
        request.handle = loop.call_later(self._config.hmds_latency, self._serve, request)

    def _serve(self, request: OpenRequest) -> None:
        if self._open.pop((id(request.client), request.req_id), None) is not request:
            return
        try:
            request.answer()
        except BadRequestError as exc:
            request.client.send_error(request.req_id, exc.code, **exc.text_args)
        self.answered += 1
        request.client.flush()

    def _past(self, spec: ContractSpec) -> SyntheticPast:
        past = self._pasts.get(spec.symbol)
        if past is None:
            past = self._pasts[spec.symbol] = SyntheticPast(
                self._config.seed, spec.symbol, spec.price_cents, self._started_ms, self._hours
            )
        return past

    @staticmethod
    def _no_data(spec: ContractSpec, exchange: str, what: str) -> BadRequestError:
        shown = {"TRADES": "Trades", "MIDPOINT": "Midpoint", "BID_ASK": "Bid_Ask"}.get(what, what)
        detail = f"HMDS query returned no data: {spec.symbol}@{exchange or 'SMART'} {shown}"
        return BadRequestError(ErrorCode.HISTORICAL_DATA, detail=detail)

    # ----------------------------------------------------------- head timestamp

    def head_timestamp(self, client: Client, req_id: int, spec: ContractSpec, fields: list[str]) -> None:
        """reqHeadTimeStamp: the first bar IB has (the start of the synthetic past)."""
        self.requests["head_timestamp"] += 1
        rth, format_date = fields[15] == "1", int(fields[17] or 1)

        def answer() -> None:
            first = self._past(spec).first_ms
            sessions = self._hours.sessions(first, first + 8 * DAY * 1000, rth)
            head = sessions[0].start_ms if sessions else first
            if format_date == 2:
                text = str(head // 1000)
            else:
                text = dt.datetime.fromtimestamp(head / 1000, dt.UTC).strftime("%Y%m%d-%H:%M:%S")
            client.send("head_timestamp", encode((Out.HEAD_TIMESTAMP, req_id, text)))

        self._submit(client, req_id, answer, None)

    # -------------------------------------------------------------------- bars

    def historical_data(self, client: Client, req_id: int, spec: ContractSpec, fields: list[str]) -> None:
        """reqHistoricalData, fields in the layout of server version 124 and later."""
        self.requests["historical_data"] += 1
        exchange = fields[9]
        end_text, bar_text, duration_text = fields[15], fields[16], fields[17]
        rth, what = fields[18] == "1", fields[19]
        try:
            format_date = int(fields[20] or 1)
            bar_seconds = _bar_size(bar_text)
            duration = _duration(duration_text)
            _check_what(what)
            end_ms = parse_time(end_text, self._hours)
        except BadRequestError as exc:
            client.send_error(req_id, exc.code, **exc.text_args)
            return
        if len(fields) > 21 and fields[21] == "1":
            client.send_error(req_id, ErrorCode.HISTORICAL_DATA, detail=KEEP_UP_TO_DATE)
            return

        def answer() -> None:
            if not step_allowed(duration, bar_seconds):
                raise BadRequestError(ErrorCode.HISTORICAL_DATA, detail=f"invalid step: {bar_seconds}")
            end = end_ms if end_ms is not None else self._now_ms()
            start = self._window_start(duration, end, rth)
            bars = self._bars(spec, start, end, bar_seconds, rth, what)
            if not bars:
                raise self._no_data(spec, exchange, what)
            head: list[object] = [Out.HISTORICAL_DATA, req_id, label(start, 1, self._hours)]
            head += [label(end, 1, self._hours), len(bars)]
            for bar in bars:
                when = (
                    bar.day.strftime("%Y%m%d") if bar.day else label(bar.start_ms, format_date, self._hours)
                )
                head += [when, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.wap, bar.count]
            client.send("historical_data", encode(head))

        identity = ("bars", spec.con_id, exchange, end_text, bar_text, duration_text, rth, what)
        self._submit(client, req_id, answer, (identity, (spec.con_id, exchange, what), _weight(what)))

    def _window_start(self, duration: Duration, end: int, rth: bool) -> int:
        """Where a request's window starts: ``N D`` means N sessions, other units clock time."""
        if duration.unit != "D":
            return end - duration.seconds * 1000
        lookback = (duration.count * 2 + 7) * DAY * 1000
        sessions = [s for s in self._hours.sessions(end - lookback, end, rth) if s.start_ms < end]
        if not sessions:
            return end - duration.seconds * 1000
        return sessions[max(0, len(sessions) - duration.count)].start_ms

    def _bars(
        self, spec: ContractSpec, start: int, end: int, bar_seconds: int, rth: bool, what: str
    ) -> list[Bar]:
        bars: list[Bar] = []
        for session in self._hours.sessions(start, end, rth):
            if bar_seconds == DAY:
                bar = self._day_bar(spec, session, min(session.end_ms, end), what)
                if bar is not None:
                    bars.append(bar)
                continue
            if bar_seconds < 60:
                market = self._markets[spec.symbol]
                lo, hi = max(session.start_ms, start), min(session.end_ms, end)
                bars += tape_bars(market.trades, market.quotes, lo, hi, bar_seconds, what)
                continue
            minutes = self._minutes(spec, session, max(session.start_ms, start), min(session.end_ms, end))
            buckets: dict[int, list[Minute]] = {}
            for minute in minutes:
                key = max(bucket_start(minute.start_ms, bar_seconds, self._hours), session.start_ms)
                buckets.setdefault(key, []).append(minute)
            for key, group in buckets.items():
                bar = aggregate(group, what, key, None)
                if bar is not None:
                    bars.append(bar)
        return bars

    def _minutes(self, spec: ContractSpec, session: TradingSession, lo: int, hi: int) -> list[Minute]:
        """The minutes starting in ``[lo, hi)``: synthetic before the start, the market's after."""
        live_from = self._started_ms // MINUTE_MS * MINUTE_MS
        out = [m for m in self._past(spec).minutes(session) if lo <= m.start_ms < min(hi, live_from)]
        if hi > live_from:
            table = self._markets[spec.symbol].minutes
            first = max(lo, live_from) // MINUTE_MS
            for minute in range(first, -(-hi // MINUTE_MS)):
                bar = table.get(minute)
                if bar is not None and minute * MINUTE_MS >= lo:
                    out.append(live_minute(minute, bar))
        return out

    def _day_bar(self, spec: ContractSpec, session: TradingSession, end: int, what: str) -> Bar | None:
        if end <= self._started_ms:
            return self._past(spec).day_bar(session, what)
        return aggregate(
            self._minutes(spec, session, session.start_ms, end), what, session.start_ms, session.day
        )

    # ------------------------------------------------------------------- ticks

    def historical_ticks(self, client: Client, req_id: int, spec: ContractSpec, fields: list[str]) -> None:
        """reqHistoricalTicks: trades or quotes of one session from the tape."""
        self.requests["historical_ticks"] += 1
        exchange = fields[9]
        start_text, end_text, what = fields[15], fields[16], fields[18]
        rth, ignore_size = fields[19] == "1", fields[20] == "1"
        try:
            count = min(max(int(fields[17] or 0), 1), MAX_TICKS)
            _check_what(what)
            start_ms = parse_time(start_text, self._hours)
            end_ms = parse_time(end_text, self._hours)
        except BadRequestError as exc:
            client.send_error(req_id, exc.code, **exc.text_args)
            return
        if start_ms is None and end_ms is None:
            client.send_error(req_id, ErrorCode.INVALID_END_DATE)
            return

        def answer() -> None:
            frame = self._ticks_frame(req_id, spec, (start_ms, end_ms), count, what, (rth, ignore_size))
            if frame is None:
                raise self._no_data(spec, exchange, what)
            client.send("historical_ticks", frame)

        identity = ("ticks", spec.con_id, exchange, start_text, end_text, count, what, rth, ignore_size)
        self._submit(client, req_id, answer, (identity, (spec.con_id, exchange, what), _weight(what)))

    def _session_window(self, start_ms: int | None, end_ms: int | None, rth: bool) -> tuple[int, int] | None:
        """The part of one trading session a tick request covers, in unix ms, end exclusive."""
        # A whole second named as the end is included: IB's tick times are whole seconds.
        end_excl = end_ms + 1000 if end_ms is not None else None
        if start_ms is not None:
            for session in self._hours.sessions(start_ms, start_ms + 8 * DAY * 1000, rth):
                if session.end_ms > start_ms:
                    hi = session.end_ms if end_excl is None else min(session.end_ms, end_excl)
                    return max(session.start_ms, start_ms), hi
            return None
        assert end_excl is not None
        sessions = [
            s for s in self._hours.sessions(end_excl - 8 * DAY * 1000, end_excl, rth) if s.start_ms < end_excl
        ]
        if not sessions:
            return None
        return sessions[-1].start_ms, min(sessions[-1].end_ms, end_excl)

    def _ticks_frame(
        self,
        req_id: int,
        spec: ContractSpec,
        bounds: tuple[int | None, int | None],
        count: int,
        what: str,
        flags: tuple[bool, bool],
    ) -> bytes | None:
        """The answer to a tick request; ``flags`` are useRth and ignoreSize."""
        start_ms, end_ms = bounds
        rth, ignore_size = flags
        window = self._session_window(start_ms, end_ms, rth)
        if window is None:
            return None
        lo_ms, hi_ms = window
        market = self._markets[spec.symbol]
        tape = market.trades if what == "TRADES" else market.quotes
        lo, hi = tape.index(lo_ms), tape.index(hi_ms)
        if lo >= hi:
            return None
        times = tape.time_ms
        if start_ms is not None:
            last = min(lo + count, hi)
            second = times[last - 1] // 1000
            while last < hi and times[last] // 1000 == second:
                last += 1  # complete the second, as IB does
            first = lo
        else:
            first = max(lo, hi - count)
            second = times[first] // 1000
            while first > lo and times[first - 1] // 1000 == second:
                first -= 1
            last = hi
        fields: list[object]
        if what == "TRADES":
            fields = [Out.HISTORICAL_TICKS_LAST, req_id, last - first]
            for i in range(first, last):
                trade = market.trades.trade(i)
                fields += [
                    trade.time_ms // 1000,
                    trade.mask,
                    format_price(trade.price_cents),
                    trade.size,
                    trade.exchange,
                    trade.conditions,
                ]
        elif what == "BID_ASK":
            ticks: list[object] = []
            previous = (-1, -1)
            for i in range(first, last):
                quote = market.quotes.quote(i)
                if ignore_size and (quote.bid, quote.ask) == previous:
                    continue  # ignoreSize: only changes of price
                previous = (quote.bid, quote.ask)
                ticks += [
                    quote.time_ms // 1000,
                    0,
                    format_price(quote.bid),
                    format_price(quote.ask),
                    quote.bid_size,
                    quote.ask_size,
                ]
            fields = [Out.HISTORICAL_TICKS_BID_ASK, req_id, len(ticks) // 6, *ticks]
        else:
            ticks = []
            previous_mid = -1
            for i in range(first, last):
                quote = market.quotes.quote(i)
                half = quote.bid + quote.ask
                if half != previous_mid:  # a midpoint tick only when the midpoint moves
                    ticks += [times[i] // 1000, 0, f"{half // 200}.{half % 200 * 5:03d}", 0]
                    previous_mid = half
            fields = [Out.HISTORICAL_TICKS, req_id, len(ticks) // 4, *ticks]
        fields.append(1)  # done
        return encode(fields)


def _weight(what: str) -> int:
    """BID_ASK requests count twice against the pacing limits."""
    return 2 if what == "BID_ASK" else 1


def _bar_size(text: str) -> int:
    seconds = BAR_SIZES.get(text)
    if seconds is None:
        raise BadRequestError(ErrorCode.VALIDATION, letter="bK", detail=BAR_SIZE_INVALID)
    return seconds


def _duration(text: str) -> Duration:
    try:
        return Duration.parse(text)
    except ValueError as exc:
        detail = "Historical data duration format is invalid."
        raise BadRequestError(ErrorCode.VALIDATION, letter="bK", detail=detail) from exc


def _check_what(what: str) -> None:
    if what not in WHAT_TO_SHOW:
        raise BadRequestError(ErrorCode.HISTORICAL_DATA, detail=f"No data of type {what} is available")
