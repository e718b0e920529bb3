"""US equity market sessions (pre, regular, after, closed) from the NYSE calendar.

exchange_calendars maintains NYSE holidays, half days and early closes; we add the extended
hours the US exchanges run around them: pre-market from 04:00 New York time to the open, after
hours from the close to 20:00 (17:00 on early-close days, when the late session ends early).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import exchange_calendars
import pandas as pd

Session = Literal["pre", "regular", "after", "closed"]

NEW_YORK = ZoneInfo("America/New_York")
PRE_MARKET_START = time(4, 0)
AFTER_HOURS_END = time(20, 0)
AFTER_HOURS_END_EARLY_CLOSE = time(17, 0)
REGULAR_CLOSE = time(16, 0)


# Days kept by MarketCalendar: "now" needs one, a test or a restart around midnight two or three.
DAYS_KEPT = 16


@dataclass(frozen=True, slots=True)
class SessionDay:
    """The boundaries of one trading day's sessions, as aware datetimes."""

    pre_start: datetime
    opens: datetime
    closes: datetime
    after_stop: datetime

    def session_at(self, moment: datetime) -> Session:
        if self.opens <= moment < self.closes:
            return "regular"
        if self.pre_start <= moment < self.opens:
            return "pre"
        if self.closes <= moment < self.after_stop:
            return "after"
        return "closed"


class MarketCalendar:
    """Answers "which session is it?" for any moment covered by the loaded calendar."""

    def __init__(self, start: date | None = None, end: date | None = None) -> None:
        today = datetime.now(UTC).date()
        start = start or today - timedelta(days=30)
        end = end or today + timedelta(days=365 * 2)
        # Loading takes about half a second: done once at start-up, never per call.
        self._calendar = exchange_calendars.get_calendar("XNYS", start=str(start), end=str(end))
        # Reading one day from exchange_calendars' pandas tables takes about 40 us, and every /health
        # asks twice, on the event loop. A day's boundaries never change, so each is read once.
        self._days: dict[date, SessionDay | None] = {}

    def session_at(self, moment: datetime) -> Session:
        local_date = moment.astimezone(NEW_YORK).date()
        if local_date in self._days:
            day = self._days[local_date]
        else:
            day = self._read_day(local_date)
            if len(self._days) >= DAYS_KEPT:
                self._days.clear()
            self._days[local_date] = day
        return "closed" if day is None else day.session_at(moment)

    def _read_day(self, local_date: date) -> SessionDay | None:
        """The day's boundaries from the calendar; None when the exchange does not trade that day."""
        day = pd.Timestamp(local_date)
        if not self._calendar.is_session(day):
            return None
        opens = self._calendar.session_open(day).to_pydatetime()
        closes = self._calendar.session_close(day).to_pydatetime()
        early_close = closes.astimezone(NEW_YORK).time() < REGULAR_CLOSE
        after_end = AFTER_HOURS_END_EARLY_CLOSE if early_close else AFTER_HOURS_END
        return SessionDay(
            pre_start=datetime.combine(local_date, PRE_MARKET_START, NEW_YORK),
            opens=opens,
            closes=closes,
            after_stop=datetime.combine(local_date, after_end, NEW_YORK),
        )

    def now(self) -> Session:
        return self.session_at(datetime.now(UTC))
