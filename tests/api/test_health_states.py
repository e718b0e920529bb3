"""``GET /health`` of a real daemon in each state CONTRACTS.md names: HTTP code and body.

Each test drives the real cause (the simulator's control API, the QuestDB double, a Valkey
process) and reads /health over HTTP; the body is also checked against the response model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from daemon_stack import StackFactory, assert_contract_body, wait_for
from ingestion import __version__

pytestmark = pytest.mark.slow


async def test_connected_is_healthy_with_200(daemon_stack: StackFactory) -> None:
    """Connected, subscribed, QuestDB and Valkey up: 200 and status "healthy"."""
    async with daemon_stack() as stack:
        code, body = await stack.health_where(lambda b: b["status"] == "healthy", 10, "healthy")
    assert code == 200
    assert_contract_body(body)
    assert body["service"] == "data-ingestion"
    assert body["version"] == __version__
    assert body["ibkr_status"] == "connected"
    assert body["ibkr_connected_at"].endswith("Z")
    assert body["reconnection_attempts"] == 0
    assert body["symbols_subscribed"] == 3
    assert body["subscriptions"]["active"] >= 3
    assert body["storage"]["questdb"]["status"] == "ok"
    assert body["storage"]["valkey"]["status"] == "ok"
    assert body["reasons"] == []


async def test_connecting_is_unhealthy_with_503(daemon_stack: StackFactory) -> None:
    """A gateway that accepts but never answers the handshake (a hung gateway): "connecting", 503."""
    async with daemon_stack() as stack:
        await stack.simulator("/silence?seconds=8")
        code, body = await stack.health_where(lambda b: b["ibkr_status"] == "connecting", 8, "connecting")
    assert code == 503
    assert_contract_body(body)
    assert body["status"] == "unhealthy"
    assert body["ibkr_connected_at"] is None
    assert body["reconnection_attempts"] >= 1


async def test_disconnected_counts_growing_attempts(daemon_stack: StackFactory) -> None:
    """Gateway down: "disconnected", 503, last_disconnected_at set, and the attempt count grows."""
    async with daemon_stack() as stack:
        await stack.simulator("/restart?down=6")
        first_code, first = await stack.health_where(
            lambda b: b["ibkr_status"] == "disconnected" and b["reconnection_attempts"] >= 1,
            5,
            "first attempt",
        )
        _, later = await stack.health_where(
            lambda b: b["reconnection_attempts"] >= first["reconnection_attempts"] + 2, 5, "two more attempts"
        )
    assert first_code == 503
    assert_contract_body(first)
    assert first["status"] == "unhealthy"
    assert first["ibkr_connected_at"] is None
    assert first["last_disconnected_at"].endswith("Z")
    assert later["last_disconnected_at"] == first["last_disconnected_at"], "one outage, one loss time"


async def test_ib_connectivity_lost_1100_is_degraded(daemon_stack: StackFactory) -> None:
    """Error 1100 with the socket still up: connected but "degraded", 503, the reason listed."""
    async with daemon_stack() as stack:
        await stack.simulator("/error?code=1100")
        code, body = await stack.health_where(lambda b: b["status"] == "degraded", 5, "degraded")
        await stack.simulator("/error?code=1102")
        healed_code, _ = await stack.health_where(lambda b: b["status"] == "healthy", 5, "healthy again")
    assert code == 503
    assert_contract_body(body)
    assert body["ibkr_status"] == "connected"
    assert body["ibkr"]["ib_connectivity"] == "lost"
    assert any("1100" in reason for reason in body["reasons"])
    assert healed_code == 200


async def test_questdb_outage_spools_and_is_degraded(daemon_stack: StackFactory) -> None:
    """QuestDB refusing writes: storage.questdb "down" with growing spool bytes, "degraded", 503."""
    async with daemon_stack() as stack:
        stack.qdb.fail_writes(500)
        code, body = await stack.health_where(_questdb_down_with_spool, 10, "QuestDB down, rows spooled")
    assert code == 503
    assert_contract_body(body)
    assert body["status"] == "degraded"
    assert body["ibkr_status"] == "connected"
    assert "questdb down" in body["reasons"]


async def test_replaying_the_spool_is_spooling(daemon_stack: StackFactory) -> None:
    """QuestDB back after an outage: "spooling" while the backlog replays (503), then healthy (200)."""
    async with daemon_stack(questdb={"flush_rows": 50}) as stack:
        stack.qdb.fail_writes(500)
        await stack.health_where(_backlog_of(1000), 15, "a backlog of spooled rows")
        stack.qdb.heal()
        stack.qdb.delay(0.1)  # each replayed chunk of 50 rows takes 0.1 s: seconds of "spooling"
        code, body = await stack.health_where(_questdb_is("spooling"), 10, "replay under way")
        stack.qdb.heal()
        healed_code, healed = await stack.health_where(_questdb_is("ok"), 15, "backlog replayed")
    assert code == 503
    assert_contract_body(body)
    assert body["status"] == "degraded"
    assert "questdb spooling" in body["reasons"]
    assert healed_code == 200
    assert healed["storage"]["questdb"]["spool_bytes"] == 0


def _questdb_down_with_spool(body: dict[str, Any]) -> bool:
    questdb = body["storage"]["questdb"]
    return questdb["status"] == "down" and questdb["spool_bytes"] > 0


def _backlog_of(rows: int) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["storage"]["questdb"].get("rows_spooled", 0) >= rows


def _questdb_is(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["storage"]["questdb"]["status"] == status


def _retrying(body: dict[str, Any]) -> bool:
    return body["ibkr_status"] == "disconnected" and body["reconnection_attempts"] >= 1


async def test_valkey_down_is_degraded(daemon_stack: StackFactory, restartable_valkey: Any) -> None:
    """Valkey stopped: storage.valkey "down", "degraded", 503; QuestDB keeps taking writes."""
    async with daemon_stack(valkey=restartable_valkey.url) as stack:
        restartable_valkey.stop()
        code, body = await stack.health_where(
            lambda b: b["storage"]["valkey"]["status"] == "down", 10, "down"
        )
        restartable_valkey.start()
        await wait_for(stack.health_ok, 15, "healthy again once Valkey is back")
    assert code == 503
    assert_contract_body(body)
    assert body["status"] == "degraded"
    assert body["storage"]["questdb"]["status"] == "ok"
    assert "valkey down" in body["reasons"]


def _valkey_down(body: dict[str, Any]) -> bool:
    return body["storage"]["valkey"]["status"] == "down"
