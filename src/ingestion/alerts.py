"""What the operator hears about: the recent-events log of the status page, and webhook delivery.

Both are :class:`~ingestion.bus.EventBus` subscribers, so they run inline in whoever published
(often an ib_async callback): ``record`` and ``notify`` only append to bounded in-memory buffers.
The POSTs happen in :meth:`WebhookNotifier.run`, a task of its own, so a slow or dead webhook
never delays market data.

One generic JSON body works for Slack and Discord incoming webhooks and for anything else:
``text`` (what Slack shows), ``content`` (what Discord shows) and the machine-readable
``event``, ``at``, ``detail``, ``service``. Slack ignores keys it does not know; Discord's
documentation does not promise that, so Discord hosts get only ``content`` (see
:func:`payload_for`). Webhook URLs carry their token in the path: they are only ever logged
masked (:func:`mask_webhook`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter

from ingestion.config import AlertsConfig
from ingestion.events import IngestionEvent
from ingestion.health import SERVICE_NAME
from ingestion.ibkr.backoff import ExponentialBackoff
from ingestion.logging import get_logger
from ingestion.metrics import Metrics
from ingestion.timefmt import iso

RECENT_EVENTS = 100
# Alerts are rare (a handful per outage); this many waiting means every webhook is dead for hours.
WEBHOOK_QUEUE_LIMIT = 1000
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
# A shutdown must not wait on a dead webhook: one try each, all within this bound.
FLUSH_SECONDS = 2.0
DISCORD_HOSTS = frozenset({"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"})
DISCORD_CONTENT_LIMIT = 2000
SLACK_HOSTS = frozenset({"hooks.slack.com"})

log = get_logger("alerts")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One line of the status page's "last alerts and state changes"."""

    at: str
    event: str
    detail: str
    code: int | None
    alert: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "event": self.event,
            "detail": self.detail,
            "code": self.code,
            "alert": self.alert,
        }


def event_time(event: IngestionEvent) -> str:
    """The event's receive time, ISO 8601 UTC as /health shows times."""
    moment = datetime.fromtimestamp(event.timestamp_ns / 1e9, UTC)
    return iso(moment) or ""


class AlertLog:
    """The last :data:`RECENT_EVENTS` ingestion events, alerts and other state changes alike."""

    def __init__(self, size: int = RECENT_EVENTS) -> None:
        self._events: collections.deque[RecentEvent] = collections.deque(maxlen=size)

    def record(self, event: IngestionEvent) -> None:
        self._events.append(
            RecentEvent(event_time(event), event.event, event.detail, event.code, event.alert)
        )

    def recent(self, limit: int = RECENT_EVENTS, *, alerts_only: bool = False) -> list[dict[str, Any]]:
        """Newest first."""
        chosen = [e for e in reversed(self._events) if e.alert or not alerts_only]
        return [e.as_dict() for e in chosen[:limit]]


def mask_webhook(url: str) -> str:
    """Scheme and host only: the path of a Slack or Discord webhook is its secret.

    >>> mask_webhook("https://hooks.slack.com/services/T000/B000/XXXX")
    'https://hooks.slack.com/***'
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or '?'}://{host}{port}/***"


def alert_text(event: IngestionEvent) -> str:
    return f"ALERT {SERVICE_NAME}: {event.event}: {event.detail}"


def payload_for(url: str, event: IngestionEvent) -> dict[str, Any]:
    """The JSON body for one webhook: generic, or trimmed to what Slack or Discord documents."""
    text = alert_text(event)
    host = (urlsplit(url).hostname or "").lower()
    if host in DISCORD_HOSTS:
        # No pings: an alert detail must never turn into an @everyone.
        return {"content": text[:DISCORD_CONTENT_LIMIT], "allowed_mentions": {"parse": []}}
    generic = {"event": event.event, "at": event_time(event), "detail": event.detail, "service": SERVICE_NAME}
    if host in SLACK_HOSTS:
        return {"text": text, **generic}
    return {"text": text, "content": text[:DISCORD_CONTENT_LIMIT], **generic}


class TransientWebhookError(Exception):
    """The receiver is overloaded or down (408, 429, 5xx): worth another try."""


class PermanentWebhookError(Exception):
    """The receiver refused the alert in a way a retry will not fix (a 4xx other than 408/429)."""


class WebhookNotifier:
    """Queues alerts from the bus and POSTs each one to every configured webhook, with retries.

    Alerts go out one at a time in publication order, so "lost" always arrives before "restored".
    """

    def __init__(
        self,
        config: AlertsConfig,
        metrics: Metrics,
        *,
        sleep: Sleep = asyncio.sleep,
        backoff: ExponentialBackoff | None = None,
    ) -> None:
        self._urls = tuple(url.get_secret_value() for url in config.webhooks)
        self._timeout = config.webhook_timeout_seconds
        self._retries = config.webhook_retries
        self._sleep = sleep
        self._backoff = backoff or ExponentialBackoff(RETRY_INITIAL_SECONDS, RETRY_MAX_SECONDS)
        self._pending: collections.deque[IngestionEvent] = collections.deque()
        # While the first pending alert is being delivered: the webhooks not yet finished with it
        # (delivered or given up), so a shutdown meanwhile sends it again only where it had not arrived.
        self._unfinished: set[str] | None = None
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._deliveries = Counter(
            "ingestion_webhook_deliveries",
            "Alerts per webhook by outcome: delivered, failed after retries, dropped (queue full)",
            ["outcome"],
            registry=metrics.registry,
        )
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def status(self) -> dict[str, int]:
        """Counts for the status page; never the URLs."""
        return {
            "configured": len(self._urls),
            "pending": self.pending,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
        }

    def notify(self, event: IngestionEvent) -> None:
        """Bus handler: queue an alert for delivery; never blocks, never raises."""
        if not event.alert or not self._urls:
            return
        if len(self._pending) >= WEBHOOK_QUEUE_LIMIT:
            self.dropped += 1
            self._deliveries.labels("dropped").inc()
            log.error(
                "webhook queue full: alert not sent", ingestion_event=event.event, queued=len(self._pending)
            )
            return
        self._pending.append(event)
        self._wake.set()

    async def run(self) -> None:
        """Deliver queued alerts until cancelled; an event stays queued until its delivery ended."""
        if not self._urls:
            # Nothing to deliver, ever; returning would look like a finished component to the daemon.
            await asyncio.Event().wait()
        log.info("alert webhooks configured", webhooks=[mask_webhook(u) for u in self._urls])
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            event = self._pending[0]
            self._unfinished = set(self._urls)
            await asyncio.gather(*(self._deliver_first(url, event) for url in self._urls))
            self._pending.popleft()
            self._unfinished = None

    async def aclose(self) -> None:
        """Best effort at shutdown: one try per queued alert and webhook, within :data:`FLUSH_SECONDS`."""
        try:
            async with asyncio.timeout(FLUSH_SECONDS):
                unfinished, self._unfinished = self._unfinished, None
                urls = [url for url in self._urls if unfinished is None or url in unfinished]
                while self._pending:
                    event = self._pending.popleft()
                    await asyncio.gather(*(self._deliver(url, event, attempts=1) for url in urls))
                    urls = list(self._urls)
        except TimeoutError:
            log.warning("alerts not delivered before shutdown", pending=len(self._pending) + 1)
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    async def _deliver_first(self, url: str, event: IngestionEvent) -> None:
        await self._deliver(url, event)
        if self._unfinished is not None:
            self._unfinished.discard(url)

    async def _deliver(self, url: str, event: IngestionEvent, attempts: int | None = None) -> None:
        """POST one alert to one webhook, retrying transient failures with capped backoff."""
        attempts = self._retries + 1 if attempts is None else attempts
        masked = mask_webhook(url)
        body = payload_for(url, event)
        for attempt in range(1, attempts + 1):
            try:
                await self._post(url, body)
            except PermanentWebhookError as exc:
                return self._give_up(masked, event, str(exc), attempt)
            except (httpx.HTTPError, TransientWebhookError) as exc:
                # Some transport errors quote the request URL; it must not reach the log whole.
                reason = (str(exc) or type(exc).__name__).replace(url, masked)
                if attempt == attempts:
                    return self._give_up(masked, event, reason, attempt)
                delay = self._backoff.compute(attempt - 1)
                log.warning(
                    "webhook failed, retrying",
                    webhook=masked,
                    attempt=attempt,
                    reason=reason,
                    retry_in_seconds=round(delay, 2),
                )
                await self._sleep(delay)
            else:
                self.delivered += 1
                self._deliveries.labels("delivered").inc()
                return None
        return None

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        response = await self._client.post(url, json=body)
        status = response.status_code
        if status < 300:
            return
        # Never echo the response URL: it is the secret webhook URL.
        reason = f"HTTP {status}"
        if status in (408, 429) or status >= 500:
            raise TransientWebhookError(reason)
        raise PermanentWebhookError(reason)

    def _give_up(self, masked: str, event: IngestionEvent, reason: str, attempts: int) -> None:
        self.failed += 1
        self._deliveries.labels("failed").inc()
        log.error(
            "webhook delivery failed",
            webhook=masked,
            ingestion_event=event.event,
            attempts=attempts,
            reason=reason,
        )
