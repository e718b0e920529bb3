"""Nothing lost between gateway and sink: the sink's counts equal the simulator's own."""

from __future__ import annotations

import asyncio
import os

import pytest
from ibkr_harness import ibkr_stack, wait_for

from ingestion.simulator.config import SimulatorConfig

RUN_SECONDS = float(os.environ.get("INGESTION_EXACTNESS_SECONDS", "60"))


@pytest.mark.slow
async def test_trades_and_depth_reaching_the_sink_equal_the_simulators_counts() -> None:
    """Over a 60 s run at 3,000 messages/s, every trade (tick-by-tick for 3 symbols, RTVolume for
    12) and every depth message the simulator sent reaches the sink exactly once, with strictly
    increasing receive timestamps, and every symbol has Level 1 quotes."""
    async with ibkr_stack(SimulatorConfig(port=0, control_port=0, rate=3000)) as stack:
        await wait_for(lambda: stack.registry.counts()["active"] == 33, 10, "subscription")
        await asyncio.sleep(RUN_SECONDS)
        await stack.post("/pause")
        sent = (await stack.stats())["sent"]["by_symbol"]

        def expected_trades(symbol: str) -> int:
            counts = sent[symbol]
            source = stack.registry.streams[symbol].time_and_sales.source
            return counts["tick_by_tick_all_last"] if source == "tick_by_tick" else counts["rtvolume"]

        expected = {s: (expected_trades(s), sent[s]["depth"]) for s in stack.registry.streams}
        await wait_for(
            lambda: {s: (stack.sink.trades[s], stack.sink.depth[s]) for s in expected} == expected,
            10,
            "catch-up",
        )
        assert sum(t for t, _ in expected.values()) > 1000, "the run carried real volume"
        assert sum(d for _, d in expected.values()) > 1000
        assert all(stack.sink.quotes[s] > 0 for s in expected)
        assert stack.sink.timestamps_increasing
        assert stack.pipeline.dropped == 0
