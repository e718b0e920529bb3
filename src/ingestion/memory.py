"""Process-wide memory settings for a daemon that runs for months.

Two things the defaults get wrong for this workload, both measured with bench/bench_pipeline.py
(mix at 10,000 msgs/s, 10 minutes; docs/PERFORMANCE.md):

- glibc's malloc raises its mmap threshold to the size of every large block that is freed (up to
  32 MiB), so after one large ILP buffer all later ones come from the heap, whose top is rarely free
  to give back. Resident memory then grows to each new high-water mark and stays there: +12.5 MB of
  anonymous memory in 10 minutes. Pinning the threshold at glibc's own default of 128 KiB (which also
  stops the adjustment) keeps large blocks in their own mappings, returned when freed: +6.6 MB.
- Full collections of the cyclic garbage collector walked everything start-up built and paused the
  event loop for 25-100 ms a few times a minute; see :func:`freeze_startup_heap`.
- The collector's default young threshold (700) promotes every event that waits for a QuestDB flush to the
  oldest generation, which it then walks again and again; see :func:`tune_collector`.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform

# The collector runs when this many more tracked objects were made than freed (CPython's default is 700);
# the other two thresholds stay at CPython's 10 and 10. See tune_collector for the figures.
YOUNG_COLLECTION_THRESHOLD = 50_000

# From glibc's malloc.h.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc, or the user set one already.

    ``MALLOC_MMAP_THRESHOLD_`` in the environment (glibc's own tunable) wins over this default.
    """
    if platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def freeze_startup_heap() -> None:
    """Take what start-up built out of the cyclic collector's sight.

    The modules, the market calendar's tables, the settings and the API app live as long as the
    process, yet every full collection walked all of them: at 10,000 events/s that paused the loop
    for 25-100 ms a few times a minute, which was the tail of every latency figure. Frozen, they are
    never scanned again; what is made later (one IB client per connection, events, rows) is collected
    as before. The collect() first, so that start-up's own garbage is freed, not frozen.
    """
    gc.collect()
    gc.freeze()


def tune_collector() -> None:
    """Let the cyclic collector run once per 50,000 net allocations instead of 700.

    Events live until their QuestDB batch is sent (a flush interval, longer when QuestDB is slow), and
    none of them is part of a cycle. With the default threshold, at 125,000 events/s every one of them
    outlived two young collections, so it reached the oldest generation, and full collections (each
    walking all of them, 2-75 ms, none freeing anything) ran several times a second: 6-9 % of the
    event loop at 130,000-140,000 msgs/s, and 25-32 % once QuestDB fell behind and batches grew, which
    made it fall further behind. The ILP writer process, unpickling those batches, spent 7-9 % of its
    time the same way. With 50,000: no collection at all during 60 s of the mix at 10,000 msgs/s, 1 ms
    a second at 140,000, and what is garbage because of a cycle (rare here: a reconnect's exception
    and its traceback) still goes within 50,000 allocations (bench/bench_pipeline.py; PERFORMANCE.md).
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
