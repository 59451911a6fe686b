"""``oca-fill``: the fill planner's command line. Parses arguments and calls
library functions; exit codes 0 ok, 1 operational error (bad input files), 2 usage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from oca import __version__
from oca.errors import OcaError, UsageError
from oca.units import parse_duration

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(EXIT_USAGE, f"oca-fill: error: {message} (see `{self.prog} --help`)\n")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="oca-fill",
                description="Plan per-appliance fill manifests from popularity, catalog and "
                            "fleet topology; evaluate the planner on request traces.")
    p.add_argument("--version", action="version", version=f"oca-fill {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress log on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sp = sub.add_parser("plan", help="write tonight's fill manifests")
    sp.add_argument("--catalog", required=True, type=Path, help="catalog CSV (id,size,...)")
    sp.add_argument("--logs", required=True, nargs="+", type=Path, metavar="LOG",
                    help="access-log JSONL files (plain or .gz)")
    sp.add_argument("--topology", required=True, type=Path, help="fleet topology JSON")
    sp.add_argument("--out", required=True, type=Path, help="folder for the manifests")
    sp.add_argument("--previous", type=Path, metavar="DIR",
                    help="last night's manifests: keep churn low")
    sp.add_argument("--now", type=float, metavar="EPOCH",
                    help="pin the clock (reproducible plans); default: now")
    sp.add_argument("--half-life", type=_duration, metavar="DURATION",
                    help="popularity half-life (default 1d)")
    sp.add_argument("--hints", type=Path, metavar="CSV",
                    help="forecast hints: id_or_title,expected_requests_per_day")
    sp.add_argument("--churn", type=_fraction, metavar="FRACTION",
                    help="share of a site's capacity that may be filled anew per night")
    sp.add_argument("--dask", metavar="ADDRESS",
                    help="run the sites on this Dask scheduler (tcp://host:8786)")
    sp.add_argument("--processes", type=int, metavar="N",
                    help="local worker processes (default: CPU count)")
    sp.add_argument("--json", action="store_true", help="summary as JSON")
    sp.set_defaults(func=cmd_plan)

    sp = sub.add_parser("simulate", help="plan from the first part of a trace, replay the rest")
    sp.add_argument("--trace", required=True, type=Path,
                    help="CSV trace (ts,id,size[,bytes]) or access-log JSONL")
    sp.add_argument("--capacity", required=True, help="appliance capacity, e.g. 2T")
    sp.add_argument("--split", type=_fraction, default=0.5,
                    help="share of the trace's time span used as history (default 0.5)")
    sp.add_argument("--replan", default="24h", help="re-plan every DURATION; 0: plan once")
    sp.add_argument("--catalog", type=Path, help="catalog CSV (release dates, titles)")
    sp.add_argument("--json", action="store_true", help="all figures as JSON")
    sp.set_defaults(func=cmd_simulate)
    return p


def _write(result: dict, as_json: bool, format_text) -> int:
    """A command's result on stdout: JSON (keys sorted) or its text table."""
    if as_json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(result))
    return EXIT_OK


def cmd_simulate(args) -> int:
    from .simulate import format_text, simulate

    result = simulate(args.trace, args.capacity, args.split, args.replan, args.catalog)
    return _write(result, args.json, format_text)


def cmd_plan(args) -> int:
    from .forecast import ForecastParams
    from .placement import PlacementParams
    from .plan import PlanRequest, run_plan
    from .summary import format_text

    fp = ForecastParams()
    if args.half_life is not None:
        fp.half_life = args.half_life
    if args.hints is not None:
        fp.hints = args.hints
    pp = PlacementParams()
    if args.churn is not None:
        pp.churn_budget = args.churn
    if args.processes is not None and args.processes < 1:
        raise UsageError("--processes must be at least 1")
    req = PlanRequest(catalog=args.catalog, logs=args.logs, topology=args.topology,
                      out=args.out, now=args.now if args.now is not None else time.time(),
                      previous=args.previous, forecast=fp, placement=pp, dask=args.dask,
                      processes=args.processes, progress=not args.quiet)
    return _write(run_plan(req), args.json, format_text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="oca-fill: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as e:
        print(f"oca-fill: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OcaError as e:
        print(f"oca-fill: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("oca-fill: interrupted", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
