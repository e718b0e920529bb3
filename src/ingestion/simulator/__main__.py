"""`python -m ingestion.simulator`: the simulator without the main CLI."""

from __future__ import annotations

import argparse
import sys

from ingestion.simulator.cli import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestion.simulator", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
