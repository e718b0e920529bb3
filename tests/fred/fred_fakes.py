"""A local FRED: a real HTTP server answering in FRED's XML formats, plus fakes of the poller's peers.

Formats follow https://fred.stlouisfed.org/docs/api/fred/ (series, series/observations, errors):
every error is ``<error code=".." message=".."/>`` with the HTTP status of the same number.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import quoteattr

from ingestion.events import Event
from ingestion.sinks.base import SinkStatus

VALID_KEY = "abcdef0123456789abcdef012345wxyz"
REALTIME = 'realtime_start="2026-03-02" realtime_end="2026-03-02"'

KEY_NOT_REGISTERED = (
    "Bad Request.  The value for variable api_key is not registered.  "
    "Read https://fred.stlouisfed.org/docs/api/api_key.html for more information."
)
KEY_NOT_SET = "Bad Request.  Variable api_key has not been set."
SERIES_MISSING = "Bad Request.  The series does not exist."
RATE_LIMITED = "Too Many Requests.  Exceeded Rate Limit"


@dataclass
class FakeSeries:
    title: str
    units: str
    frequency: str
    last_updated: str
    observations: list[tuple[str, str]]  # (date, value as FRED writes it, '.' when missing)


@dataclass(frozen=True)
class Received:
    path: str
    params: dict[str, str]


@dataclass(frozen=True)
class Failure:
    """The next answer on a path: an HTTP error, or a delay before the normal answer."""

    status: int = 0
    message: str = ""
    delay: float = 0.0


@dataclass
class FakeFred:
    """State shared between the test and the server thread."""

    series: dict[str, FakeSeries] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    failures: dict[str, deque[Failure]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    base_url: str = ""

    def fail_next(self, path: str, *failures: Failure) -> None:
        self.failures.setdefault(path, deque()).extend(failures)

    def observation_requests(self, series_id: str) -> list[Received]:
        wanted = "/fred/series/observations"
        return [r for r in self.received if r.path == wanted and r.params["series_id"] == series_id]


def _series_xml(series_id: str, s: FakeSeries) -> str:
    end = max((d for d, _ in s.observations), default="")
    return (
        f'<?xml version="1.0" encoding="utf-8" ?>\n<seriess {REALTIME}>\n'
        f'  <series id="{series_id}" {REALTIME} title={quoteattr(s.title)} observation_start="1954-07-01"'
        f' observation_end="{end}" frequency={quoteattr(s.frequency)} frequency_short="D"'
        f' units={quoteattr(s.units)} units_short="%" seasonal_adjustment="Not Seasonally Adjusted"'
        f' seasonal_adjustment_short="NSA" last_updated="{s.last_updated}" popularity="80"'
        f' notes="Test series."/>\n</seriess>\n'
    )


def _observations_xml(s: FakeSeries, start: str) -> str:
    rows = [(d, v) for d, v in s.observations if d >= start]
    lines = [f'  <observation {REALTIME} date="{d}" value="{v}"/>' for d, v in rows]
    return (
        f'<?xml version="1.0" encoding="utf-8" ?>\n<observations {REALTIME} observation_start="{start}"'
        ' observation_end="9999-12-31" units="lin" output_type="1" file_type="xml"'
        f' order_by="observation_date" sort_order="asc" count="{len(rows)}" offset="0" limit="100000">\n'
        + "\n".join(lines)
        + "\n</observations>\n"
    )


class _Handler(BaseHTTPRequestHandler):
    server: _FredHTTPServer

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        fake.received.append(Received(url.path, params))
        queued = fake.failures.get(url.path)
        failure = queued.popleft() if queued else None
        if failure and failure.delay:
            fake.stopping.wait(failure.delay)
        elif failure:
            self._error(failure.status, failure.message)
            return
        self._answer(fake, url.path, params)

    def _answer(self, fake: FakeFred, path: str, params: dict[str, str]) -> None:
        if "api_key" not in params:
            self._error(400, KEY_NOT_SET)
            return
        if params["api_key"] != VALID_KEY:
            self._error(400, KEY_NOT_REGISTERED)
            return
        series = fake.series.get(params.get("series_id", ""))
        if series is None:
            self._error(400, SERIES_MISSING)
            return
        if path == "/fred/series":
            self._xml(200, _series_xml(params["series_id"], series))
        elif path == "/fred/series/observations":
            self._xml(200, _observations_xml(series, params.get("observation_start", "1776-07-04")))
        else:
            self._error(404, "Not Found.")

    def _error(self, status: int, message: str) -> None:
        element = f'<error code="{status}" message={quoteattr(message)}/>'
        self._xml(status, f'<?xml version="1.0" encoding="utf-8" ?>\n{element}\n')

    def _xml(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts on ``FakeFred.received`` instead."""


class _FredHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeFred) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client that timed out on a slow answer closes its socket before we write."""


class FredServer:
    """Runs :class:`FakeFred` on a free loopback port in a thread."""

    def __init__(self, fake: FakeFred) -> None:
        self.fake = fake
        self._server = _FredHTTPServer(fake)
        fake.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/fred"
        self._thread = threading.Thread(target=self._serve, name="fake-fred", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        # serve_forever checks for shutdown every poll_interval: the 0.5 s default adds up.
        self._server.serve_forever(poll_interval=0.02)

    def stop(self) -> None:
        self.fake.stopping.set()  # releases slow answers at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class ListSink:
    """Accepts everything, like the QuestDB writer whose spool owns what it accepts."""

    name = "list"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def accept(self, event: Event) -> None:
        self.events.append(event)


class RaisingSink:
    """Storage that throws: nothing it was offered counts as stored."""

    name = "raising"

    def accept(self, event: Event) -> None:
        raise ConnectionRefusedError("QuestDB at 127.0.0.1:9000 refused the connection")


class DownSink(ListSink):
    """A sink whose status says it cannot take writes (neither QuestDB nor its spool)."""

    def status(self) -> SinkStatus:
        return SinkStatus("down", {"last_error": "spool disk full"})


class FakeClock:
    def __init__(self, start: float = 1_772_438_400.0) -> None:  # 2026-03-02T08:00:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    """Records each delay and returns at once, advancing ``clock`` as if the time had passed.

    With ``block_after``, the call after that many returns blocks until cancelled: how a test
    stops :meth:`FredPoller.run` at a known point without real waiting.
    """

    def __init__(self, clock: FakeClock | None = None, block_after: int | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock
        self.block_after = block_after
        self.blocked = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.block_after is not None and len(self.delays) > self.block_after:
            self.blocked.set()
            await asyncio.Event().wait()
        if self.clock is not None:
            self.clock.now += delay
        await asyncio.sleep(0)
