"""Process memory settings: glibc's mmap threshold stays where a long-running daemon needs it, and the
cyclic collector leaves alone the events that wait for a QuestDB flush."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from ingestion.memory import pin_mmap_threshold

# In a fresh interpreter (a fresh allocator): free one 4 MiB block, which makes an unpinned glibc raise
# its mmap threshold to 4 MiB, then allocate 512 KiB and say where it landed.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from ingestion.memory import pin_mmap_threshold
    pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else False
    big = bytearray(4 << 20)
    del big
    block = bytearray(512 << 10)
    address = ctypes.addressof((ctypes.c_char * len(block)).from_buffer(block))
    heap = next(line for line in open("/proc/self/maps") if "[heap]" in line)
    start, end = (int(x, 16) for x in heap.split()[0].split("-"))
    print(pinned, "heap" if start <= address < end else "own-mapping")
    """
)

# In a fresh interpreter: 300,000 quotes made in batches of 5,000, each batch held while the next one is
# made (as the writer holds the rows of one flush while the next ones come), then the collections counted
# per generation.
COLLECTIONS_PROBE = textwrap.dedent(
    """
    import gc, sys
    from ingestion.events import Quote
    from ingestion.memory import tune_collector
    if sys.argv[1] == "tune":
        tune_collector()
    runs = [0, 0, 0]
    def count(phase, info):
        if phase == "stop":
            runs[info["generation"]] += 1
    gc.callbacks.append(count)
    waiting = []
    for batch in range(60):
        sending, waiting = waiting, []
        for i in range(5_000):
            waiting.append(Quote("SPY", i, 1.0, 1.1, 1.05, 100.0, 200.0, 10.0, 1e6, 1.2, 0.9, 1.0, 1.0))
        del sending
    print(*runs)
    """
)

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def where_a_large_block_lands(mode: str, **env: str) -> tuple[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=environment, check=True
    )
    pinned, place = result.stdout.split()
    return pinned, place


@glibc_only
class TestMmapThreshold:
    def test_unpinned_glibc_serves_large_blocks_from_the_heap_after_a_larger_one(self) -> None:
        """The behaviour being fixed: the threshold follows freed blocks, and the heap keeps growing."""
        assert where_a_large_block_lands("leave") == ("False", "heap")

    def test_pinned_large_blocks_get_their_own_mapping_which_is_returned_when_freed(self) -> None:
        assert where_a_large_block_lands("pin") == ("True", "own-mapping")

    def test_a_threshold_the_user_set_is_left_alone(self) -> None:
        """MALLOC_MMAP_THRESHOLD_ is glibc's own setting; the daemon does not override it."""
        assert where_a_large_block_lands("pin", MALLOC_MMAP_THRESHOLD_="8388608") == ("False", "heap")


def test_outside_glibc_nothing_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert pin_mmap_threshold() is False


def collections_while_batches_wait(mode: str) -> list[int]:
    """Young, middle and full collections in :data:`COLLECTIONS_PROBE`."""
    result = subprocess.run(
        [sys.executable, "-c", COLLECTIONS_PROBE, mode], capture_output=True, text=True, check=True
    )
    return [int(count) for count in result.stdout.split()]


class TestCollector:
    def test_by_default_waiting_events_reach_the_oldest_generation_and_are_walked_again(self) -> None:
        """The behaviour being fixed: hundreds of collections, full ones among them."""
        young, middle, full = collections_while_batches_wait("leave")
        assert young > 100
        assert middle > 10
        assert full >= 1

    def test_tuned_events_that_wait_one_flush_cost_the_collector_nothing(self) -> None:
        assert collections_while_batches_wait("tune") == [0, 0, 0]
