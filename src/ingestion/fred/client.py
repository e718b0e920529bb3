"""An asyncio face on fredapi: requests run in a worker thread, paced, retried and classified.

fredapi builds the URLs (``{root_url}/series?series_id=...`` and
``{root_url}/series/observations?series_id=...&observation_start=YYYY-MM-DD``) and parses FRED's
XML; this module adds what it lacks for a daemon: a timeout (fredapi calls ``urlopen`` without
one, so a silent server would hang a thread forever), the HTTP status of failures (fredapi turns
every HTTP error into a bare ``ValueError``), pacing and retries.
"""

from __future__ import annotations

import asyncio
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from http import HTTPStatus
from typing import TypeVar
from urllib.error import HTTPError
from urllib.parse import quote_plus
from urllib.request import urlopen

import pandas as pd
from fredapi import Fred

from ingestion.fred.pacing import Backoff, RequestLimiter, Sleep
from ingestion.logging import get_logger

log = get_logger("fred")

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_ATTEMPTS = 5
# Worth another try later in the same poll: FRED's rate limit and its server-side failures.
RETRYABLE_STATUSES = frozenset(
    {
        HTTPStatus.TOO_MANY_REQUESTS,
        HTTPStatus.INTERNAL_SERVER_ERROR,
        HTTPStatus.BAD_GATEWAY,
        HTTPStatus.SERVICE_UNAVAILABLE,
        HTTPStatus.GATEWAY_TIMEOUT,
    }
)
KEY_STATUSES = frozenset({HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN})
UNKNOWN_SERIES_STATUSES = frozenset({HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND})


def mask_key(key: str) -> str:
    """Show at most the last 4 characters, and none of a key too short to hide the rest.

    >>> mask_key("abcdefghijklmnopqrstuvwxyz012345")
    '****2345'
    >>> mask_key("short")
    '****'
    """
    return f"****{key[-4:]}" if len(key) >= 16 else "****"


def scrub(text: str, key: str) -> str:
    """``text`` with every occurrence of the key replaced by its mask (servers may echo it)."""
    return text.replace(key, mask_key(key)) if key else text


class FredError(Exception):
    """A FRED request failed; ``str()`` is safe to log (the key is masked)."""


class KeyRejectedError(FredError):
    """FRED refused the API key: retrying cannot help until the configuration changes."""


class SeriesNotFoundError(FredError):
    """FRED does not know this series id."""


class FredRequestError(FredError):
    """FRED refused this one request for another reason (not retried)."""


class FredUnavailableError(FredError):
    """FRED could not be reached, or kept rate-limiting, through every attempt."""


class FredHttpError(Exception):
    """An HTTP error answer from FRED with the message of its XML ``<error>`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(slots=True, frozen=True)
class SeriesInfo:
    """The metadata of one series that /health shows."""

    title: str | None
    units: str | None
    frequency: str | None
    last_updated: str | None
    observation_end: str | None


@dataclass(slots=True, frozen=True)
class Observation:
    date: date
    value: float


# The override below must replace the method fredapi really calls; fail at import, not by
# silently losing the timeout, if a fredapi release renames it.
if not hasattr(Fred, "_Fred__fetch_data"):
    raise ImportError("fredapi.Fred no longer has __fetch_data: ingestion.fred.client needs updating")


class _FredApi(Fred):
    """fredapi with ``root_url`` from the config and a fetch that keeps the status and has a timeout."""

    def __init__(self, api_key: str, root_url: str, timeout: float) -> None:
        # fredapi honours HTTP(S)_PROXY by installing urllib's process-wide opener; urlopen below
        # goes through the same opener, so proxied and air-gapped set-ups behave as with fredapi.
        super().__init__(api_key=api_key)
        self.root_url = root_url.rstrip("/")
        self._timeout = timeout

    # Overrides fredapi's private ``__fetch_data`` (name-mangled), which every public getter calls.
    def _Fred__fetch_data(self, url: str) -> ET.Element:
        url += "&api_key=" + quote_plus(self.api_key)
        try:
            with urlopen(url, timeout=self._timeout) as response:
                return ET.fromstring(response.read())
        except HTTPError as exc:
            raise FredHttpError(exc.code, _error_message(exc)) from exc


def _error_message(exc: HTTPError) -> str:
    """The ``message`` attribute of FRED's ``<error code=".." message=".."/>``, else the reason."""
    try:
        body = exc.read()
    except OSError:
        body = b""
    finally:
        exc.close()  # the error owns the response socket; leaving it open leaks it until GC
    try:
        message = ET.fromstring(body).get("message") if body else None
    except ET.ParseError:
        message = None
    return message or str(exc.reason)


def _info(api: _FredApi, series_id: str) -> SeriesInfo:
    raw = api.get_series_info(series_id)
    return SeriesInfo(
        title=raw.get("title"),
        units=raw.get("units"),
        frequency=raw.get("frequency"),
        last_updated=raw.get("last_updated"),
        observation_end=raw.get("observation_end"),
    )


def _observations(api: _FredApi, series_id: str, start: date | None) -> list[Observation]:
    values: pd.Series = api.get_series(series_id, observation_start=start)
    # fredapi turns FRED's missing-value marker '.' into NaN: a gap, not a zero to store.
    return [
        Observation(pd.Timestamp(when).date(), float(value))
        for when, value in values.items()
        if not math.isnan(value)
    ]


class FredClient:
    """Paced, retried FRED requests that never block the event loop."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        limiter: RequestLimiter,
        backoff: Backoff,
        sleep: Sleep,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._key = api_key
        self._api = _FredApi(api_key, base_url, timeout)
        self._limiter = limiter
        self._backoff = backoff
        self._sleep = sleep
        self._max_attempts = max_attempts

    async def series_info(self, series_id: str) -> SeriesInfo:
        return await self._call(series_id, _info, self._api, series_id)

    async def observations(self, series_id: str, start: date | None) -> list[Observation]:
        """Observations dated ``start`` or later (all of them when ``start`` is None), gaps left out."""
        return await self._call(series_id, _observations, self._api, series_id, start)

    async def _call(self, series_id: str, func: Callable[..., T], *args: object) -> T:
        failures = 0
        while True:
            await self._limiter.acquire()
            try:
                return await asyncio.to_thread(func, *args)
            except FredHttpError as exc:
                if exc.status not in RETRYABLE_STATUSES:
                    raise self._classify(series_id, exc) from exc
                problem = self._scrub(str(exc))
            except (OSError, ET.ParseError) as exc:
                # URLError, timeouts, resets: the network or a proxy, not FRED's verdict.
                problem = self._scrub(f"{type(exc).__name__}: {exc}")
            except ValueError as exc:
                msg = self._scrub(f"{series_id}: unexpected answer from FRED: {exc}")
                raise FredRequestError(msg) from exc
            failures += 1
            if failures >= self._max_attempts:
                msg = f"{series_id}: FRED unavailable after {failures} attempts: {problem}"
                raise FredUnavailableError(msg)
            delay = self._backoff.compute(failures)
            log.warning("FRED request failed, retrying", series=series_id, error=problem, retry_in=delay)
            await self._sleep(delay)

    def _classify(self, series_id: str, exc: FredHttpError) -> FredError:
        message = self._scrub(exc.message)
        lowered = message.lower()
        if exc.status in KEY_STATUSES and "api_key" in lowered:
            return KeyRejectedError(
                f"FRED rejected the API key {mask_key(self._key)} (HTTP {exc.status}): {message}"
            )
        if exc.status in UNKNOWN_SERIES_STATUSES and "series does not exist" in lowered:
            return SeriesNotFoundError(f"{series_id}: FRED does not know this series: {message}")
        return FredRequestError(f"{series_id}: FRED refused the request (HTTP {exc.status}): {message}")

    def _scrub(self, text: str) -> str:
        return scrub(text, self._key)
