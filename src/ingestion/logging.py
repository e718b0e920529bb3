"""Logging set-up: structlog, one JSON object a line when not on a TTY, colored console on one.

Every line carries an ISO 8601 UTC ``timestamp``, ``level``, ``component`` and ``event``.
Above ``error`` sits ``alert``: ``alert(log, "IBKR Connection Lost at ...")`` renders with
``"level": "alert"`` and an event text that starts with ``ALERT``, so that
``docker logs ... | grep ALERT`` finds every alert and nothing else. It is a function rather
than a logger method so that it works with any structlog configuration, including none: an
alert must never be the thing that crashes the component raising it.

Standard-library loggers (ib_async, uvicorn, httpx) are routed through the same renderer, so
``docker logs`` never mixes formats.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]
ALERT_LEVEL_NAME = "alert"
ALERT_PREFIX = "ALERT"
_ALERT_FLAG = "_alert"

# Third-party loggers whose INFO lines repeat what our own components log with more context.
QUIET_LOGGERS = {
    "ib_async.wrapper": logging.CRITICAL,  # every IB error reply; ibkr/ logs them with their meaning
    "ib_async.client": logging.CRITICAL,  # connect failures; the supervisor explains them with the fix
    "ib_async.ib": logging.WARNING,
    "ib_insync": logging.WARNING,
    "uvicorn.access": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "asyncio": logging.WARNING,
}


def get_logger(component: str) -> Any:
    """A logger whose lines say which part of the service wrote them."""
    return structlog.get_logger(component=component)


def alert(logger: Any, event: str, **kw: Any) -> None:
    """Log ``event`` at the ``alert`` level (above error; never filtered out)."""
    logger.critical(event, **{_ALERT_FLAG: True, **kw})


def promote_alerts(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Turn lines logged with :func:`alert` into ``level=alert`` and ``ALERT ...`` text."""
    if event_dict.pop(_ALERT_FLAG, False):
        event_dict["level"] = ALERT_LEVEL_NAME
        event = str(event_dict.get("event", ""))
        if not event.startswith(ALERT_PREFIX):
            event_dict["event"] = f"{ALERT_PREFIX} {event}"
    return event_dict


def shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        promote_alerts,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def choose_renderer(fmt: LogFormat, stream: TextIO) -> Processor:
    """JSON for machines (``docker logs``), colored key=value for a person at a terminal."""
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    if use_console:
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer()


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library once, at process start (``main`` only)."""
    out = stream or sys.stdout
    min_level = logging.getLevelNamesMapping()[level.upper()]
    renderer = choose_renderer(fmt, out)
    structlog.configure(
        processors=[*shared_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    _route_standard_library(min_level, renderer, out)


def _route_standard_library(min_level: int, renderer: Processor, out: TextIO) -> None:
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared_processors()],
            processors=[
                _name_as_component,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(min_level)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, min_level))


def _name_as_component(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    name = event_dict.pop("logger", None)
    if name and "component" not in event_dict:
        event_dict["component"] = name
    return event_dict
