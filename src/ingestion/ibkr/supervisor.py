"""The connection supervisor: connect at start, stay connected, never give up.

One loop, one attempt at a time::

    while True:
        attempt = state.connecting()
        connect (TCP + API handshake + startup sync), bounded by connect_timeout
        on failure: explain the likely cause, wait backoff(attempt), try again
        on success: resubscribe everything, then run the session's tasks
            (heartbeat, replay on 1101, retry of streams refused for want of permission)
            until the socket closes or a heartbeat is missed
        cancel and gather every task of the session; discard the IB object; loop

Each attempt gets a fresh ``ib_async.IB``, so nothing of a dead connection (tickers, pending
futures, handlers) survives into the next one. The loop ends only when the task running it is
cancelled (clean stop), and never because the gateway is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ib_async import IB
from ib_async.ib import StartupFetchNONE

from ingestion.config import IbkrConfig
from ingestion.ibkr import codes
from ingestion.ibkr.backoff import ExponentialBackoff
from ingestion.ibkr.normalise import Normaliser, tap_market_data
from ingestion.ibkr.reads import TOO_LONG, bound_socket_reads
from ingestion.ibkr.state import ConnectionState
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.logging import get_logger

log = get_logger("ibkr")

Sleep = Callable[[float], Awaitable[Any]]


class ConnectFailed(Exception):
    """One connection attempt failed; the message says the likely cause and the fix."""


class SessionEnded(Exception):
    """A live connection ended; the message says why."""


class ConnectionSupervisor:
    """Owns the IB connection: connect, resubscribe, watch, reconnect, forever."""

    def __init__(
        self,
        config: IbkrConfig,
        state: ConnectionState,
        registry: SubscriptionRegistry,
        normaliser: Normaliser,
        *,
        backoff: ExponentialBackoff | None = None,
        ib_factory: Callable[[], IB] = IB,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._config = config
        self._state = state
        self._registry = registry
        self._normaliser = normaliser
        self._backoff = backoff or ExponentialBackoff.from_config(config.reconnect)
        self._ib_factory = ib_factory
        self._sleep = sleep
        self._ib: IB | None = None
        self._ended: asyncio.Future[str] | None = None
        self._client_id_in_use = False
        self._resubscribe = asyncio.Event()
        self._stopping = False
        self._api_errors: list[str] = []
        self._attempt_started = 0.0

    @property
    def ib(self) -> IB | None:
        """The live client, for read-only use by tests and diagnostics."""
        return self._ib

    async def run(self) -> None:
        """Connect and reconnect until cancelled; on cancellation, stop cleanly."""
        # Not connected within the connect timeout of the start is an outage, even mid-attempt.
        startup = asyncio.get_running_loop().call_later(
            self._config.connect_timeout_seconds, self._state.not_connected_yet
        )
        try:
            while True:
                try:
                    await self._attempt()
                except Exception:  # the loop outlives any one attempt's bug: log it, reconnect
                    log.exception("unexpected error in the connection supervisor; reconnecting")
                    if self._ib is not None:
                        self._state.lost("internal error, see the previous log line")
                        self._teardown(self._ib)
                    await self._sleep(self._backoff.compute(0))
        except asyncio.CancelledError:
            self._stopping = True
            self._stop()
            raise
        finally:
            startup.cancel()

    async def drain(self, *, quiet_seconds: float = 0.1, limit_seconds: float = 1.0) -> None:
        """Before a stop: cancel our streams, then go on reading until the socket has been quiet for
        ``quiet_seconds`` (at most ``limit_seconds``).

        Closing at once threw away what the gateway had already sent and the kernel held unread:
        2-8 trades and depth rows per SIGTERM at 10,000 msgs/s. Read and stored instead, the rows
        end up in QuestDB before the sinks flush.
        """
        ib = self._ib
        if ib is None or not ib.isConnected():
            return
        self._registry.cancel_all(ib)
        deadline = time.monotonic() + limit_seconds
        while (left := deadline - time.monotonic()) > 0:
            quiet = _seconds_since_data(ib)
            if quiet >= quiet_seconds:
                return
            await asyncio.sleep(min(quiet_seconds - quiet, left))

    async def _attempt(self) -> None:
        attempt = self._state.connecting()
        ib = self._new_client()
        try:
            await self._connect(ib)
        except ConnectFailed as exc:
            self._teardown(ib)
            delay = self._backoff.compute(attempt - 1)
            self._state.attempt_failed(str(exc), delay)
            await self._sleep(delay)
            return
        reason = await self._session(ib)
        self._state.lost(reason)
        self._teardown(ib)
        del ib
        # The first retry after a loss waits one initial backoff step: a gateway that just
        # closed the socket is rarely back within milliseconds.
        await self._sleep(self._backoff.compute(0))
        # The ended session's client lives in cycles (its wrapper refers back to it), which only the
        # collector frees, and tuned for throughput (memory.tune_collector) it rarely runs a full
        # collection: 100 gateway restarts then grew RSS by 8 MB (4 before). Collected here, after the
        # session's tasks have finished and while nothing streams, each session's objects go with it.
        gc.collect()

    # -- one attempt ---------------------------------------------------------------------

    def _new_client(self) -> IB:
        ib = self._ib_factory()
        tap_market_data(ib, self._normaliser)
        bound_socket_reads(ib)
        self._ended = asyncio.get_running_loop().create_future()
        self._client_id_in_use = False
        self._api_errors = []
        self._attempt_started = time.time()
        self._resubscribe.clear()
        ib.client.apiError += self._api_errors.append
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        self._ib = ib
        return ib

    async def _connect(self, ib: IB) -> None:
        config = self._config
        ended = self._ended
        assert ended is not None
        connect = asyncio.ensure_future(
            ib.connectAsync(
                config.host,
                config.port,
                clientId=config.client_id,
                timeout=config.connect_timeout_seconds,
                readonly=config.readonly,
                account=config.account,
                # We read market data only: skip the account and order downloads that would
                # slow every reconnect for nothing.
                fetchFields=StartupFetchNONE,
            )
        )
        try:
            finished = await self._first_of(connect, ended)
        except TimeoutError as exc:
            raise ConnectFailed(self._explain_timeout(ib)) from exc
        except ConnectionRefusedError as exc:
            msg = (
                f"connection refused by {config.host}:{config.port}: IB Gateway/TWS is not running there, "
                "is still starting or restarting, or its API port differs (Gateway live 4001, paper 4002; "
                "TWS live 7496, paper 7497)"
            )
            raise ConnectFailed(msg) from exc
        except (OSError, ConnectionError) as exc:
            raise ConnectFailed(self._explain_os_error(exc)) from exc
        if not finished or ended.done() or not ib.isConnected():
            raise ConnectFailed(self._explain_closed())

    @staticmethod
    async def _first_of(connect: asyncio.Future[Any], ended: asyncio.Future[str]) -> bool:
        """Wait for the connect or for the socket to close; True when the connect finished first.

        326 arrives before the gateway closes the socket, and ib_async would otherwise wait out
        its whole timeout before reporting it.
        """
        await asyncio.wait([connect, ended], return_when=asyncio.FIRST_COMPLETED)
        if connect.done():
            connect.result()
            return True
        connect.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connect
        return False

    def _explain_timeout(self, ib: IB) -> str:
        config = self._config
        if self._client_id_in_use:
            return self._client_id_message()
        where = f"{config.host}:{config.port}"
        refused = next((m for m in self._api_errors if "version" in m), None)
        if refused is not None:
            return f"{where} refused our API version ({refused}): IB Gateway/TWS must be version 972 or newer"
        too_long = next((m for m in self._api_errors if TOO_LONG in m), None)
        if too_long is not None:
            return f"{where} answered, but {too_long.removeprefix('the gateway ')}"
        # ib_async's wrapper.time is the time of the last packet read: something did answer.
        if ib.wrapper.time >= self._attempt_started:
            return (
                f"{where} answered, but not with a TWS API handshake within "
                f"{config.connect_timeout_seconds:g} s: is this port another service, not IB Gateway/TWS?"
            )
        return (
            f"API handshake with {where} did not complete within "
            f"{config.connect_timeout_seconds:g} s: the gateway accepted TCP but did not answer. Most likely "
            "this host's IP is not in the gateway's Trusted IPs (Configure > Settings > API > Settings), "
            "'Allow connections from localhost only' is on, or a login dialog is waiting in the gateway"
        )

    def _explain_closed(self) -> str:
        if self._client_id_in_use:
            return self._client_id_message()
        return "the gateway closed the connection during the API handshake"

    def _client_id_message(self) -> str:
        return (
            f"client id {self._config.client_id} is already in use (326): another API client holds it. "
            "Stop that client, or set IBKR_CLIENT_ID to an unused id; retrying"
        )

    def _explain_os_error(self, exc: BaseException) -> str:
        config = self._config
        if isinstance(exc, OSError) and exc.errno is not None and "Name or service" in str(exc):
            return f"cannot resolve host {config.host!r}: {exc}"
        return f"cannot connect to {config.host}:{config.port}: {exc or type(exc).__name__}"

    # -- a live session ------------------------------------------------------------------

    async def _session(self, ib: IB) -> str:
        """Subscribe, then run the session's tasks until the connection ends; returns why."""
        ended = self._ended
        assert ended is not None
        self._state.connected(ib.client.serverVersion())
        self._normaliser.reset()
        tasks = {
            asyncio.ensure_future(self._registry.subscribe_all(ib)),
            asyncio.ensure_future(self._heartbeat(ib)),
            asyncio.ensure_future(self._replay_on_request(ib)),
            asyncio.ensure_future(self._retry_not_entitled(ib)),
        }
        try:
            while True:
                done, _ = await asyncio.wait([ended, *tasks], return_when=asyncio.FIRST_COMPLETED)
                if ended.done():
                    return ended.result()
                for task in done:
                    tasks.discard(task)
                    error = task.exception()
                    if error is not None:
                        return (
                            str(error)
                            if isinstance(error, SessionEnded)
                            else f"{type(error).__name__}: {error}"
                        )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _heartbeat(self, ib: IB) -> None:
        """reqCurrentTime every interval; no answer and no data in time means the connection is dead.

        Under a heavy backlog the answer waits behind unread market data. Data arriving is proof
        of life too: reconnecting then would throw that backlog away, so only silence counts.
        """
        config = self._config
        while True:
            await self._sleep(config.heartbeat_interval_seconds)
            try:
                # Not wait_for: on 3.11 it can swallow the session's cancel of this task (cpython#86296).
                async with asyncio.timeout(config.heartbeat_timeout_seconds):
                    await ib.reqCurrentTimeAsync()
            except TimeoutError as exc:
                quiet = _seconds_since_data(ib)
                if quiet < config.heartbeat_timeout_seconds:
                    log.warning("heartbeat answer delayed behind incoming data", last_data_seconds_ago=quiet)
                    continue
                limit = config.heartbeat_timeout_seconds
                msg = (
                    f"heartbeat: no answer to reqCurrentTime and no data within {limit:g} s "
                    "(the gateway is stalled or the network path is broken)"
                )
                raise SessionEnded(msg) from exc
            except ConnectionError as exc:
                raise SessionEnded(f"heartbeat: {exc}") from exc

    async def _replay_on_request(self, ib: IB) -> None:
        """After 1101 (restored, data lost) IB has dropped our streams: request them all again."""
        while True:
            await self._resubscribe.wait()
            self._resubscribe.clear()
            log.warning("IB dropped market data subscriptions (1101): resubscribing everything")
            self._registry.cancel_all(ib)
            await self._registry.subscribe_all(ib)

    async def _retry_not_entitled(self, ib: IB) -> None:
        """Ask again for what IB refused for want of permission: a subscription bought in IBKR Client
        Portal during the session then streams (and its gap is filled) without waiting for a reconnect."""
        while True:
            await self._sleep(self._config.retry_not_entitled_seconds)
            await self._registry.retry_not_entitled(ib)

    # -- ib_async callbacks (run inline on the loop; must not block) ---------------------

    def _on_error(self, request_id: int, code: int, text: str, contract: Any) -> None:
        if code in codes.CLIENT_ID_IN_USE:
            self._client_id_in_use = True
            return
        if code in codes.SYSTEM_CONNECTIVITY or code in codes.FARM_NOTICES or code in codes.COMPETING_SESSION:
            self._state.system_message(code, text)
            if code in codes.RESTORED_DATA_LOST:
                self._resubscribe.set()
            return
        if self._registry.on_error(request_id, code, text):
            return
        if code in codes.DEPTH_RESET:
            log.info("depth book reset by IB (317)", request_id=request_id)
            return
        log.warning("IB message", request_id=request_id, code=code, text=text)

    def _on_disconnected(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result("the gateway closed the socket" if not self._stopping else "stopped")

    # -- ending --------------------------------------------------------------------------

    def _teardown(self, ib: IB) -> None:
        ib.client.apiError -= self._api_errors.append
        ib.errorEvent -= self._on_error
        ib.updateEvent -= self._normaliser.flush
        ib.disconnect()
        ib.disconnectedEvent -= self._on_disconnected
        if self._ib is ib:
            self._ib = None

    def _stop(self) -> None:
        """Clean stop: cancel our streams, close the socket, say ``Disconnected``."""
        ib = self._ib
        if ib is not None:
            if ib.isConnected():
                self._registry.cancel_all(ib)
            self._teardown(ib)
        self._state.stopped()


def _seconds_since_data(ib: IB) -> float:
    """Seconds since the last packet was read from the socket (ib_async's ``wrapper.time``)."""
    return time.time() - ib.wrapper.time
