"""Prometheus collectors, owned by one :class:`Metrics` object per daemon (no global registry).

Components receive the ``Metrics`` instance in their constructor and update it; ``/metrics``
renders its registry. Label values are symbols, tables and data types: bounded sets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; from sub-millisecond cache writes to multi-second database stalls.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Metrics:
    """Every series the service exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_received = Counter(
            "ingestion_events_received", "Normalised market events received", ["symbol", "type"], registry=r
        )
        self.events_dropped = Counter(
            "ingestion_events_dropped", "Events dropped because the pipeline queue was full", registry=r
        )
        self.events_dropped_by_type = Counter(
            "ingestion_events_dropped_by_type",
            "Events dropped at the pipeline's intake, by type and reason (overload: shed; queue_full)",
            ["type", "reason"],
            registry=r,
        )
        self.overload_state = Gauge(
            "ingestion_overload_state",
            "0 normal, 1 shedding Level 1 quotes, 2 shedding every event",
            registry=r,
        )
        self.queue_depth = Gauge("ingestion_queue_depth", "Events waiting in the pipeline queue", registry=r)
        self.rows_written = Counter(
            "ingestion_rows_written", "Rows acknowledged by QuestDB", ["table"], registry=r
        )
        self.rows_lost = Counter(
            "ingestion_rows_lost", "Rows that will never reach QuestDB", ["reason"], registry=r
        )
        self.rows_dead_lettered = Counter(
            "ingestion_rows_dead_lettered", "Rows QuestDB rejected permanently", registry=r
        )
        self.flush_seconds = Histogram(
            "ingestion_questdb_flush_seconds",
            "Duration of one QuestDB flush",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency_questdb = Histogram(
            "ingestion_latency_to_questdb_seconds",
            "From receipt of an event to QuestDB acknowledging its row",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency_valkey = Histogram(
            "ingestion_latency_to_valkey_seconds",
            "From receipt of an event to Valkey acknowledging the cache write (l1, l2: of the newest state)",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency_valkey_beyond_conflation = Histogram(
            "ingestion_latency_to_valkey_beyond_conflation_seconds",
            "l1, l2: from when the newest state could first be written (its receipt, or the end of its"
            " key's conflation interval if later) to Valkey acknowledging it: what the daemon adds",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.spool_bytes = Gauge("ingestion_spool_bytes", "Bytes waiting in the on-disk spool", registry=r)
        self.cache_writes = Counter(
            "ingestion_valkey_writes", "Conflated cache writes sent", ["kind"], registry=r
        )
        self.cache_dropped = Counter(
            "ingestion_valkey_dropped", "Cache updates dropped while Valkey was down", registry=r
        )
        self.reconnects = Counter("ingestion_ibkr_reconnects", "Successful reconnections to IBKR", registry=r)
        self.connection_state = Gauge(
            "ingestion_ibkr_connection_state", "1 for the current connection state", ["state"], registry=r
        )
        self.subscriptions = Gauge("ingestion_subscriptions", "Subscriptions by state", ["state"], registry=r)
        self.fred_observations = Counter(
            "ingestion_fred_observations", "FRED observations written", ["series"], registry=r
        )
        self.alerts = Counter("ingestion_alerts", "Alerts raised", ["event"], registry=r)
        self.history_requests = Counter(
            "ingestion_history_requests", "Historical requests sent to IB", ["kind"], registry=r
        )
        self.history_pacing_waits = Counter(
            "ingestion_history_pacing_waits", "Historical requests the pacer held back", registry=r
        )
        self.history_pacing_violations = Counter(
            "ingestion_history_pacing_violations", "Error 162 pacing answers from IB", registry=r
        )
        self.history_rows = Counter(
            "ingestion_history_rows", "Rows from IB's history handed to QuestDB", ["table"], registry=r
        )
        self.history_gaps = Counter(
            "ingestion_history_gaps", "Gaps of time_and_sales by outcome", ["outcome"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
