"""A test double of QuestDB's HTTP side: ILP over HTTP (``POST /write``), ``/settings`` and ``/exec``.

It is a *double*, not QuestDB: just enough of the real server for the writer's tests to be honest.

- ``/write`` parses InfluxDB line protocol (table, tags, floats, ``i`` integers, booleans, quoted strings
  with escapes, ``t``/``n`` timestamps, the designated timestamp) and applies each request as one
  transaction: every line lands, or none does.
- ``/settings`` advertises ILP protocol version 1 only, so the official client negotiates the text
  protocol (it reads ``config."line.proto.support.versions"``, see the strings in questdb 6's native code).
- ``/exec`` records every statement; answers ``CREATE TABLE`` and ``ALTER TABLE ... ADD COLUMN`` with
  ``{"ddl": "OK"}``, ``table_columns('t')``
  from the DDL it recorded, and ``SELECT`` by running it on an in-memory sqlite mirror of the rows
  (timestamps stored as ISO 8601 text, as QuestDB prints them, so ``timestamp > '2026-11-23T14:30:00'``
  compares as it does in QuestDB).
- Rows are stored like QuestDB stores them: ``TIMESTAMP`` columns at microsecond precision, and tables with
  ``DEDUP UPSERT KEYS`` keep one row per key (upsert). Every repeated key is counted in ``duplicates`` and
  every repeated key whose row differs in ``conflicts``, so a test can assert that nothing arrived twice
  and that no two distinct rows collapsed into one.
- Failures on demand: HTTP status codes (whole outage or ``/write`` only), a QuestDB-style 400 for lines
  containing a marker, slow answers, and refused connections (listener closed, live connections cut,
  reopened later on the same port).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SETTINGS_BODY = {
    "config": {
        "release.type": "OSS",
        "release.version": "8.2.3-double",
        "line.proto.support.versions": [1],
        "ilp.proto.transports": ["tcp", "http"],
        "cairo.max.file.name.length": 127,
    },
    "preferences.version": 0,
    "preferences": {},
}


@dataclass(frozen=True, slots=True)
class IlpTimestamp:
    """A timestamp field value as sent: ``value`` in ``unit`` ("t" microseconds, "n" nanoseconds)."""

    value: int
    unit: str

    @property
    def micros(self) -> int:
        return self.value // 1000 if self.unit == "n" else self.value


@dataclass(slots=True)
class IlpLine:
    table: str
    tags: dict[str, str]
    fields: dict[str, Any]
    timestamp_ns: int | None


class IlpParseError(ValueError):
    pass


_TS_UNITS_TO_NS = {"n": 1, "u": 1_000, "t": 1_000, "m": 1_000_000, "s": 1_000_000_000}
_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}


def parse_ilp(text: str) -> list[IlpLine]:
    """Parse ILP text (protocol version 1) into lines; raises IlpParseError naming the line number."""
    lines: list[IlpLine] = []
    i, number = 0, 0
    while i < len(text):
        if text[i] == "\n":
            i += 1
            continue
        number += 1
        try:
            line, i = _parse_line(text, i)
        except (IndexError, ValueError) as exc:
            raise IlpParseError(f"line {number}: {exc}") from exc
        lines.append(line)
    return lines


def _token(text: str, i: int, stops: str) -> tuple[str, int]:
    out = []
    while i < len(text) and text[i] not in stops:
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i


def _parse_line(text: str, i: int) -> tuple[IlpLine, int]:
    table, i = _token(text, i, ", \n")
    tags: dict[str, str] = {}
    while text[i] == ",":
        key, i = _token(text, i + 1, "=")
        tags[key], i = _token(text, i + 1, ", \n")
    if text[i] != " ":
        raise ValueError("expected a space before the fields")
    fields: dict[str, Any] = {}
    i += 1
    while True:
        key, i = _token(text, i, "=")
        fields[key], i = _field_value(text, i + 1)
        if text[i] != ",":
            break
        i += 1
    timestamp = None
    if i < len(text) and text[i] == " ":
        raw, i = _token(text, i + 1, "\n")
        unit = raw[-1] if raw[-1] in _TS_UNITS_TO_NS else "n"
        timestamp = int(raw.rstrip("nutms")) * _TS_UNITS_TO_NS[unit]
    if i < len(text) and text[i] != "\n":
        raise ValueError(f"unexpected {text[i]!r} at the end of the line")
    return IlpLine(table, tags, fields, timestamp), i + 1


def _field_value(text: str, i: int) -> tuple[Any, int]:
    if text[i] == '"':
        out = []
        i += 1
        while text[i] != '"':
            if text[i] == "\\":
                i += 1
            out.append(text[i])
            i += 1
        return "".join(out), i + 1
    raw, i = _token(text, i, ", \n")
    return _typed(raw), i


def _typed(raw: str) -> Any:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw[-1] == "i":
        return int(raw[:-1])
    if raw[-1] in "tn" and raw[:-1].lstrip("-").isdigit():
        return IlpTimestamp(int(raw[:-1]), raw[-1])
    return float(raw)


# --- the catalogue: tables declared with DDL ------------------------------------------------------------

_CREATE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s*\((?P<cols>.*)\)\s*"
    r"TIMESTAMP\s*\(\s*(?P<ts>\w+)\s*\)(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_DEDUP = re.compile(r"DEDUP\s+UPSERT\s+KEYS\s*\((?P<keys>[^)]*)\)", re.IGNORECASE)
_SYMBOL_OPTS = re.compile(r"CAPACITY\s+(?P<cap>\d+)", re.IGNORECASE)
_ADD_COLUMN = re.compile(
    r"^\s*ALTER\s+TABLE\s+(?P<name>\w+)\s+ADD\s+COLUMN\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<column>\w+)\s+(?P<type>\w+)",
    re.IGNORECASE,
)
_TABLE_COLUMNS = re.compile(r"table_columns\(\s*'(?P<name>\w+)'\s*\)", re.IGNORECASE)
_SQLITE_TYPES = {"DOUBLE": "REAL", "INT": "INTEGER", "LONG": "INTEGER", "BOOLEAN": "INTEGER"}
_INTEGER_TYPES = {"INT", "LONG", "SHORT", "BYTE"}
_STRING_TYPES = {"SYMBOL", "VARCHAR", "STRING"}


@dataclass(slots=True)
class Table:
    name: str
    columns: dict[str, str]
    designated: str
    dedup_keys: tuple[str, ...]
    symbol_capacity: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    by_key: dict[tuple, int] = field(default_factory=dict)
    duplicates: int = 0
    conflicts: int = 0


def _parse_create(sql: str) -> tuple[Table, bool]:
    match = _CREATE.match(sql.strip().rstrip(";"))
    if match is None:
        raise ValueError(f"not a CREATE TABLE the double understands: {sql[:80]}")
    columns: dict[str, str] = {}
    capacities: dict[str, int] = {}
    for part in match["cols"].split(","):
        words = part.split()
        name, kind = words[0], words[1].upper()
        columns[name] = kind
        if kind == "SYMBOL" and (cap := _SYMBOL_OPTS.search(part)):
            capacities[name] = int(cap["cap"])
    dedup = _DEDUP.search(match["rest"])
    keys = tuple(k.strip() for k in dedup["keys"].split(",")) if dedup else ()
    table = Table(match["name"], columns, match["ts"], keys, capacities)
    return table, bool(match["ine"])


def _iso(micros: int) -> str:
    moment = datetime.fromtimestamp(micros // 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros % 1_000_000:06d}Z"


class RejectedWrite(Exception):
    """What QuestDB answers with HTTP 400 for a request it refuses for what it is."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.body = {"code": "invalid", "message": message, "line": line, "errorId": f"double-{line}"}


class Catalogue:
    """Tables, rows and the sqlite mirror. Callers hold the double's lock."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self.sqlite = sqlite3.connect(":memory:", check_same_thread=False)
        self._mirrored_columns: dict[str, set[str]] = {}

    def create(self, sql: str) -> None:
        table, if_not_exists = _parse_create(sql)
        if table.name in self.tables:
            if if_not_exists:
                return
            raise ValueError(f"table already exists [table={table.name}]")
        self._declare(table)

    def add_column(self, sql: str) -> None:
        """``ALTER TABLE t ADD COLUMN [IF NOT EXISTS] c type``; QuestDB refuses a column that exists."""
        match = _ADD_COLUMN.match(sql)
        if match is None:
            raise ValueError(f"not an ALTER TABLE the double understands: {sql[:80]}")
        table = self.tables.get(match["name"])
        if table is None:
            raise ValueError(f"table does not exist [table={match['name']}]")
        if match["column"] in table.columns:
            if match["ine"]:
                return
            raise ValueError(f"duplicate column name: {match['column']}")
        table.columns[match["column"]] = match["type"].upper()

    def _declare(self, table: Table) -> None:
        self.tables[table.name] = table
        cols = ", ".join(f'"{n}" {_SQLITE_TYPES.get(t, "TEXT")}' for n, t in table.columns.items())
        self.sqlite.execute(f'CREATE TABLE "{table.name}" ({cols})')
        if table.dedup_keys:
            keys = ", ".join(f'"{k}"' for k in table.dedup_keys)
            self.sqlite.execute(f'CREATE UNIQUE INDEX "{table.name}_dedup" ON "{table.name}" ({keys})')

    def apply(self, lines: list[IlpLine]) -> None:
        """All lines or none: convert and validate every line first, then store."""
        prepared = [(self._table_for(line), self._row(number, line)) for number, line in enumerate(lines, 1)]
        for table, row in prepared:
            self._store(table, row)

    def _table_for(self, line: IlpLine) -> Table:
        if line.table not in self.tables:
            # ILP auto-creates unknown tables; the writer never relies on it, but a real server would.
            columns = {"timestamp": "TIMESTAMP"} | dict.fromkeys(line.tags, "SYMBOL")
            self._declare(Table(line.table, columns, "timestamp", ()))
        return self.tables[line.table]

    def _row(self, number: int, line: IlpLine) -> dict[str, Any]:
        table = self.tables[line.table]
        ts = line.timestamp_ns if line.timestamp_ns is not None else time.time_ns()
        row: dict[str, Any] = {table.designated: ts // 1000}
        for name, value in line.tags.items():
            self._check(table, number, name, "SYMBOL", value)
            row[name] = value
        for name, value in line.fields.items():
            row[name] = self._check(table, number, name, _ilp_type(value), value)
        return row

    def _check(self, table: Table, number: int, name: str, sent: str, value: Any) -> Any:
        declared = table.columns.setdefault(name, sent)
        if declared == sent or (declared in _STRING_TYPES and sent in _STRING_TYPES):
            return value.micros if isinstance(value, IlpTimestamp) else value
        if declared in _INTEGER_TYPES and sent == "LONG":
            return value
        if declared == "TIMESTAMP" and sent == "LONG":
            return value
        msg = f"cast error from protocol type: {sent} to column type: {declared} [column={name}]"
        raise RejectedWrite(msg, number)

    def _store(self, table: Table, row: dict[str, Any]) -> None:
        if table.dedup_keys:
            key = tuple(row.get(k) for k in table.dedup_keys)
            if key in table.by_key:
                index = table.by_key[key]
                table.duplicates += 1
                table.conflicts += table.rows[index] != row
                table.rows[index] = row
            else:
                table.by_key[key] = len(table.rows)
                table.rows.append(row)
        else:
            table.rows.append(row)
        self._mirror(table, row)

    def _mirror(self, table: Table, row: dict[str, Any]) -> None:
        known = self._mirrored_columns.setdefault(table.name, self._sqlite_columns(table.name))
        for name in row.keys() - known:
            kind = _SQLITE_TYPES.get(table.columns[name], "TEXT")
            self.sqlite.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{name}" {kind}')
            known.add(name)
        values = [
            _iso(v) if table.columns.get(k) == "TIMESTAMP" and v is not None else v for k, v in row.items()
        ]
        names = ", ".join(f'"{n}"' for n in row)
        marks = ", ".join("?" for _ in row)
        verb = "INSERT OR REPLACE" if table.dedup_keys else "INSERT"
        self.sqlite.execute(f'{verb} INTO "{table.name}" ({names}) VALUES ({marks})', values)

    def _sqlite_columns(self, name: str) -> set[str]:
        return {r[1] for r in self.sqlite.execute(f'PRAGMA table_info("{name}")')}

    def table_columns(self, name: str) -> dict[str, Any]:
        table = self.tables.get(name)
        if table is None:
            raise ValueError(f"table does not exist [table={name}]")
        names = ["column", "type", "indexed", "indexBlockCapacity", "symbolCached", "symbolCapacity",
                 "designated", "upsertKey"]  # fmt: skip
        kinds = ["STRING", "STRING", "BOOLEAN", "INT", "BOOLEAN", "INT", "BOOLEAN", "BOOLEAN"]
        dataset = [
            [col, kind, False, 0, kind == "SYMBOL", table.symbol_capacity.get(col, 0),
             col == table.designated, col in table.dedup_keys]
            for col, kind in table.columns.items()
        ]  # fmt: skip
        return _select_body(f"table_columns('{name}')", names, kinds, dataset)

    def select(self, sql: str) -> dict[str, Any]:
        cursor = self.sqlite.execute(sql)
        names = [d[0] for d in cursor.description]
        dataset = [list(r) for r in cursor.fetchall()]
        kinds = [_infer_type([row[i] for row in dataset]) for i in range(len(names))]
        return _select_body(sql, names, kinds, dataset)


def _ilp_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "LONG"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, IlpTimestamp):
        return "TIMESTAMP"
    return "VARCHAR"


def _infer_type(values: list[Any]) -> str:
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, int):
        return "LONG"
    if isinstance(sample, float):
        return "DOUBLE"
    if isinstance(sample, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", sample):
        return "TIMESTAMP"
    return "STRING"


def _select_body(query: str, names: list[str], kinds: list[str], dataset: list[list[Any]]) -> dict[str, Any]:
    columns = [{"name": n, "type": t} for n, t in zip(names, kinds, strict=True)]
    return {"query": query, "columns": columns, "timestamp": -1, "dataset": dataset, "count": len(dataset)}


# --- the HTTP server --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Faults:
    outage_status: int | None = None  # every endpoint answers this status
    write_status: int | None = None  # /write answers this status
    write_failures_left: int | None = None  # None: until healed
    reject_marker: str | None = None  # /write answers 400 for a request with a line containing this
    delay_seconds: float = 0.0
    rows_per_second: float | None = None  # /write takes rows at most this fast (a QuestDB at its limit)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait 40 ms per answer.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.double._track(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read assertions, not access logs
        return

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.double._handle_get(self, url.path, parse_qs(url.query))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.server.double._handle_post(self, url.path, self._body())

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def reply(self, status: int, body: dict[str, Any] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    double: QuestDBDouble


class QuestDBDouble:
    """The double. ``with QuestDBDouble() as qdb:`` serves on ``127.0.0.1:qdb.port`` from a thread."""

    def __init__(self, port: int = 0) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.faults = Faults()
        self.catalogue = Catalogue()
        self.exec_log: list[str] = []
        self.timeline: list[tuple[str, str]] = []  # ("exec", sql) and ("write", first table), in order
        self.write_requests = 0
        self.failed_writes = 0
        self._lock = threading.Lock()
        # Held from applying a write to sending its answer, and while cutting connections: a refused-
        # connections fault never lands a write whose answer the client then misses (a real server can
        # do that; DEDUP makes it harmless, but tests count duplicates and must not flake).
        self._answer_lock = threading.Lock()
        self._throttle_lock = threading.Lock()
        self._throttle_free_at = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # lifecycle
    def __enter__(self) -> QuestDBDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = _Server((self.host, self.port), _Handler)
        server.double = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="questdb-double", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        self._cut_connections()

    # faults
    def refuse_connections(self) -> None:
        """Close the listener and cut live connections: clients see 'connection refused' until reopened."""
        self.stop()

    def accept_connections(self) -> None:
        self.start()

    def outage(self, status: int = 503) -> None:
        """Every endpoint answers ``status`` until :meth:`heal`."""
        with self._lock:
            self.faults.outage_status = status

    def fail_writes(self, status: int = 500, times: int | None = None) -> None:
        """``/write`` answers ``status`` (``times`` requests, or until :meth:`heal`)."""
        with self._lock:
            self.faults.write_status = status
            self.faults.write_failures_left = times

    def reject_lines_containing(self, marker: str | None) -> None:
        """Answer 400, as QuestDB does for a bad row, for any request with a line containing ``marker``."""
        with self._lock:
            self.faults.reject_marker = marker

    def delay(self, seconds: float) -> None:
        with self._lock:
            self.faults.delay_seconds = seconds

    def throttle(self, rows_per_second: float | None) -> None:
        """Accept rows at most this fast, all requests together: each waits its turn, then its rows' time."""
        with self._lock:
            self.faults.rows_per_second = rows_per_second

    def heal(self) -> None:
        with self._lock:
            self.faults = Faults()

    # inspection
    def execute(self, sql: str) -> dict[str, Any]:
        """Run a statement as ``/exec`` would, without HTTP (for setting up a pre-existing table)."""
        with self._lock:
            return self._execute(sql)

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            found = self.catalogue.tables.get(table)
            return [dict(r) for r in found.rows] if found else []

    def row_count(self, table: str) -> int:
        with self._lock:
            found = self.catalogue.tables.get(table)
            return len(found.rows) if found else 0

    def duplicates(self, table: str) -> int:
        with self._lock:
            found = self.catalogue.tables.get(table)
            return found.duplicates if found else 0

    def conflicts(self, table: str) -> int:
        with self._lock:
            found = self.catalogue.tables.get(table)
            return found.conflicts if found else 0

    def ddl(self) -> list[str]:
        with self._lock:
            return [q for q in self.exec_log if q.lstrip().upper().startswith("CREATE")]

    # request handling (handler threads)
    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _cut_connections(self) -> None:
        with self._answer_lock, self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            # Already closed by the client is fine: there is nothing left to cut.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _handle_get(self, handler: _Handler, path: str, query: dict[str, list[str]]) -> None:
        if (status := self.faults.outage_status) is not None:
            handler.reply(status, {"error": "the double is down on purpose"})
        elif path == "/settings":
            handler.reply(200, SETTINGS_BODY)
        elif path == "/exec":
            sql = query.get("query", [""])[0]
            with self._lock:
                self.exec_log.append(sql)
                self.timeline.append(("exec", sql))
                try:
                    body = self._execute(sql)
                except (ValueError, sqlite3.Error) as exc:
                    handler.reply(400, {"query": sql, "error": str(exc), "position": 0})
                    return
            handler.reply(200, body)
        elif path == "/ping":
            handler.reply(204)
        else:
            handler.reply(404, {"error": f"no such endpoint {path}"})

    def _execute(self, sql: str) -> dict[str, Any]:
        head = sql.lstrip().upper()
        if head.startswith("CREATE"):
            self.catalogue.create(sql)
            return {"ddl": "OK"}
        if head.startswith("ALTER"):
            self.catalogue.add_column(sql)
            return {"ddl": "OK"}
        if match := _TABLE_COLUMNS.search(sql):
            return self.catalogue.table_columns(match["name"])
        if head.startswith("SELECT"):
            return self.catalogue.select(sql)
        raise ValueError(f"the double does not understand: {sql[:80]}")

    def _handle_post(self, handler: _Handler, path: str, body: bytes) -> None:
        if path != "/write" and path != "/api/v2/write":
            handler.reply(404, {"error": f"no such endpoint {path}"})
            return
        with self._lock:
            self.write_requests += 1
            faults = self.faults
            status = faults.outage_status or self._take_write_failure()
            delay = faults.delay_seconds
            rows_per_second = faults.rows_per_second
        if delay:
            time.sleep(delay)
        if rows_per_second and status is None:
            self._take_turn(body.count(b"\n") / rows_per_second)
        if status is not None:
            with self._lock:
                self.failed_writes += 1
            handler.reply(status, {"code": "internal error", "message": "the double fails on purpose"})
            return
        with self._answer_lock:
            handler.reply(*self._write(body))

    def _take_turn(self, seconds: float) -> None:
        with self._throttle_lock:
            now = time.monotonic()
            self._throttle_free_at = max(now, self._throttle_free_at) + seconds
            time.sleep(self._throttle_free_at - now)

    def _take_write_failure(self) -> int | None:
        faults = self.faults
        if faults.write_status is None:
            return None
        if faults.write_failures_left is not None:
            faults.write_failures_left -= 1
            status = faults.write_status
            if faults.write_failures_left <= 0:
                faults.write_status = faults.write_failures_left = None
            return status
        return faults.write_status

    def _write(self, body: bytes) -> tuple[int, dict[str, Any] | None]:
        try:
            lines = parse_ilp(body.decode("utf-8"))
        except (IlpParseError, UnicodeDecodeError) as exc:
            return 400, {"code": "invalid", "message": str(exc), "line": 0, "errorId": "double-parse"}
        with self._lock:
            marker = self.faults.reject_marker
            try:
                if marker is not None:
                    self._reject_marked(body.decode("utf-8"), marker)
                self.catalogue.apply(lines)
                self.timeline.append(("write", lines[0].table if lines else ""))
            except RejectedWrite as exc:
                return 400, exc.body
        return 204, None

    @staticmethod
    def _reject_marked(text: str, marker: str) -> None:
        for number, line in enumerate(text.splitlines(), 1):
            if marker in line:
                raise RejectedWrite(f"rejected on purpose: line contains {marker!r}", number)
