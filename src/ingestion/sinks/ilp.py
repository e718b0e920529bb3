"""The blocking side of the QuestDB writer: one ``questdb.Sender``, driven from one worker thread.

The official client's flush is blocking native code, so the writer calls :meth:`IlpLink.deliver` through a
single-thread executor and the event loop never waits on the network. Everything here assumes that one
thread; nothing is shared with the loop except the :class:`Delivery` it returns.

Delivery rules:
- one buffer per table, flushed with ``transactional=True`` over HTTP: a table's part of a batch lands
  whole or not at all (ILP/TCP has no transactions; there the flush is plain);
- the client's own auto-flush is off and its retries are off (``retry_timeout=0``), so every failure is
  seen here at once and the writer decides: spool and retry later;
- a rejection (QuestDB's ``code: invalid`` answer, HTTP 400, also ``request too large``) is bisected: the
  halves are sent on their own until the rows QuestDB refuses are isolated; those are returned as dead
  letters and every other row lands. The client does not expose the HTTP status, so the QuestDB error
  code in its message is what tells a rejection from an outage; anything unrecognised counts as an outage,
  which can delay rows but never drops them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from questdb import QuestDBError, QuestDBErrorCode, Sender

from ingestion.sinks.rows import Item, Row, add_row

if TYPE_CHECKING:
    from ingestion.config import QuestDBConfig

REJECTION_MARKERS = ("code: invalid", "code: request too large")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A row QuestDB (or the client) refused for what it is, with the reason and the ILP text."""

    row: Row
    error: str
    ilp: str


@dataclass(slots=True)
class Delivery:
    """What one call to :meth:`IlpLink.deliver` achieved."""

    acked: dict[str, int] = field(default_factory=dict)
    oldest_ns: dict[str, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    unsent: list[Item] = field(default_factory=list)  # as given: rows, or events (ilp_process.py)
    error: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


class _Transient(Exception):
    pass


class _Rejected(Exception):
    def __init__(self, message: str, ilp: str) -> None:
        super().__init__(message)
        self.ilp = ilp


def sender_conf(config: QuestDBConfig) -> str:
    """The client configuration string (credentials go separately, as keyword arguments)."""
    timeout_ms = int(config.request_timeout_seconds * 1000)
    if config.protocol == "tcp":
        return f"tcp::addr={config.host}:{config.ilp_tcp_port};auto_flush=off;"
    return (
        f"http::addr={config.host}:{config.http_port};auto_flush=off;retry_timeout=0;"
        f"request_timeout={timeout_ms};"
    )


def _auth(config: QuestDBConfig) -> dict[str, str]:
    auth: dict[str, str] = {}
    if config.username:
        auth["username"] = config.username
    if config.password is not None:
        auth["password"] = config.password.get_secret_value()
    if config.token is not None:
        auth["token"] = config.token.get_secret_value()
    return auth


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What the link needs of the QuestDB settings: plain values, so that the ILP writer process can
    take them without importing the configuration models (pydantic) and the rest of the daemon."""

    conf: str
    auth: dict[str, str]
    protocol: str

    @classmethod
    def from_config(cls, config: QuestDBConfig) -> LinkSettings:
        return cls(sender_conf(config), _auth(config), config.protocol)


def _is_rejection(exc: QuestDBError) -> bool:
    message = str(exc)
    return exc.code == QuestDBErrorCode.ServerFlushError and any(m in message for m in REJECTION_MARKERS)


class IlpLink:
    """Owns the sender; (re)connects lazily, so QuestDB may be down when the daemon starts."""

    def __init__(self, settings: LinkSettings) -> None:
        self._conf = settings.conf
        self._auth = settings.auth
        self._transactional = settings.protocol == "http"
        # A TCP connection is dead after any failure. ILP over HTTP is one request per flush and the
        # sender stays usable after a refused connection, a timeout or a 5xx (tests/sinks show it), so
        # it is kept: the client warns about "a burst of reconnections" when a sender is rebuilt per
        # retry, and reusing it is what its documentation asks for.
        self._reconnect_after_failure = settings.protocol == "tcp"
        self._sender: Sender | None = None

    def deliver(self, rows: Sequence[Row]) -> Delivery:
        """Send rows, table by table. On an outage, the rows of the failed and later tables are unsent."""
        started = time.monotonic()
        delivery = Delivery()
        groups: dict[str, list[Row]] = {}
        for row in rows:
            groups.setdefault(row[0], []).append(row)
        tables = list(groups)
        for index, table in enumerate(tables):
            try:
                dead = self._send_table(groups[table])
            except _Transient as exc:
                delivery.error = str(exc)
                delivery.unsent = [r for t in tables[index:] for r in groups[t]]
                if self._reconnect_after_failure:
                    self._reset()
                break
            delivery.dead.extend(dead)
            delivery.acked[table] = len(groups[table]) - len(dead)
            delivery.oldest_ns[table] = min(r[1] for r in groups[table])
        delivery.seconds = time.monotonic() - started
        return delivery

    def close(self) -> None:
        self._reset()

    def _send_table(self, rows: list[Row]) -> list[DeadLetter]:
        try:
            self._flush(rows)
        except _Rejected as exc:
            if len(rows) == 1:
                return [DeadLetter(rows[0], str(exc), exc.ilp)]
            middle = len(rows) // 2
            return self._send_table(rows[:middle]) + self._send_table(rows[middle:])
        return []

    def _flush(self, rows: list[Row]) -> None:
        sender = self._connected()
        buffer = sender.new_buffer()
        for row in rows:
            try:
                add_row(buffer, row)
            except (QuestDBError, OverflowError, TypeError, ValueError) as exc:
                # The client itself refuses the row (a bad name, invalid text, an integer beyond 64
                # bits from a garbled message): no server can take it, so it must not stop the rest.
                raise _Rejected(f"client refused the row: {exc}", repr(row)) from exc
        try:
            sender.flush(buffer, clear=False, transactional=self._transactional)
        except QuestDBError as exc:
            if _is_rejection(exc):
                raise _Rejected(str(exc), bytes(buffer).decode("utf-8", "backslashreplace")) from exc
            raise _Transient(str(exc)) from exc

    def _connected(self) -> Sender:
        if self._sender is None:
            try:
                sender = Sender.from_conf(self._conf, **self._auth)
                sender.establish()
            except QuestDBError as exc:
                raise _Transient(f"cannot connect: {exc}") from exc
            self._sender = sender
        return self._sender

    def _reset(self) -> None:
        # After a failure the connection may be half dead (TCP certainly is): start afresh next time.
        sender, self._sender = self._sender, None
        if sender is not None:
            # Closing a broken connection may fail; there is nothing left in it to save.
            with contextlib.suppress(QuestDBError):
                sender.close(flush=False)
