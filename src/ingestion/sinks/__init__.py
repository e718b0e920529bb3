"""Sinks at the end of the pipeline: QuestDB (durable, exactly once or counted) and the Valkey cache.

Import from the modules themselves (``ingestion.sinks.questdb``, ``ingestion.sinks.valkey``, ...). The
package imports nothing on its own, so the ILP writer process (ilp_process.py) loads the QuestDB client
and its few modules, not Valkey, httpx and the configuration models: with ilp.LinkSettings, 25 MB of
anonymous memory at its start instead of 42.
"""
