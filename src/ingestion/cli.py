"""The ``ingestion`` command: ``run``, ``check-config`` and ``simulate-gateway``.

Exit codes (CONTRACTS.md): 0 clean stop, 2 bad configuration or arguments, 1 anything else.
This is the only module that reads the process environment for configuration, configures
logging or chooses an exit code; everything below it takes a ``Settings`` object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import yaml
from pydantic import ValidationError

from ingestion import __version__
from ingestion.config import ConfigError, LoggingConfig, Settings, load_settings, masked_dump

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments already; this only keeps its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ingestion", description="IB Gateway market data into QuestDB and Valkey.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the daemon")
    _add_config_option(run)
    check = commands.add_parser(
        "check-config", help="validate the configuration and print it, secrets masked"
    )
    _add_config_option(check)
    simulate = commands.add_parser("simulate-gateway", help="run the IB Gateway simulator")
    _simulator_cli().add_arguments(simulate)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="YAML file (default: $INGESTION_CONFIG, else config/config.yaml)",
    )


def _simulator_cli():
    from ingestion.simulator import cli

    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config, sys.stdout, sys.stderr)
    if args.command == "run":
        return run(args.config)
    return simulate_gateway(args)


def simulate_gateway(args: argparse.Namespace) -> int:
    """The simulator logs like the daemon (LOG_LEVEL, LOG_FORMAT), so its container reads the same."""
    from ingestion.logging import configure_logging

    try:
        chosen = LoggingConfig(
            level=os.environ.get("LOG_LEVEL", "INFO"),  # type: ignore[arg-type]
            format=os.environ.get("LOG_FORMAT", "auto"),  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            print(f"config error: logging.{error['loc'][0]}: {error['msg']}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(chosen.level, chosen.format)
    return _simulator_cli().run(args)


def check_config(path: Path | None, out: TextIO, err: TextIO) -> int:
    """Print the effective configuration (secrets masked) or one line per problem."""
    settings = _load_or_report(path, err)
    if settings is None:
        return EXIT_USAGE
    yaml.safe_dump(masked_dump(settings), out, sort_keys=False, default_flow_style=None, width=110)
    return EXIT_OK


def run(path: Path | None) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    settings = _load_or_report(path, sys.stderr)
    if settings is None:
        return EXIT_USAGE
    from ingestion.app import serve
    from ingestion.logging import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.pipeline.event_loop)) as runner:
            return runner.run(serve(settings))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down: leave at once
        return EXIT_OK


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop ``pipeline.event_loop`` asks for; None is asyncio's own.

    Why uvloop by default: the daemon is one event loop, and every tick's way to Valkey waits for
    whatever else that loop is doing. With uvloop (and httptools under uvicorn) the daemon used 15-25 %
    less CPU on the bench mix at 10,000 msgs/s, and the share of cache writes within 5 ms rose from
    98.2-98.9 % to 99.4-99.8 % for the latest quotes (docs/PERFORMANCE.md, eleventh round).
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":  # the configuration refuses this; kept for callers that skip it
            raise
        return None
    return uvloop.new_event_loop


def _load_or_report(path: Path | None, err: TextIO) -> Settings | None:
    try:
        return load_settings(path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=err)
        return None


if __name__ == "__main__":
    sys.exit(main())
