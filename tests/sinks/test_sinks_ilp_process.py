"""The ILP link in its child process: rows land as from the link itself, and a lost child loses no row."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

from sinks_helpers import BASE_NS, ConfigFactory, depth, full_quote

from ingestion.config import QuestDBConfig
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
