"""`ingestion simulate-gateway`: run the simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from ingestion.simulator.config import DEFAULT_QUOTE_LIMIT, DEFAULT_RATE, DEFAULT_TAPE_LIMIT, SimulatorConfig
from ingestion.simulator.entitlement import Entitlement
from ingestion.simulator.hours import SESSION_CHOICES
from ingestion.simulator.server import running_simulator

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulate-gateway options."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4002, help="TWS API port (default 4002)")
    parser.add_argument("--control-port", type=int, default=4080, help="control HTTP port (default 4080)")
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"total streaming messages per second, 0 = unthrottled (default {DEFAULT_RATE:g})",
    )
    parser.add_argument("--seed", type=int, default=1, help="market model seed (default 1)")
    parser.add_argument("--max-depth-books", type=int, default=3, help="depth books per client (default 3)")
    parser.add_argument(
        "--max-tick-by-tick", type=int, default=3, help="tick-by-tick subscriptions per client (default 3)"
    )
    parser.add_argument(
        "--max-market-data-lines", type=int, default=100, help="reqMktData lines per client (default 100)"
    )
    parser.add_argument(
        "--entitlement",
        choices=[e.value for e in Entitlement],
        default=Entitlement.LIVE.value,
        help="market data the account may see: live, delayed (10167, ticks 66-76) or none (default live)",
    )
    parser.add_argument(
        "--pacing-limit", type=int, default=None, help="requests per second per client before error 100"
    )
    parser.add_argument(
        "--session",
        choices=SESSION_CHOICES,
        default="always",
        help="when the market trades: always (UTC days) or nyse (XNYS, 04:00-20:00 ET) (default always)",
    )
    parser.add_argument(
        "--tape-limit",
        type=int,
        default=DEFAULT_TAPE_LIMIT,
        help=f"trades per symbol kept for history (default {DEFAULT_TAPE_LIMIT:,})",
    )
    parser.add_argument(
        "--quote-limit",
        type=int,
        default=DEFAULT_QUOTE_LIMIT,
        help=f"quotes per symbol kept for BID_ASK/MIDPOINT ticks (default {DEFAULT_QUOTE_LIMIT:,})",
    )
    parser.add_argument("--paused", action="store_true", help="start with the market paused (POST /resume)")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The SimulatorConfig the parsed arguments describe (ValueError when they are inconsistent)."""
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        rate=args.rate,
        seed=args.seed,
        max_depth_books=args.max_depth_books,
        max_tick_by_tick=args.max_tick_by_tick,
        max_market_data_lines=getattr(args, "max_market_data_lines", 100),
        pacing_limit=getattr(args, "pacing_limit", None),
        entitlement=Entitlement(getattr(args, "entitlement", Entitlement.LIVE.value)),
        session=getattr(args, "session", "always"),
        tape_limit=getattr(args, "tape_limit", DEFAULT_TAPE_LIMIT),
        quote_limit=getattr(args, "quote_limit", DEFAULT_QUOTE_LIMIT),
        paused=getattr(args, "paused", False),
    )


async def _serve(config: SimulatorConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_simulator(config) as sim:
            log.info(
                "IB Gateway simulator ready: API %s:%d, control http://%s:%s",
                config.host,
                sim.port,
                config.host,
                sim.control_port,
            )
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad arguments."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        log.error("bad simulator arguments: %s", exc)  # noqa: TRY400  (a usage error, not a crash)
        return 2
    asyncio.run(_serve(config))
    log.info("simulator stopped")
    return 0
