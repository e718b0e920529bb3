"""``GET /timeline``: connected, disconnected and degraded time over the last hours, and each outage.

The record is the ``ingestion_events`` table in QuestDB (every connection state change of every
daemon run), read back over ``/exec``, together with this process's own events held in memory:
those may still wait in the writer's queue or spool. When QuestDB does not answer, the memory
alone serves, and the body says so (``source``).

The SQL is plain enough for QuestDB 8 and 9 alike: a designated-timestamp comparison with an
ISO 8601 literal, as in the user's own queries and in QuestDB's "Date and time operators"
reference (https://questdb.com/docs/reference/operators/date-time, timestamp compared with
string bounds), equality filters joined with ``OR`` (https://questdb.com/docs/reference/sql/where/),
and ``ORDER BY ... LIMIT n``. No TICK syntax (``IN '$now-1h..$now'``), which QuestDB 8 lacks.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from ingestion.events import IngestionEvent
from ingestion.logging import get_logger
from ingestion.timefmt import iso_ns

DEFAULT_HOURS = 24
MAX_HOURS = 168
MEMORY_EVENTS = 5000
QUERY_ROWS = 10000
QUERY_SECONDS = 3.0

# What each recorded event does: to the connection (up, down, stopped cleanly) ...
CONNECTION = {
    "connected": "up",
    "connection_restored": "up",
    "connection_lost": "down",
    "disconnected": "stopped",
}
# ... or to one of the degradations that make a live connection "degraded" (flag, set or cleared).
DEGRADATION = {
    "ib_connectivity_lost": ("ib_connectivity", True),
    "ib_connectivity_restored": ("ib_connectivity", False),
    "competing_session": ("competing_session", True),
    "competing_session_cleared": ("competing_session", False),
    "stale_data": ("stale_data", True),
    "stale_data_cleared": ("stale_data", False),
    "questdb_down": ("questdb", True),
    "questdb_restored": ("questdb", False),
    "valkey_down": ("valkey", True),
    "valkey_restored": ("valkey", False),
}
# Cleared by a new connection: IB's own state starts afresh with every session.
SESSION_FLAGS = ("ib_connectivity", "competing_session", "stale_data")

log = get_logger("timeline")


@dataclass(frozen=True, slots=True)
class Mark:
    """One recorded event: microseconds since the epoch, its name and detail."""

    micros: int
    event: str
    detail: str


def select_window(since_micros: int) -> str:
    return (
        "SELECT timestamp, event, detail FROM ingestion_events "
        f"WHERE timestamp >= '{_sql_time(since_micros)}' ORDER BY timestamp LIMIT {QUERY_ROWS}"
    )


def select_state_before(since_micros: int) -> str:
    """The last connection event before the window: the state the window starts in."""
    events = " OR ".join(f"event = '{name}'" for name in CONNECTION)
    return (
        "SELECT timestamp, event, detail FROM ingestion_events "
        f"WHERE timestamp < '{_sql_time(since_micros)}' AND ({events}) ORDER BY timestamp DESC LIMIT 1"
    )


def build_timeline(marks: Sequence[Mark], since_micros: int, now_micros: int) -> dict[str, Any]:
    """Segments of one state each, the outages among them, and the seconds spent in each state."""
    segments: list[dict[str, Any]] = []
    for moment, state, reason in _transitions(marks):
        moment = min(max(moment, since_micros), now_micros)
        if segments and segments[-1]["state"] == state:
            continue
        if segments and moment <= segments[-1]["start_us"]:
            segments.pop()  # superseded before the window began (or in the same microsecond)
            if segments and segments[-1]["state"] == state:
                continue
        segments.append({"state": state, "start_us": moment, "reason": reason})
    if not segments or segments[0]["start_us"] > since_micros:
        segments.insert(0, {"state": "unknown", "start_us": since_micros, "reason": ""})
    for seg, following in zip(segments, [*segments[1:], None], strict=True):
        seg["end_us"] = following["start_us"] if following else now_micros
    return _body(segments, since_micros, now_micros)


def _transitions(marks: Sequence[Mark]) -> list[tuple[int, str, str]]:
    """(when, state from then on, why) for each recorded event, oldest first."""
    connection = "unknown"
    flags: set[str] = set()
    found = []
    for mark in sorted(marks, key=lambda m: m.micros):
        if mark.event in CONNECTION:
            new = CONNECTION[mark.event]
            if new == "stopped":
                flags.clear()  # the next process starts afresh
            elif new == "up" and connection != "up":
                flags.difference_update(SESSION_FLAGS)
            connection = new
        elif mark.event in DEGRADATION:
            flag, on = DEGRADATION[mark.event]
            (flags.add if on else flags.discard)(flag)
        else:
            continue
        if connection == "up":
            state = "degraded" if flags else "connected"
        else:
            state = {"down": "disconnected", "stopped": "stopped"}.get(connection, "unknown")
        found.append((mark.micros, state, mark.detail if state in ("disconnected", "degraded") else ""))
    return found


def _body(segments: list[dict[str, Any]], since: int, now: int) -> dict[str, Any]:
    totals: dict[str, float] = collections.defaultdict(float)
    shown = []
    for seg in segments:
        seconds = (seg["end_us"] - seg["start_us"]) / 1e6
        totals[seg["state"]] += seconds
        shown.append(
            {
                "state": seg["state"],
                "start": iso_ns(seg["start_us"] * 1000),
                "end": iso_ns(seg["end_us"] * 1000),
                "seconds": round(seconds, 3),
                "reason": seg["reason"],
            }
        )
    outages = [
        {**s, "ongoing": index == len(shown) - 1}
        for index, s in enumerate(shown)
        if s["state"] == "disconnected"
    ]
    return {
        "from": iso_ns(since * 1000),
        "to": iso_ns(now * 1000),
        "segments": shown,
        "outages": outages,
        "totals": {name: round(seconds, 3) for name, seconds in totals.items()},
    }


def _sql_time(micros: int) -> str:
    moment = datetime.fromtimestamp(micros // 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros % 1_000_000:06d}Z"


def _micros(value: Any) -> int:
    """QuestDB's /exec prints timestamps as ISO 8601 text with microseconds and a Z."""
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class ConnectionTimeline:
    """Reads the timeline from QuestDB and this process's memory; a bus subscriber for the latter."""

    def __init__(self, client: httpx.AsyncClient | None, *, memory: int = MEMORY_EVENTS) -> None:
        self._client = client
        self._memory: collections.deque[Mark] = collections.deque(maxlen=memory)

    def record(self, event: IngestionEvent) -> None:
        if event.event in CONNECTION or event.event in DEGRADATION:
            self._memory.append(Mark(event.timestamp_ns // 1000, event.event, event.detail))

    async def read(self, hours: float, *, now: float | None = None) -> dict[str, Any]:
        now_micros = int((time.time() if now is None else now) * 1_000_000)
        since = now_micros - int(hours * 3600 * 1_000_000)
        stored, error = await self._stored(since)
        marks = _merge(stored or [], self._memory)
        body = build_timeline(marks, since, now_micros)
        body["hours"] = hours
        body["source"] = "memory" if stored is None else "questdb"
        if error:
            body["questdb_error"] = error
        return body

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _stored(self, since: int) -> tuple[list[Mark] | None, str | None]:
        if self._client is None:
            return None, "no QuestDB configured"
        try:
            before = await self._select(select_state_before(since))
            window = await self._select(select_window(since))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.info("timeline from memory: QuestDB did not answer", error=str(exc) or type(exc).__name__)
            return None, str(exc) or type(exc).__name__
        return before + window, None

    async def _select(self, sql: str) -> list[Mark]:
        assert self._client is not None
        response = await self._client.get("/exec", params={"query": sql}, timeout=QUERY_SECONDS)
        if response.status_code != 200:
            raise ValueError(f"QuestDB answered HTTP {response.status_code}: {response.text[:200]}")
        return [
            Mark(_micros(ts), str(event), str(detail or ""))
            for ts, event, detail in response.json()["dataset"]
        ]


def _merge(stored: Sequence[Mark], memory: Iterable[Mark]) -> list[Mark]:
    seen = {(m.micros, m.event) for m in stored}
    return [*stored, *(m for m in memory if (m.micros, m.event) not in seen)]
