"""FredPoller against a real local FRED server, with fredapi doing the HTTP and XML for real."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fred_fakes import (
    RATE_LIMITED,
    VALID_KEY,
    DownSink,
    Failure,
    FakeClock,
    FakeFred,
    ListSink,
    RaisingSink,
    RecordingSleep,
)
from pydantic import SecretStr
from structlog.testing import capture_logs

from ingestion.bus import EventBus
from ingestion.config import FredConfig
from ingestion.events import EconomicObservation, IngestionEvent
from ingestion.fred import Backoff, FredPoller, FredState
from ingestion.metrics import Metrics

BusEvents = tuple[EventBus, list[IngestionEvent]]
OBSERVATIONS = "/fred/series/observations"


def _config(fake: FakeFred, **overrides: object) -> FredConfig:
    values: dict[str, object] = {
        "api_key": SecretStr(VALID_KEY),
        "series": ("DGS10", "UNRATE"),
        "base_url": fake.base_url,
        "lookback_days": 7,
        "interval_seconds": 3600,
    }
    values.update(overrides)
    return FredConfig.model_validate(values)


def _poller(
    fake: FakeFred,
    tmp_path: Path,
    sink: object,
    bus: EventBus | None = None,
    *,
    sleep: RecordingSleep | None = None,
    clock: FakeClock | None = None,
    metrics: Metrics | None = None,
    **config: object,
) -> FredPoller:
    clock = clock or FakeClock()
    return FredPoller(
        _config(fake, **config),
        sink,  # type: ignore[arg-type]
        bus or EventBus(),
        metrics or Metrics(),
        tmp_path / "fred-state.json",
        sleep=sleep or RecordingSleep(clock),
        clock=clock,
        monotonic=clock,
        backoff=Backoff(initial=1.0, maximum=4.0, jitter=0.0),
        request_timeout=0.5,
        max_attempts=3,
    )


def _midnight_ns(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


class TestIncrementalFetch:
    async def test_first_poll_stores_every_observation_but_missing_values(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """The first poll hands the whole history to the sink, skipping FRED's '.' instead of storing 0."""
        sink = ListSink()
        await _poller(fake_fred, tmp_path, sink).poll_once()

        dgs10 = [e for e in sink.events if isinstance(e, EconomicObservation) and e.series_id == "DGS10"]
        assert dgs10 == [
            EconomicObservation("DGS10", _midnight_ns("2026-02-23"), 4.05),
            EconomicObservation("DGS10", _midnight_ns("2026-02-24"), 4.07),
            EconomicObservation("DGS10", _midnight_ns("2026-02-26"), 4.01),
        ]

    async def test_first_poll_asks_for_the_whole_history(self, fake_fred: FakeFred, tmp_path: Path) -> None:
        """With nothing stored yet, the observations request carries no observation_start."""
        await _poller(fake_fred, tmp_path, ListSink()).poll_once()

        (request,) = fake_fred.observation_requests("DGS10")
        assert "observation_start" not in request.params

    async def test_second_poll_asks_only_from_newest_stored_minus_lookback(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """After storing up to 2026-02-26 with a 7-day look-back, the next request starts 2026-02-19."""
        poller = _poller(fake_fred, tmp_path, ListSink())
        await poller.poll_once()
        await poller.poll_once()

        second = fake_fred.observation_requests("DGS10")[1]
        assert second.params["observation_start"] == "2026-02-19"

    async def test_restart_with_the_same_state_file_does_not_refetch_history(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """A new poller on the same state file starts from the persisted mark, not from 1776."""
        await _poller(fake_fred, tmp_path, ListSink()).poll_once()
        restarted = _poller(fake_fred, tmp_path, ListSink())
        await restarted.poll_once()

        after_restart = fake_fred.observation_requests("UNRATE")[1]
        assert after_restart.params["observation_start"] == "2025-12-25"
        assert restarted.status()["series"]["UNRATE"]["newest_observation"] == "2026-01-01"

    async def test_state_file_holds_the_newest_stored_date_of_each_series(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """The high-water marks are readable JSON, one date per series."""
        await _poller(fake_fred, tmp_path, ListSink()).poll_once()

        state = json.loads((tmp_path / "fred-state.json").read_text())
        assert state["series"] == {
            "DGS10": {"newest_observation": "2026-02-26"},
            "UNRATE": {"newest_observation": "2026-01-01"},
        }

    async def test_observations_are_counted_per_series(self, fake_fred: FakeFred, tmp_path: Path) -> None:
        """ingestion_fred_observations counts what was handed to storage, by series."""
        metrics = Metrics()
        await _poller(fake_fred, tmp_path, ListSink(), metrics=metrics).poll_once()

        value = metrics.registry.get_sample_value("ingestion_fred_observations_total", {"series": "DGS10"})
        assert value == 3


class TestStorageTrouble:
    async def test_a_raising_sink_does_not_advance_the_state_file(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """Observations the sink refused are not marked stored: no state is written."""
        poller = _poller(fake_fred, tmp_path, RaisingSink())
        await poller.poll_once()

        assert not (tmp_path / "fred-state.json").exists()
        assert "storage did not take" in poller.status()["series"]["DGS10"]["last_error"]
        assert poller.status()["state"] == "error"

    async def test_refused_observations_are_fetched_again_and_stored_next_poll(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """After a refusal the next poll asks again from scratch and a working sink gets everything."""
        await _poller(fake_fred, tmp_path, RaisingSink()).poll_once()
        sink = ListSink()
        poller = _poller(fake_fred, tmp_path, sink)
        await poller.poll_once()

        requests = fake_fred.observation_requests("DGS10")
        assert ["observation_start" in r.params for r in requests] == [False, False]
        assert len(sink.events) == 5
        assert poller.status()["series"]["DGS10"]["newest_observation"] == "2026-02-26"

    async def test_a_sink_reporting_down_is_not_handed_observations(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """A sink whose status() is "down" gets nothing and the marks stay where they were."""
        sink = DownSink()
        poller = _poller(fake_fred, tmp_path, sink)
        await poller.poll_once()

        assert sink.events == []
        assert not (tmp_path / "fred-state.json").exists()
        assert "storage is down" in poller.status()["series"]["UNRATE"]["last_error"]


class TestStatus:
    async def test_status_exposes_series_metadata_and_progress(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """After a poll, /health sees FRED's metadata, the newest stored date and the count written."""
        poller = _poller(fake_fred, tmp_path, ListSink())
        await poller.poll_once()

        assert poller.status()["series"]["DGS10"] == {
            "title": "Market Yield on U.S. Treasury Securities at 10-Year Constant Maturity",
            "units": "Percent",
            "frequency": "Daily",
            "last_updated": "2026-02-27 16:18:03-06",
            "observation_end": "2026-02-26",
            "newest_observation": "2026-02-26",
            "observations_written": 3,
            "last_error": None,
        }

    async def test_status_reports_ok_and_the_poll_time(self, fake_fred: FakeFred, tmp_path: Path) -> None:
        """A clean poll leaves state "ok" with last_poll_at from the injected clock, in UTC."""
        poller = _poller(fake_fred, tmp_path, ListSink(), clock=FakeClock(1_772_438_400.0))
        await poller.poll_once()

        status = poller.status()
        assert (status["state"], status["reason"]) == ("ok", None)
        assert status["last_poll_at"] == "2026-03-02T08:00:00+00:00"

    async def test_status_is_json_serialisable(self, fake_fred: FakeFred, tmp_path: Path) -> None:
        """The snapshot goes straight into the /health body."""
        poller = _poller(fake_fred, tmp_path, ListSink())
        await poller.poll_once()

        json.dumps(poller.status())


class TestUnknownSeries:
    async def test_an_unknown_series_fails_alone(
        self, fake_fred: FakeFred, tmp_path: Path, bus_events: BusEvents
    ) -> None:
        """FRED's "series does not exist" marks that series failed; the others are stored."""
        bus, events = bus_events
        sink = ListSink()
        poller = _poller(fake_fred, tmp_path, sink, bus, series=("NOSUCH1", "UNRATE"))
        await poller.poll_once()

        status = poller.status()
        assert "FRED does not know this series" in status["series"]["NOSUCH1"]["last_error"]
        assert status["series"]["UNRATE"]["observations_written"] == 2
        assert status["state"] == "error"
        assert [e.event for e in events] == ["fred_poll_failed"]
        assert "NOSUCH1" in events[0].detail

    async def test_an_unknown_series_is_not_retried_within_a_poll(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """A 400 is FRED's verdict, not a transient failure: one request, no backoff sleep."""
        sleep = RecordingSleep()
        await _poller(fake_fred, tmp_path, ListSink(), sleep=sleep, series=("NOSUCH1",)).poll_once()

        assert len(fake_fred.received) == 1
        assert sleep.delays == []


class TestRetries:
    async def test_rate_limited_requests_are_retried_with_growing_delays(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """Two 429s, then success: backoff sleeps 1 s then 2 s and the observations are stored."""
        fake_fred.fail_next(OBSERVATIONS, Failure(429, RATE_LIMITED), Failure(429, RATE_LIMITED))
        sleep = RecordingSleep()
        sink = ListSink()
        poller = _poller(fake_fred, tmp_path, sink, sleep=sleep, series=("UNRATE",))
        await poller.poll_once()

        assert sleep.delays == [1.0, 2.0]
        assert len(sink.events) == 2
        assert poller.status()["state"] == "ok"

    async def test_persistent_rate_limiting_ends_the_poll_in_error(
        self, fake_fred: FakeFred, tmp_path: Path, bus_events: BusEvents
    ) -> None:
        """After max_attempts 429s the poll gives up, says why, and publishes fred_poll_failed."""
        bus, events = bus_events
        fake_fred.fail_next(OBSERVATIONS, *[Failure(429, RATE_LIMITED)] * 3)
        poller = _poller(fake_fred, tmp_path, ListSink(), bus, series=("UNRATE",))
        await poller.poll_once()

        status = poller.status()
        assert status["state"] == "error"
        assert "FRED unavailable after 3 attempts" in status["reason"]
        assert "429" in status["series"]["UNRATE"]["last_error"]
        assert [e.event for e in events] == ["fred_poll_failed"]

    async def test_network_errors_are_retried_then_reported(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """Connection refused is retried with backoff, then the poll ends in error (not a crash)."""
        sleep = RecordingSleep()
        poller = _poller(fake_fred, tmp_path, ListSink(), sleep=sleep, base_url="http://127.0.0.1:9/fred")
        await poller.poll_once()

        assert sleep.delays == [1.0, 2.0]
        assert poller.status()["state"] == "error"
        assert "Connection refused" in poller.status()["reason"]

    async def test_a_slow_answer_times_out_and_is_retried(self, fake_fred: FakeFred, tmp_path: Path) -> None:
        """A response slower than the request timeout is abandoned and the retry succeeds."""
        fake_fred.fail_next(OBSERVATIONS, Failure(delay=3.0))
        sink = ListSink()
        sleep = RecordingSleep()
        await _poller(fake_fred, tmp_path, sink, sleep=sleep, series=("UNRATE",)).poll_once()

        assert sleep.delays == [1.0]
        assert len(sink.events) == 2

    async def test_a_slow_answer_does_not_block_the_event_loop(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """While fredapi waits on a slow FRED in its thread, other tasks keep running."""
        fake_fred.fail_next(OBSERVATIONS, Failure(delay=3.0))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        try:
            await _poller(fake_fred, tmp_path, ListSink(), series=("UNRATE",)).poll_once()
        finally:
            ticking.cancel()
        # The request timeout is 0.5 s: a free loop ticks dozens of times, a blocked one once.
        assert ticks > 10


class TestApiKey:
    async def test_without_a_key_fred_is_disabled_with_one_warning(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """No key: run() logs one warning, returns without a request, and status says why."""
        poller = _poller(fake_fred, tmp_path, ListSink(), api_key=None)
        with capture_logs() as logs:
            await poller.run()

        assert [(entry["log_level"], "FRED disabled" in entry["event"]) for entry in logs] == [
            ("warning", True)
        ]
        assert fake_fred.received == []
        status = poller.status()
        assert status["state"] == "disabled"
        assert "FRED_API_KEY" in status["reason"]

    async def test_a_rejected_key_stops_polling(
        self, fake_fred: FakeFred, tmp_path: Path, bus_events: BusEvents
    ) -> None:
        """FRED's "api_key is not registered" ends run(): one request, no retry, no interval sleep."""
        bus, events = bus_events
        sleep = RecordingSleep()
        poller = _poller(fake_fred, tmp_path, ListSink(), bus, sleep=sleep, api_key="x" * 28 + "9876")
        await asyncio.wait_for(poller.run(), timeout=5)

        assert len(fake_fred.received) == 1
        assert sleep.delays == []
        assert poller.state is FredState.KEY_REJECTED
        assert [(e.event, e.alert) for e in events] == [("fred_key_rejected", True)]

    async def test_a_rejected_key_is_named_masked(
        self, fake_fred: FakeFred, tmp_path: Path, bus_events: BusEvents, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The error names the problem and the key's last 4 characters; the full key appears nowhere."""
        bad_key = "badkey0123456789badkey0123459876"
        bus, events = bus_events
        poller = _poller(fake_fred, tmp_path, ListSink(), bus, api_key=bad_key)
        with capture_logs() as logs:
            await poller.run()

        status = poller.status()
        assert status["state"] == "key_rejected"
        assert "FRED rejected the API key ****9876" in status["reason"]
        assert "not registered" in status["reason"]
        seen = json.dumps(status) + repr(logs) + repr(events) + "".join(capsys.readouterr())
        assert "FRED rejected the API key" in repr(logs)
        assert bad_key not in seen

    async def test_the_key_never_appears_while_retrying(
        self, fake_fred: FakeFred, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Retry warnings and poll errors mention the failure, never the key sent in the URL."""
        fake_fred.fail_next(OBSERVATIONS, *[Failure(429, RATE_LIMITED)] * 3)
        poller = _poller(fake_fred, tmp_path, ListSink(), series=("UNRATE",))
        with capture_logs() as logs:
            await poller.poll_once()

        assert any(entry["event"] == "FRED request failed, retrying" for entry in logs)
        seen = json.dumps(poller.status()) + repr(logs) + "".join(capsys.readouterr())
        assert VALID_KEY not in seen


class TestRun:
    async def test_run_polls_at_start_then_every_interval(self, fake_fred: FakeFred, tmp_path: Path) -> None:
        """run() polls, sleeps interval_seconds, polls again; next_poll_at says when."""
        clock = FakeClock(1_772_438_400.0)
        sleep = RecordingSleep(clock, block_after=1)
        poller = _poller(fake_fred, tmp_path, ListSink(), sleep=sleep, clock=clock, series=("UNRATE",))
        running = asyncio.create_task(poller.run())
        await asyncio.wait_for(sleep.blocked.wait(), timeout=5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

        assert sleep.delays == [3600, 3600]
        assert len(fake_fred.observation_requests("UNRATE")) == 2
        assert poller.status()["next_poll_at"] == "2026-03-02T10:00:00+00:00"

    async def test_cancelling_run_propagates(self, fake_fred: FakeFred, tmp_path: Path) -> None:
        """Cancellation is not swallowed: the task ends cancelled."""
        sleep = RecordingSleep(block_after=0)
        running = asyncio.create_task(_poller(fake_fred, tmp_path, ListSink(), sleep=sleep).run())
        await asyncio.wait_for(sleep.blocked.wait(), timeout=5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert running.cancelled()


class TestEdgeCases:
    async def test_a_window_of_only_missing_values_stores_nothing_and_keeps_the_mark(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """When FRED has only '.' since the mark, nothing is stored, the mark stays, and the poll is ok."""
        poller = _poller(fake_fred, tmp_path, ListSink(), series=("DGS10",), lookback_days=0)
        await poller.poll_once()
        fake_fred.series["DGS10"].observations = [("2026-02-27", ".")]
        sink = ListSink()
        again = _poller(fake_fred, tmp_path, sink, series=("DGS10",), lookback_days=0)
        await again.poll_once()

        assert sink.events == []
        assert again.status()["state"] == "ok"
        assert again.status()["series"]["DGS10"]["newest_observation"] == "2026-02-26"

    async def test_a_corrupt_state_file_means_refetching_history(
        self, fake_fred: FakeFred, tmp_path: Path
    ) -> None:
        """An unreadable state file is logged and the poller starts over (DEDUP makes that harmless)."""
        (tmp_path / "fred-state.json").write_text("{not json")
        with capture_logs() as logs:
            poller = _poller(fake_fred, tmp_path, ListSink(), series=("UNRATE",))
            await poller.poll_once()

        assert any("FRED state file unreadable" in entry["event"] for entry in logs)
        assert "observation_start" not in fake_fred.observation_requests("UNRATE")[0].params
        assert poller.status()["series"]["UNRATE"]["newest_observation"] == "2026-01-01"
