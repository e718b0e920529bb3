"""What the HTTP API reads of a daemon: a structural type, so that api/ never imports app.py.

``ingestion.app.Daemon`` has these attributes (and more); the API only reads them.
"""

from __future__ import annotations

from typing import Protocol

from ingestion.alerts import AlertLog, WebhookNotifier
from ingestion.health import HealthReporter
from ingestion.ibkr.normalise import Normaliser
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.live_events import EventFeed
from ingestion.metrics import Metrics
from ingestion.pipeline import Pipeline
from ingestion.sinks.questdb import QuestDBWriter
from ingestion.timeline import ConnectionTimeline


class DaemonParts(Protocol):
    @property
    def health(self) -> HealthReporter: ...
    @property
    def registry(self) -> SubscriptionRegistry: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def questdb(self) -> QuestDBWriter: ...
    @property
    def normaliser(self) -> Normaliser: ...
    @property
    def alert_log(self) -> AlertLog: ...
    @property
    def webhooks(self) -> WebhookNotifier: ...
    @property
    def feed(self) -> EventFeed: ...
    @property
    def timeline(self) -> ConnectionTimeline: ...
