"""QuestDB failing, slow or refusing rows: nothing is lost, nothing arrives twice, and it is all reported."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sinks_helpers import BASE_NS, ConfigFactory, RecordingBus, depth, eventually, full_quote, running_writer

from ingestion.metrics import Metrics
from ingestion.sinks.ilp import IlpLink, LinkSettings
from ingestion.sinks.questdb import QuestDBWriter
from ingestion.sinks.rows import row_for
from questdb_double import QuestDBDouble

US = 1000
SYMBOLS = ("SPY", "QQQ", "IWM")


async def produce(writer: QuestDBWriter, count: int, per_tick: int = 20, tick: float = 0.01) -> None:
    """Feed ``count`` quotes at a steady pace (``per_tick`` every ``tick`` seconds), 1 µs apart."""
    for i in range(count):
        writer.accept(full_quote(SYMBOLS[i % len(SYMBOLS)], BASE_NS + i * US, base=100 + i % 7))
        if i % per_tick == per_tick - 1:
            await asyncio.sleep(tick)


FAULTS: dict[str, tuple[Callable[[QuestDBDouble], None], Callable[[QuestDBDouble], None]]] = {
    "http_503": (lambda q: q.outage(503), QuestDBDouble.heal),
    "write_500": (lambda q: q.fail_writes(500), QuestDBDouble.heal),
    "refused": (QuestDBDouble.refuse_connections, QuestDBDouble.accept_connections),
}


class TestOutageInTheMiddleOfAStream:
    @pytest.mark.parametrize("fault", list(FAULTS))
    async def test_every_row_arrives_exactly_once(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, spool_dir: Path, fault: str
    ) -> None:
        """QuestDB failing for 1.5 s mid-stream: all rows land once, and the spool is drained afterwards."""
        breaks, mends = FAULTS[fault]
        total = 3000
        async with running_writer(make_config()) as writer:
            feeding = asyncio.create_task(produce(writer, total))
            await eventually(lambda: qdb.row_count("market_data_l1") >= 500, what="rows before the fault")
            breaks(qdb)
            await eventually(lambda: writer.status().state == "down", what="the writer to notice")
            await asyncio.sleep(1.5)  # the outage itself: a duration, not a wait for a condition
            mends(qdb)
            await feeding
            await eventually(lambda: qdb.row_count("market_data_l1") == total, what="every row")
            await eventually(lambda: writer.status().state == "ok", what="the writer back to direct sends")
            status = writer.status().details
        assert qdb.duplicates("market_data_l1") == 0
        assert qdb.conflicts("market_data_l1") == 0
        assert status["rows_spooled"] > 0
        assert status["spool_bytes"] == 0
        assert [n for n in os.listdir(spool_dir) if n.endswith(".seg")] == []

    async def test_outage_and_recovery_are_published_once_each(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, bus: RecordingBus
    ) -> None:
        """One questdb_down alert with the error, then one questdb_restored alert with counts."""
        async with running_writer(make_config(), bus=bus) as writer:
            qdb.outage(503)
            await produce(writer, 200)
            await eventually(lambda: writer.status().details["rows_spooled"] == 200, what="rows spooled")
            qdb.heal()
            await eventually(lambda: writer.status().state == "ok", what="recovery")
        down, restored = bus.published
        assert (down.event, down.alert) == ("questdb_down", True)
        assert "503" in down.detail  # the error as the client saw it
        assert (restored.event, restored.alert) == ("questdb_restored", True)
        assert "200 rows spooled, 200 rows replayed" in restored.detail

    async def test_status_reports_down_with_details(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """While QuestDB fails, status() is 'down' with the last error, pending rows and spool bytes."""
        async with running_writer(make_config()) as writer:
            qdb.fail_writes(500)
            await produce(writer, 50)
            # Rows still in memory count as pending before any send was tried: wait for the writer
            # to have tried, failed and spooled every row.
            await eventually(lambda: writer.status().details["rows_spooled"] == 50, what="50 rows spooled")
            status = writer.status()
            qdb.heal()
        assert status.state == "down"
        assert status.details["pending_rows"] == 50
        assert "fails on purpose" in status.details["last_error"]
        assert status.details["spool_bytes"] > 0
        assert status.details["outage_since"] is not None


class TestRejectedRows:
    async def test_rejected_row_goes_to_the_dead_letter_file_and_the_rest_lands(
        self,
        qdb: QuestDBDouble,
        make_config: ConfigFactory,
        spool_dir: Path,
        metrics: Metrics,
        bus: RecordingBus,
    ) -> None:
        """A 400 for one row of a batch: bisected, good rows land, the bad one is dead-lettered."""
        qdb.reject_lines_containing("symbol=XLK")
        async with running_writer(make_config(), bus=bus, metrics=metrics) as writer:
            for i, symbol in enumerate(("SPY", "XLK", "QQQ", "DIA")):
                writer.accept(full_quote(symbol, BASE_NS + i * US))
            await eventually(lambda: writer.status().details["dead_lettered"] == 1, what="the dead letter")
            await eventually(lambda: qdb.row_count("market_data_l1") == 3, what="the good rows")
            await eventually(lambda: (spool_dir / "dead-letter.jsonl").exists(), what="the dead-letter file")
            assert writer.status().state == "ok"
        [letter] = [json.loads(line) for line in (spool_dir / "dead-letter.jsonl").read_text().splitlines()]
        assert letter["table"] == "market_data_l1"
        assert "rejected on purpose" in letter["error"]
        assert letter["ilp"].startswith("market_data_l1,symbol=XLK ")
        assert sorted(r["symbol"] for r in qdb.rows("market_data_l1")) == ["DIA", "QQQ", "SPY"]
        assert metrics.registry.get_sample_value("ingestion_rows_dead_lettered_total") == 1
        assert "questdb_rejected" in bus.names()

    async def test_a_row_the_client_cannot_encode_is_dead_lettered_not_fatal(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, metrics: Metrics
    ) -> None:
        """A depth position beyond 64 bits (a garbled message) cannot become ILP: that row is
        dead-lettered, the rows around it land, and the writer keeps going."""
        async with running_writer(make_config(), metrics=metrics) as writer:
            writer.accept(full_quote("SPY", BASE_NS))
            writer.accept(depth("SPY", BASE_NS + US, position=2**70))
            writer.accept(full_quote("QQQ", BASE_NS + 2 * US))
            await eventually(lambda: writer.status().details["dead_lettered"] == 1, what="the dead letter")
            await eventually(lambda: qdb.row_count("market_data_l1") == 2, what="the good rows")
            assert writer.status().state == "ok"
        assert metrics.registry.get_sample_value("ingestion_rows_dead_lettered_total") == 1


class TestBoundedMemory:
    async def test_slow_questdb_spills_pending_rows_to_the_spool(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """While a send hangs, rows in memory stay under max_pending_rows (plus one producer burst)."""
        qdb.delay(0.5)
        burst = 50
        most_in_memory = 0
        async with running_writer(make_config(), max_pending_rows=200) as writer:
            for start in range(0, 2000, burst):
                for i in range(start, start + burst):
                    writer.accept(full_quote("SPY", BASE_NS + i * US))
                most_in_memory = max(most_in_memory, writer.status().details["rows_in_memory"])
                await asyncio.sleep(0.002)
            spooled = writer.status().details["rows_spooled"]
            qdb.heal()
            await eventually(lambda: qdb.row_count("market_data_l1") == 2000, within=20, what="every row")
        assert most_in_memory <= 200 + burst
        assert spooled > 0
        assert qdb.conflicts("market_data_l1") == 0

    async def test_a_spill_is_overload_not_an_outage_later_rows_still_go_straight_to_questdb(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """After a spill, rows that fit in memory are sent, not spooled behind the spilled ones; the spilled
        rows are replayed once a send leaves room, and every row lands once."""
        qdb.delay(0.5)
        async with running_writer(make_config(), max_pending_rows=200) as writer:
            for i in range(300):
                writer.accept(full_quote("SPY", BASE_NS + i * US))
            await eventually(lambda: writer.status().details["rows_spooled"] > 0, what="the spill")
            spilled = writer.status().details["rows_spooled"]
            assert writer.status().state == "spooling"
            for i in range(300, 400):  # fewer than max_pending_rows: they wait in memory for a send
                writer.accept(full_quote("SPY", BASE_NS + i * US))
                await asyncio.sleep(0.005)
            qdb.heal()
            await eventually(lambda: qdb.row_count("market_data_l1") == 400, within=20, what="every row")
            await eventually(lambda: writer.status().state == "ok", what="the spool drained")
            status = writer.status().details
        assert status["rows_spooled"] == spilled
        assert status["rows_replayed"] == spilled
        assert qdb.duplicates("market_data_l1") == 0


class TestTwoSendsInFlight:
    async def test_a_second_batch_leaves_while_the_first_is_sent_and_a_third_waits_in_memory(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """QuestDB holds each request 1.5 s. The second batch is handed to the ILP writer at once; the
        third waits (and would grow) until one of the two is answered. Every row lands once."""
        qdb.delay(1.5)

        def feed(writer: QuestDBWriter, start: int) -> None:
            for i in range(start, start + 50):
                writer.accept(full_quote("SPY", BASE_NS + i * US))

        async with running_writer(make_config(flush_interval_ms=20)) as writer:
            feed(writer, 0)
            await eventually(lambda: qdb.write_requests == 1, what="the first batch at QuestDB")
            feed(writer, 50)
            await eventually(lambda: writer.status().details["rows_in_memory"] == 0, what="the second sent")
            second_left_before_first_answer = qdb.row_count("market_data_l1") == 0
            feed(writer, 100)
            await asyncio.sleep(0.2)  # ten flush intervals: a duration in which nothing may leave
            third_waits = writer.status().details["rows_in_memory"] == 50
            first_unanswered = qdb.row_count("market_data_l1") == 0
            qdb.heal()
            await eventually(lambda: qdb.row_count("market_data_l1") == 150, what="every row")
        assert second_left_before_first_answer
        assert third_waits
        assert first_unanswered
        assert qdb.duplicates("market_data_l1") == 0


class TestShutdown:
    async def test_rows_pending_at_close_are_delivered(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, spool_dir: Path
    ) -> None:
        """aclose() right after accept(): the rows reach QuestDB and nothing is left in the spool."""
        writer = QuestDBWriter(make_config(flush_interval_ms=60_000), RecordingBus(), Metrics())
        await writer.start()
        task = asyncio.create_task(writer.run())
        for i in range(100):
            writer.accept(full_quote("SPY", BASE_NS + i * US))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.aclose()
        assert qdb.row_count("market_data_l1") == 100
        assert not [n for n in os.listdir(spool_dir) if n.endswith(".seg")]

    async def test_rows_pending_at_close_during_an_outage_wait_in_the_spool(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """aclose() while QuestDB is down spools the pending rows; the next writer delivers them."""
        qdb.refuse_connections()
        async with running_writer(make_config(flush_interval_ms=60_000)) as writer:
            for i in range(100):
                writer.accept(full_quote("SPY", BASE_NS + i * US))
        qdb.accept_connections()
        async with running_writer(make_config()):
            await eventually(lambda: qdb.row_count("market_data_l1") == 100, what="the rows from the spool")
        assert qdb.duplicates("market_data_l1") == 0


class TestTheHttpSenderOutlivesFailures:
    def test_one_sender_serves_a_long_run_of_failed_flushes(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """40 failed flushes in a row, then success: no rebuilt sender, so no "burst of reconnections".

        The questdb client warns (an error under pytest) once about 25 senders are built within a
        moment; over HTTP the same sender is usable again after a 5xx or a refused connection.
        """
        link = IlpLink(LinkSettings.from_config(make_config()))
        qdb.fail_writes(500)
        failures = [link.deliver([row_for(full_quote("SPY", BASE_NS + i * US))]) for i in range(40)]
        qdb.heal()
        recovered = link.deliver([row_for(full_quote("SPY", BASE_NS + 40 * US))])
        link.close()
        assert all(delivery.error and len(delivery.unsent) == 1 for delivery in failures)
        assert recovered.error is None
        assert recovered.acked == {"market_data_l1": 1}
        assert qdb.row_count("market_data_l1") == 1
