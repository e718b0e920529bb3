"""``GET /events`` and ``GET /timeline`` against a real daemon and simulator, with a plain HTTP client."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time

import pytest
from sse_client import open_events

from daemon_stack import DaemonStack, StackFactory, wait_for
from ingestion.events import IngestionEvent
from ingestion.live_events import CLIENT_QUEUE, MAX_CLIENTS, EventFeed, TooManyListeners

pytestmark = pytest.mark.slow

CYCLES = 1000


def _event(n: int, name: str = "farm_ok") -> IngestionEvent:
    return IngestionEvent(1_765_000_000_000_000_000 + n * 1000, name, f"detail {n}")


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


async def test_events_stream_outage_resume_and_timeline(daemon_stack: StackFactory) -> None:
    """1. connection_lost reaches a plain SSE client within 1 s of the gateway's restart, then
    connection_restored with the outage length  2. a client that left reconnects with Last-Event-ID
    and gets exactly the events it missed, with the same ids  3. /timeline shows the outage, from
    QuestDB, and from memory while QuestDB is down (and, once the writer has noticed, QuestDB's
    own outage as the degradation that follows)."""
    async with daemon_stack() as stack:
        port = stack.daemon.api.port  # type: ignore[union-attr]
        watcher = await open_events(port)
        leaver = await open_events(port)
        assert watcher.status == 200
        assert watcher.headers["content-type"].startswith("text/event-stream")

        await stack.simulator("/restart?down=2")
        restarted = time.monotonic()
        lost = await watcher.until("connection_lost", 5)
        lost_after = time.monotonic() - restarted
        seen_by_leaver = await leaver.until("connection_lost", 5)
        await leaver.close()

        restored = await watcher.until("connection_restored", 15)
        await stack.simulator("/error?code=1100")
        await stack.simulator("/error?code=1102")
        await watcher.until("ib_connectivity_restored", 5)
        stored_ids = _ids_after(stack, seen_by_leaver.id)
        stored_names = _names_after(stack, seen_by_leaver.id)

        resumed = await open_events(port, last_event_id=seen_by_leaver.id)
        replayed = [await resumed.next(5) for _ in stored_ids]
        with pytest.raises(TimeoutError):
            await resumed.next(0.5)  # nothing more than what was missed
        await resumed.close()

        await wait_for(lambda: _questdb_has(stack, "connection_restored"), 10, "the events in QuestDB")
        from_questdb = (await stack.api.get("/timeline", params={"hours": 1})).json()
        stack.qdb.outage(503)
        # The daemon goes on writing ticks: its next flush fails and makes the live connection
        # "degraded" from then on. Read the memory once that has happened, not in a race with it.
        questdb_down = await watcher.until("questdb_down", 10)
        from_memory = (await stack.api.get("/timeline")).json()
        stack.qdb.heal()
        too_long = await stack.api.get("/timeline", params={"hours": 169})
        await watcher.close()

    assert lost.data is not None
    assert lost.data.keys() == {"event", "at", "detail"}
    assert lost.data["detail"].startswith("IBKR Connection Lost at ")
    print(f"measured: connection_lost over /events {lost_after:.3f} s after /restart")
    assert lost_after < 1.0, f"connection_lost took {lost_after:.2f} s"
    assert restored.data is not None
    assert "outage" in restored.data["detail"]
    assert [m.id for m in replayed] == stored_ids
    assert [m.data["event"] for m in replayed if m.data] == stored_names
    assert {"connection_restored", "ib_connectivity_lost", "ib_connectivity_restored"} <= set(stored_names)
    for body, source in ((from_questdb, "questdb"), (from_memory, "memory")):
        assert body["source"] == source
        assert len(body["outages"]) == 1, body
        outage = body["outages"][0]
        assert 1.5 <= outage["seconds"] <= 15, outage
        assert outage["reason"].startswith("IBKR Connection Lost at ")
    assert from_questdb["segments"][-1]["state"] == "connected"
    *_, back_up, writes_failing = from_memory["segments"]
    assert back_up["state"] == "connected"
    assert questdb_down.data is not None
    assert writes_failing["state"] == "degraded"
    assert writes_failing["reason"] == questdb_down.data["detail"]
    assert writes_failing["start"] == questdb_down.data["at"]
    assert from_memory["hours"] == 24
    assert too_long.status_code == 422


def _ids_after(stack: DaemonStack, last_id: str | None) -> list[str]:
    """The ids the feed holds after ``last_id``: what a resume must replay."""
    feed = stack.daemon.feed
    assert last_id is not None
    after = int(last_id.rpartition("-")[2])
    return [f"{feed.boot}-{n}" for n, _ in feed._history if n > after]


def _names_after(stack: DaemonStack, last_id: str | None) -> list[str]:
    assert last_id is not None
    after = int(last_id.rpartition("-")[2])
    history = stack.daemon.feed._history
    return [json.loads(m.decode().split("data: ", 1)[1])["event"] for n, m in history if n > after]


async def _questdb_has(stack: DaemonStack, event: str) -> bool:
    return any(row.get("event") == event for row in stack.qdb.rows("ingestion_events"))


async def test_client_bound_and_a_thousand_connect_disconnect_cycles_leave_nothing_behind(
    daemon_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client more than the bound gets 503; every slot frees when its reader leaves; 1,000
    connect/disconnect cycles leave no listener, no task and no memory growth behind. A quiet
    stream gets a keep-alive comment (every 15 s; 0.3 s here)."""
    monkeypatch.setattr("ingestion.api.live.KEEP_ALIVE_SECONDS", 0.3)
    async with daemon_stack() as stack:
        port = stack.daemon.api.port  # type: ignore[union-attr]
        feed = stack.daemon.feed
        quiet = await open_events(port)
        keep_alive = await quiet.next(2)
        await quiet.close()
        full = [await open_events(port) for _ in range(MAX_CLIENTS)]
        refused = await open_events(port)
        await refused.close()
        for stream in full:
            await stream.close()
        await wait_for(lambda: feed.listeners == 0, 5, "every slot free again")

        await _cycles(port, 100)  # warm-up: allocator pools, uvicorn's first connections
        await wait_for(lambda: feed.listeners == 0, 5, "every slot free again")
        gc.collect()
        tasks_before, rss_before = len(asyncio.all_tasks()), _rss_kib()
        await _cycles(port, CYCLES)
        await wait_for(lambda: feed.listeners == 0, 5, "every slot free after the cycles")
        await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, 5, "the tasks of the cycles gone")
        gc.collect()
        rss_after = _rss_kib()
        still_open = await open_events(port)
        await still_open.close()

    assert keep_alive.comment == "keep-alive"
    assert keep_alive.data is None
    assert refused.status == 503
    assert still_open.status == 200
    # The whole test process (daemon, simulator, client) shares this RSS; a leak of one Listener,
    # task or response per cycle would be well over 1 KiB each, 1 MiB for the cycles.
    print(f"measured: RSS {rss_before} -> {rss_after} KiB over {CYCLES} cycles")
    assert rss_after - rss_before < 4096, f"RSS grew by {rss_after - rss_before} KiB over {CYCLES} cycles"


async def _cycles(port: int, count: int) -> None:
    for _ in range(count):
        stream = await open_events(port)
        assert stream.status == 200
        await stream.close()


def test_a_reader_that_stops_reading_is_dropped_and_never_holds_the_publisher() -> None:
    """The publisher never waits: a full queue drops its listener, the others go on."""
    feed = EventFeed()
    stuck = feed.listen()
    reading = feed.listen()
    started = time.perf_counter()
    for n in range(CLIENT_QUEUE + 10):
        feed.record(_event(n))
        if n % 10 == 0:
            while reading._queue:
                reading._queue.popleft()
    elapsed = time.perf_counter() - started
    assert stuck.dropped
    assert not reading.dropped
    assert feed.listeners == 1
    assert feed.dropped_listeners == 1
    assert elapsed < 1.0


async def test_last_event_id_replays_what_followed_and_a_foreign_id_replays_the_history() -> None:
    feed = EventFeed(history=5)
    for n in range(8):
        feed.record(_event(n))
    resumed = feed.listen(f"{feed.boot}-6")
    assert (await resumed.next()) == feed._history[-2][1]
    assert (await resumed.next()) == feed._history[-1][1]
    other_boot = feed.listen("0-3")
    assert [await other_boot.next() for _ in range(5)] == [m for _, m in feed._history]
    fresh = feed.listen()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await fresh.next()


def test_one_listener_more_than_the_bound_is_refused_and_closing_frees_a_slot() -> None:
    feed = EventFeed(max_listeners=2)
    first = feed.listen()
    feed.listen()
    with pytest.raises(TooManyListeners):
        feed.listen()
    feed.close(first)
    feed.listen()
    assert feed.listeners == 2


async def test_at_shutdown_a_stream_ends_after_what_is_queued() -> None:
    feed = EventFeed()
    listener = feed.listen()
    feed.record(_event(1, "disconnected"))
    feed.end_all()
    assert (await listener.next()) is not None
    assert (await listener.next()) is None
    assert feed.listeners == 0


FLOOD = 2000


async def test_a_stuck_reader_is_dropped_and_cut_off_while_the_daemon_and_other_readers_go_on(
    daemon_stack: StackFactory,
) -> None:
    """A client that never reads: once its queue is full it is dropped and its connection closed;
    publishing never waits for it, a reader that keeps up gets every event, and ticks go on."""
    async with daemon_stack() as stack:
        port = stack.daemon.api.port  # type: ignore[union-attr]
        feed = stack.daemon.feed
        tasks_before = len(asyncio.all_tasks())
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await wait_for(lambda: feed.listeners == 1, 5, "the stuck reader's stream")
        reader = await open_events(port)
        ticks_before = stack.daemon.pipeline.received
        slowest = 0.0
        for n in range(FLOOD):
            started = time.perf_counter()
            stack.daemon.bus.publish("flood_test", f"{n} " + "x" * 2000)
            slowest = max(slowest, time.perf_counter() - started)
            if n % 20 == 0:
                await asyncio.sleep(0.001)  # the loop runs on, as it does between ib_async callbacks
        last = None
        while last is None or last.data is None or not last.data["detail"].startswith(f"{FLOOD - 1} "):
            last = await reader.next(10)
        await wait_for(lambda: feed.dropped_listeners == 1, 5, "the stuck reader dropped")
        await reader.close()
        # Still unread: the stuck stream's tasks must end all the same (no task waits on its socket).
        await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, 5, "the stuck stream's tasks gone")
        closed = await asyncio.to_thread(_read_until_closed, stuck, 10.0)
        ticks_during = stack.daemon.pipeline.received - ticks_before
    assert closed, "the server closed the stuck reader's connection once it had its data"
    assert feed.dropped_listeners == 1, "only the stuck reader"
    assert slowest < 0.05, f"one publish took {slowest * 1000:.1f} ms"
    assert ticks_during > 0


def _read_until_closed(sock: socket.socket, within: float) -> bool:
    """Drain what the kernel holds for the stuck socket, then see the server's FIN (or RST)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.close()
    return True
