"""Market-data ingestion service: IB Gateway -> QuestDB + Valkey, with FRED macro series."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ingestion")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
