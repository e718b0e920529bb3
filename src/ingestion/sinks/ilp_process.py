"""The ILP link in a child process, so that encoding rows takes another core, not the event loop's GIL.

The official client's ``Buffer.row`` is native code that holds the GIL: 2.1 us per Level 1 row (timeit),
about a sixth of the daemon's CPU at saturation, spent in the network thread while the event loop waits
for the GIL. So :class:`IlpProcess` hands each batch, as events in their wire form (rows.py: 0.66 us per
quote to build and pickle, against 1.7 us to build and pickle its row), to a child process (command line
``python -c "from ingestion.sinks.ilp_process import main; main()"``) that runs the
:class:`~ingestion.sinks.ilp.IlpLink` and returns its :class:`~ingestion.sinks.ilp.Delivery`. To the
writer it is the link itself: the same blocking ``deliver`` and ``close``.

Two batches may be on their way at once (``deliver`` from two threads): the second is pickled into the pipe
while the child encodes and sends the first, and the child answers them in the order they were written.
One at a time, the stages ran one after the other: at 130,000 rows/s the network thread spent 0.3 s a
second pickling and 0.65 s waiting for the child, and that chain, not the event loop, was where the
daemon fell behind.

Nothing is lost when the child is: if it dies (killed, crashed, out of memory), the batch in its hands
comes back as unsent with the reason, the writer spools it as for any outage, and the next ``deliver``
starts a new child. A batch that did land before the child died is then sent twice, which the tables'
DEDUP keys make harmless. The child ignores SIGINT and SIGTERM (the daemon decides when it stops, and a
Ctrl-C reaches the whole process group) and exits when its pipe closes, so it never outlives the daemon.

Protocol on the child's stdin and stdout: one pickle after another (a pickle knows where it ends). The first
frame to the child is the :class:`~ingestion.sinks.ilp.LinkSettings`; then each frame is a list of items
(:func:`~ingestion.sinks.rows.to_wire`), answered by one Delivery, or ``None`` to close. Pickle is safe
here: both ends are this program.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from ingestion.memory import tune_collector
from ingestion.sinks.ilp import Delivery, IlpLink, LinkSettings
from ingestion.sinks.rows import Item, from_wire, to_wire

if TYPE_CHECKING:
    from ingestion.config import QuestDBConfig

# -c rather than -m: the package imports this module, and runpy warns when -m runs one it has imported.
CHILD_COMMAND = "from ingestion.sinks.ilp_process import main; main()"
CLOSE_TIMEOUT_SECONDS = 10.0
# The daemon's end of the request pipe buffers this much. The pickler hands it 64 KiB frames; written one
# by one, each write released the GIL, and when the event loop is busy the network thread waits up to
# the interpreter's switch interval (5 ms) to get it back, per frame. Buffered, a batch of up to 1 MiB
# leaves in one write. A buffer of fixed size, allocated once, so it does not grow the malloc arenas as a
# batch-sized bytes object did (see write_frame).
REQUEST_BUFFER_BYTES = 1 << 20


class ChildGoneError(Exception):
    """The other end of the pipe closed."""

    def __init__(self) -> None:
        super().__init__("its pipe closed")


def write_frame(stream: IO[bytes], value: Any) -> None:
    # Pickled straight into the pipe: the C pickler writes each 64 KiB frame as it fills, so no batch-sized
    # bytes object is built. One was (about 100 KiB a flush at 10,000 msgs/s, a new size each time), and
    # the network thread's malloc arena grew with them: RSS +27.7 MB in 10 minutes, against +6.4 before.
    pickle.dump(value, stream, pickle.HIGHEST_PROTOCOL)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    try:
        return pickle.load(stream)
    except (EOFError, pickle.UnpicklingError):  # closed, or closed in the middle of a pickle
        raise ChildGoneError from None


@dataclass(slots=True)
class _Child:
    """One child process, and the turns of the batches written to it: each reads its own answer."""

    process: subprocess.Popen[bytes]
    written: int = 0  # batches written to it so far
    answered: int = 0  # answers read from it so far
    gone: str | None = None  # why it was given up; the batches still waiting get this as their error


class IlpProcess:
    """:class:`IlpLink` behind a pipe; starts its child lazily, and again after the child died.

    ``deliver`` may be called from several threads at once: batches are written whole, one after another,
    and each caller then waits for its turn to read the answer to its own batch.
    """

    def __init__(self, config: QuestDBConfig) -> None:
        self._settings = LinkSettings.from_config(config)
        self._child: _Child | None = None
        self._writing = threading.Lock()  # one frame at a time into the pipe; guards _child
        self._turns = threading.Condition()  # answers are read in the order their batches were written

    def deliver(self, items: Sequence[Item]) -> Delivery:
        """Send events and rows through the child; if it fails, all are unsent and the error says why."""
        child: _Child | None = None
        try:
            with self._writing:
                child = self._running()
                assert child.process.stdin is not None
                write_frame(child.process.stdin, to_wire(items))
                turn = child.written
                child.written += 1
            return self._answer(child, turn)
        except (ChildGoneError, OSError) as exc:
            return Delivery(unsent=list(items), error=self._lost_child(child, exc))
        except _Abandoned as abandoned:
            return Delivery(unsent=list(items), error=abandoned.reason)

    def close(self) -> None:
        with self._writing:
            child, self._child = self._child, None
            if child is None:
                return
            process = child.process
            try:
                assert process.stdin is not None
                write_frame(process.stdin, None)
                process.stdin.close()
                process.wait(CLOSE_TIMEOUT_SECONDS)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
            finally:
                # The child answered what it was sent before it exited: let those answers be read
                # before the pipe closes under a reader.
                with self._turns:
                    self._turns.wait_for(
                        lambda: child.answered == child.written or child.gone is not None,
                        CLOSE_TIMEOUT_SECONDS,
                    )
                self._give_up(child, "ILP writer process closed")
                if process.stdout is not None:
                    process.stdout.close()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (for tests and the bench)."""
        child = self._child
        return None if child is None else child.process.pid

    def _answer(self, child: _Child, turn: int) -> Delivery:
        with self._turns:
            self._turns.wait_for(lambda: child.answered == turn or child.gone is not None)
            if child.gone is not None:
                raise _Abandoned(child.gone)
        assert child.process.stdout is not None
        # Only the caller whose turn it is reads, so the read itself needs no lock.
        delivery: Delivery = read_frame(child.process.stdout)
        with self._turns:
            child.answered += 1
            self._turns.notify_all()
        return delivery

    def _running(self) -> _Child:
        if self._child is None:
            process = subprocess.Popen(
                [sys.executable, "-c", CHILD_COMMAND],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                bufsize=REQUEST_BUFFER_BYTES,
            )
            assert process.stdin is not None
            try:
                write_frame(process.stdin, self._settings)
            except OSError:
                process.kill()
                process.wait()
                raise
            self._child = _Child(process)
        return self._child

    def _lost_child(self, child: _Child | None, exc: Exception) -> str:
        """Kill ``child``, so that the next batch starts a new one; the reason, for the batch."""
        if child is None:  # it never started (nothing is left of it): the next batch tries again
            return f"ILP writer process could not start: {exc}"
        process = child.process
        process.kill()
        code = process.wait()
        # First the batches waiting for its answers are told, then the pipes close (no writer is then
        # in the middle of a frame: writes hold the lock).
        reason = self._give_up(child, f"ILP writer process exited (code {code}: {exc})")
        with self._writing:
            if self._child is child:
                self._child = None
            for stream in (process.stdin, process.stdout):
                # The pipe is broken already; closing it can only say so again.
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
        return reason

    def _give_up(self, child: _Child, reason: str) -> str:
        """The batches still waiting for ``child``'s answers come back with the first reason given."""
        with self._turns:
            if child.gone is None:
                child.gone = reason
            self._turns.notify_all()
            return child.gone


class _Abandoned(Exception):
    """The child was given up while this batch waited for its answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: a config, then batches until ``None`` or the end of the pipe."""
    try:
        settings: LinkSettings = read_frame(requests)
    except ChildGoneError:
        return
    link = IlpLink(settings)
    try:
        while True:
            try:
                items = read_frame(requests)
            except ChildGoneError:
                return
            if items is None:
                return
            write_frame(replies, link.deliver(from_wire(items)))
    finally:
        link.close()


def main() -> None:
    # The daemon decides when this process stops; a terminal's Ctrl-C goes to the whole group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Each batch it unpickles lives until QuestDB answers: the same reason as the daemon's.
    tune_collector()
    # Frames go on a private copy of stdout; anything printed by mistake goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with replies:
        serve(sys.stdin.buffer, replies)
