"""The ``captum-paths`` command line.

The CLI only wires the library together; every subcommand is a thin layer over
public functions.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from captum_paths._version import __version__

logger = logging.getLogger("captum_paths")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-paths",
        description=(
            "Discover the influential neuron paths inside vision transformers "
            "(Wang et al., ICLR 2025) with Captum."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="find and score neuron paths of the embedded digits ViT with every method",
        description="Run every path method on the embedded demo model's test images and write records and a summary.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    demo.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_run_demo)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from captum_paths.demo.run import run_demo

    if args.limit is not None and args.limit < 1:
        raise _UsageError(f"--limit must be a positive number of images; got {args.limit}")
    report = run_demo(args.out, limit=args.limit, progress=not args.quiet)
    print(f"report: {report}")
    return 0


class _UsageError(Exception):
    """A user mistake: reported as one line, exit status 2."""


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (_UsageError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"captum-paths {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
