"""Storage chaos: a QuestDB outage under load (nothing lost, nothing twice), a Valkey outage
(QuestDB's row rate unaffected)."""

from __future__ import annotations

import time
from pathlib import Path

from common import Options, Outcome
from harness import Stack, missing_rows, total, wait_settled

# The mix yields ~0.9 normalised events per simulator message (measured by bench/bench_pipeline.py).
EVENTS_PER_MESSAGE = 0.9
OUTAGE_EVENTS_PER_S = 5_000
VALKEY_RATE = 10_000
VALKEY_MIN_RATIO = 0.9


def _rows(stack: Stack) -> int:
    stats = stack.questdb.stats()
    return sum(v["rows"] for k, v in stats["tables"].items() if k != "ingestion_events")


def questdb_outage(options: Options, workdir: Path) -> Outcome:
    outage = 30.0 if options.quick else 300.0
    rate = OUTAGE_EVENTS_PER_S / EVENTS_PER_MESSAGE
    with Stack(workdir, rate=rate, workload="mix", fast_questdb=True) as stack:
        daemon = stack.daemon
        time.sleep(5)
        stack.questdb.control("outage")
        started = time.monotonic()
        peak = 0.0
        while time.monotonic() - started < outage:
            peak = max(peak, total(daemon.metrics(), "ingestion_spool_bytes"))
            time.sleep(1.0)
        stack.questdb.control("heal")
        healed = time.monotonic()
        drained = None
        while time.monotonic() - healed < max(120.0, outage):
            spool = total(daemon.metrics(), "ingestion_spool_bytes")
            peak = max(peak, spool)
            _, body = daemon.health()
            if spool == 0 and body["storage"]["questdb"]["status"] == "ok":
                drained = time.monotonic() - healed
                break
            time.sleep(0.25)
        stack.simulator.post("/pause")
        time.sleep(1.0)
        sent = stack.simulator.sent()
        stored = wait_settled(stack.questdb, timeout=120)
        lost_metric = total(daemon.metrics(), "ingestion_rows_lost_total")
    missing = missing_rows(sent, stored)
    duplicates = sum(v["duplicates"] for v in stored["tables"].values())
    lost = sum(missing.values())
    passed = lost == 0 and duplicates == 0 and drained is not None and lost_metric == 0
    drain = "never" if drained is None else f"{drained:.1f} s"
    return Outcome(
        "questdb-outage",
        f"QuestDB answers 503 for {outage:g} s at {OUTAGE_EVENTS_PER_S:,} events/s (mix)",
        f"rows lost {lost} (trades+depth vs simulator counts: {missing}), duplicates {duplicates}, "
        f"rows_lost metric {lost_metric:g}, spool peak {peak / 1e6:.1f} MB, drain {drain}",
        passed,
    )


def valkey_outage(options: Options, workdir: Path) -> Outcome:
    phase = 10.0 if options.quick else 30.0
    with Stack(workdir, rate=VALKEY_RATE, workload="mix", fast_questdb=True) as stack:
        time.sleep(5)

        def rows_per_s() -> float:
            r0, t0 = _rows(stack), time.monotonic()
            time.sleep(phase)
            return (_rows(stack) - r0) / (time.monotonic() - t0)

        before = rows_per_s()
        stack.valkey.stop()
        during = rows_per_s()
        stack.valkey.start()
        time.sleep(3)
        after = rows_per_s()
        _, body = stack.daemon.health()
        cache_ok = body["storage"]["valkey"]["status"] == "ok"
    ratio = during / before if before else 0.0
    passed = ratio >= VALKEY_MIN_RATIO and cache_ok
    return Outcome(
        "valkey-outage",
        f"Valkey stopped for {phase:g} s then restarted, {VALKEY_RATE:,} msgs/s (mix)",
        f"QuestDB rows/s before {before:,.0f}, during {during:,.0f} ({ratio:.0%}, floor "
        f"{VALKEY_MIN_RATIO:.0%}), after {after:,.0f}; Valkey status after return: "
        f"{body['storage']['valkey']['status']}",
        passed,
    )
