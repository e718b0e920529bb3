"""Log lines: one JSON object per line off a TTY, ALERT lines findable with grep."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from ingestion.logging import alert, configure_logging, get_logger


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_timestamp_level_component_event() -> None:
    """Off a TTY, each line is a JSON object with an ISO UTC timestamp, level, component and event."""
    out = io.StringIO()
    configure_logging("INFO", "auto", out)
    get_logger("ibkr").info("Connected to IBKR at gw:4002", server_version=178)
    (line,) = lines(out)
    assert line["event"] == "Connected to IBKR at gw:4002"
    assert line["level"] == "info"
    assert line["component"] == "ibkr"
    assert line["timestamp"].endswith("Z")
    assert line["server_version"] == 178


def test_alert_level_is_above_error_and_greppable() -> None:
    """`alert()` gives level "alert" and an event that starts with ALERT, even at level CRITICAL."""
    out = io.StringIO()
    configure_logging("CRITICAL", "json", out)
    log = get_logger("ibkr")
    log.error("not shown at CRITICAL")
    alert(log, "IBKR Connection Lost at 2026-11-23T14:30:00Z")
    (line,) = lines(out)
    assert line["level"] == "alert"
    assert line["event"] == "ALERT IBKR Connection Lost at 2026-11-23T14:30:00Z"
    assert "ALERT" in out.getvalue()


def test_only_alerts_contain_the_word_alert() -> None:
    """grep ALERT finds alerts and nothing else."""
    out = io.StringIO()
    configure_logging("DEBUG", "json", out)
    log = get_logger("x")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert "ALERT" not in out.getvalue()


def test_level_filters_lower_lines() -> None:
    """At WARNING, info lines are not written."""
    out = io.StringIO()
    configure_logging("WARNING", "json", out)
    get_logger("x").info("quiet")
    get_logger("x").warning("loud")
    assert [line["event"] for line in lines(out)] == ["loud"]


def test_standard_library_loggers_are_rendered_as_json_too() -> None:
    """Lines from ib_async or uvicorn come out in the same JSON shape, named by their logger."""
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    logging.getLogger("uvicorn.error").warning("port %d busy", 8500)
    (line,) = lines(out)
    assert line == {**line, "event": "port 8500 busy", "level": "warning", "component": "uvicorn.error"}


def test_console_format_on_a_tty() -> None:
    """On a terminal, lines are for people, not JSON."""
    out = FakeTty()
    configure_logging("INFO", "auto", out)
    get_logger("x").info("hello people")
    text = out.getvalue()
    assert "hello people" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_log_format_json_wins_over_a_tty() -> None:
    """LOG_FORMAT=json forces JSON even on a terminal."""
    out = FakeTty()
    configure_logging("INFO", "json", out)
    get_logger("x").info("machine")
    assert lines(out)[0]["event"] == "machine"


def test_alert_works_without_any_logging_configuration() -> None:
    """Components raise alerts before (or without) configure_logging; that must never raise."""
    structlog.reset_defaults()
    alert(get_logger("x"), "no configuration yet")
