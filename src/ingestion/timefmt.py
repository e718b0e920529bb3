"""Times as the service shows them (/health, logs, Valkey): ISO 8601 UTC, milliseconds, ``Z``.

>>> iso_ns(1_763_900_000_123_456_789)
'2025-11-23T12:13:20.123Z'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ns(timestamp_ns: int | None) -> str | None:
    """Nanoseconds since the epoch; integer arithmetic, so no float rounding at the millisecond."""
    if timestamp_ns is None:
        return None
    return iso(EPOCH + timedelta(microseconds=timestamp_ns // 1000))
