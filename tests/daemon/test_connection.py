"""The connection supervisor against the simulator: connect, lose, reconnect, forever."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from ibkr_harness import CountingSink, fast_settings, ibkr_stack, stop, wait_for

from ingestion.bus import EventBus
from ingestion.events import ReceiveClock
from ingestion.ibkr.backoff import ExponentialBackoff
from ingestion.ibkr.normalise import Normaliser
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.ibkr.supervisor import ConnectionSupervisor, SessionEnded
from ingestion.memory import tune_collector
from ingestion.metrics import Metrics
from ingestion.simulator.config import SimulatorConfig
from ingestion.simulator.protocol import encode
from ingestion.simulator.server import running_simulator
from waiting import seconds_until

EXPECTED_COUNTS = {"active": 33, "pending": 0, "rejected": 0, "skipped": 12}


def resubscribed(stack) -> bool:
    """The live client holds one ticker per symbol and 33 streams are active.

    The reconnect counter moves when a session starts, before it resubscribes; checking the new
    client's own tickers keeps the previous session's counts from passing for the new one's.
    """
    ib = stack.supervisor.ib
    return ib is not None and len(ib.wrapper.tickers) == 15 and stack.registry.counts() == EXPECTED_COUNTS


def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
async def test_gateway_down_at_start_then_up_30s_later() -> None:
    """Started with no gateway, the daemon keeps trying; 30 s later the gateway comes up and the
    daemon is connected and fully subscribed within one backoff step (the 10 s cap)."""
    port = unused_port()
    settings = fast_settings(port)
    settings = settings.model_copy(
        update={"ibkr": settings.ibkr.model_copy(update={"reconnect": type(settings.ibkr.reconnect)()})}
    )
    bus, metrics = EventBus(), Metrics()
    state = ConnectionState(bus, metrics, "127.0.0.1", port)
    registry = SubscriptionRegistry(settings, bus, metrics, settle_seconds=1.0)
    normaliser = Normaliser(registry, CountingSink().accept_many, ReceiveClock(), metrics)
    supervisor = ConnectionSupervisor(settings.ibkr, state, registry, normaliser)
    task = asyncio.create_task(supervisor.run())
    try:
        await asyncio.sleep(30)
        assert state.status != "connected"
        assert state.attempts >= 4, "retried with backoff while the gateway was down"
        async with running_simulator(SimulatorConfig(port=port, control_port=None, rate=500)):
            took = await seconds_until(lambda: registry.counts() == EXPECTED_COUNTS, 15, "full subscription")
            assert state.status == "connected"
            # At most one backoff step (jitter never goes past the cap), then connecting, qualifying and
            # the first data on every stream: well under a second here, 3 s of room on a loaded machine.
            assert took <= settings.ibkr.reconnect.max_seconds + 3
    finally:
        await stop(task)


async def quiet_snapshot(stack) -> tuple[Counter[str], int]:
    """Live tasks by coroutine, and traced memory, taken with the stream paused and drained.

    Measured mid-stream, both move with timing alone: events queued for the sink hold memory, and
    a session's subscribe_all outlives its last confirmation by up to one settle poll.
    """
    await stack.post("/pause")
    await wait_for(lambda: stack.pipeline.depth == 0, 5, "the pipeline to drain")
    gc.collect()
    tasks = Counter(task.get_coro().__qualname__ for task in asyncio.all_tasks())
    memory = tracemalloc.get_traced_memory()[0]
    await stack.post("/resume")
    return tasks, memory


@pytest.mark.slow
async def test_twenty_gateway_restarts_reconnect_and_resubscribe_without_leaks() -> None:
    """20 restarts through the control API give 20 reconnects; after each, 33 subscriptions are
    active (15 L1, 3 depth, 15 time & sales: 3 tick-by-tick, 12 RTVolume) and 12 depth are
    skipped_limit; no session leaves a task or a ticker behind; memory stays flat."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.registry.counts() == EXPECTED_COUNTS, 10, "first subscription")
        tracemalloc.start()
        memory = []
        try:
            for cycle in range(20):
                await stack.post("/restart?down=0.3")
                await wait_for(lambda c=cycle: stack.state.reconnects == c + 1, 10, f"reconnect {cycle + 1}")
                await wait_for(
                    lambda: resubscribed(stack),
                    10,
                    "resubscription: one ticker per symbol on the live client, 33 active",
                )
                await wait_for(lambda: stack.sink.trades.total() > 0, 5, "data")
                ib = stack.supervisor.ib
                assert ib is not None
                assert len(ib.wrapper.tickers) == 15, "no ticker beyond one per symbol (a leak would grow)"
                assert (await stack.stats())["connections"] == 1
                tasks, traced = await quiet_snapshot(stack)
                # A task left behind by an earlier session would make its coroutine appear twice.
                doubled = {name: n for name, n in tasks.items() if n > 1}
                assert not doubled, f"restart {cycle + 1} left tasks behind: {doubled}"
                memory.append(traced)
        finally:
            tracemalloc.stop()
        assert stack.state.reconnects == 20
        assert len(stack.events_named("connection_lost")) == 20
        assert len(stack.events_named("connection_restored")) == 20
        # Memory after the last cycles is no larger than after the early ones, beyond noise.
        growth = memory[-1] - memory[4]
        assert growth < 2_000_000, f"traced memory grew {growth} bytes over 15 restarts: {memory}"


@pytest.mark.slow
async def test_a_30s_silence_is_detected_by_the_heartbeat_and_recovered() -> None:
    """The gateway keeps the socket open but stops answering for 30 s: the heartbeat declares the
    connection dead, the daemon alerts, keeps retrying, and is back once the gateway speaks again."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.registry.counts() == EXPECTED_COUNTS, 10, "subscription")
        silenced = time.monotonic()
        await stack.post("/silence?seconds=30")
        detected = await seconds_until(lambda: stack.state.status != "connected", 8, "heartbeat detection")
        # Worst case: a probe sent just before the silence times out while data is less than a timeout
        # old, which excuses it; the next probe, one interval later, times out too. Plus 1 s of slack.
        ibkr = stack.settings.ibkr
        assert detected <= ibkr.heartbeat_interval_seconds + 2 * ibkr.heartbeat_timeout_seconds + 1
        (lost,) = stack.events_named("connection_lost")
        assert "heartbeat" in lost.detail
        await wait_for(lambda: stack.state.status == "connected", 40, "recovery after the silence")
        assert time.monotonic() - silenced >= 29
        await wait_for(lambda: resubscribed(stack), 10, "resubscription on the new client")


async def test_socket_close_is_seen_at_once_and_alerted() -> None:
    """When the gateway closes the socket, the state flips and one ALERT event names the time."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.state.status == "connected", 10, "connect")
        await stack.post("/restart?down=1")
        took = await seconds_until(lambda: stack.state.status != "connected", 2, "loss detection")
        # Seen from the socket, not found by the heartbeat, which needs at least its 1 s timeout here.
        assert took < stack.settings.ibkr.heartbeat_timeout_seconds
        (lost,) = stack.events_named("connection_lost")
        assert lost.alert
        assert lost.detail.startswith("IBKR Connection Lost at ")
        assert stack.state.last_disconnected_at is not None


async def test_an_ended_sessions_client_is_freed_when_the_session_ends() -> None:
    """With the daemon's collector settings full collections are rare, yet an IB client lives in cycles
    (its wrapper refers back to it): the supervisor frees each session's client as the session ends."""
    thresholds = gc.get_threshold()
    tune_collector()
    try:
        async with ibkr_stack() as stack:
            await wait_for(lambda: resubscribed(stack), 10, "the first session")
            first = weakref.ref(stack.supervisor.ib)
            await stack.post("/restart?down=0.5")
            await wait_for(lambda: stack.state.status != "connected", 5, "the loss")
            await wait_for(lambda: first() is None or stack.state.status == "connected", 10, "the reconnect")
            freed = first() is None
    finally:
        gc.set_threshold(*thresholds)
    assert freed


async def test_attempts_grow_while_down_and_reset_on_success() -> None:
    """reconnection_attempts counts attempts since the last success and is 0 once connected."""
    async with ibkr_stack() as stack:
        await wait_for(lambda: stack.state.status == "connected", 10, "connect")
        await stack.post("/restart?down=2")
        await wait_for(lambda: stack.state.attempts >= 3, 5, "several attempts")
        assert stack.state.snapshot()["reconnection_attempts"] >= 3
        await wait_for(lambda: stack.state.status == "connected", 10, "reconnect")
        assert stack.state.snapshot()["reconnection_attempts"] == 0


async def test_client_id_in_use_is_explained_and_retried() -> None:
    """Error 326 (client id in use) ends the attempt at once with the fix, and the daemon retries."""
    async with ibkr_stack() as first:
        await wait_for(lambda: first.state.status == "connected", 10, "first client")
        # A second daemon with the same client id against the same gateway.
        bus, metrics = EventBus(), Metrics()
        state = ConnectionState(bus, metrics, "127.0.0.1", first.sim.port)
        registry = SubscriptionRegistry(first.settings, bus, metrics)
        normaliser = Normaliser(registry, CountingSink().accept_many, ReceiveClock(), metrics)
        supervisor = ConnectionSupervisor(
            first.settings.ibkr, state, registry, normaliser,
            backoff=ExponentialBackoff(0.2, 0.5, jitter=0),
        )  # fmt: skip
        task = asyncio.create_task(supervisor.run())
        try:
            await wait_for(lambda: state.attempts >= 2, 5, "a retry after 326")
            assert state.status != "connected"
            assert state.last_error is not None
            assert "client id 10 is already in use (326)" in state.last_error
            assert "IBKR_CLIENT_ID" in state.last_error
        finally:
            await stop(task)


async def test_clean_stop_cancels_subscriptions_and_says_disconnected() -> None:
    """Cancelling the supervisor cancels every stream at the gateway and closes the socket."""
    async with ibkr_stack(start_supervisor=False) as stack:
        task = asyncio.create_task(stack.supervisor.run())
        await wait_for(lambda: stack.registry.counts() == EXPECTED_COUNTS, 10, "subscription")
        await stop(task)
        assert stack.state.status == "disconnected"
        assert stack.events_named("disconnected")
        assert not stack.events_named("connection_lost"), "a clean stop is not an outage"
        await wait_for(lambda: stack.sim.connections == 0, 2, "socket closed at the gateway")


class BackloggedGateway:
    """An IB client whose reqCurrentTime answer never comes but whose socket keeps delivering data
    (the answer is queued behind a backlog), until ``stop_data`` is called."""

    def __init__(self) -> None:
        self.wrapper = type("Wrapper", (), {"time": time.time()})()
        self.flowing = True

    async def reqCurrentTimeAsync(self) -> None:
        await asyncio.Event().wait()

    async def feed(self) -> None:
        while self.flowing:
            self.wrapper.time = time.time()
            await asyncio.sleep(0.05)


async def test_heartbeat_treats_arriving_data_as_proof_of_life() -> None:
    """A late heartbeat answer while data still arrives is a backlog, not a dead connection:
    reconnecting would throw the backlog away. Only silence ends the session."""
    settings = fast_settings(4002)
    bus, metrics = EventBus(), Metrics()
    registry = SubscriptionRegistry(settings, bus, metrics)
    supervisor = ConnectionSupervisor(
        settings.ibkr,
        ConnectionState(bus, metrics, "127.0.0.1", 4002),
        registry,
        Normaliser(registry, CountingSink().accept_many, ReceiveClock(), metrics),
    )
    gateway = BackloggedGateway()
    feeding = asyncio.create_task(gateway.feed())
    heartbeat = asyncio.create_task(supervisor._heartbeat(gateway))
    await asyncio.sleep(5)
    assert not heartbeat.done(), "three missed answers while data flowed did not end the session"
    gateway.flowing = False
    await feeding
    with pytest.raises(SessionEnded, match="no answer to reqCurrentTime and no data"):
        await asyncio.wait_for(heartbeat, 5)


@asynccontextmanager
async def fake_gateway(reply: bytes | None) -> AsyncIterator[int]:
    """A TCP server on a free port that reads the client's hello, sends ``reply`` (or nothing) and
    then holds the connection open without another word; yields the port."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1 << 16)
        if reply is not None:
            writer.write(reply)
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def first_failure(port: int) -> str:
    """Run a supervisor against ``port`` until its first attempt fails; returns the reason."""
    settings = fast_settings(port)
    bus, metrics = EventBus(), Metrics()
    state = ConnectionState(bus, metrics, "127.0.0.1", port)
    registry = SubscriptionRegistry(settings, bus, metrics)
    normaliser = Normaliser(registry, CountingSink().accept_many, ReceiveClock(), metrics)
    supervisor = ConnectionSupervisor(settings.ibkr, state, registry, normaliser)
    task = asyncio.create_task(supervisor.run())
    try:
        await wait_for(lambda: state.last_error is not None, 5, "the first attempt to fail")
        assert state.status != "connected"
        return state.last_error
    finally:
        await stop(task)


async def test_a_handshake_that_never_completes_is_explained_as_an_untrusted_ip() -> None:
    """A gateway that accepts TCP but never answers the API handshake (what IB Gateway does for an
    IP not in its Trusted IPs) ends each attempt after connect_timeout with the likely cause."""
    async with fake_gateway(reply=None) as port:
        reason = await first_failure(port)
    assert "did not complete within 2 s" in reason
    assert "Trusted IPs" in reason


async def test_a_port_that_answers_with_something_else_is_not_blamed_on_trusted_ips() -> None:
    """A service on the port that answers with bytes that are no TWS handshake (a wrong port) is
    reported as such, not with the untrusted-IP hint meant for a gateway that stays silent."""
    async with fake_gateway(reply=b"\x00\x00\x10\x00HTTP/1.1 400 Bad Request\r\n") as port:
        reason = await first_failure(port)
    assert "answered, but not with a TWS API handshake" in reason
    assert "Trusted IPs" not in reason


async def test_a_message_over_the_protocol_maximum_is_named_as_the_reason() -> None:
    """A valid handshake, then a header announcing 32 MiB (more than any TWS message): the attempt
    fails at once on the header, and the reason says what came, not that the handshake timed out."""
    reply = encode((178, "20250102 09:30:00 EST")) + (32 << 20).to_bytes(4, "big") + b"4\0" * 64
    async with fake_gateway(reply=reply) as port:
        reason = await first_failure(port)
    assert "answered, but sent a message of 33,554,432 bytes" in reason
    assert "maximum of 16,777,215" in reason
