"""FRED macro series into ``economic_data``: see :class:`FredPoller`."""

from ingestion.fred.client import mask_key
from ingestion.fred.pacing import Backoff, RequestLimiter
from ingestion.fred.poller import FredPoller, FredState, ObservationSink

__all__ = ["Backoff", "FredPoller", "FredState", "ObservationSink", "RequestLimiter", "mask_key"]
