"""Overload as a state: the daemon fed twice what a QuestDB at its limit takes (bench and chaos).

Used by bench_pipeline.py (``--workload overload``) and chaos/run.py (scenario ``overload``). The QuestDB
double accepts at most ``rows_per_s`` rows a second (POST /bench/throttle), all requests together, and
answers every request: QuestDB is neither down nor silent, only at its limit. Then:

1. 2,000 msgs/s (the mix) for a few seconds: rows per message, so the sustainable rate is the double's
   limit in messages (rows_per_s / rows per message), and the overload rate twice that.
2. ``hold`` seconds at the overload rate, while two threads ask ``/health/live`` and ``/health`` every
   100 ms (an unanswered request counts as its timeout) and the daemon's RSS is read every second.
3. Back to 2,000 msgs/s: seconds until the spool is empty, the writer in direct mode (storage.questdb
   "ok") and the pipeline out of overload.
4. The simulator pauses; once the daemon has written what it holds: every event the normaliser received is
   either a row in QuestDB or counted as dropped, per kind, and the spool took nothing (QuestDB never
   failed, so nothing was the spool's to take).

Criteria (issue 21): /health/live p99 < 1 s and daemon RSS < 300 MB during the hold; spool empty and
direct mode within 60 s of the return to 2,000 msgs/s; stored + dropped = received; 0 rows spooled.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from harness import LOOPBACK, DaemonProcess, Stack, children, quantiles, rss_mb, total, wait_settled

BASE_RATE = 2_000.0
LIVE_P99_LIMIT_MS = 1_000.0
RSS_LIMIT_MB = 300.0
RECOVERY_LIMIT_SECONDS = 60.0
PROBE_TIMEOUT_SECONDS = 10.0
TABLE_OF_KIND = {"quote": "market_data_l1", "depth": "market_data_l2", "trade": "time_and_sales"}


@contextlib.contextmanager
def probing(daemon: DaemonProcess, path: str) -> Iterator[list[float]]:
    """GET ``path`` every 100 ms from a thread; latencies in ms (a failure counts as the timeout)."""
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        url = f"http://{LOOPBACK}:{daemon.api_port}"
        with httpx.Client(base_url=url, timeout=PROBE_TIMEOUT_SECONDS) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    client.get(path)
                    latencies.append((time.perf_counter() - started) * 1000)
                except httpx.HTTPError:
                    latencies.append(PROBE_TIMEOUT_SECONDS * 1000)
                stop.wait(0.1)

    thread = threading.Thread(target=probe, name=f"probe{path}", daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(PROBE_TIMEOUT_SECONDS + 5)


def _received_by_kind(daemon: DaemonProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in daemon.metrics().get("ingestion_events_received_total", []):
        out[labels["type"]] = out.get(labels["type"], 0.0) + value
    return out


def _dropped_by_kind(daemon: DaemonProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in daemon.metrics().get("ingestion_events_dropped_by_type_total", []):
        out[labels["type"]] = out.get(labels["type"], 0.0) + value
    return out


def _questdb(daemon: DaemonProcess) -> dict[str, Any]:
    return daemon.health()[1]["storage"]["questdb"]


def _recovered(daemon: DaemonProcess) -> bool:
    _, body = daemon.health()
    questdb = body["storage"]["questdb"]
    overload = body["pipeline"].get("overload", {}).get("state", "normal")
    return questdb["status"] == "ok" and questdb["spool_bytes"] == 0 and overload == "normal"


def run_overload(workdir: Path, *, rows_per_s: float, hold: float) -> dict[str, Any]:
    with Stack(workdir, rate=BASE_RATE, workload="mix", fast_questdb=True) as stack:
        daemon = stack.daemon
        stack.questdb.http.post("/bench/throttle", params={"rows_per_s": rows_per_s}).raise_for_status()
        time.sleep(3)
        sent0, received0 = stack.simulator.sent()["total"], sum(_received_by_kind(daemon).values())
        time.sleep(5)
        sent1, received1 = stack.simulator.sent()["total"], sum(_received_by_kind(daemon).values())
        events_per_message = (received1 - received0) / max(sent1 - sent0, 1)
        sustainable = rows_per_s / events_per_message
        overload_rate = 2 * sustainable
        stack.simulator.post("/rate", value=overload_rate)
        rss: list[float] = []
        child_rss: list[float] = []
        started = time.monotonic()
        sent_start = stack.simulator.sent()["total"]
        with probing(daemon, "/health/live") as live, probing(daemon, "/health") as health:
            while time.monotonic() - started < hold:
                rss.append(rss_mb(daemon.pid))
                child_rss.append(sum(rss_mb(child) for child in children(daemon.pid)))
                time.sleep(1.0)
        held = time.monotonic() - started
        sent_rate = (stack.simulator.sent()["total"] - sent_start) / held
        during = daemon.health()[1]
        stack.simulator.post("/rate", value=BASE_RATE)
        back = time.monotonic()
        recovery: float | None = None
        while time.monotonic() - back < 3 * RECOVERY_LIMIT_SECONDS:
            with contextlib.suppress(httpx.HTTPError, KeyError):
                if _recovered(daemon):
                    recovery = time.monotonic() - back
                    break
            time.sleep(0.5)
        stack.simulator.post("/pause")
        time.sleep(1.0)
        deadline = time.monotonic() + 120
        while _questdb(daemon)["pending_rows"] and time.monotonic() < deadline:
            time.sleep(0.5)
        stored = wait_settled(stack.questdb, timeout=120)
        received = _received_by_kind(daemon)
        dropped = _dropped_by_kind(daemon)
        metrics = daemon.metrics()
        questdb = _questdb(daemon)
        alerts = {labels["event"]: value for labels, value in metrics.get("ingestion_alerts_total", [])}
    tables = stored["tables"]
    accounting = {
        kind: {
            "received": int(received.get(kind, 0)),
            "stored": int(tables.get(table, {}).get("rows", 0)),
            "dropped": int(dropped.get(kind, 0)),
        }
        for kind, table in TABLE_OF_KIND.items()
    }
    balanced = all(a["stored"] + a["dropped"] == a["received"] for a in accounting.values())
    live_p50, live_p99 = quantiles(live)
    health_p50, health_p99 = quantiles(health)
    figures = {
        "questdb_rows_per_s_limit": rows_per_s,
        "events_per_message": round(events_per_message, 3),
        "sustainable_msgs_per_s": round(sustainable),
        "asked_msgs_per_s": round(overload_rate),
        "sent_msgs_per_s": round(sent_rate),
        "hold_seconds": round(held, 1),
        "live_p50_p99_max_ms": [round(live_p50, 1), round(live_p99, 1), round(max(live), 1)],
        "live_gets": len(live),
        "health_p50_p99_max_ms": [round(health_p50, 1), round(health_p99, 1), round(max(health), 1)],
        "health_gets": len(health),
        "rss_mb_max": round(max(rss), 1),
        "writer_rss_mb_max": round(max(child_rss), 1),
        "state_during": during["pipeline"].get("overload"),
        "status_during": [during["status"], during["reasons"]],
        "recovery_seconds": None if recovery is None else round(recovery, 1),
        "rows_spooled": questdb["rows_spooled"],
        "rows_lost": total(metrics, "ingestion_rows_lost_total"),
        "duplicates": sum(v["duplicates"] or 0 for v in tables.values()),
        "accounting": accounting,
        "balanced": balanced,
        "overload_alerts": [alerts.get("pipeline_overload", 0), alerts.get("pipeline_overload_cleared", 0)],
    }
    figures["passed"] = (
        live_p99 < LIVE_P99_LIMIT_MS
        and max(rss) < RSS_LIMIT_MB
        and recovery is not None
        and recovery <= RECOVERY_LIMIT_SECONDS
        and balanced
        and questdb["rows_spooled"] == 0
        and figures["duplicates"] == 0
    )
    return figures


def overload_in_tempdir(rows_per_s: float, hold: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as workdir:
        return run_overload(Path(workdir), rows_per_s=rows_per_s, hold=hold)
