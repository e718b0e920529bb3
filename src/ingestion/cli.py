"""The ``ingestion`` command: ``run``, ``check-config``, ``simulate-gateway``, ``status`` and ``watch``.

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
from typing import TYPE_CHECKING, TextIO

from ingestion import __version__

if TYPE_CHECKING:
    from ingestion.config import Settings

# The configuration (pydantic, yaml) is imported by the commands that read one, not at start:
# `ingestion status` must answer within a second of an outage, and those imports took 0.25 s.

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments already; this only keeps its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ingestion",
        description="IB Gateway market data into QuestDB and Valkey.",
        **_example("ingestion run --config config/config.yaml\n  ingestion status\n  ingestion watch"),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run", help="run the daemon", **_example("ingestion run --config config/config.yaml")
    )
    _add_config_option(run)
    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print it, secrets masked",
        **_example("ingestion check-config --config config/config.yaml"),
    )
    _add_config_option(check)
    simulate = commands.add_parser(
        "simulate-gateway",
        help="run the IB Gateway simulator",
        **_example("ingestion simulate-gateway --port 4002 --control-port 4080"),
    )
    _simulator_cli().add_arguments(simulate)
    status = commands.add_parser(
        "status",
        help="the daemon's state for a person; exit 0 healthy, 1 degraded or unhealthy, 3 unreachable",
        **_example("ingestion status\n  ingestion status --json | jq .health.status\n"
                   "  docker exec data-ingestion ingestion status"),
    )  # fmt: skip
    _add_url_option(status)
    status.add_argument("--json", action="store_true", help="the whole state as JSON, for scripts")
    watch = commands.add_parser(
        "watch",
        help="follow the daemon live: one line per state change and alert; Ctrl-C stops",
        **_example("ingestion watch --url http://localhost:8500"),
    )
    _add_url_option(watch)
    return parser


def _example(text: str) -> dict[str, object]:
    return {"epilog": f"example:\n  {text}", "formatter_class": argparse.RawDescriptionHelpFormatter}


def _add_url_option(parser: argparse.ArgumentParser) -> None:
    from ingestion.console import default_url

    parser.add_argument(
        "--url",
        default=default_url(),
        metavar="URL",
        help="the daemon's HTTP API (default: http://localhost:$API_PORT, port 8500 unless set)",
    )


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
    code = EXIT_OK
    try:
        try:
            code = _dispatch(argv)
        except SystemExit as stop:  # argparse after --help, --version or bad arguments
            code = stop.code if isinstance(stop.code, int) else EXIT_OK if stop.code is None else EXIT_USAGE
        sys.stdout.flush()  # here, where a closed pipe can still be caught, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`ingestion check-config | head`): end quietly, as `cat` would, with
        # the command's own exit code when it had one (`ingestion status | head -1` still says 3).
        # Python would report the error again when it flushes stdout at exit: stdout goes to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config, sys.stdout, sys.stderr)
    if args.command == "run":
        return run(args.config)
    if args.command in ("status", "watch"):
        from ingestion import console

        if args.command == "status":
            return console.status(args.url, sys.stdout, as_json=args.json)
        return console.watch(args.url, sys.stdout)
    return simulate_gateway(args)


def simulate_gateway(args: argparse.Namespace) -> int:
    """The simulator logs like the daemon (LOG_LEVEL, LOG_FORMAT), so its container reads the same."""
    from pydantic import ValidationError

    from ingestion.config import LoggingConfig
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
    import yaml

    from ingestion.config import masked_dump

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
    from ingestion.config import ConfigError, load_settings

    try:
        return load_settings(path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=err)
        return None


if __name__ == "__main__":
    sys.exit(main())
