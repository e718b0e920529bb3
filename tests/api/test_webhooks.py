"""Alert webhooks: what a Slack/Discord-style receiver gets, retries, masking, and real outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog
from webhook_receiver import WebhookReceiver, webhook_receiver

from daemon_stack import StackFactory, wait_for
from ingestion.alerts import WEBHOOK_QUEUE_LIMIT, WebhookNotifier, mask_webhook, payload_for
from ingestion.config import AlertsConfig
from ingestion.events import IngestionEvent
from ingestion.metrics import Metrics

LOST = IngestionEvent(1_764_000_000_000_000_000, "connection_lost", "IBKR Connection Lost at ...", None, True)


class RecordedSleeps:
    """The notifier's injected sleep: remembers each backoff delay, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


def notifier_for(*urls: str, sleeps: RecordedSleeps, retries: int = 3) -> WebhookNotifier:
    config = AlertsConfig(webhooks=urls, webhook_retries=retries, webhook_timeout_seconds=2)
    return WebhookNotifier(config, Metrics(), sleep=sleeps)


async def running(notifier: WebhookNotifier) -> asyncio.Task[None]:
    return asyncio.create_task(notifier.run())


async def stop(task: asyncio.Task[None], notifier: WebhookNotifier) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await notifier.aclose()


class TestWebhookNotifier:
    async def test_alert_is_one_json_post_with_slack_and_discord_keys(
        self, receiver: WebhookReceiver, sleeps: RecordedSleeps
    ) -> None:
        """An alert arrives as one JSON body with text (Slack), content (Discord) and the event fields."""
        notifier = notifier_for(receiver.url, sleeps=sleeps)
        task = await running(notifier)
        notifier.notify(LOST)
        await wait_for(lambda: notifier.delivered, 5, "the POST and its answer")
        await stop(task, notifier)
        (body,) = receiver.received
        assert body["event"] == "connection_lost"
        assert body["detail"] == LOST.detail
        assert body["service"] == "data-ingestion"
        assert body["at"].startswith("2025-11-24T")
        assert body["at"].endswith("Z")
        assert "connection_lost" in body["text"]
        assert body["content"] == body["text"]

    async def test_events_that_are_not_alerts_are_not_sent(
        self, receiver: WebhookReceiver, sleeps: RecordedSleeps
    ) -> None:
        """A state change without alert=True (a farm notice, a clean stop) never reaches a webhook."""
        notifier = notifier_for(receiver.url, sleeps=sleeps)
        notifier.notify(IngestionEvent(1, "disconnected", "clean stop"))
        assert notifier.pending == 0

    async def test_server_errors_are_retried_with_backoff_until_delivered(
        self, receiver: WebhookReceiver, sleeps: RecordedSleeps
    ) -> None:
        """Two 5xx answers, then 200: three attempts, two growing backoff sleeps, delivered once."""
        receiver.fail_next(503, 500)
        notifier = notifier_for(receiver.url, sleeps=sleeps)
        task = await running(notifier)
        notifier.notify(LOST)
        # The receiver records the body before it answers: wait for the notifier to read the 200, since
        # stopping before that leaves the alert unfinished, and aclose() sends it again.
        await wait_for(lambda: notifier.delivered, 5, "the delivery after retries")
        await stop(task, notifier)
        assert receiver.attempts == 3
        assert len(receiver.received) == 1
        assert len(sleeps.delays) == 2
        assert sleeps.delays[0] < sleeps.delays[1]
        assert notifier.status() == {
            "configured": 1, "pending": 0, "delivered": 1, "failed": 0, "dropped": 0,
        }  # fmt: skip

    async def test_client_errors_are_not_retried(
        self, receiver: WebhookReceiver, sleeps: RecordedSleeps
    ) -> None:
        """A 400 means the receiver refuses this body for good: one attempt, counted as failed."""
        receiver.fail_next(400)
        notifier = notifier_for(receiver.url, sleeps=sleeps)
        task = await running(notifier)
        notifier.notify(LOST)
        await wait_for(lambda: notifier.failed, 5, "the failure to be counted")
        await stop(task, notifier)
        assert receiver.attempts == 1
        assert sleeps.delays == []

    async def test_gives_up_after_the_configured_retries(
        self, receiver: WebhookReceiver, sleeps: RecordedSleeps
    ) -> None:
        """webhook_retries=2 means three attempts in all; then the next alert is delivered."""
        receiver.fail_next(500, 500, 500)
        notifier = notifier_for(receiver.url, sleeps=sleeps, retries=2)
        task = await running(notifier)
        notifier.notify(LOST)
        notifier.notify(IngestionEvent(2, "connection_restored", "after 3.0 s outage", None, True))
        # Both alerts finished (one given up, one delivered): stopping earlier would leave the second
        # unfinished, and aclose() would send it again.
        await wait_for(lambda: notifier.delivered == 1, 5, "the second alert delivered")
        await stop(task, notifier)
        assert receiver.attempts == 4
        assert receiver.events() == ["connection_restored"]
        assert notifier.failed == 1

    async def test_every_configured_webhook_gets_the_alert(self, sleeps: RecordedSleeps) -> None:
        """Two webhooks, one alert: each receiver gets it once."""
        async with webhook_receiver() as first, webhook_receiver() as second:
            notifier = notifier_for(first.url, second.url, sleeps=sleeps)
            task = await running(notifier)
            notifier.notify(LOST)
            await wait_for(lambda: notifier.delivered == 2, 5, "both answers read")
            await stop(task, notifier)
        assert first.events() == second.events() == ["connection_lost"]

    async def test_the_queue_is_bounded_and_notify_never_waits(self, sleeps: RecordedSleeps) -> None:
        """With no delivery running, notify queues up to the limit and counts the rest as dropped."""
        notifier = notifier_for("http://127.0.0.1:9/hook", sleeps=sleeps)
        for _ in range(WEBHOOK_QUEUE_LIMIT + 5):
            notifier.notify(LOST)
        assert notifier.pending == WEBHOOK_QUEUE_LIMIT
        assert notifier.dropped == 5

    async def test_aclose_flushes_what_is_still_queued(
        self, receiver: WebhookReceiver, sleeps: RecordedSleeps
    ) -> None:
        """At shutdown, alerts not yet sent get one best-effort try."""
        notifier = notifier_for(receiver.url, sleeps=sleeps)
        notifier.notify(LOST)
        await notifier.aclose()
        assert receiver.events() == ["connection_lost"]

    async def test_shutdown_resends_only_where_the_alert_had_not_arrived(
        self, receiver: WebhookReceiver, sleeps: RecordedSleeps
    ) -> None:
        """Stopped while one of two webhooks is still answering: only that one gets the alert again."""
        async with webhook_receiver() as slow:
            slow.answer_after = 0.5
            notifier = notifier_for(receiver.url, slow.url, sleeps=sleeps)
            task = await running(notifier)
            notifier.notify(LOST)
            await wait_for(lambda: notifier.delivered == 1 and slow.attempts == 1, 5, "one delivered")
            await stop(task, notifier)
        assert receiver.attempts == 1
        # The slow one saw the first POST too, but its answer never came back: at least once, there.
        assert slow.attempts == 2

    async def test_the_webhook_url_never_appears_whole_in_logs(self, sleeps: RecordedSleeps) -> None:
        """Failures are logged with scheme and host only: the token in the path stays secret."""
        url = "http://127.0.0.1:9/services/T0SECRET/B0SECRET/xyzTOKEN"  # port 9: nothing listens
        notifier = notifier_for(url, sleeps=sleeps, retries=1)
        with structlog.testing.capture_logs() as logs:
            task = await running(notifier)
            notifier.notify(LOST)
            await wait_for(lambda: notifier.failed, 5, "the delivery to fail")
            await stop(task, notifier)
        text = repr(logs)
        assert "webhook delivery failed" in text
        assert "TOKEN" not in text
        assert "SECRET" not in text
        assert mask_webhook(url) in text


class TestPayloads:
    def test_discord_hosts_get_content_without_pings(self) -> None:
        """discord.com webhooks get only what Discord documents: content, and no @mentions."""
        body = payload_for("https://discord.com/api/webhooks/1/abc", LOST)
        assert body == {"content": body["content"], "allowed_mentions": {"parse": []}}
        assert "connection_lost" in body["content"]

    def test_slack_hosts_get_text_and_the_event_fields(self) -> None:
        """hooks.slack.com gets text (what Slack shows) plus the machine-readable fields."""
        body = payload_for("https://hooks.slack.com/services/T/B/x", LOST)
        assert set(body) == {"text", "event", "at", "detail", "service"}

    def test_masking_keeps_only_scheme_and_host(self) -> None:
        """The masked form names where alerts go without the secret path."""
        assert mask_webhook("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/***"


@pytest.mark.slow
async def test_one_lost_and_one_restored_per_outage(daemon_stack: StackFactory) -> None:
    """A real daemon through two gateway restarts posts exactly: lost, restored, lost, restored."""
    async with webhook_receiver() as receiver, daemon_stack(webhooks=(receiver.url,)) as stack:
        for outage in (1, 2):
            await stack.simulator("/restart?down=1")
            await wait_for(
                lambda n=outage: receiver.events().count("connection_restored") == n, 15, "restored"
            )
        connection_events = [e for e in receiver.events() if e.startswith("connection_")]
    assert connection_events == ["connection_lost", "connection_restored"] * 2
    restored = [b for b in receiver.received if b["event"] == "connection_restored"]
    assert all("outage" in b["detail"] for b in restored)
