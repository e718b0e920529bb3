"""Delayed data tells the truth: the whole daemon against a delayed-only and an unentitled account.

The simulator answers as IB does (simulator/entitlement.py): asked for live data, a delayed-only
account gets 354 "...Delayed market data is available." and nothing else; asked for delayed data
(``ibkr.market_data_type: delayed``) it gets 10167 and ticks 66-76. Depth and tick-by-tick need live
data. An account without permissions gets 354 (10168 for delayed). What the operator must see:
/subscriptions per stream, /health with the symbols named, one alert on every channel, and rows that
are either absent or marked ``delayed``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as redis
import structlog
from webhook_receiver import WebhookReceiver, webhook_receiver

from daemon_stack import SIM_RATE, DaemonStack, http_clients, running_daemon, stack_settings
from ingestion.ibkr.subscriptions import ALERT_BATCH_SECONDS
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.entitlement import Entitlement
from ingestion.simulator.server import running_simulator
from questdb_double import QuestDBDouble
from waiting import wait_for

SYMBOLS = ["SPY", "QQQ", "IWM"]
MARKET_TABLES = ("market_data_l1", "market_data_l2", "time_and_sales")


@asynccontextmanager
async def account_stack(
    entitlement: Entitlement,
    market_data_type: str,
    tmp_path: Path,
    valkey_url: str,
    receiver: WebhookReceiver,
) -> AsyncIterator[DaemonStack]:
    with QuestDBDouble() as qdb:
        config = SimulatorConfig(port=0, control_port=0, rate=SIM_RATE, entitlement=entitlement)
        async with running_simulator(config) as sim:
            settings = stack_settings(sim, qdb, tmp_path / "spool", valkey_url, (receiver.url,))
            ibkr = settings.ibkr.model_copy(update={"market_data_type": market_data_type})
            settings = settings.model_copy(update={"ibkr": ibkr})
            async with running_daemon(settings) as daemon, http_clients(daemon, sim) as (api, control):
                yield DaemonStack(daemon, sim, qdb, api, control)


@asynccontextmanager
async def alerts_on_the_channel(valkey_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every message published on ``ingestion:events`` while the block runs."""
    client = redis.from_url(valkey_url)
    pubsub = client.pubsub()
    await pubsub.subscribe("ingestion:events")
    await pubsub.get_message(timeout=1)
    seen: list[dict[str, Any]] = []

    async def drain() -> None:
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.01)) is not None:
            seen.append(json.loads(message["data"]))

    try:
        yield seen
    finally:
        await drain()
        await pubsub.aclose()
        await client.aclose()


async def streams(stack: DaemonStack) -> dict[tuple[str, str], dict[str, Any]]:
    body = (await stack.api.get("/subscriptions")).json()
    return {(s["symbol"], s["data_type"]): s for s in body["subscriptions"]}


def settled(body: dict[str, Any]) -> bool:
    return body["ibkr_status"] == "connected" and body["subscriptions"]["pending"] == 0


def subscribed_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"].startswith("Subscribed to")]


def alert_lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["log_level"] == "critical" and line["event"].startswith(event)]


async def test_live_config_with_a_delayed_account_reports_delayed_degrades_and_alerts_once(
    tmp_path: Path, valkey_url: str
) -> None:
    """Asked for live data, a delayed-only account: Level 1 is `delayed` (IB: 354, delayed available),
    /health is degraded naming SPY, QQQ, IWM, one alert on every channel (a reconnect does not
    repeat it), and nothing is stored as live: IB sends no data for a live request it cannot serve."""
    with structlog.testing.capture_logs() as logs:
        async with (
            webhook_receiver() as receiver,
            alerts_on_the_channel(valkey_url) as published,
            account_stack(Entitlement.DELAYED, "live", tmp_path, valkey_url, receiver) as stack,
        ):
            status, body = await stack.health_where(
                lambda b: settled(b) and b["status"] == "degraded", 15, "degraded by delayed data"
            )
            assert status == 503
            [reason] = [r for r in body["reasons"] if "delayed" in r]
            assert reason == "delayed market data instead of live (no live subscription): SPY, QQQ, IWM"
            by_stream = await streams(stack)
            for symbol in SYMBOLS:
                l1 = by_stream[symbol, "l1"]
                assert (l1["state"], l1["error_code"]) == ("delayed", 354)
                assert "Delayed market data is available" in l1["error_text"]
                assert by_stream[symbol, "l2"]["state"] == "not_entitled"
                assert by_stream[symbol, "time_and_sales"]["state"] == "not_entitled"
            assert body["symbols_subscribed"] == 0
            await wait_for(lambda: "delayed_market_data" in receiver.events(), 5, "the webhook")

            await stack.simulator("/restart?down=0.2")
            await wait_for(lambda: len(subscribed_lines(logs)) == 2, 20, "the resubscription after it")
            # Past the batching of late answers: an alert that were to repeat would be out by now.
            await asyncio.sleep(ALERT_BATCH_SECONDS + 0.5)
            assert (await streams(stack))["SPY", "l1"]["state"] == "delayed"
            assert receiver.events().count("delayed_market_data") == 1
            assert not any(stack.qdb.row_count(t) for t in MARKET_TABLES), "no data was sent, none stored"

            def stored_alerts() -> list[dict[str, Any]]:
                return [r for r in stack.qdb.rows("ingestion_events") if r["event"] == "delayed_market_data"]

            await wait_for(stored_alerts, 10, "the alert in ingestion_events")
            stored = stored_alerts()
    assert len(stored) == 1
    assert "SPY, QQQ, IWM" in stored[0]["detail"]
    assert [m["event"] for m in published].count("delayed_market_data") == 1
    [line] = alert_lines(logs, "Delayed market data instead of live")
    assert line["symbols"] == SYMBOLS


async def test_live_config_with_no_permissions_is_not_entitled_and_stores_nothing(
    tmp_path: Path, valkey_url: str
) -> None:
    """An account without market data permissions: every stream not_entitled with IB's 354, /health
    degraded naming the symbols, one alert, and not a single market row."""
    async with (
        webhook_receiver() as receiver,
        account_stack(Entitlement.NONE, "live", tmp_path, valkey_url, receiver) as stack,
    ):
        status, body = await stack.health_where(
            lambda b: settled(b) and b["status"] == "degraded", 15, "degraded by missing permissions"
        )
        assert status == 503
        assert "no market data permission: SPY, QQQ, IWM" in body["reasons"]
        assert body["subscriptions"]["rejected"] == 9
        by_stream = await streams(stack)
        assert {(s["state"], s["error_code"]) for s in by_stream.values()} == {("not_entitled", 354)}
        assert not any("Delayed market data is available" in s["error_text"] for s in by_stream.values())
        await wait_for(lambda: "market_data_not_entitled" in receiver.events(), 5, "the webhook")
        await stack.simulator("/burst?messages=500")
        await wait_for(lambda: stack.qdb.row_count("ingestion_events") > 0, 5, "events stored")
        assert receiver.events().count("market_data_not_entitled") == 1
        assert "delayed_market_data" not in receiver.events()
        assert not any(stack.qdb.row_count(t) for t in MARKET_TABLES)


async def test_delayed_config_with_a_delayed_account_is_healthy_and_marks_every_row(
    tmp_path: Path, valkey_url: str
) -> None:
    """Asked for delayed data and getting it (10167, ticks 66-76): healthy, Level 1 `delayed`, no
    delayed-data alert, and every stored quote marked delayed. Depth and tick-by-tick, which have no
    delayed form, are not_entitled in /subscriptions without degrading what was asked for."""
    async with (
        webhook_receiver() as receiver,
        account_stack(Entitlement.DELAYED, "delayed", tmp_path, valkey_url, receiver) as stack,
    ):
        status, body = await stack.health_where(
            lambda b: settled(b) and b["last_tick_at"] is not None, 15, "delayed data flowing"
        )
        assert (status, body["status"], body["reasons"]) == (200, "healthy", [])
        assert body["symbols_subscribed"] == 3
        by_stream = await streams(stack)
        for symbol in SYMBOLS:
            l1 = by_stream[symbol, "l1"]
            assert (l1["state"], l1["error_code"]) == ("delayed", 10167)
            assert l1["count"] > 0
            assert by_stream[symbol, "l2"]["state"] == "not_entitled"
        await wait_for(lambda: stack.qdb.row_count("market_data_l1") >= 30, 10, "delayed rows stored")
        rows = stack.qdb.rows("market_data_l1")
        assert {row["symbol"] for row in rows} == set(SYMBOLS)
        assert all(row.get("delayed") is True for row in rows), "a delayed row stored as live"
        assert stack.qdb.row_count("market_data_l2") == 0
        await wait_for(lambda: stack.qdb.row_count("ingestion_events") > 0, 5, "events stored")
        assert not {"delayed_market_data", "market_data_not_entitled"} & set(receiver.events())


async def test_delayed_config_with_a_live_account_gets_live_data_stored_as_live(
    tmp_path: Path, valkey_url: str
) -> None:
    """IB returns live data whenever the account has it, and says so (marketDataType 1): the streams
    are active and no row is marked delayed."""
    async with (
        webhook_receiver() as receiver,
        account_stack(Entitlement.LIVE, "delayed", tmp_path, valkey_url, receiver) as stack,
    ):
        status, body = await stack.health_where(
            lambda b: settled(b) and b["last_tick_at"] is not None, 15, "live data flowing"
        )
        assert (status, body["status"]) == (200, "healthy")
        assert {s["state"] for s in (await streams(stack)).values()} == {"active"}
        await wait_for(lambda: stack.qdb.row_count("market_data_l1") >= 30, 10, "rows stored")
        assert not any(row.get("delayed") for row in stack.qdb.rows("market_data_l1"))
