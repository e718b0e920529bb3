"""The ILP link in its child process: rows land as from the link itself, and a lost child loses no row."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sinks_helpers import BASE_NS, ConfigFactory, depth, full_quote

from ingestion.config import QuestDBConfig
from ingestion.sinks import ilp_process
from ingestion.sinks.ilp_process import IlpProcess
from ingestion.sinks.rows import row_for
from questdb_double import QuestDBDouble

US = 1000


def quotes(count: int, start: int = 0) -> list:
    return [row_for(full_quote("SPY", BASE_NS + (start + i) * US)) for i in range(count)]


def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (reaped, or a zombie of another parent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _write_syscalls() -> int:
    """write(2) calls made by this process so far (/proc/self/io)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscw:"))


@contextlib.contextmanager
def child_after_one_batch(config: QuestDBConfig) -> Iterator[tuple[IlpProcess, int]]:
    """A link whose child has delivered one quote, and the child's pid; the link is closed afterwards."""
    link = IlpProcess(config)
    try:
        assert link.deliver(quotes(1)).error is None
        assert link.pid is not None
        yield link, link.pid
    finally:
        link.close()


class TestDelivery:
    def test_rows_land_and_the_delivery_counts_them_per_table(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        link = IlpProcess(make_config())
        try:
            rows = [*quotes(3), row_for(depth("SPY", BASE_NS + 10 * US))]
            delivery = link.deliver(rows)
        finally:
            link.close()
        assert delivery.error is None
        assert delivery.acked == {"market_data_l1": 3, "market_data_l2": 1}
        assert qdb.row_count("market_data_l1") == 3
        assert qdb.row_count("market_data_l2") == 1

    def test_a_batch_leaves_in_one_write_not_one_per_pickle_frame(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """The pickler makes 64 KiB frames; each write of its own released the GIL, which a busy event loop
        then kept for up to 5 ms. A batch of about 900 KiB now goes in one write(2) of this process."""
        with child_after_one_batch(make_config()) as (link, _):
            batch = [full_quote("SPY", BASE_NS + i * US) for i in range(1, 8001)]
            before = _write_syscalls()
            delivery = link.deliver(batch)
            writes = _write_syscalls() - before
        assert delivery.acked == {"market_data_l1": 8000}
        assert writes == 1

    def test_events_cross_as_their_wire_form_and_land_as_their_rows(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        events = [full_quote("QQQ", BASE_NS + i * US) for i in range(3)]
        link = IlpProcess(make_config())
        try:
            delivery = link.deliver([*events, row_for(depth("QQQ", BASE_NS + 10 * US))])
        finally:
            link.close()
        assert delivery.error is None
        assert delivery.acked == {"market_data_l1": 3, "market_data_l2": 1}
        assert qdb.row_count("market_data_l1") == 3

    def test_an_outage_comes_back_as_unsent_rows_with_questdbs_reason(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        link = IlpProcess(make_config())
        qdb.fail_writes(500)
        try:
            delivery = link.deliver(quotes(2))
        finally:
            link.close()
        assert delivery.error is not None
        assert "the double fails on purpose" in delivery.error
        assert delivery.unsent == quotes(2)


class PipeLog:
    """What crossed the daemon's ends of the pipes, in order: ("sent", batch size) and ("answer", acked)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entries: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        write, read = ilp_process.write_frame, ilp_process.read_frame

        def logged_write(stream: Any, value: Any) -> None:
            write(stream, value)
            if isinstance(value, list):
                self._add("sent", len(value))

        def logged_read(stream: Any) -> Any:
            value = read(stream)
            self._add("answer", value.acked)
            return value

        monkeypatch.setattr(ilp_process, "write_frame", logged_write)
        monkeypatch.setattr(ilp_process, "read_frame", logged_read)

    def _add(self, kind: str, what: Any) -> None:
        with self._lock:
            self.entries.append((kind, what))

    def sent(self) -> int:
        with self._lock:
            return sum(kind == "sent" for kind, _ in self.entries)


def wait_for(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class TestTwoBatchesOnTheirWay:
    def test_the_second_is_handed_over_while_the_first_is_sent_and_each_gets_its_own_answer(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """QuestDB holds each request 1 s: both batches are in the pipe before the first answer comes."""
        pipe = PipeLog(monkeypatch)
        qdb.delay(1.0)
        link = IlpProcess(make_config())
        try:
            with ThreadPoolExecutor(2) as threads:
                first = threads.submit(link.deliver, quotes(3))
                wait_for(lambda: pipe.sent() == 1)
                second = threads.submit(link.deliver, quotes(2, start=3))
                first_delivery, second_delivery = first.result(), second.result()
        finally:
            link.close()
        assert pipe.entries == [
            ("sent", 3),
            ("sent", 2),
            ("answer", {"market_data_l1": 3}),
            ("answer", {"market_data_l1": 2}),
        ]
        assert first_delivery.acked == {"market_data_l1": 3}
        assert second_delivery.acked == {"market_data_l1": 2}
        assert qdb.row_count("market_data_l1") == 5

    def test_a_child_killed_with_both_on_their_way_returns_both_unsent_and_the_next_starts_anew(
        self, qdb: QuestDBDouble, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pipe = PipeLog(monkeypatch)
        with child_after_one_batch(make_config()) as (link, first_child):
            qdb.delay(2.0)
            with ThreadPoolExecutor(2) as threads:
                first = threads.submit(link.deliver, quotes(3, start=1))
                second = threads.submit(link.deliver, quotes(2, start=4))
                wait_for(lambda: pipe.sent() == 3)  # the first child's one batch, then these two
                os.kill(first_child, signal.SIGKILL)
                lost = [first.result(), second.result()]
            qdb.heal()
            again = link.deliver(quotes(5, start=1))
            second_child = link.pid
        assert [delivery.unsent for delivery in lost] == [quotes(3, start=1), quotes(2, start=4)]
        assert all(delivery.error and "ILP writer process exited" in delivery.error for delivery in lost)
        assert again.acked == {"market_data_l1": 5}
        assert second_child not in (None, first_child)
        assert qdb.row_count("market_data_l1") == 6


class TestALostChild:
    def test_a_killed_child_returns_the_batch_unsent_and_the_next_batch_starts_a_new_one(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        with child_after_one_batch(make_config()) as (link, first):
            os.kill(first, signal.SIGKILL)
            assert gone(first)
            lost = link.deliver(quotes(2, start=1))
            again = link.deliver(quotes(2, start=1))
            second = link.pid
        assert lost.error is not None
        assert "ILP writer process exited" in lost.error
        assert lost.unsent == quotes(2, start=1)
        assert again.error is None
        assert second not in (None, first)
        assert qdb.row_count("market_data_l1") == 3

    def test_ctrl_c_and_sigterm_do_not_stop_the_child(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """Ctrl-C in a terminal reaches the whole process group: the daemon, not a signal, stops the child."""
        with child_after_one_batch(make_config()) as (link, pid):
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)
            delivery = link.deliver(quotes(1, start=1))
            assert link.pid == pid
        assert delivery.error is None
        assert gone(pid)

    def test_the_child_exits_when_the_daemon_dies_without_closing_it(
        self, qdb: QuestDBDouble, make_config: ConfigFactory
    ) -> None:
        """kill -9 of the daemon: the child sees its pipe close and exits, so it never lingers."""
        config = make_config()
        script = textwrap.dedent(
            """
            import os, pickle, sys
            from ingestion.sinks.ilp_process import IlpProcess
            link = IlpProcess(pickle.loads(sys.stdin.buffer.read()))
            link.deliver([])
            print(link.pid, flush=True)
            os.kill(os.getpid(), 9)
            """
        )
        daemon = subprocess.run(
            [sys.executable, "-c", script], input=pickle.dumps(config), capture_output=True, timeout=60
        )
        assert daemon.returncode == -signal.SIGKILL
        child = int(daemon.stdout.decode().strip())
        assert gone(child)
