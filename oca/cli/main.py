"""``oca``: the operator's command line.

Exit codes: 0 ok, 1 operational error (the store, a disk, a file, a finding of
verify), 2 usage error (bad arguments, invalid id, unknown tier). Errors are one
line on stderr: ``oca: error: <what failed, which object/key/file>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable

from .. import __version__
from ..config import TIERS, Config, find_config, load_config
from ..errors import ConfigError, OcaError, UsageError
from ..ids import check_id, is_valid_id
from ..progress import Progress
from ..storage import Store
from ..units import format_size, parse_duration

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _config(args) -> Config:
    return load_config(find_config(args.config))


def _open(args) -> Store:
    return Store(_config(args))


def default_tier(config: Config) -> str:
    """The slowest tier that has a disk: where an object goes unless told otherwise."""
    have = {d.tier for d in config.store.disks}
    return next(t for t in reversed(TIERS) if t in have)


# -- commands ------------------------------------------------------------------

def cmd_init(args) -> int:
    from ..storage.recovery import recover

    config = _config(args)
    with Store.init(config) as store:
        report = recover(store)
        st = store.status(io=False)
        for d in st["disks"]:
            print(f"{d['path']}: tier {d['tier']}, {d['state']}"
                  + (f" ({d['reason']})" if d["reason"] else ""))
        if report.adopted:
            print(f"adopted {len(report.adopted)} objects found on disk")
        print(f"index {store.index_path}: {st['objects']} objects")
    return EXIT_OK


def cmd_put(args) -> int:
    with _open(args) as store:
        tier = args.tier
        if tier is None and args.replace and is_valid_id(args.id):
            old = store.find(args.id)
            tier = old.tier if old else None  # a replace keeps the object where it is
        tier = tier or default_tier(store.config)
        size = os.path.getsize(args.file) if os.path.isfile(args.file) else None
        with Progress(f"put {args.id}", total=size, unit="B") as p:
            last = 0

            def tick(total: int) -> None:
                nonlocal last
                p.update(total - last)
                last = total

            rec = store.put(args.id, args.file, tier, content_type=args.type,
                            expected_digest=args.xxh3, replace=args.replace, on_bytes=tick)
    print(f"{rec.id}: {format_size(rec.size)} on {rec.tier} ({rec.disk}) xxh3 {rec.xxh3}")
    return EXIT_OK


def cmd_rm(args) -> int:
    with _open(args) as store:
        rec = store.delete(args.id)
    print(f"{rec.id}: removed from {rec.tier} ({rec.disk})")
    return EXIT_OK


def cmd_mv(args) -> int:
    with _open(args) as store:
        old = store.get(args.id)
        with Progress(f"mv {args.id}", total=old.size, unit="B") as p:
            last = 0

            def tick(total: int) -> None:
                nonlocal last
                p.update(total - last)
                last = total

            rec = store.move(args.id, args.tier, on_bytes=tick)
    print(f"{rec.id}: {old.tier} -> {rec.tier} ({rec.disk})")
    return EXIT_OK


def cmd_ls(args) -> int:
    with _open(args) as store:
        records = list(store.objects(tier=args.tier))
    if args.json:
        _print_json([r.to_dict() for r in records])
        return EXIT_OK
    for r in records:
        print(f"{r.id}\t{r.tier}\t{r.size}\t{r.xxh3}\t{r.content_type}")
    return EXIT_OK


def cmd_stat(args) -> int:
    with _open(args) as store:
        info = store.stat(args.id)
    if args.json:
        _print_json(info)
        return EXIT_OK
    for key in ("id", "size", "xxh3", "tier", "disk", "path", "content_type", "mtime",
                "hits", "bytes_served", "last_hit", "disk_state", "servable"):
        print(f"{key}: {info[key]}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from ..storage.scrub import verify

    with _open(args) as store:
        records = [store.get(i) for i in args.ids] if args.ids else list(store.objects())
        total = sum(r.size for r in records)
        with Progress("verify", total=total, unit="B", enabled=not args.json) as p:
            report = verify(store, records, on_bytes=p.update)
    if args.json:
        _print_json(report.to_dict())
    else:
        noun = "object" if report.checked == 1 else "objects"
        print(f"checked {report.checked} {noun} ({format_size(report.bytes)}): "
              f"{report.ok} ok, {len(report.corrupt)} corrupt, {len(report.missing)} missing, "
              f"{len(report.skipped)} skipped")
        for c in report.corrupt:
            print(f"corrupt: {c['id']} on {c['disk']}: expected {c['expected']}, "
                  f"got {c['actual']}; quarantined to {c['quarantined_to']}")
        for m in report.missing:
            print(f"missing: {m['id']} on {m['disk']}: dropped from the index")
        for disk, reason in report.failed_disks.items():
            print(f"disk failed: {disk}: {reason}")
    return EXIT_OK if report.clean else EXIT_ERROR


def cmd_recover(args) -> int:
    from ..storage.recovery import recover

    with _open(args) as store, Progress("recover", unit="files", enabled=not args.json) as p:
        report = recover(store, on_file=p.update)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_OK
    print(f"temp files removed {len(report.temp_removed)}, adopted {len(report.adopted)}, "
          f"strays removed {len(report.strays_removed)}, dropped (missing) "
          f"{len(report.dropped_missing)}, quarantined {len(report.quarantined)}")
    for path in report.foreign:
        print(f"left alone (not an object file): {path}")
    for path in report.partials_kept:
        print(f"kept for a resume (partial stream ingest): {path}")
    for path in report.pending:
        print(f"pending (disk not writable): {path}")
    for disk, reason in report.skipped_disks.items():
        print(f"skipped disk {disk}: {reason}")
    return EXIT_OK


def _server_status(config: Config) -> dict:
    """The running server's status, or what a server would use when none runs."""
    import _fastpath

    from ..http.admin_client import admin_call

    try:
        st = admin_call(config, "GET", "/status", timeout=1.0)
    except OcaError as e:
        return {"running": False, "fastpath": _fastpath.IMPLEMENTATION, "error": str(e)}
    st["running"] = True
    return st


def _fill_line(fill: dict | None) -> str:
    """``oca status``'s line on the running or last fill."""
    if fill is None:
        return "fill: none yet"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(fill["started"]))
    s = fill.get("summary")
    if fill["state"] == "running":
        return f"fill: running since {when} (pid {fill['pid']}), manifest {fill['manifest']}"
    if fill["state"] == "interrupted":
        return (f"fill: interrupted (started {when}, pid {fill['pid']} gone); the next run "
                "resumes it")
    if s is None:
        return f"fill: {fill['state']} at {when}: {fill.get('error', 'no summary')}"
    return (f"fill: {fill['state']} at {when}: added {s['added']}, moved {s['moved']}, "
            f"deleted {s['deleted']}, failed {len(s['failed'])}"
            + (f", not started {s['not_started']}" if s["not_started"] else "")
            + f", {format_size(sum(s['bytes_by_source'].values()))} in {s['seconds']:.0f} s")


def cmd_status(args) -> int:
    from ..fill import state as fill_state

    with _open(args) as store:
        st = store.status()
        st["server"] = _server_status(store.config)
        st["fill"] = fill_state.read(store.config)
    if args.json:
        _print_json(st)
        return EXIT_OK
    srv = st["server"]
    if srv["running"]:
        print(f"server: running, pid {srv['pid']}, {len(srv['workers'])} workers, fastpath "
              f"{srv['fastpath']}, {'draining' if srv['draining'] else 'serving'}")
    else:
        print(f"server: not running (fastpath available: {srv['fastpath']})")
    print(f"index {st['index']}: {st['objects']} objects, {st['quarantined']} quarantined")
    print(_fill_line(st["fill"]))
    print(f"{'TIER':6} {'DISKS':>6} {'HEALTHY':>7} {'OBJECTS':>8} {'USED':>8} {'CAPACITY':>8}")
    for tier, t in st["tiers"].items():
        if t["disks"]:
            print(f"{tier:6} {t['disks']:>6} {t['healthy']:>7} {t['objects']:>8} "
                  f"{format_size(t['used']):>8} {format_size(t['capacity']):>8}")
    print()
    print(f"{'DISK':30} {'TIER':6} {'STATE':8} {'OBJECTS':>8} {'USED':>8} {'CAPACITY':>8} "
          f"{'FS FREE':>8} {'READ':>8} {'WRITTEN':>8}")
    for d in st["disks"]:
        io = d["io"] or {}
        rd = format_size(io["read_bytes"]) if io else "-"
        wr = format_size(io["write_bytes"]) if io else "-"
        print(f"{d['path']:30} {d['tier']:6} {d['state']:8} {d['objects']:>8} "
              f"{format_size(d['used']):>8} {format_size(d['capacity']):>8} "
              f"{format_size(d['fs_free']):>8} {rd:>8} {wr:>8}")
        if d["reason"]:
            print(f"  {d['state']}: {d['reason']}")
    for path, u in st["unconfigured_disks"].items():
        print(f"warning: {u['objects']} indexed objects on {path}, which is not in the config")
    return EXIT_OK


def cmd_disk_clear(args) -> int:
    with _open(args) as store:
        h = store.clear_failed(args.path)
    print(f"{args.path}: {h.state}" + (f" ({h.reason})" if h.reason else ""))
    return EXIT_OK if h.servable else EXIT_ERROR


def cmd_disk_replace(args) -> int:
    with _open(args) as store:
        dropped = store.replace_disk(args.path, force=args.force)
    noun = "object" if dropped == 1 else "objects"
    print(f"{args.path}: new disk in service; {dropped} {noun} of the old disk "
          "dropped from the index, to be filled again")
    return EXIT_OK


def cmd_serve(args) -> int:
    from ..serve.daemon import serve

    return serve(_config(args))


def cmd_drain(args) -> int:
    from ..http.admin_client import CONFIRM_CALL_TIMEOUT, admin_call
    from ..units import parse_duration

    try:
        seconds = parse_duration(args.deadline)
    except ValueError as e:
        raise UsageError(f"--deadline: {e}") from None
    st = admin_call(_config(args), "POST", f"/drain?deadline={seconds:g}",
                    timeout=CONFIRM_CALL_TIMEOUT)
    if args.json:
        _print_json(st)
    else:
        print(f"draining: /health answers 503 now; connections close in {seconds:g} s "
              "(oca undrain reverses it)")
    return EXIT_OK


def cmd_undrain(args) -> int:
    from ..http.admin_client import CONFIRM_CALL_TIMEOUT, admin_call

    st = admin_call(_config(args), "POST", "/undrain", timeout=CONFIRM_CALL_TIMEOUT)
    if args.json:
        _print_json(st)
    else:
        print("serving: drain cancelled")
    return EXIT_OK


def cmd_demo(args) -> int:
    if args.fleet:
        from ..demo_fleet import run_fleet

        return run_fleet(args.dir, total_mb=args.size_mb or 60, serve=not args.no_serve,
                         base_port=args.port or 8100)
    from ..demo import run_demo

    return run_demo(args.dir, total_mb=args.size_mb or 300, serve=not args.no_serve,
                    port=args.port or 8080, admin_port=args.admin_port)


def cmd_sign(args) -> int:
    from ..http.auth import load_key, signed_url

    check_id(args.id)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as e:
        raise UsageError(f"--ttl: {e}") from None
    if ttl <= 0:
        raise UsageError(f"--ttl: must be more than 0, not {args.ttl!r}")
    now = time.time()
    if args.now is not None:
        if not re.fullmatch(r"[0-9]{1,12}(\.[0-9]+)?", args.now):
            raise UsageError(f"--now: expected epoch seconds, e.g. 1700000000, not {args.now!r}")
        now = float(args.now)
    if args.base is not None and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", args.base):
        raise UsageError(f"--base: expected an http:// or https:// URL without query, "
                         f"not {args.base!r}")
    config = _config(args)
    if config.auth.key_file is None:
        raise ConfigError(f"{config.path}: auth.key_file is not set: signed URLs are off")
    key = load_key(config.auth.key_file)
    base = args.base
    if base is None:
        host, port = config.server.listen
        base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        url = signed_url(base, args.id, key, ttl, now)
    except ValueError as e:
        raise UsageError(f"--ttl {args.ttl}: {e}") from None
    print(url)
    return EXIT_OK


# -- parser --------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with the CLI's one-line error (argparse's default adds a
    usage block and prefixes the subcommand's prog, e.g. ``oca put: error:``)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"oca: error: {message} (see `{self.prog} --help`)\n")


def cmd_fill_apply(args) -> int:
    from ..fill import manifest as fill_manifest
    from ..fill.agent import Agent, run_recorded
    from ..units import format_rate, parse_rate

    config = _config(args)
    where = args.manifest or config.fill.manifest_url
    if not where:
        raise UsageError("no manifest: give MANIFEST|URL, or set [fill] manifest_url")
    if args.rate is not None:
        try:
            rate = parse_rate(args.rate)
        except ValueError as e:
            raise UsageError(f"--rate: {e}") from None
    else:
        rate = config.fill.max_rate
    parallel = args.parallel if args.parallel is not None else config.fill.parallel
    if not 1 <= parallel <= 256:
        raise UsageError(f"--parallel: must be between 1 and 256, not {parallel}")
    try:
        peer_wait = parse_duration(args.peer_wait)
    except ValueError as e:
        raise UsageError(f"--peer-wait: {e}") from None
    manifest = fill_manifest.load(where, config.server.name)
    agent = Agent(config, manifest, parallel=parallel, rate=rate, peer_wait=peer_wait)
    if args.dry_run:
        plan = agent.plan().as_dict(manifest)
        if args.json:
            _print_json(plan)
            return EXIT_OK
        for source, tiers in plan["adds"].items():
            for tier, cell in tiers.items():
                print(f"add {cell['objects']} objects ({format_size(cell['bytes'])}) "
                      f"from {source} to {tier}")
        for m in plan["moves"]:
            print(f"move {m['id']} {m['from']} -> {m['to']}")
        for oid in plan["deletes"]:
            print(f"delete {oid}")
        print(f"adds {format_size(plan['add_bytes'])}, moves {format_size(plan['move_bytes'])}, "
              f"deletes {format_size(plan['delete_bytes'])}, keeps {plan['keeps']} objects "
              "(dry run: nothing changed)")
        return EXIT_OK
    summary = run_recorded(config, manifest, parallel=parallel, rate=rate,
                           peer_wait=peer_wait)
    if args.json:
        _print_json(summary.as_dict())
    else:
        got = ", ".join(f"{format_size(n)} from {s}" for s, n in
                        sorted(summary.bytes_by_source.items())) or "nothing fetched"
        print(f"fill {manifest.appliance}: added {summary.added}, moved {summary.moved}, "
              f"deleted {summary.deleted}, kept {summary.kept}, failed {len(summary.failed)}"
              + (f", not started (window over) {summary.not_started}"
                 if summary.not_started else "")
              + f"; {got} in {summary.seconds:.1f} s"
              + (f" (at most {format_rate(rate)})" if rate else ""))
        for r in summary.refused:
            print(f"refused {r['id']} from {r['source']}: {r['reason']}", file=sys.stderr)
        for oid, why in summary.failed.items():
            print(f"failed {oid}: {why}", file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_ERROR


def cmd_fill_status(args) -> int:
    from ..fill import state as fill_state

    fill = fill_state.read(_config(args))
    if args.json:
        _print_json(fill)
        return EXIT_OK
    print(_fill_line(fill))
    s = (fill or {}).get("summary") or {}
    for source, n in s.get("bytes_by_source", {}).items():
        print(f"  {format_size(n)} from {source}")
    for oid, why in s.get("failed", {}).items():
        print(f"  failed {oid}: {why}")
    return EXIT_OK


def _steering_config(args) -> Config:
    config = _config(args)
    if not config.steering.enabled:
        raise UsageError(f"{config.path}: no [steering] section")
    return config


def cmd_steer_run(args) -> int:
    from ..steering.loop import SteeringLoop, preflight

    config = _steering_config(args)
    preflight(config)
    return SteeringLoop(config, dry_run=args.dry_run).run()


def cmd_steer_status(args) -> int:
    from ..steering.loop import read_force, read_state

    config = _steering_config(args)
    st = read_state(config)
    if st is not None:
        st = {**st, "forced": read_force(config)}
    if args.json:
        _print_json(st)
        return EXIT_OK
    if st is None:
        print("steering: no state yet (not run on this appliance)")
        return EXIT_OK
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["since"]))
    print(f"mode {st['mode']} since {since}: {st['reason']}")
    if st["forced"]:
        until = time.strftime("%H:%M:%S", time.localtime(st["forced"]["until"]))
        print(f"forced by an operator to {st['forced']['mode']} until {until}")
    for mode, h in sorted(st["paths"].items()):
        rtt = "-" if h["rtt_ms"] is None else f"{h['rtt_ms']:.1f} ms"
        print(f"  {mode:17} {'up' if h['up'] else 'DOWN':4}  loss {h['loss']:.0%}  rtt {rtt}")
    return EXIT_OK


def cmd_steer_force(args) -> int:
    from ..steering.loop import force
    from ..steering.policy import MODES

    config = _steering_config(args)
    if args.mode not in MODES:
        raise UsageError(f"unknown mode {args.mode!r} (expected one of {', '.join(MODES)})")
    if args.mode != "isp-direct" and args.mode not in {p.mode for p in config.steering.paths}:
        raise UsageError(f"mode {args.mode} has no [[steering.path]]")
    try:
        seconds = parse_duration(args.for_)
    except ValueError as e:
        raise UsageError(f"--for: {e}") from None
    if not 1 <= seconds <= 7 * 86400:
        raise UsageError("--for: between 1s and 7d")
    f = force(config, args.mode, seconds)
    print(f"steering forced to {args.mode} until "
          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(f['until']))}")
    return EXIT_OK


def cmd_steer_release(args) -> int:
    from ..steering.loop import release

    config = _steering_config(args)
    print("steering override released" if release(config) else "no steering override")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="oca", description="Operate an oca CDN appliance.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="config file (default: ./oca.toml, then $OCA_CONFIG)")
    p.add_argument("--version", action="version", version=f"oca {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, fn: Callable, help: str, parent=sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help, description=help)
        sp.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="config file (default: ./oca.toml, then $OCA_CONFIG)")
        sp.set_defaults(func=fn)
        return sp

    add("init", cmd_init, "create the index and initialise the disks (idempotent)")
    sp = add("put", cmd_put, "store FILE as object ID")
    sp.add_argument("id")
    sp.add_argument("file")
    sp.add_argument("--tier", choices=TIERS, help="tier (default: the slowest configured)")
    sp.add_argument("--type", metavar="MIME", help="content type (default: from the id)")
    sp.add_argument("--xxh3", metavar="DIGEST", help="refuse unless the bytes hash to this")
    sp.add_argument("--replace", action="store_true", help="overwrite an existing object")
    sp = add("rm", cmd_rm, "remove object ID")
    sp.add_argument("id")
    sp = add("mv", cmd_mv, "move object ID to another tier (promote/demote)")
    sp.add_argument("id")
    sp.add_argument("--tier", choices=TIERS, required=True)
    sp = add("ls", cmd_ls, "list objects")
    sp.add_argument("--tier", choices=TIERS)
    sp.add_argument("--json", action="store_true")
    sp = add("stat", cmd_stat, "show one object")
    sp.add_argument("id")
    sp.add_argument("--json", action="store_true")
    sp = add("verify", cmd_verify, "re-hash objects, quarantine corrupt ones (exit 1 if any)")
    sp.add_argument("ids", nargs="*", metavar="ID")
    sp.add_argument("--json", action="store_true")
    sp = add("recover", cmd_recover, "reconcile index and disks (as at start-up)")
    sp.add_argument("--json", action="store_true")
    sp = add("status", cmd_status, "tiers and disks: capacity, use, health, I/O")
    sp.add_argument("--json", action="store_true")
    disk = sub.add_parser("disk", help="disk operations")
    disk_sub = disk.add_subparsers(dest="disk_command", metavar="COMMAND", required=True,
                                   parser_class=_Parser)
    sp = add("clear", cmd_disk_clear, "forget a disk's failure and probe it again",
             parent=disk_sub)
    sp.add_argument("path")
    sp = add("replace", cmd_disk_replace,
             "put a new, empty filesystem in service in place of a dead disk", parent=disk_sub)
    sp.add_argument("path")
    sp.add_argument("--force", action="store_true",
                    help="allow a disk that is a plain folder, not a mount point")
    add("serve", cmd_serve, "run the HTTP server (foreground; SIGTERM stops it gracefully)")
    sp = add("drain", cmd_drain, "take the running server out of service: /health 503 at once, "
             "connections served until the deadline, then closed")
    sp.add_argument("--deadline", default="60s", help="e.g. 60s, 5m (default 60s)")
    sp.add_argument("--json", action="store_true")
    sp = add("undrain", cmd_undrain, "put a draining server back in service")
    sp.add_argument("--json", action="store_true")
    sp = add("demo", cmd_demo, "build a demo appliance in a folder and show it")
    sp.add_argument("--dir", default="demo")
    sp.add_argument("--size-mb", type=int,
                    help="bytes of objects to generate (default 300; --fleet: 60)")
    sp.add_argument("--port", type=int, help="viewer port (default 8080; --fleet: the first "
                    "of ten ports from 8100)")
    sp.add_argument("--admin-port", type=int, default=8081, help="admin port (default 8081)")
    sp.add_argument("--no-serve", action="store_true", help="build and show, do not serve")
    sp.add_argument("--fleet", action="store_true",
                    help="the whole fill loop on loopback: an origin, a backbone appliance and "
                    "a site of three, planned and filled (in DIR/fleet)")
    fill = sub.add_parser("fill", help="the nightly fill on this appliance")
    fill_sub = fill.add_subparsers(dest="fill_command", metavar="COMMAND", required=True,
                                   parser_class=_Parser)
    sp = add("apply", cmd_fill_apply, "make the store hold a fill manifest: fetch, verify, "
             "move, delete", parent=fill_sub)
    sp.add_argument("manifest", nargs="?", metavar="MANIFEST|URL",
                    help="the manifest file or URL (default: [fill] manifest_url)")
    sp.add_argument("--parallel", type=int, metavar="N",
                    help="transfers at once (default: [fill] parallel, 4)")
    sp.add_argument("--rate", metavar="R",
                    help="bits per second for the whole appliance, e.g. 800M, 1.2G "
                    "(default: [fill] max_rate; none)")
    sp.add_argument("--peer-wait", default="10m", metavar="DURATION",
                    help="how long to wait for a peer to hold an object of a later wave "
                    "before its upstream is asked (default 10m)")
    sp.add_argument("--dry-run", action="store_true",
                    help="print the adds by source and tier, moves, deletes; change nothing")
    sp.add_argument("--json", action="store_true", help="the summary (or the plan) as JSON")
    sp = add("status", cmd_fill_status, "the running or last fill: state, result, bytes by "
             "source, failures", parent=fill_sub)
    sp.add_argument("--json", action="store_true")
    steer = sub.add_parser("steer", help="steering among the network modes")
    steer_sub = steer.add_subparsers(dest="steer_command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)
    sp = add("run", cmd_steer_run, "run the steering loop alone (foreground)", parent=steer_sub)
    sp.add_argument("--dry-run", action="store_true", help="decide and log, change no route")
    sp = add("status", cmd_steer_status, "the mode, since when and why, per-path health",
             parent=steer_sub)
    sp.add_argument("--json", action="store_true")
    sp = add("force", cmd_steer_force, "an operator override that expires by itself",
             parent=steer_sub)
    sp.add_argument("mode")
    sp.add_argument("--for", dest="for_", default="10m", metavar="DURATION",
                    help="how long (default 10m)")
    add("release", cmd_steer_release, "end an operator override", parent=steer_sub)
    sp = add("sign", cmd_sign, "print a signed viewer URL for object ID ([auth] key_file)")
    sp.add_argument("id")
    sp.add_argument("--ttl", default="1h", help="how long the URL is good (default: 1h)")
    sp.add_argument("--base", metavar="URL",
                    help="scheme, host and port viewers use (default: from server.listen)")
    sp.add_argument("--now", metavar="EPOCH", help="sign as if the clock read EPOCH")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="oca: %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as e:
        print(f"oca: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OcaError as e:
        print(f"oca: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("oca: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
