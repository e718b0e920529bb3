"""The daemon's CPU at a real feed's rate against a bare ib_async client's, side by side in one run.

Used by bench_pipeline.py (``--workload cost``). Each run starts two feeds at the same rate: the daemon's
whole stack (simulator, daemon with its ILP writer, Valkey, the QuestDB double) and a second simulator
drained by bench/bare_client.py (stock ib_async, counting only). Both run at once, so they share the
machine's load; the CPU of both is read from /proc at the start and the end of one window, and nothing asks
the daemon anything in between (a scrape of /metrics or /health costs it CPU, and at 2,000 msgs/s that is
not small). The ratio is daemon + ILP writer over the bare client.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import BIN, REPO, SimulatorProcess, Stack, cpu_seconds, stop_process, tree_cpu_seconds

COST_TARGET_RATIO = 1.5  # issue 21: daemon + writer at 2,000 msgs/s within 1.5x the bare client


def _bare_client(port: int, seconds: float) -> subprocess.Popen[str]:
    command = [str(BIN / "python"), str(REPO / "bench" / "bare_client.py"), "--port", str(port),
               "--seconds", f"{seconds:g}", "--warmup", "1"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def cost_once(rate: float, seconds: float, settle: float, *, full_double: bool = False) -> dict[str, Any]:
    """One window with the daemon's stack and a bare client, each on its own simulator at ``rate``."""
    bare_feed = SimulatorProcess(rate, seed=2)
    with (
        tempfile.TemporaryDirectory(prefix="bench-cost-") as workdir,
        Stack(Path(workdir), rate=rate, workload="mix", fast_questdb=not full_double) as stack,
    ):
        bare_feed.start()
        client = _bare_client(bare_feed.port, settle + seconds + 30)
        try:
            deadline = time.monotonic() + 30
            while bare_feed.sent()["total"] < 100 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(settle)
            daemon_pid = stack.daemon.pid
            sent0 = stack.simulator.sent()["total"], bare_feed.sent()["total"]
            cpu0 = tree_cpu_seconds(daemon_pid), cpu_seconds(client.pid)
            load0, t0 = Path("/proc/loadavg").read_text().split()[0], time.monotonic()
            time.sleep(seconds)
            cpu1 = tree_cpu_seconds(daemon_pid), cpu_seconds(client.pid)
            elapsed = time.monotonic() - t0
            sent1 = stack.simulator.sent()["total"], bare_feed.sent()["total"]
            load1 = Path("/proc/loadavg").read_text().split()[0]
        finally:
            stop_process(client)
            bare_feed.stop()
    daemon_cores = (cpu1[0] - cpu0[0]) / elapsed
    bare_cores = (cpu1[1] - cpu0[1]) / elapsed
    return {
        "rate": rate,
        "seconds": round(elapsed, 1),
        "daemon_sent_per_s": round((sent1[0] - sent0[0]) / elapsed),
        "bare_sent_per_s": round((sent1[1] - sent0[1]) / elapsed),
        "daemon_cores": round(daemon_cores, 4),
        "bare_cores": round(bare_cores, 4),
        "ratio": round(daemon_cores / max(bare_cores, 1e-9), 2),
        "load_1m": f"{load0} -> {load1}",
    }


def run_cost(
    rate: float, runs: int, seconds: float, settle: float, *, full_double: bool = False
) -> dict[str, Any]:
    """``runs`` side-by-side windows; the median ratio, and the range over the runs."""
    results: list[dict[str, Any]] = []
    for _ in range(runs):
        result = cost_once(rate, seconds, settle, full_double=full_double)
        results.append(result)
        print(
            f"  cost at {rate:,.0f} msgs/s: daemon+writer {result['daemon_cores']:.3f} cores, bare ib_async "
            f"{result['bare_cores']:.3f} cores: ratio {result['ratio']:.2f} (load {result['load_1m']})",
            flush=True,
        )
    ratios = [r["ratio"] for r in results]
    median = statistics.median(ratios)
    verdict = "PASS" if median <= COST_TARGET_RATIO else "FAIL"
    print(
        f"CPU ratio at {rate:,.0f} msgs/s, daemon+writer / bare ib_async (same run): median {median:.2f} "
        f"over {runs} runs (range {min(ratios):.2f}-{max(ratios):.2f}); "
        f"target <= {COST_TARGET_RATIO}: {verdict}",
        flush=True,
    )
    return {
        "rate": rate,
        "median_ratio": median,
        "range": [min(ratios), max(ratios)],
        "median_daemon_cores": statistics.median(r["daemon_cores"] for r in results),
        "median_bare_cores": statistics.median(r["bare_cores"] for r in results),
        "runs": results,
    }
