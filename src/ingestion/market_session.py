"""US equity market sessions (pre, regular, after, closed) from the NYSE calendar.

exchange_calendars maintains NYSE holidays, half days and early closes; we add the extended
hours the US exchanges run around them: pre-market from 04:00 New York time to the open, after
hours from the close to 20:00 (17:00 on early-close days, when the late session ends early).
"""

from __future__ import annotations

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


class MarketCalendar:
    """Answers "which session is it?" for any moment covered by the loaded calendar."""

    def __init__(self, start: date | None = None, end: date | None = None) -> None:
        today = datetime.now(UTC).date()
        start = start or today - timedelta(days=30)
        end = end or today + timedelta(days=365 * 2)
        # Loading takes about half a second: done once at start-up, never per call.
        self._calendar = exchange_calendars.get_calendar("XNYS", start=str(start), end=str(end))

    def session_at(self, moment: datetime) -> Session:
        local = moment.astimezone(NEW_YORK)
        day = pd.Timestamp(local.date())
        if not self._calendar.is_session(day):
            return "closed"
        opens = self._calendar.session_open(day).to_pydatetime()
        closes = self._calendar.session_close(day).to_pydatetime()
        early_close = closes.astimezone(NEW_YORK).time() < REGULAR_CLOSE
        after_end = AFTER_HOURS_END_EARLY_CLOSE if early_close else AFTER_HOURS_END
        pre_start = datetime.combine(local.date(), PRE_MARKET_START, NEW_YORK)
        after_stop = datetime.combine(local.date(), after_end, NEW_YORK)
        if opens <= moment < closes:
            return "regular"
        if pre_start <= moment < opens:
            return "pre"
        if closes <= moment < after_stop:
            return "after"
        return "closed"

    def now(self) -> Session:
        return self.session_at(datetime.now(UTC))
