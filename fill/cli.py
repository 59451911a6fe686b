"""``oca-fill``: command-line entry of the fill planner.

The planner itself lands with its own issue; until then the command answers
``--help`` and ``--version`` and says plainly that ``plan`` is not built yet.
"""

from __future__ import annotations

import argparse
import sys

from oca import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="oca-fill",
        description="Plan per-appliance fill manifests from popularity, catalog and topology.")
    parser.add_argument("--version", action="version", version=f"oca-fill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("plan", help="write fill manifests (not built yet)", add_help=True)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    print("oca-fill: `plan` is not built yet in this version", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
