"""The ``captum-paths`` command line.

The CLI only wires the library together; every subcommand is a thin layer over
public functions.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from captum_paths._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-paths",
        description=(
            "Discover the influential neuron paths inside vision transformers "
            "(Wang et al., ICLR 2025) with Captum."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0  # pragma: no cover - subcommands register their own handlers


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
