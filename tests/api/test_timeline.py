"""How recorded events become the timeline: states, outages, totals and the SQL sent to QuestDB."""

from __future__ import annotations

import httpx
import pytest

from ingestion.timeline import Mark, build_timeline, select_state_before, select_window
from questdb_double import QuestDBDouble

S = 1_000_000  # one second in microseconds
T0 = 1_765_000_000 * S


def marks(*events: tuple[float, str]) -> list[Mark]:
    return [Mark(T0 + int(at * S), name, f"{name} detail") for at, name in events]


def test_an_outage_between_two_connections() -> None:
    body = build_timeline(
        marks((10, "connected"), (100, "connection_lost"), (130, "connection_restored")), T0, T0 + 200 * S
    )
    assert [(s["state"], s["seconds"]) for s in body["segments"]] == [
        ("unknown", 10.0), ("connected", 90.0), ("disconnected", 30.0), ("connected", 70.0),
    ]  # fmt: skip
    assert len(body["outages"]) == 1
    outage = body["outages"][0]
    assert outage["seconds"] == 30.0
    assert outage["reason"] == "connection_lost detail"
    assert outage["ongoing"] is False
    assert body["totals"] == {"unknown": 10.0, "connected": 160.0, "disconnected": 30.0}


def test_degraded_while_connected_and_cleared_by_its_own_restoration() -> None:
    body = build_timeline(
        marks((0, "connected"), (50, "ib_connectivity_lost"), (60, "questdb_down"),
              (70, "ib_connectivity_restored"), (80, "questdb_restored")),
        T0, T0 + 100 * S,
    )  # fmt: skip
    assert [(s["state"], s["seconds"]) for s in body["segments"]] == [
        ("connected", 50.0), ("degraded", 30.0), ("connected", 20.0),
    ]  # fmt: skip
    assert body["outages"] == []


def test_the_state_before_the_window_carries_into_it_and_an_open_outage_is_ongoing() -> None:
    body = build_timeline(marks((-500, "connected"), (-100, "connection_lost")), T0, T0 + 60 * S)
    assert [(s["state"], s["seconds"]) for s in body["segments"]] == [("disconnected", 60.0)]
    assert body["outages"][0]["ongoing"] is True


def test_a_clean_stop_is_not_an_outage_and_farm_notices_change_nothing() -> None:
    body = build_timeline(
        marks((0, "connected"), (5, "farm_ok"), (10, "disconnected"), (40, "connected")), T0, T0 + 50 * S
    )
    assert [s["state"] for s in body["segments"]] == ["connected", "stopped", "connected"]
    assert body["outages"] == []


def test_never_connected_since_start_up_is_an_outage() -> None:
    body = build_timeline(marks((0, "connection_lost"), (12, "connection_restored")), T0, T0 + 20 * S)
    assert body["outages"][0]["seconds"] == 12.0


@pytest.mark.parametrize("since", [T0, T0 + 123_456])
def test_the_sql_runs_on_the_double_and_selects_by_time(since: int) -> None:
    """Timestamp literals with microseconds and a Z, as QuestDB prints them; ORDER BY, LIMIT, OR."""
    with QuestDBDouble() as qdb:
        qdb.execute(
            "CREATE TABLE ingestion_events (timestamp TIMESTAMP, event SYMBOL, code INT, detail VARCHAR) "
            "TIMESTAMP(timestamp) PARTITION BY DAY WAL DEDUP UPSERT KEYS(timestamp, event)"
        )
        rows = ((-20, "connected"), (-10, "farm_ok"), (0, "connection_lost"), (9, "connected"))
        lines = "".join(
            f'ingestion_events,event={name} detail="d" {(since + at * S) * 1000}\n' for at, name in rows
        )
        assert httpx.post(f"http://127.0.0.1:{qdb.port}/write", content=lines).status_code == 204
        before = qdb.execute(select_state_before(since))["dataset"]
        window = qdb.execute(select_window(since))["dataset"]
    assert [row[1] for row in before] == ["connected"]
    assert [row[1] for row in window] == ["connection_lost", "connected"]
