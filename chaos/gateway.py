"""Gateway chaos: restarts and silences at random moments while streaming.

Measured per fault: recovery = from the end of the fault (restart ``down`` elapsed, or silence
over) to ``Connected to IBKR`` in the daemon's log, and to /health 200 with 33 active
subscriptions. Before and after all faults: the daemon's RSS and thread count.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from common import Options, Outcome
from harness import Stack, quantiles, rss_mb, thread_count

RATE = 2_000
RECOVERY_LIMIT_S = 15.0  # backoff cap 10 s + 20 % jitter + the handshake and resubscription
RSS_GROWTH_LIMIT_MB = 25.0


def run(options: Options, workdir: Path) -> Outcome:
    restarts, silences = (10, 3) if options.quick else (100, 20)
    rng = random.Random(options.seed)
    faults = ["restart"] * restarts + ["silence"] * silences
    rng.shuffle(faults)
    recoveries: list[float] = []
    restored = 0
    reconnects = 0
    with Stack(workdir, rate=RATE, workload="mix") as stack:
        daemon, sim = stack.daemon, stack.simulator
        logs = daemon.logs
        assert logs is not None
        time.sleep(3)
        rss_before, threads_before = rss_mb(daemon.pid), thread_count(daemon.pid)
        for fault in faults:
            time.sleep(rng.uniform(0.2, 3.0))
            mark = logs.mark()
            if fault == "restart":
                down = rng.uniform(0.5, 3.0)
                sim.post("/restart", down=down)
                ended = time.monotonic() + down
            else:
                seconds = rng.uniform(2.0, 12.0)
                sim.post("/silence", seconds=seconds)
                ended = time.monotonic() + seconds
            time.sleep(max(0.0, ended - time.monotonic()))
            lost = logs.find("IBKR Connection Lost", mark)
            connected = logs.wait_for("Connected to IBKR", 30, mark) if lost or fault == "restart" else None
            if connected is not None:
                reconnects += 1
                recoveries.append(max(0.0, connected[0] - ended))
            if daemon.wait_healthy(33, 30) is not None:
                restored += 1
        time.sleep(3)
        rss_after, threads_after = rss_mb(daemon.pid), thread_count(daemon.pid)
    p50, _ = quantiles(recoveries)
    worst = max(recoveries, default=float("nan"))
    passed = (
        restored == len(faults)
        and worst <= RECOVERY_LIMIT_S
        and threads_after <= threads_before + 1
        and rss_after - rss_before <= RSS_GROWTH_LIMIT_MB
    )
    return Outcome(
        "gateway",
        f"{restarts} restarts (down 0.5-3 s) + {silences} silences (2-12 s) at random moments, {RATE} msgs/s",
        f"reconnects {reconnects}, recovery to 'Connected' p50 {p50:.2f} s max {worst:.2f} s "
        f"(limit {RECOVERY_LIMIT_S:g}), healthy with 33 active after {restored}/{len(faults)}, "
        f"threads {threads_before}->{threads_after}, RSS {rss_before:.0f}->{rss_after:.0f} MB "
        f"(limit +{RSS_GROWTH_LIMIT_MB:g})",
        passed,
    )
