"""Command line entry point: ``napari-sam2 <command>`` (also ``python -m napari_sam2``).

One module per subcommand, each with an ``add_parser(subparsers)`` that registers its
arguments and sets ``func``; ``main`` only parses and dispatches. To add a subcommand,
write such a module and list it in ``SUBCOMMANDS``. Nothing heavy is imported before a
subcommand runs, so ``--version`` and ``--help`` stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: the subcommand modules, in the order ``--help`` lists them
SUBCOMMANDS: list[str] = ["demo", "track", "track_many", "track_all", "precompute", "cache", "train"]


def build_parser() -> argparse.ArgumentParser:
    from napari_sam2 import __version__

    parser = argparse.ArgumentParser(
        prog="napari-sam2",
        description="SAM 2 segmentation and tracking for napari.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
