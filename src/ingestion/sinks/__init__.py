"""Sinks at the end of the pipeline: QuestDB (durable, exactly once or counted) and the Valkey cache."""

from ingestion.sinks.base import Sink, SinkStatus
from ingestion.sinks.questdb import QuestDBWriter
from ingestion.sinks.schema import SchemaMismatchError
from ingestion.sinks.valkey import ValkeyCache

__all__ = ["QuestDBWriter", "SchemaMismatchError", "Sink", "SinkStatus", "ValkeyCache"]
