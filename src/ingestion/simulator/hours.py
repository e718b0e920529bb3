"""When the simulated market trades: around the clock, or on the NYSE calendar.

``always``: one session per UTC calendar day, [00:00, 24:00), regular hours the same (tests run at
any hour). ``nyse``: the XNYS sessions of exchange_calendars, trading 04:00-20:00 New York time
(IB's extended hours for US stocks; 17:00 on early-close days) and regular hours from the calendar's
open to its close, early closes included. A session is what IB's "one trading session per request"
and daily bars mean.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass
from typing import Final, Protocol
from zoneinfo import ZoneInfo

NEW_YORK: Final = ZoneInfo("America/New_York")
DAY_MS: Final = 86_400_000
SESSION_CHOICES: Final = ("always", "nyse")


@dataclass(frozen=True, slots=True)
class TradingSession:
    """One session: its date label and its bounds in unix milliseconds, end exclusive."""

    day: dt.date
    start_ms: int
    end_ms: int


class TradingHours(Protocol):
    """The market's calendar."""

    name: str

    def sessions(self, start_ms: int, end_ms: int, rth: bool) -> list[TradingSession]:
        """Sessions overlapping ``[start_ms, end_ms)``, oldest first."""
        ...

    def is_open(self, t_ms: int) -> bool:
        """True while the market trades (extended hours included)."""
        ...


class AlwaysOpen:
    """A market that never closes; sessions are UTC days."""

    name = "always"

    def sessions(self, start_ms: int, end_ms: int, rth: bool) -> list[TradingSession]:
        first = start_ms // DAY_MS
        last = (end_ms - 1) // DAY_MS
        epoch = dt.date(1970, 1, 1)
        return [
            TradingSession(epoch + dt.timedelta(days=d), d * DAY_MS, (d + 1) * DAY_MS)
            for d in range(first, last + 1)
        ]

    def is_open(self, t_ms: int) -> bool:
        return True


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


class NyseHours:
    """XNYS sessions from ``around_ms - years_back`` to a year after, precomputed once."""

    name = "nyse"

    def __init__(self, around_ms: int, years_back: int = 4) -> None:
        import exchange_calendars  # a second to load: only when this calendar is chosen

        calendar = exchange_calendars.get_calendar("XNYS")
        around = dt.datetime.fromtimestamp(around_ms / 1000, dt.UTC).date()
        first = max(around - dt.timedelta(days=366 * years_back), calendar.first_session.date())
        last = min(around + dt.timedelta(days=366), calendar.last_session.date())
        schedule = calendar.schedule.loc[str(first) : str(last)]
        self._extended: list[TradingSession] = []
        self._regular: list[TradingSession] = []
        for label, row in schedule.iterrows():
            day = label.date()
            opens = dt.datetime.combine(day, dt.time(4), NEW_YORK)
            # On an early close (13:00) the extended session ends at 17:00, otherwise at 20:00.
            early = row["close"].tz_convert(NEW_YORK).hour < 16
            closes = dt.datetime.combine(day, dt.time(17 if early else 20), NEW_YORK)
            self._extended.append(TradingSession(day, _ms(opens), _ms(closes)))
            self._regular.append(TradingSession(day, _ms(row["open"]), _ms(row["close"])))
        self._starts = [s.start_ms for s in self._extended]

    def sessions(self, start_ms: int, end_ms: int, rth: bool) -> list[TradingSession]:
        table = self._regular if rth else self._extended
        i = max(bisect_right(self._starts, start_ms) - 1, 0)
        out = []
        while i < len(table) and table[i].start_ms < end_ms:
            if table[i].end_ms > start_ms:
                out.append(table[i])
            i += 1
        return out

    def is_open(self, t_ms: int) -> bool:
        i = bisect_right(self._starts, t_ms) - 1
        return i >= 0 and t_ms < self._extended[i].end_ms


def trading_hours(name: str, around_ms: int) -> TradingHours:
    """The calendar called ``name`` (one of SESSION_CHOICES)."""
    if name == "always":
        return AlwaysOpen()
    if name == "nyse":
        return NyseHours(around_ms)
    msg = f"session must be one of {SESSION_CHOICES}, got {name!r}"
    raise ValueError(msg)
