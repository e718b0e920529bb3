"""What the daemon's IB side costs per message, from socket bytes to events (run by hand).

    .venv/bin/python bench/bench_normalise.py

A real ib_async client, past its handshake and with nothing on the network, is wired exactly as the
supervisor wires each new connection (sliced reads, the normaliser's market-data handlers) for the
bench universe: Level 1 with RTVolume for 15 ETFs, depth for 3, tick-by-tick for 3. Reads of 8 KiB
of the realistic mix below are handed to its connection as asyncio would hand them, and the
normalised events go to a list, as the pipeline's ``put`` takes them. Prints microseconds of CPU per
message and events per message. The event loop's share of a message at saturation is this plus the
sinks' share; the bare client's (bench/bare_client.py --sliced) is the framing and ib_async's own
decoding.
"""

from __future__ import annotations

import argparse
import time

from bench_socket_reads import past_handshake
from harness import DEPTH_SYMBOLS, ETFS, TBT_SYMBOLS
from ib_async import IB, Stock

from ingestion.bus import EventBus
from ingestion.config import LimitsConfig, Settings, SymbolConfig
from ingestion.events import MarketEvent, ReceiveClock
from ingestion.ibkr.normalise import Normaliser, tap_market_data
from ingestion.ibkr.reads import bound_socket_reads
from ingestion.ibkr.subscriptions import SubscriptionRegistry
from ingestion.metrics import Metrics
from ingestion.simulator.protocol import encode

SYMBOLS, DEPTH, TICK_BY_TICK = ETFS, DEPTH_SYMBOLS, TBT_SYMBOLS
L1_ID, DEPTH_ID, TBT_ID = 1000, 2000, 3000
READ = 8192


def mix_frames(rounds: int) -> list[bytes]:
    """``rounds`` rounds of, per symbol, the messages IB sends for a quote change, a trade and depth."""
    out: list[bytes] = []
    ms = 1_795_000_000_000
    for r in range(rounds):
        for i, symbol in enumerate(SYMBOLS):
            req = L1_ID + i
            cents = 50_000 + (r * 7 + i) % 40
            bid, ask, last = f"{cents / 100:.2f}", f"{(cents + 1) / 100:.2f}", f"{(cents + r % 2) / 100:.2f}"
            out += [encode((1, 6, req, 1, bid, 300 + r % 5, 0)), encode((2, 6, req, 0, 300 + r % 5))]
            out += [encode((1, 6, req, 2, ask, 200 + r % 3, 0)), encode((2, 6, req, 3, 200 + r % 3))]
            out += [
                encode((1, 6, req, 4, last, 100, 0)),
                encode((2, 6, req, 5, 100)),
                encode((2, 6, req, 8, 10_000 + r)),
            ]
            if symbol in TICK_BY_TICK:
                out.append(encode((99, TBT_ID + i, 2, (ms + r) // 1000, last, 100, 0, "ARCA", "")))
            else:
                out.append(encode((46, 6, req, 48, f"{last};100;{ms + r};{10_000 + r};{last};true")))
            if symbol in DEPTH:
                for position in range(4):
                    side, operation = position % 2, 1 if r else 0
                    out.append(
                        encode((13, 1, DEPTH_ID + i, position, "ARCA", operation, side, bid, 100 + r % 9, 1))
                    )
    return out


def wired_client(events: list[MarketEvent]) -> IB:
    """An IB past its handshake with the bench universe's streams routed, wired as the supervisor does."""
    universe = tuple(
        SymbolConfig(
            symbol=s,
            data=("l1", "time_and_sales", "l2") if s in DEPTH else ("l1", "time_and_sales"),
        )
        for s in SYMBOLS
    )
    settings = Settings(universe=universe, limits=LimitsConfig(max_depth_books=3, max_tick_by_tick=3))
    registry = SubscriptionRegistry(settings, EventBus(), Metrics())
    for i, symbol in enumerate(SYMBOLS):
        streams = registry.streams[symbol]
        streams.contract = Stock(symbol, "SMART", "USD", conId=i + 1)
        tas = streams.time_and_sales
        assert tas is not None
        tas.source = "tick_by_tick" if symbol in TICK_BY_TICK else "rtvolume"
        registry.record_request(L1_ID + i, symbol, "l1")
        if symbol in DEPTH:
            registry.record_request(DEPTH_ID + i, symbol, "l2")
        if symbol in TICK_BY_TICK:
            registry.record_request(TBT_ID + i, symbol, "tick_by_tick")
    ib = past_handshake(IB())
    normaliser = Normaliser(registry, events.extend, ReceiveClock(), Metrics())
    tap_market_data(ib, normaliser)
    bound_socket_reads(ib)
    return ib


def run(seconds: float) -> tuple[float, float]:
    frames = mix_frames(200)
    stream = b"".join(frames)
    reads = [stream[i : i + READ] for i in range(0, len(stream), READ)]
    events: list[MarketEvent] = []
    ib = wired_client(events)
    per_pass = len(frames)
    started = time.process_time()
    passes = 0
    while time.process_time() - started < seconds:
        for read in reads:
            ib.client.conn.data_received(read)
        passes += 1
        if passes == 1:
            per_event = per_pass and len(events) / per_pass
        events.clear()
    elapsed = time.process_time() - started
    messages = passes * per_pass
    return elapsed / messages * 1e6, per_event


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="CPU seconds per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        us, per_message = run(args.seconds)
        print(f"{us:.2f} us of CPU per message, {per_message:.3f} events per message")


if __name__ == "__main__":
    main()
