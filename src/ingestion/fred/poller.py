"""The FRED poller: fetches configured series on an interval and hands observations to storage.

Each poll asks FRED only for observations dated from the newest one already stored minus
``lookback_days`` (FRED revises recent values), so the ``economic_data`` table's DEDUP keys
``(timestamp, series_id)`` turn the overlap into upserts. The newest stored date of each series
is persisted in a JSON file, advanced only after the sink has taken the observations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ingestion.bus import EventBus
from ingestion.config import FredConfig
from ingestion.events import EconomicObservation
from ingestion.fred.client import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_SECONDS,
    FredClient,
    FredError,
    FredUnavailableError,
    KeyRejectedError,
    Observation,
    SeriesInfo,
)
from ingestion.fred.pacing import Backoff, RequestLimiter, Sleep
from ingestion.fred.state import HighWaterMarks
from ingestion.logging import get_logger
from ingestion.metrics import Metrics

log = get_logger("fred")

NO_KEY_REASON = "no FRED API key configured (set FRED_API_KEY to enable economic data)"
EVENT_KEY_REJECTED = "fred_key_rejected"
EVENT_POLL_FAILED = "fred_poll_failed"


class ObservationSink(Protocol):
    """What the poller needs of storage: take an event now and own it (the QuestDB writer spools)."""

    def accept(self, event: EconomicObservation) -> None: ...


class FredState(StrEnum):
    ENABLED = "enabled"  # configured, first poll not finished yet
    DISABLED = "disabled"
    KEY_REJECTED = "key_rejected"
    OK = "ok"
    ERROR = "error"


class SinkRefusedError(Exception):
    """Storage did not take the observations, so they count as not stored."""


@dataclass(slots=True)
class SeriesStatus:
    info: SeriesInfo | None = None
    newest_observation: date | None = None
    observations_written: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        info = self.info
        return {
            "title": info.title if info else None,
            "units": info.units if info else None,
            "frequency": info.frequency if info else None,
            "last_updated": info.last_updated if info else None,
            "observation_end": info.observation_end if info else None,
            "newest_observation": self.newest_observation.isoformat() if self.newest_observation else None,
            "observations_written": self.observations_written,
            "last_error": self.last_error,
        }


class FredPoller:
    """Polls FRED at start and then every ``config.interval_seconds`` until cancelled.

    Args:
        config: The ``fred`` section of the settings.
        sink: Takes each :class:`EconomicObservation`; raising means "not stored".
        bus: Receives ``fred_key_rejected`` (an alert) and ``fred_poll_failed``.
        metrics: ``fred_observations`` is counted per series.
        state_path: The JSON file holding each series' newest stored observation date.
        sleep: Awaited for the poll interval, rate limiting and retry backoff.
        clock: Wall-clock seconds, for ``last_poll_at``/``next_poll_at``.
        monotonic: Seconds for the rate limiter's window.
        backoff: Delay policy between retries of 429s and network errors.
    """

    def __init__(
        self,
        config: FredConfig,
        sink: ObservationSink,
        bus: EventBus,
        metrics: Metrics,
        state_path: Path,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        request_timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._config = config
        self._sink = sink
        self._bus = bus
        self._metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self._marks = HighWaterMarks(state_path)
        self._series = {series_id: SeriesStatus() for series_id in config.series}
        self._last_poll_at: float | None = None
        self._next_poll_at: float | None = None
        self._client: FredClient | None = None
        if config.api_key is None:
            self._state, self._reason = FredState.DISABLED, NO_KEY_REASON
            return
        self._state, self._reason = FredState.ENABLED, None
        limiter = RequestLimiter(config.requests_per_minute, clock=monotonic, sleep=sleep)
        self._client = FredClient(
            config.api_key.get_secret_value(),
            config.base_url,
            limiter=limiter,
            backoff=backoff or Backoff(),
            sleep=sleep,
            timeout=request_timeout,
            max_attempts=max_attempts,
        )
        self._load_marks()

    @property
    def state(self) -> FredState:
        return self._state

    async def run(self) -> None:
        """Poll now and every interval; return when disabled or the key is rejected."""
        if self._client is None:
            log.warning(f"FRED disabled: {NO_KEY_REASON}; the rest of the service runs without it")
            return
        while True:
            await self.poll_once()
            if self._state is FredState.KEY_REJECTED:
                return
            self._next_poll_at = self._clock() + self._config.interval_seconds
            await self._sleep(self._config.interval_seconds)

    async def poll_once(self) -> None:
        """Fetch every configured series once; a series that fails does not stop the others."""
        if self._client is None or self._state is FredState.KEY_REJECTED:
            return
        self._next_poll_at = None
        failed: list[str] = []
        unavailable: str | None = None
        try:
            # One at a time: FRED's limit is per key, and a loop keeps ``failed`` filled so far
            # when FRED becomes unreachable part-way (a comprehension would lose it).
            for series_id in self._config.series:
                if not await self._poll_series(self._client, series_id):
                    failed.append(series_id)  # noqa: PERF401 - see above
        except KeyRejectedError as exc:
            self._reject_key(exc)
            return
        except FredUnavailableError as exc:
            unavailable = str(exc)
        finally:
            self._last_poll_at = self._clock()
        self._finish_poll(failed, unavailable)

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for /health; it never contains the key."""
        return {
            "state": self._state.value,
            "reason": self._reason,
            "last_poll_at": _iso(self._last_poll_at),
            "next_poll_at": _iso(self._next_poll_at),
            "interval_seconds": self._config.interval_seconds,
            "series": {series_id: entry.as_dict() for series_id, entry in self._series.items()},
        }

    async def _poll_series(self, client: FredClient, series_id: str) -> bool:
        """One series: metadata, then new observations into the sink. False when it failed."""
        entry = self._series[series_id]
        try:
            entry.info = await client.series_info(series_id)
            observations = await client.observations(series_id, self._request_start(series_id))
            self._store(series_id, observations)
        except (FredUnavailableError, KeyRejectedError) as exc:
            entry.last_error = str(exc)
            raise
        except (FredError, SinkRefusedError) as exc:
            entry.last_error = str(exc)
            log.warning("FRED series failed", series=series_id, error=str(exc))
            return False
        entry.last_error = None
        return True

    def _request_start(self, series_id: str) -> date | None:
        newest = self._marks.get(series_id)
        if newest is None:
            return None  # nothing stored yet: the whole history
        return newest - timedelta(days=self._config.lookback_days)

    def _store(self, series_id: str, observations: list[Observation]) -> None:
        if not observations:
            return
        if _is_down(self._sink):
            msg = f"{series_id}: storage is down and takes no writes; the observations will be fetched again"
            raise SinkRefusedError(msg)
        try:
            for observation in observations:
                self._sink.accept(_event(series_id, observation))
        except Exception as exc:
            # The sink is another component: whatever it raises means "not stored", and the
            # high-water mark must not move past observations storage may not have.
            msg = (
                f"{series_id}: storage did not take the observations ({type(exc).__name__}: {exc});"
                " they will be fetched again on the next poll"
            )
            raise SinkRefusedError(msg) from exc
        count = len(observations)
        self._metrics.fred_observations.labels(series=series_id).inc(count)
        entry = self._series[series_id]
        entry.observations_written += count
        if self._marks.advance(series_id, max(o.date for o in observations)):
            self._save_marks()
        entry.newest_observation = self._marks.get(series_id)

    def _load_marks(self) -> None:
        try:
            self._marks.load()
        except (OSError, ValueError) as exc:
            # Refetching history is harmless (DEDUP upserts), refusing to start is not.
            log.exception("FRED state file unreadable, fetching full history", error=str(exc))
        for series_id, entry in self._series.items():
            entry.newest_observation = self._marks.get(series_id)

    def _save_marks(self) -> None:
        try:
            self._marks.save()
        except OSError as exc:
            # The marks stay advanced in memory; only a restart would refetch, which is harmless.
            log.exception("FRED state file not written", error=str(exc))

    def _reject_key(self, exc: KeyRejectedError) -> None:
        self._state, self._reason = FredState.KEY_REJECTED, str(exc)
        log.error(f"{exc}; FRED polling stopped until the key is fixed and the service restarted")
        self._bus.publish(EVENT_KEY_REJECTED, str(exc), alert=True)

    def _finish_poll(self, failed: list[str], unavailable: str | None) -> None:
        if unavailable is None and not failed:
            self._state, self._reason = FredState.OK, None
            log.info("FRED poll complete", series=len(self._series))
            return
        problems = [unavailable] if unavailable else []
        if failed:
            problems.append(f"{len(failed)} of {len(self._series)} series failed: {', '.join(failed)}")
        self._state, self._reason = FredState.ERROR, "; ".join(problems)
        log.warning("FRED poll failed", reason=self._reason)
        self._bus.publish(EVENT_POLL_FAILED, self._reason)


def _is_down(sink: ObservationSink) -> bool:
    """True when the sink reports the ``down`` storage state (the QuestDB writer's ``status()``)."""
    status = getattr(sink, "status", None)
    return callable(status) and getattr(status(), "state", None) == "down"


def _event(series_id: str, observation: Observation) -> EconomicObservation:
    day = observation.date
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return EconomicObservation(series_id, int(midnight.timestamp()) * 1_000_000_000, observation.value)


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
