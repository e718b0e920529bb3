"""Process memory settings: glibc's mmap threshold stays where a long-running daemon needs it."""

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
