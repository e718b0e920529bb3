"""A durable, append-only, size-capped spool of row batches on local disk.

Rows wait here while QuestDB cannot take them and are read back, oldest first, when it can. The spool
is a directory of segment files ``spool-<sequence>.seg``; each holds frames::

    payload length (u32 LE) | row count (u32 LE) | CRC-32 of row count + payload (u32 LE) | payload

where the payload is the JSON list of rows of one batch (UTF-8, compact). A crash can leave the last frame
half written: opening the spool checks every frame and truncates a file at the first frame that is short
or fails its CRC, so a torn tail is dropped (and logged), never replayed as garbage.

The JSON is written and read with orjson: framing runs in the disk thread and holds the GIL while the
daemon is already behind (QuestDB down or slow), and the stdlib's ``json.dumps`` was ~12 % of the samples
in the saturation profile; orjson does the same about ten times faster (bench/bench_rows_spool.py). The
format is unchanged, so segments that earlier versions wrote with the stdlib read as before. What orjson
cannot write (a string with a lone surrogate) or read (the stdlib's ``NaN``/``Infinity`` tokens, escaped
lone surrogates) goes through the stdlib ``json`` instead, so every row the earlier writer took is still
taken. Two values come back changed: a NaN or infinite float is written as ``null`` and replays as an
absent value (NULL, as QuestDB stores a NaN double too), and an integer beyond 64 bits reads back as a
float (ILP integers are 64-bit, so it could not be sent as an integer either way). No producer emits
either: the normaliser drops NaN and IB's sentinels, infinities included, and the FRED client drops NaN.

Consumption is tracked in memory only. After a crash, a partly replayed segment is replayed again from
its start; that is harmless because every table has DEDUP UPSERT KEYS, so a replayed row replaces itself.

Not thread-safe: one worker thread owns a spool (file I/O and fsync must stay off the event loop).
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ingestion.config import SpoolConfig
from ingestion.logging import get_logger

log = get_logger("spool")

HEADER = struct.Struct("<III")
SEGMENT_GLOB = "spool-*.seg"


class SpoolNotWritableError(Exception):
    """The spool directory cannot be created or written: QuestDB's first outage would lose rows."""


WRITE_PROBE = ".write-probe"


@dataclass(slots=True)
class Segment:
    sequence: int
    path: Path
    size: int = 0
    rows: int = 0
    read_offset: int = 0
    read_rows: int = 0

    @property
    def unread_rows(self) -> int:
        return self.rows - self.read_rows


@dataclass(frozen=True, slots=True)
class ReadMark:
    """Where a read ended: committing it marks everything before it as delivered."""

    sequence: int
    offset: int
    rows: int


@dataclass(frozen=True, slots=True)
class Recovery:
    """What opening the spool found: rows left by an earlier run, and bytes cut from torn frames."""

    rows: int
    segments: int
    truncated_bytes: int


def _frame(rows: list[Any]) -> tuple[bytes, bytes]:
    """Header and payload of one frame, kept apart so the payload is never copied to join them."""
    payload = _encode(rows)
    return HEADER.pack(len(payload), len(rows), _crc(len(rows), payload)), payload


def _encode(rows: list[Any]) -> bytes:
    try:
        return orjson.dumps(rows)
    except orjson.JSONEncodeError:
        # A lone surrogate or an int beyond 64 bits: the stdlib writes them, as JSON all the same.
        return json.dumps(rows, separators=(",", ":")).encode()


def _decode(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        # NaN/Infinity tokens or surrogate escapes that json.dumps wrote; anything else raises ValueError.
        return json.loads(payload)


def _crc(count: int, payload: bytes) -> int:
    """CRC-32 of the row count (u32 LE) followed by the payload, without concatenating them."""
    return zlib.crc32(payload, zlib.crc32(struct.pack("<I", count)))


class Spool:
    """Segment files under ``config.dir``; see the module docstring for the format."""

    def __init__(self, config: SpoolConfig) -> None:
        self._dir = config.dir
        self._max_bytes = config.max_bytes
        # Overflow drops whole segments, so a segment is at most a quarter of the cap: dropping one never
        # throws away more than a quarter of what the cap allows to keep.
        self._segment_bytes = min(config.segment_bytes, max(config.max_bytes // 4, 1))
        self._fsync = config.fsync
        self._fsync_interval = config.fsync_interval_seconds
        self._segments: list[Segment] = []
        self._fd: int | None = None
        self._last_sync = time.monotonic()
        self._unsynced = False

    # --- state --------------------------------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def pending_rows(self) -> int:
        return sum(s.unread_rows for s in self._segments)

    @property
    def empty(self) -> bool:
        return all(s.unread_rows == 0 for s in self._segments)

    # --- lifecycle ----------------------------------------------------------------------------------------
    def open(self) -> Recovery:
        """Find the segments of earlier runs, cut torn tails, and get ready to append.

        Raises SpoolNotWritableError when the directory cannot be created or written, so that a spool
        volume owned by another user stops the start, not the first spill during a QuestDB outage.
        """
        self._check_writable()
        truncated = 0
        for path in sorted(self._dir.glob(SEGMENT_GLOB), key=_sequence_of):
            segment = Segment(_sequence_of(path), path)
            truncated += _scan(segment)
            if segment.rows == 0:
                path.unlink()
                continue
            self._segments.append(segment)
        recovery = Recovery(self.pending_rows, len(self._segments), truncated)
        if truncated:
            log.warning("spool torn tail truncated", truncated_bytes=truncated, directory=str(self._dir))
        return recovery

    def _check_writable(self) -> None:
        probe = self._dir / WRITE_PROBE
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            msg = f"spool directory {self._dir} is not writable: {exc}"
            raise SpoolNotWritableError(msg) from exc

    def close(self) -> None:
        if self._fd is not None:
            if self._fsync != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    # --- writing ------------------------------------------------------------------------------------------
    def append(self, rows: list[Any]) -> int:
        """Write one batch as one frame. Returns how many unread rows the cap forced out (oldest first)."""
        if not rows:
            return 0
        header, payload = _frame(rows)
        segment = self._writable_segment()
        assert self._fd is not None  # _writable_segment opened it
        os.writev(self._fd, (header, payload))
        segment.size += len(header) + len(payload)
        segment.rows += len(rows)
        self._after_write()
        return self._enforce_cap()

    def _writable_segment(self) -> Segment:
        last = self._segments[-1] if self._segments else None
        if last is not None and self._fd is not None and last.size < self._segment_bytes:
            return last
        self.close()
        sequence = last.sequence + 1 if last else 1
        segment = Segment(sequence, self._dir / f"spool-{sequence:012d}.seg")
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._fsync == "always":
            _fsync_directory(self._dir)
        self._segments.append(segment)
        return segment

    def _after_write(self) -> None:
        if self._fsync == "always":
            os.fsync(self._fd)  # type: ignore[arg-type]
            return
        self._unsynced = True
        if self._fsync == "interval":
            self.sync_if_due()

    def sync_if_due(self) -> None:
        """With fsync=interval, fsync when the interval has passed since the last one."""
        due = time.monotonic() - self._last_sync >= self._fsync_interval
        if self._fsync == "interval" and self._unsynced and due and self._fd is not None:
            os.fsync(self._fd)
            self._unsynced = False
            self._last_sync = time.monotonic()

    def _enforce_cap(self) -> int:
        lost = 0
        while self.bytes > self._max_bytes and len(self._segments) > 1:
            oldest = self._segments.pop(0)
            lost += oldest.unread_rows
            oldest.path.unlink(missing_ok=True)
        return lost

    # --- reading ------------------------------------------------------------------------------------------
    def read(self, max_rows: int) -> tuple[list[Any], ReadMark | None]:
        """Up to about ``max_rows`` unread rows, oldest first (whole frames; at least one frame)."""
        rows: list[Any] = []
        mark = None
        for segment in self._segments:
            if segment.unread_rows == 0:
                continue
            offset, count = segment.read_offset, segment.read_rows
            with segment.path.open("rb") as file:
                file.seek(offset)
                while offset < segment.size and (not rows or len(rows) < max_rows):
                    batch, size = _read_frame(file)
                    if batch is None:
                        # The file changed under us (disk trouble): skip the rest of this segment.
                        log.error("spool frame unreadable; skipping rest of segment", path=str(segment.path))
                        offset, count = segment.size, segment.rows
                        break
                    rows.extend(batch)
                    offset += size
                    count += len(batch)
            mark = ReadMark(segment.sequence, offset, count)
            if len(rows) >= max_rows:
                break
        return rows, mark

    def commit(self, mark: ReadMark) -> None:
        """Everything up to ``mark`` reached QuestDB: forget it, deleting segments fully delivered."""
        keep = []
        for segment in self._segments:
            if segment.sequence < mark.sequence:
                self._discard(segment)
                continue
            if segment.sequence == mark.sequence:
                segment.read_offset, segment.read_rows = mark.offset, mark.rows
                if segment.unread_rows == 0 and segment.read_offset >= segment.size:
                    self._discard(segment)
                    continue
            keep.append(segment)
        self._segments = keep

    def _discard(self, segment: Segment) -> None:
        if self._segments and segment is self._segments[-1] and self._fd is not None:
            self.close()
        segment.path.unlink(missing_ok=True)


def _sequence_of(path: Path) -> int:
    try:
        return int(path.stem.removeprefix("spool-"))
    except ValueError:
        return 0


def _read_frame(file: Any) -> tuple[list[Any] | None, int]:
    header = file.read(HEADER.size)
    if len(header) < HEADER.size:
        return None, 0
    length, count, crc = HEADER.unpack(header)
    payload = file.read(length)
    if len(payload) < length or _crc(count, payload) != crc:
        return None, 0
    try:
        rows = _decode(payload)
    except ValueError:
        return None, 0
    return rows, HEADER.size + length


def _scan(segment: Segment) -> int:
    """Count the good frames of a segment; truncate it at the first bad one. Returns bytes cut."""
    size = segment.path.stat().st_size
    offset = 0
    with segment.path.open("rb") as file:
        while offset < size:
            checked = _check_frame(file)
            if checked is None:
                break
            count, frame_size = checked
            offset += frame_size
            segment.rows += count
    if offset < size:
        with segment.path.open("r+b") as file:
            file.truncate(offset)
            file.flush()
            os.fsync(file.fileno())
    segment.size = offset
    return size - offset


def _check_frame(file: Any) -> tuple[int, int] | None:
    """Row count and size of the next frame if it is whole and its CRC matches (no JSON parsing)."""
    header = file.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, count, crc = HEADER.unpack(header)
    payload = file.read(length)
    if len(payload) < length or _crc(count, payload) != crc:
        return None
    return count, HEADER.size + length


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
