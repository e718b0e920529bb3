"""The simulator's control API: a small HTTP/1.1 server in the simulator's own event loop.

A hand-written handler rather than uvicorn: uvicorn.Server installs signal handlers and would fight
the CLI's own, and these few endpoints need nothing but a request line and a JSON answer.

Endpoints (query parameters, JSON answers, one request per connection):

    GET  /stats                       connections, exact counts of messages sent, and what the
                                      market produced ("market": trades per symbol, sent or not)
    GET  /tape?symbol=S&start=<unix s>&end=<unix s>
                                      the trades S produced with start <= time < end, oldest first
    POST /stats/reset                 zero the counters
    POST /disconnect                  close every client socket now
    POST /restart?down=<seconds>      close every client and the listener; listen again after `down`
    POST /error?code=<n>              send IB system message n to every client (1100, 1101, 1102, 2103...)
    POST /silence?seconds=<n>         send nothing and answer nothing for n seconds, sockets stay open
    POST /rate?value=<msgs per s>     total streaming rate; 0 = unthrottled
    POST /burst?messages=<n>          advance the watched symbols until n more messages went out, as
                                      fast as clients drain (also when paused)
    POST /pause, POST /resume         stop the market (no trades at all) / let it go on
    POST /depth-reset                 error 317 and a rebuilt book on every depth subscription
    POST /entitlement?value=<v>       the account's market data from now on: live, delayed or none
    POST /entitlement?value=<v>&symbol=S  the same for one symbol only (its own permission)
    POST /hmds?state=down|up|inactive the historical data farm: 2105 / 2106 / 2107 to every client;
                                      while down, historical requests stay open until it is up
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Final, Protocol
from urllib.parse import parse_qs, urlsplit

from ingestion.simulator.tape import Trade

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD: Final = 16 * 1024
REQUEST_TIMEOUT: Final = 10.0

_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class Controllable(Protocol):
    """What the control API drives: the faults and inspections of a running simulator."""

    def snapshot_stats(self) -> dict[str, object]: ...
    def reset_stats(self) -> None: ...
    def disconnect_all(self) -> None: ...
    async def restart(self, down: float) -> None: ...
    def send_system_message(self, code: int) -> int: ...
    def silence(self, seconds: float) -> None: ...
    def set_rate(self, rate: float) -> None: ...
    def burst(self, messages: int) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def reset_depth(self) -> None: ...
    def set_hmds(self, state: str) -> int: ...
    def set_entitlement(self, value: str, symbol: str | None = None) -> dict[str, str]: ...
    def tape(self, symbol: str, start_ms: int, end_ms: int) -> list[Trade]: ...


def trade_json(trade: Trade) -> dict[str, object]:
    """One trade as GET /tape lists it."""
    return {
        "time_ms": trade.time_ms,
        "time": trade.time_ms // 1000,
        "price": trade.price_cents / 100,
        "size": trade.size,
        "exchange": trade.exchange,
        "conditions": trade.conditions,
        "unreported": bool(trade.mask & 2),
    }


class BadRequestError(Exception):
    """A control request with a missing or invalid parameter."""


def _number(query: dict[str, list[str]], name: str, kind: Callable[[str], float | int]) -> float | int:
    try:
        return kind(query[name][0])
    except (KeyError, IndexError) as exc:
        msg = f"missing query parameter {name!r}"
        raise BadRequestError(msg) from exc
    except ValueError as exc:
        msg = f"query parameter {name!r} is not a number"
        raise BadRequestError(msg) from exc


def _text(query: dict[str, list[str]], name: str) -> str:
    try:
        return query[name][0]
    except (KeyError, IndexError) as exc:
        msg = f"missing query parameter {name!r}"
        raise BadRequestError(msg) from exc


class ControlServer:
    """Serves the control endpoints for one simulator."""

    def __init__(self, sim: Controllable) -> None:
        self.sim = sim
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0 picks a port, read back from ``port``)."""
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulator control API on http://%s:%d", host, self.port)

    async def stop(self) -> None:
        """Stop listening and cancel requests in flight."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, body = await self._serve_one(reader)
            payload = json.dumps(body).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.info("control request failed: %r", exc)
        finally:
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _serve_one(self, reader: asyncio.StreamReader) -> tuple[int, object]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_REQUEST_HEAD:
            return 400, {"error": "request head too large"}
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            return 400, {"error": "bad request line"}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                await reader.readexactly(int(value.strip()))  # bodies are ignored but must be read
        url = urlsplit(target)
        try:
            return await self._route(method, url.path.rstrip("/") or "/", parse_qs(url.query))
        except (BadRequestError, ValueError) as exc:
            return 400, {"error": str(exc)}

    async def _route(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, object]:
        sim = self.sim
        if path == "/stats":
            if method != "GET":
                return 405, {"error": "use GET"}
            return 200, sim.snapshot_stats()
        if path == "/tape":
            if method != "GET":
                return 405, {"error": "use GET"}
            return 200, self._tape(query)
        posts: dict[str, Callable[[], object]] = {
            "/stats/reset": sim.reset_stats,
            "/disconnect": sim.disconnect_all,
            "/error": lambda: {"sent": sim.send_system_message(int(_number(query, "code", int)))},
            "/silence": lambda: sim.silence(float(_number(query, "seconds", float))),
            "/rate": lambda: sim.set_rate(float(_number(query, "value", float))),
            "/burst": lambda: sim.burst(int(_number(query, "messages", int))),
            "/pause": sim.pause,
            "/resume": sim.resume,
            "/depth-reset": sim.reset_depth,
            "/entitlement": lambda: sim.set_entitlement(
                _text(query, "value"), query.get("symbol", [None])[0]
            ),
            "/hmds": lambda: {"sent": sim.set_hmds(_text(query, "state"))},
        }
        if path == "/restart":
            if method != "POST":
                return 405, {"error": "use POST"}
            await sim.restart(float(_number(query, "down", float)))
            return 200, {"ok": True}
        action = posts.get(path)
        if action is None:
            return 404, {"error": f"no endpoint {path}"}
        if method != "POST":
            return 405, {"error": "use POST"}
        result = action()
        return 200, result if isinstance(result, dict) else {"ok": True}

    def _tape(self, query: dict[str, list[str]]) -> dict[str, object]:
        symbol = _text(query, "symbol").upper()
        start = round(float(_number(query, "start", float)) * 1000)
        end = round(float(_number(query, "end", float)) * 1000)
        try:
            trades = self.sim.tape(symbol, start, end)
        except KeyError as exc:
            raise BadRequestError(str(exc.args[0])) from exc
        return {"symbol": symbol, "trades": [trade_json(t) for t in trades]}
