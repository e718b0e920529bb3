"""api: health, subscriptions, metrics and the status page, served by uvicorn in the daemon's own loop."""

from ingestion.api.routes import create_app
from ingestion.api.server import ApiPortInUseError, ApiServer

__all__ = ["ApiPortInUseError", "ApiServer", "create_app"]
