"""The on-disk spool: order, torn tails, the size cap, and surviving a kill -9 of the writer."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import struct
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from sinks_helpers import (
    BASE_NS,
    ConfigFactory,
    RecordingBus,
    depth,
    eventually,
    full_quote,
    ingestion_event,
    observation,
    quote,
    running_writer,
    trade,
)
from structlog.testing import capture_logs

from ingestion.config import SpoolConfig
from ingestion.metrics import Metrics
from ingestion.sinks.rows import row_for
from ingestion.sinks.spool import Spool, SpoolNotWritableError
from questdb_double import QuestDBDouble

US = 1000
MIB = 1 << 20


def rows(start: int, count: int) -> list[list[object]]:
    return [
        ["market_data_l1", BASE_NS + i * US, {"symbol": "SPY"}, {"bid": float(i)}]
        for i in range(start, start + count)
    ]


def opened(directory: Path, **settings: object) -> Spool:
    spool = Spool(SpoolConfig(dir=directory, fsync="never", **settings))  # type: ignore[arg-type]
    spool.open()
    return spool


def drain(spool: Spool) -> list[list[object]]:
    out: list[list[object]] = []
    while True:
        batch, mark = spool.read(1000)
        if mark is None:
            return out
        out.extend(batch)
        spool.commit(mark)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("spool-*.seg"))


def frame(payload: bytes, count: int) -> bytes:
    """One frame as the module docstring lays it out: length, row count, CRC of count + payload, payload."""
    crc = zlib.crc32(struct.pack("<I", count) + payload)
    return struct.pack("<III", len(payload), count, crc) + payload


def stdlib_frame(rows: list[object]) -> bytes:
    """A frame exactly as versions before orjson wrote it: ``json.dumps`` with ASCII escapes."""
    return frame(json.dumps(rows, separators=(",", ":")).encode(), len(rows))


def write_segment(directory: Path, sequence: int, *frames: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"spool-{sequence:012d}.seg"
    path.write_bytes(b"".join(frames))
    return path


class TestOrderAndDelivery:
    def test_rows_come_back_in_the_order_written_across_segments(self, tmp_path: Path) -> None:
        """Batches spanning many segment files are read back oldest first, each row once."""
        spool = opened(tmp_path, segment_bytes=1 << 16)
        for start in range(0, 5000, 100):
            spool.append(rows(start, 100))
        assert len(segment_files(tmp_path)) > 1
        assert drain(spool) == rows(0, 5000)

    def test_committed_segments_are_deleted(self, tmp_path: Path) -> None:
        """Once everything is delivered, no segment file is left and the spool is empty."""
        spool = opened(tmp_path, segment_bytes=1 << 16)
        for start in range(0, 3000, 100):
            spool.append(rows(start, 100))
        drain(spool)
        assert spool.empty
        assert spool.bytes == 0
        assert segment_files(tmp_path) == []

    def test_unread_rows_survive_reopening(self, tmp_path: Path) -> None:
        """Rows appended by one Spool are found by the next one opened on the same directory."""
        first = opened(tmp_path)
        first.append(rows(0, 10))
        first.close()
        second = Spool(SpoolConfig(dir=tmp_path, fsync="always"))
        recovery = second.open()
        assert recovery.rows == 10
        assert drain(second) == rows(0, 10)


class TestTornTails:
    def test_half_written_frame_is_cut_off_on_open(self, tmp_path: Path) -> None:
        """A crash in the middle of a frame: the whole frames are kept, the torn one is truncated."""
        spool = opened(tmp_path)
        spool.append(rows(0, 10))
        spool.append(rows(10, 10))
        spool.close()
        [segment] = segment_files(tmp_path)
        whole = segment.stat().st_size
        with segment.open("ab") as file:
            file.write(b"\x40\x00\x00\x00\x05\x00\x00\x00garbage")  # a header and part of a payload
        reopened = Spool(SpoolConfig(dir=tmp_path, fsync="never"))
        recovery = reopened.open()
        assert recovery.truncated_bytes == 15
        assert segment.stat().st_size == whole
        assert drain(reopened) == rows(0, 20)

    def test_frame_with_a_bad_checksum_is_not_replayed(self, tmp_path: Path) -> None:
        """A last frame whose CRC does not match is dropped, not replayed as garbage."""
        spool = opened(tmp_path)
        spool.append(rows(0, 10))
        spool.append(rows(10, 10))
        spool.close()
        [segment] = segment_files(tmp_path)
        data = bytearray(segment.read_bytes())
        data[-3] ^= 0xFF
        segment.write_bytes(bytes(data))
        reopened = opened(tmp_path)
        assert drain(reopened) == rows(0, 10)

    def test_appending_after_a_truncation_works(self, tmp_path: Path) -> None:
        """After cutting a torn tail, new frames follow the good ones and read back in order."""
        spool = opened(tmp_path)
        spool.append(rows(0, 5))
        spool.close()
        [segment] = segment_files(tmp_path)
        with segment.open("ab") as file:
            file.write(b"\x01\x02")
        reopened = opened(tmp_path)
        reopened.append(rows(5, 5))
        assert drain(reopened) == rows(0, 10)


class TestRowsComeBackExactly:
    def test_every_kind_of_row_reads_back_with_the_same_values_and_types(self, tmp_path: Path) -> None:
        """A replayed row must be the row that would have been sent: same keys, order, values, types."""
        written = [
            row_for(full_quote("SPY", BASE_NS)),
            row_for(
                quote(
                    "QQQ",
                    BASE_NS + US,
                    bid=0.1,
                    ask=1e16,
                    volume=0.0,
                    low=5e-324,
                    high=1.7976931348623157e308,
                )
            ),
            row_for(depth("IWM", BASE_NS + 2 * US, operation="delete", price=None, size=None, mm=None)),
            row_for(trade("DIA", BASE_NS + 3 * US, exchange_time_ns=BASE_NS - 5_000_000)),
            row_for(observation("DGS10", BASE_NS, 4.25)),
            row_for(ingestion_event(BASE_NS, "questdb_rejected", 2**62)),
            (
                "ingestion_events",
                BASE_NS,
                {"event": "é 日本"},
                {"detail": 'quote " backslash \\ newline \n tab \t'},
            ),
        ]
        spool = opened(tmp_path)
        spool.append(written)
        read_back = [tuple(row) for row in drain(spool)]
        assert repr(read_back) == repr(written)  # repr tells 1 from 1.0 from True, and shows key order

    def test_a_string_with_a_lone_surrogate_is_spooled_and_read_back(self, tmp_path: Path) -> None:
        """Text orjson refuses to write still goes to the spool (through the stdlib) and comes back."""
        row = ["ingestion_events", BASE_NS, {"event": "x"}, {"detail": "bad \ud800 byte"}]
        spool = opened(tmp_path)
        spool.append([row])
        assert drain(spool) == [row]


class TestSegmentsOfEarlierVersions:
    def test_a_segment_written_with_the_stdlib_json_is_replayed_as_written(self, tmp_path: Path) -> None:
        """Spools left by versions before orjson (ASCII escapes, NaN tokens) replay unchanged."""
        old_rows = [
            ["market_data_l1", BASE_NS, {"symbol": "SPY"}, {"bid": 1.5, "volume": 0.0}],
            ["ingestion_events", BASE_NS + US, {"event": "café"}, {"code": 1100, "detail": "ünïcode"}],
            ["economic_data", BASE_NS, {"series_id": "X"}, {"value": float("nan")}],
        ]
        write_segment(tmp_path, 1, stdlib_frame(old_rows[:2]), stdlib_frame(old_rows[2:]))
        spool = Spool(SpoolConfig(dir=tmp_path, fsync="never"))
        assert spool.open().rows == 3
        read_back = drain(spool)
        assert read_back[:2] == old_rows[:2]
        assert math.isnan(read_back[2][3]["value"])

    def test_new_frames_follow_an_old_segment_in_order(self, tmp_path: Path) -> None:
        write_segment(tmp_path, 1, stdlib_frame(rows(0, 10)))
        spool = opened(tmp_path)
        spool.append(rows(10, 10))
        assert drain(spool) == rows(0, 20)

    def test_a_frame_that_is_not_json_is_skipped_with_an_error_never_replayed(self, tmp_path: Path) -> None:
        """A whole frame (its CRC matches) whose payload is no JSON, as a foreign or future format would be:
        the rest of that segment is logged and skipped; later segments are still replayed."""
        write_segment(tmp_path, 1, frame(b"\x93\x00binary, not JSON", 5), stdlib_frame(rows(0, 5)))
        write_segment(tmp_path, 2, stdlib_frame(rows(5, 5)))
        spool = opened(tmp_path)
        with capture_logs() as logs:
            read_back = drain(spool)
        assert read_back == rows(5, 5)
        assert [e["event"] for e in logs] == ["spool frame unreadable; skipping rest of segment"]
        assert logs[0]["log_level"] == "error"
        assert logs[0]["path"].endswith("spool-000000000001.seg")
        assert spool.empty


class TestSizeCap:
    def test_nothing_is_dropped_below_the_cap(self, tmp_path: Path) -> None:
        """Appending up to the cap loses no row."""
        spool = opened(tmp_path, max_bytes=MIB, segment_bytes=1 << 16)
        lost = 0
        while spool.bytes + 10_000 < MIB:
            lost += spool.append(rows(0, 100))
        assert lost == 0

    def test_oldest_segment_is_dropped_beyond_the_cap(self, tmp_path: Path) -> None:
        """Past the cap, whole oldest segments go, the count is returned, and the newest rows stay."""
        spool = opened(tmp_path, max_bytes=MIB, segment_bytes=1 << 16)
        lost = 0
        written = 0
        while written < 20_000:
            lost += spool.append(rows(written, 100))
            written += 100
        kept = drain(spool)
        assert lost > 0
        assert lost + len(kept) == written
        assert kept == rows(lost, written - lost)  # exactly the newest rows, in order
        assert spool.bytes <= MIB


class TestOverflowThroughTheWriter:
    async def test_overflow_is_counted_alerted_and_shown_in_status(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, bus: RecordingBus, metrics: Metrics
    ) -> None:
        """QuestDB down long enough to fill the spool: oldest rows dropped; metric, alert, status say so."""
        qdb.refuse_connections()
        total = 12_000
        config = make_config(spool={"max_bytes": MIB, "segment_bytes": 1 << 16})
        async with running_writer(config, bus=bus, metrics=metrics) as writer:
            for i in range(total):
                writer.accept(full_quote("SPY", BASE_NS + i * US))
                if i % 500 == 499:
                    await asyncio.sleep(0.005)
            await eventually(
                lambda: writer.status().details["rows_spooled"] == total, what="all rows spooled"
            )
            status = writer.status()
            qdb.accept_connections()
            await eventually(lambda: writer.status().state == "ok", within=20, what="the spool drained")
        lost = status.details["rows_lost"]
        assert lost > 0
        assert status.details["last_overflow_at"] is not None
        assert (
            metrics.registry.get_sample_value("ingestion_rows_lost_total", {"reason": "spool_overflow"})
            == lost
        )
        overflow = [e for e in bus.published if e.event == "spool_overflow"]
        assert overflow
        assert all(e.alert for e in overflow)
        landed = sorted(r["timestamp"] for r in qdb.rows("market_data_l1"))
        assert len(landed) == total - lost
        assert landed[0] == (BASE_NS + lost * US) // US  # what was dropped is the oldest


CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from ingestion.bus import EventBus
    from ingestion.config import QuestDBConfig, SpoolConfig
    from ingestion.events import Quote
    from ingestion.metrics import Metrics
    from ingestion.sinks.questdb import QuestDBWriter

    async def main(port: int, spool_dir: str, count: int, base: int) -> None:
        config = QuestDBConfig(
            host="127.0.0.1", http_port=port, flush_interval_ms=20, retry_interval_seconds=0.2,
            spool=SpoolConfig(dir=Path(spool_dir), fsync="interval", fsync_interval_seconds=0.05),
        )
        writer = QuestDBWriter(config, EventBus(), Metrics())
        await writer.start()
        asyncio.create_task(writer.run())
        for i in range(count):
            writer.accept(Quote("SPY", base + i * 1000, 1.0, 2.0, 1.5, 1.0, 1.0, 1.0, float(i), *[None] * 4))
        while writer.status().details["rows_spooled"] < count:
            await asyncio.sleep(0.01)
        print("SPOOLED", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


async def wait_for_line(child: asyncio.subprocess.Process, wanted: str) -> None:
    """Read the child's stdout (its log lines too) until ``wanted`` appears."""
    assert child.stdout is not None
    while line := await child.stdout.readline():
        if line.decode().strip() == wanted:
            return
    raise AssertionError(f"the child exited without printing {wanted!r}")


class TestCrash:
    @pytest.mark.timeout(60)
    async def test_rows_spooled_before_a_kill_9_arrive_after_restart(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, spool_dir: Path
    ) -> None:
        """A writer SIGKILLed during an outage: the next writer on its spool delivers every row."""
        port = qdb.port
        qdb.refuse_connections()
        count = 500
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(port), str(spool_dir), str(count), str(BASE_NS),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await asyncio.wait_for(wait_for_line(child, "SPOOLED"), timeout=30)
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        assert child.returncode == -signal.SIGKILL
        qdb.accept_connections()
        async with running_writer(make_config()) as writer:
            await eventually(lambda: qdb.row_count("market_data_l1") == count, what="the spooled rows")
            await eventually(lambda: writer.status().state == "ok", what="the spool drained")
        assert qdb.duplicates("market_data_l1") == 0
        assert sorted(r["volume"] for r in qdb.rows("market_data_l1")) == [float(i) for i in range(count)]


class TestAnUnwritableDirectory:
    def test_open_says_which_directory_cannot_be_written(self, tmp_path: Path) -> None:
        """Found at open, so the daemon refuses to start instead of failing at its first spill."""
        (tmp_path / "volume").write_text("a file, not a directory")
        directory = tmp_path / "volume" / "spool"
        with pytest.raises(SpoolNotWritableError, match=f"spool directory {directory} is not writable"):
            opened(directory)

    def test_open_leaves_no_probe_behind(self, tmp_path: Path) -> None:
        opened(tmp_path / "spool")
        assert list((tmp_path / "spool").iterdir()) == []
