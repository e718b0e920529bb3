"""``ingestion status`` and ``ingestion watch``: the daemon's state for a person at a terminal.

Both are HTTP clients of a running daemon (``/api/status``, ``/events``, ``/health/live``), so they
work on the host against the published port and inside the container (``docker exec``).

``status`` prints one screen and exits 0 healthy, 1 degraded or unhealthy, 3 when the daemon does
not answer, so that it can sit in a shell prompt, a cron job or a monitoring check.

``watch`` prints one line per event of the daemon's live stream (any event, so that new kinds need
no code here), rings the terminal bell when the IBKR connection is lost, and says within seconds
when the daemon itself stops answering, and again when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx

EXIT_HEALTHY = 0
EXIT_NOT_HEALTHY = 1
EXIT_UNREACHABLE = 3
REQUEST_SECONDS = 3.0
# watch: how often the daemon is asked whether it is alive, and how long an answer may take.
LIVENESS_EVERY_SECONDS = 1.0
LIVENESS_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 1.0
RECENT_ALERTS = 5
BELL = "\a"

GREEN, YELLOW, RED, DIM, BOLD, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[1m", "\033[0m"
BAD_EVENTS = (
    "_lost",
    "_down",
    "_overflow",
    "_rejected",
    "stale_data",
    "competing_session",
    "failed",
    "broken",
)
GOOD_EVENTS = ("_restored", "_cleared", "_ok", "_filled")


def default_url(environ: Mapping[str, str] = os.environ) -> str:
    """``http://localhost:<API_PORT>``, 8500 unless the environment says otherwise."""
    return f"http://localhost:{environ.get('API_PORT') or '8500'}"


class Style:
    """ANSI colour on a terminal (unless ``NO_COLOR`` is set), plain text anywhere else."""

    def __init__(self, stream: TextIO, environ: Mapping[str, str] = os.environ) -> None:
        self.on = stream.isatty() and not environ.get("NO_COLOR")

    def __call__(self, text: str, *codes: str) -> str:
        return f"{''.join(codes)}{text}{RESET}" if self.on and codes else text

    def state(self, text: str, good: bool | None) -> str:
        return self(text, GREEN if good else YELLOW if good is None else RED)


# -- status ------------------------------------------------------------------------------------


def status(url: str, out: TextIO, *, as_json: bool = False) -> int:
    """Print the daemon's state; returns the exit code."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/status", timeout=REQUEST_SECONDS)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if as_json:
            out.write(json.dumps({"status": "unreachable", "url": url, "error": reason}) + "\n")
        else:
            style = Style(out)
            out.write(f"{style('UNREACHABLE', BOLD, RED)}: the daemon at {url} does not answer ({reason})\n")
        return EXIT_UNREACHABLE
    health = body["health"]
    if as_json:
        out.write(json.dumps(body, indent=2) + "\n")
    else:
        out.write(render_status(url, body, Style(out)))
    return EXIT_HEALTHY if health["status"] == "healthy" else EXIT_NOT_HEALTHY


def render_status(url: str, body: Mapping[str, Any], style: Style) -> str:
    """The status screen: one labelled line per concern, then the reasons and the last alerts."""
    health = body["health"]
    overall = health["status"]
    colour = GREEN if overall == "healthy" else YELLOW if overall == "degraded" else RED
    lines = [f"{style(overall.upper(), BOLD, colour)} data-ingestion {health.get('version', '?')} at {url}"]
    rows = [
        ("IBKR", _connection(health, style)),
        ("IB", _ib(health.get("ibkr") or {}, style)),
        ("Subscriptions", _subscriptions(health, body.get("symbols") or [])),
        ("Session", str(health.get("market_session"))),
        ("Last tick", _age_text(health.get("last_tick_at"))),
        *_storage(health.get("storage") or {}, style),
        ("FRED", _fred(health.get("fred") or {}, style)),
    ]
    width = max(len(label) for label, _ in rows)
    lines += [f"  {label:<{width}}  {text}" for label, text in rows]
    reasons = health.get("reasons") or []
    if reasons:
        lines.append("  Why:")
        lines += [f"    - {reason}" for reason in reasons]
    alerts = [e for e in body.get("events") or [] if e.get("alert")][:RECENT_ALERTS]
    lines.append("  Last alerts:" if alerts else "  Last alerts: none")
    lines += [f"    {_short_time(e['at'])}  {event_name(e['event'], style)}  {e['detail']}" for e in alerts]
    return "\n".join(lines) + "\n"


def _connection(health: Mapping[str, Any], style: Style) -> str:
    state = health["ibkr_status"]
    ibkr = health.get("ibkr") or {}
    where = f"{ibkr.get('host')}:{ibkr.get('port')}" if ibkr.get("host") else ""
    if state == "connected":
        since = health.get("ibkr_connected_at")
        return f"{style('connected', GREEN)} to {where} since {since} ({_age_text(since)})"
    since = health.get("last_disconnected_at")
    text = f"{style(state, RED)} ({where})"
    if since:
        text += f", outage since {since} ({_age_text(since)})"
    attempts = health.get("reconnection_attempts", 0)
    text += f", reconnection attempt {attempts}" if attempts else ", reconnecting"
    if ibkr.get("last_error"):
        text += f"; last error: {ibkr['last_error']}"
    return text


def _ib(ibkr: Mapping[str, Any], style: Style) -> str:
    connectivity = ibkr.get("ib_connectivity", "?")
    text = f"connectivity {style.state(connectivity, connectivity == 'ok')}"
    farms = ibkr.get("farms") or {}
    if farms:
        text += "; farms " + ", ".join(
            f"{name} {style.state(farm['state'], farm['state'] == 'ok')}" for name, farm in farms.items()
        )
    if ibkr.get("competing_session"):
        text += "; " + style("competing live session (10197)", RED)
    return text


def _subscriptions(health: Mapping[str, Any], symbols: list[Mapping[str, Any]]) -> str:
    counts = health.get("subscriptions") or {}
    text = (
        f"{health.get('symbols_subscribed', 0)} symbols; active {counts.get('active', 0)}, "
        f"pending {counts.get('pending', 0)}, rejected {counts.get('rejected', 0)}"
    )
    by_type: dict[str, dict[str, int]] = {}
    for symbol in symbols:
        for kind, stream in (symbol.get("streams") or {}).items():
            state = stream.get("state")
            bucket = (
                "active"
                if state in ("active", "delayed")
                else "pending"
                if state == "pending"
                else "rejected"
            )
            by_type.setdefault(kind, {"active": 0, "pending": 0, "rejected": 0})[bucket] += 1
    if by_type:
        text += " (" + "; ".join(_type_counts(kind, c) for kind, c in by_type.items()) + ")"
    return text


def _type_counts(kind: str, counts: Mapping[str, int]) -> str:
    """``l2 3/3`` or ``l2 3/15, 12 rejected``: active out of all, by data type."""
    text = f"{kind} {counts['active']}/{sum(counts.values())}"
    return text + (f", {counts['rejected']} rejected" if counts["rejected"] else "")


def _storage(storage: Mapping[str, Any], style: Style) -> list[tuple[str, str]]:
    questdb = storage.get("questdb") or {}
    valkey = storage.get("valkey") or {}
    q_state = questdb.get("status", "?")
    q_text = (
        f"{style.state(q_state, q_state == 'ok')}; spool {_bytes(questdb.get('spool_bytes') or 0)}, "
        f"{questdb.get('rows_written', 0):,} rows written"
    )
    if questdb.get("last_error") and q_state != "ok":
        q_text += f"; {questdb['last_error']}"
    v_state = valkey.get("status", "?")
    v_text = style.state(v_state, v_state == "ok")
    if valkey.get("last_error") and v_state != "ok":
        v_text += f"; {valkey['last_error']}"
    return [("QuestDB", q_text), ("Valkey", v_text)]


def _fred(fred: Mapping[str, Any], style: Style) -> str:
    state = str(fred.get("state", "?"))
    text = style.state(state, True if state in ("ok", "disabled") else None)
    if fred.get("reason"):
        text += f" ({fred['reason']})"
    return text


# -- watch -------------------------------------------------------------------------------------


class Watcher:
    """Follows ``/events`` and ``/health/live``; prints transitions, never the same news twice."""

    def __init__(self, url: str, out: TextIO) -> None:
        self._url = url.rstrip("/")
        self._out = out
        self._style = Style(out)
        self._last_id: str | None = None
        self._reachable: bool | None = None

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_SECONDS, read=None)) as client:
            self._say(f"watching the daemon at {self._url} (Ctrl-C to stop)")
            liveness = asyncio.ensure_future(self._liveness(client))
            try:
                await self._follow(client)
            finally:
                liveness.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await liveness

    async def _follow(self, client: httpx.AsyncClient) -> None:
        while True:
            headers = {"Accept": "text/event-stream"}
            if self._last_id:
                headers["Last-Event-ID"] = self._last_id
            try:
                async with client.stream("GET", f"{self._url}/events", headers=headers) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPStatusError(
                            f"/events answered HTTP {response.status_code}",
                            request=response.request,
                            response=response,
                        )
                    await self._answering(client)
                    await self._read(response)
                self._not_answering("the event stream ended")
            except httpx.HTTPError as exc:
                self._not_answering(str(exc) or type(exc).__name__)
            await asyncio.sleep(RETRY_SECONDS)

    async def _read(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    self._last_id = fields.get("id", self._last_id)
                    self._event(fields["data"])
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")

    async def _liveness(self, client: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(LIVENESS_EVERY_SECONDS)
            try:
                response = await client.get(f"{self._url}/health/live", timeout=LIVENESS_TIMEOUT_SECONDS)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self._not_answering(str(exc) or type(exc).__name__)
            else:
                if self._reachable is False:  # back, while the stream has not noticed yet
                    await self._answering(client)

    async def _answering(self, client: httpx.AsyncClient) -> None:
        if self._reachable:
            return
        again = self._reachable is False
        self._reachable = True
        summary = ""
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            health = (await client.get(f"{self._url}/health", timeout=REQUEST_SECONDS)).json()
            summary = f": {health['status']}, IBKR {health['ibkr_status']}"
        word = "answers again" if again else "answers"
        self._say(self._style(f"daemon at {self._url} {word}{summary}", GREEN))

    def _not_answering(self, reason: str) -> None:
        if self._reachable is False:
            return
        self._reachable = False
        self._say(self._style(f"daemon at {self._url} does not answer ({reason}); retrying", RED), bell=True)

    def _event(self, data: str) -> None:
        try:
            body = json.loads(data)
            name, at, detail = str(body["event"]), str(body.get("at") or ""), str(body.get("detail") or "")
        except (ValueError, KeyError, TypeError):
            self._say(f"(unreadable event: {data[:200]})")
            return
        self._say(f"{event_name(name, self._style)}  {detail}", at=at, bell=name == "connection_lost")

    def _say(self, text: str, *, at: str | None = None, bell: bool = False) -> None:
        moment = _short_time(at) if at else datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        self._out.write(f"{self._style(moment, DIM)}  {text}{BELL if bell else ''}\n")
        self._out.flush()


def watch(url: str, out: TextIO) -> int:
    """Follow the daemon until Ctrl-C; returns 0."""
    try:
        asyncio.run(Watcher(url, out).run())
    except KeyboardInterrupt:
        out.write("\n")
    return EXIT_HEALTHY


# -- formatting --------------------------------------------------------------------------------


def event_name(name: str, style: Style) -> str:
    """Green for a recovery, red for trouble, bold for the rest (any event name, known or new)."""
    if name == "connected" or name.endswith(GOOD_EVENTS):
        return style(name, GREEN)
    if any(part in name for part in BAD_EVENTS):
        return style(name, BOLD, RED)
    return style(name, BOLD)


def _parse(iso: str) -> datetime | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short_time(iso: str) -> str:
    moment = _parse(iso)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else iso


def _age_text(iso: str | None) -> str:
    if not iso:
        return "never"
    moment = _parse(iso)
    if moment is None:
        return iso
    seconds = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
