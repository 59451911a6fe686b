"""The largest gap between responses while a burst of index changes is committed.

    .venv/bin/python bench/serve/burst.py [--changes 100000] [--transactions 10]
                                          [--base 100000] [--workers 2] [--connections 4]
                                          [--before 3] [--after 5] [--timeout 180]
                                          [--dir D] [--keep] [--json FILE]

What a night's fill looks like to `oca serve`: the fill agent has written its objects'
files over hours, then commits them to the index in a burst. Set-up, in a temporary
folder: a one-disk appliance (`oca init`) with 64 objects of 16 KiB stored by `Store.put`
(the ones the client fetches), `--base` more objects already indexed (an appliance's
catalogue). Then `oca serve` starts with `--workers` workers, and the files of the
`--changes` objects the burst will commit are written (after the start, as a fill writes
them while the appliance serves: start-up recovery would adopt them). Every file beyond the
64 is a hard link to one of theirs under the object's own name (`layout.object_path`).

A client (this process, one thread, non-blocking sockets) keeps `--connections` keep-alive
connections busy, one request outstanding on each, fetching the 64 objects in turn and
checking every response (status 200, every byte). Each connection is tied to the worker
that accepted it (read from that worker's sockets), and connections are opened until every
worker has one. After `--before` seconds another process commits the `--changes` rows
through `oca.storage.index.Index` in `--transactions` write transactions, as fast as
SQLite takes them (`Index.put` of each row, what `Store.put`'s commit does). Once the burst
is committed each connection also asks, between its fetches, for the burst's last object
until it is served with the right bytes (the time from the burst's end to then is how long
that worker took to catch up), then for random new objects, which must all be served.
The run ends `--after` seconds after every connection caught up, or at `--timeout` (the
script stops by itself either way).

The figure: the largest gap between two consecutive responses on a connection (with the
worker and when it happened, relative to the burst's start), beside the largest gap before
the burst on the same connections (what the machine's scheduling alone gives). Only
127.0.0.1 is contacted. Exit status: 0; 1 when a response was wrong, a connection failed,
or a worker did not catch up before the timeout; 2 when the set-up failed; 130 when
interrupted. `oca serve` and the committing process are stopped and the temporary folder
removed (unless --keep) in every case. Figures go to bench/RESULTS.md with the date, the
machine and the command, which the script prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import re
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, filesystem_of  # noqa: E402
from bench.serve.run import (  # noqa: E402
    OCA_TOML,
    BenchError,
    Server,
    free_port,
    oca_cli,
    raise_fd_limit,
    spawn,
    wait_ready,
)

SERVED_COUNT, SERVED_SIZE = 64, 16 << 10
SERVED_PATTERN = "s%02d.m4s"
NEW_PATTERN = "burst-%06d.m4s"
BASE_PATTERN = "base-%07d.mp4"
# At most this many connections are opened while looking for one per worker.
MAX_CONNECTIONS = 64


# -- the appliance -----------------------------------------------------------------------

@dataclass
class Appliance:
    dir: Path
    config: Path
    index: str
    disk: str
    port: int
    bodies: dict[str, bytes] = field(default_factory=dict)  # the served objects' bytes
    digests: list[str] = field(default_factory=list)  # the served objects' digests
    sources: list[str] = field(default_factory=list)  # and their files

    def new_source(self, i: int) -> str:
        """The served object whose file the burst's i-th object is a hard link to."""
        return SERVED_PATTERN % (i % SERVED_COUNT)


def build(dir_: Path, args: argparse.Namespace) -> Appliance:
    """oca.toml, `oca init`, the served objects, the base rows and the burst's files."""
    from oca import mediatypes
    from oca.config import load_config
    from oca.storage import layout
    from oca.storage.index import Index, ObjectRecord
    from oca.storage.store import Store

    port = free_port()
    (dir_ / "ssd0").mkdir()
    config = dir_ / "oca.toml"
    config.write_text(OCA_TOML.format(port=port, admin_port=free_port(), workers=args.workers)
                      .replace("bench/serve/run.py", "bench/serve/burst.py"))
    init = subprocess.run([str(oca_cli()), "-c", str(config), "init"], capture_output=True,
                          text=True)
    if init.returncode != 0:
        raise BenchError(f"`oca -c {config} init` failed ({init.returncode}):\n"
                         f"{init.stdout}{init.stderr}")
    rng = random.Random(args.seed)
    source = dir_ / "source.tmp"
    t0 = time.monotonic()
    cfg = load_config(config)
    index_path, disk = str(cfg.store.index), str(cfg.store.disks[0].path)
    with Store(cfg) as store:
        app = Appliance(dir_, config, index_path, disk, port)
        for i in range(SERVED_COUNT):
            oid = SERVED_PATTERN % i
            body = rng.randbytes(SERVED_SIZE)
            source.write_bytes(body)
            store.put(oid, source, "ssd")
            app.bodies[oid] = body
    source.unlink()
    index = Index(index_path)
    try:
        recs = [index.get(SERVED_PATTERN % i) for i in range(SERVED_COUNT)]
        app.digests = [r.xxh3 for r in recs]
        disk = app.disk = recs[0].disk  # the disk as the index names it
        sources = [layout.object_path(r.disk, r.id, r.xxh3) for r in recs]
        app.sources = sources
        t1 = time.monotonic()
        # The base, files and rows (`oca serve`'s start-up recovery drops a row whose file
        # is missing).
        link_objects(app, BASE_PATTERN, args.base)
        ctype = mediatypes.guess(BASE_PATTERN % 0)
        now = time.time()
        with index.write():
            for i in range(args.base):
                index.put(ObjectRecord(BASE_PATTERN % i, SERVED_SIZE,
                                       app.digests[i % SERVED_COUNT], disk, "ssd", ctype, now))
        t2 = time.monotonic()
    finally:
        index.close()
    print(f"set-up: {SERVED_COUNT} served objects of {SERVED_SIZE >> 10} KiB in {t1 - t0:.1f}s, "
          f"{args.base:,} base objects (hard links and rows) in {t2 - t1:.1f}s")
    return app


def link_objects(app: Appliance, pattern: str, count: int) -> None:
    """Files for objects *pattern* % 0..count-1: hard links to the served objects' files
    (ext4 allows 65,000 links to one inode: spread over the 64), under each id's own name."""
    from oca.storage import layout

    for i in range(count):
        src, digest = app.sources[i % SERVED_COUNT], app.digests[i % SERVED_COUNT]
        dst = layout.object_path(app.disk, pattern % i, digest)
        try:
            try:
                os.link(src, dst)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.link(src, dst)
        except OSError as e:
            raise BenchError(f"cannot link {dst} to {src}: {e.strerror}") from None


def write_burst_files(app: Appliance, changes: int) -> None:
    """The files of the objects the burst commits, as a fill writes them while the appliance
    serves (after `oca serve` started: its start-up recovery would adopt them)."""
    t0 = time.monotonic()
    link_objects(app, NEW_PATTERN, changes)
    print(f"set-up: {changes:,} files for the burst (hard links) in "
          f"{time.monotonic() - t0:.1f}s")


# -- the burst (another process) ---------------------------------------------------------

def commit_burst(index_path: str, disk: str, digests: list[str], size: int, changes: int,
                 transactions: int, start_at: float, out) -> None:
    """At monotonic *start_at*, commit *changes* new rows in *transactions* transactions;
    send {"start", "end", "transactions": [seconds...]} through the pipe *out*."""
    from oca import mediatypes
    from oca.storage.index import Index, ObjectRecord

    index = Index(index_path)
    ctype = mediatypes.guess(NEW_PATTERN % 0)
    per = -(-changes // transactions)
    batches = [range(a, min(a + per, changes)) for a in range(0, changes, per)]
    time.sleep(max(0.0, start_at - time.monotonic()))
    t0 = time.monotonic()
    took = []
    for batch in batches:
        t = time.monotonic()
        now = time.time()
        with index.write():
            for i in batch:
                index.put(ObjectRecord(NEW_PATTERN % i, size, digests[i % len(digests)], disk,
                                       "ssd", ctype, now))
        took.append(time.monotonic() - t)
    end = time.monotonic()
    index.close()
    out.send({"start": t0, "end": end, "transactions": took})
    out.close()


# -- the client --------------------------------------------------------------------------

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


@dataclass
class Conn:
    """One keep-alive connection and what was seen on it."""

    sock: socket.socket
    local_port: int
    worker: int = 0
    buf: bytearray = field(default_factory=bytearray)
    asked: str = ""
    asked_index: int = 0  # of a new object
    probing: bool = False  # the outstanding request is for a new object
    sent_at: float = 0.0
    last: float = 0.0  # when the previous response completed
    responses: int = 0
    gap: float = 0.0
    gap_at: float = 0.0  # when the largest gap ended
    gap_before: float = 0.0  # the largest gap before the burst started
    caught_up: float | None = None  # monotonic time a new object was first served right
    probes: int = 0
    latencies: list[float] = field(default_factory=list)
    next_object: int = 0


def request(object_id: str) -> bytes:
    return f"GET /o/{object_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def parse_response(buf: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes consumed) of one complete response at the start of *buf*."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    m = _LENGTH.search(head)
    length = int(m.group(1)) if m else 0
    total = end + 4 + length
    if len(buf) < total:
        return None
    return int(head.split(b" ", 2)[1]), bytes(buf[end + 4:total]), total


def worker_of(server: Server, local_port: int) -> int:
    """The pid of the server process that holds the other end of our *local_port*."""
    for _ in range(50):
        for p in server.processes():
            with contextlib.suppress(psutil.Error):
                for c in p.net_connections(kind="tcp"):
                    if (c.laddr and c.laddr.port == server.port and c.raddr
                            and c.raddr.port == local_port):
                        return p.pid
        time.sleep(0.02)
    return 0


def open_connections(server: Server, app: Appliance, wanted: int, workers: int) -> list[Conn]:
    """At least *wanted* connections, and at least one on every worker when possible."""
    conns: list[Conn] = []
    while len(conns) < MAX_CONNECTIONS:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(s, s.getsockname()[1])
        oid = SERVED_PATTERN % 0
        s.sendall(request(oid))
        buf = bytearray()
        while (got := parse_response(buf)) is None:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchError(f"oca serve closed a new connection before answering {oid}")
            buf += chunk
        if got[0] != 200 or got[1] != app.bodies[oid]:
            raise BenchError(f"GET /o/{oid} answered {got[0]} or wrong bytes before the run")
        c.worker = worker_of(server, c.local_port)
        conns.append(c)
        covered = {x.worker for x in conns}
        if len(conns) >= wanted and len(covered - {0}) >= workers:
            break
    for c in conns:
        c.sock.setblocking(False)
        c.next_object = random.randrange(SERVED_COUNT)
    return conns


def run_client(conns: list[Conn], app: Appliance, args: argparse.Namespace, burst_at: float,
               burst_pipe, deadline: float) -> tuple[dict | None, list[str]]:
    """Fetch until every connection caught up plus --after seconds, or *deadline*."""
    problems: list[str] = []
    sel = selectors.DefaultSelector()
    rng = random.Random(args.seed + 1)
    burst: dict | None = None
    sel.register(burst_pipe.fileno(), selectors.EVENT_READ, None)

    def send(c: Conn, now: float) -> None:
        if burst is not None and c.responses % 2:
            # Until the burst's last row is served, ask for it (the feed is in commit order:
            # then the worker has all of it); after that, any of the new objects.
            i = args.changes - 1 if c.caught_up is None else rng.randrange(args.changes)
            c.asked, c.asked_index, c.probing = NEW_PATTERN % i, i, True
        else:
            c.asked, c.probing = SERVED_PATTERN % c.next_object, False
            c.next_object = (c.next_object + 1) % SERVED_COUNT
        c.sent_at = now
        c.sock.send(request(c.asked))  # ~60 bytes into an empty send buffer: all of it

    now = time.monotonic()
    for c in conns:
        c.last = now
        sel.register(c.sock, selectors.EVENT_READ, c)
        send(c, now)
    done_at = None
    while True:
        now = time.monotonic()
        if now >= deadline:
            problems.append(f"stopped at the --timeout ({args.timeout}s) with "
                            f"{sum(c.caught_up is None for c in conns)} connections not caught "
                            "up" if burst else "stopped at the --timeout before the burst ended")
            break
        if done_at is None and burst is not None and all(c.caught_up for c in conns):
            done_at = now
        if done_at is not None and now >= done_at + args.after:
            break
        for key, _ in sel.select(timeout=0.05):
            if key.data is None:
                burst = burst_pipe.recv()
                sel.unregister(burst_pipe.fileno())
                continue
            c: Conn = key.data
            try:
                chunk = c.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError as e:
                problems.append(f"connection {c.local_port} (worker {c.worker}): {e}")
                sel.unregister(c.sock)
                continue
            if not chunk:
                problems.append(f"connection {c.local_port} (worker {c.worker}) closed by the "
                                "server")
                sel.unregister(c.sock)
                continue
            c.buf += chunk
            got = parse_response(c.buf)
            if got is None:
                continue
            status, body, used = got
            del c.buf[:used]
            t = time.monotonic()
            gap = t - c.last
            if gap > c.gap:
                c.gap, c.gap_at = gap, t
            if t < burst_at and gap > c.gap_before:
                c.gap_before = gap
            c.last = t
            c.responses += 1
            c.latencies.append(t - c.sent_at)
            if c.probing:
                c.probes += 1
                if status == 200 and body != app.bodies[app.new_source(c.asked_index)]:
                    problems.append(f"GET /o/{c.asked} (new) on worker {c.worker}: wrong bytes")
                elif status == 200 and c.caught_up is None:
                    c.caught_up = t
                elif status != 200 and (c.caught_up is not None or status != 404):
                    problems.append(f"GET /o/{c.asked} (new) on worker {c.worker} answered "
                                    f"{status}" + (" after the burst's last row was served"
                                                   if c.caught_up is not None else ""))
            elif status != 200 or body != app.bodies[c.asked]:
                problems.append(f"GET /o/{c.asked} on worker {c.worker} answered {status}"
                                + (", wrong bytes" if status == 200 else ""))
            send(c, t)
    sel.close()
    return burst, problems[:20]


# -- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Largest gap between oca serve's responses while a burst of index "
                    "changes is committed (a fill's commit).")
    p.add_argument("--changes", type=int, default=100_000,
                   help="new objects committed in the burst (100000)")
    p.add_argument("--transactions", type=int, default=10,
                   help="write transactions the burst is split into (10)")
    p.add_argument("--base", type=int, default=100_000,
                   help="rows already in the index before the burst (100000)")
    p.add_argument("--workers", type=int, default=2, help="oca serve workers (2)")
    p.add_argument("--connections", type=int, default=4,
                   help="client keep-alive connections, at least one per worker (4)")
    p.add_argument("--before", type=float, default=3.0,
                   help="seconds of fetching before the burst starts (3)")
    p.add_argument("--after", type=float, default=5.0,
                   help="seconds of fetching after every worker caught up (5)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds the fetching may last in all (180)")
    p.add_argument("--seed", type=int, default=1, help="seed of the bytes and requests (1)")
    p.add_argument("--dir", help="where to make the temporary folder (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = p.parse_args(argv)
    for key in ("changes", "transactions", "workers", "connections"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1")
    if args.base < 0 or args.before < 0 or args.after < 0 or args.timeout <= args.before:
        p.error("--base, --before and --after must be >= 0, --timeout more than --before")
    return args


def _terminate(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in sys.orig_argv)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    raise_fd_limit(4096)
    report: dict = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "settings": vars(args)}
    dir_ = Path(tempfile.mkdtemp(prefix="oca-bench-burst-", dir=args.dir))
    report["machine"] = (f"{os.cpu_count()} cores ({cpu_model()}), files on "
                         f"{filesystem_of(str(dir_))}")
    print(f"date: {report['date']}\nmachine: {report['machine']}\ncommand: {command}")
    server: Server | None = None
    committer = None
    try:
        if not os.access(oca_cli(), os.X_OK):
            raise BenchError(f"{oca_cli()} not found: run `make install`")
        app = build(dir_, args)
        output = dir_ / "oca-serve.out"
        server = Server("oca", spawn([str(oca_cli()), "serve", "-c", str(app.config)], output,
                                     dir_), app.port, dir_ / "oca-access.jsonl", output,
                        signal.SIGTERM)
        wait_ready(server, "/o/" + SERVED_PATTERN % 0, timeout=60)
        write_burst_files(app, args.changes)
        conns = open_connections(server, app, args.connections, args.workers)
        workers = sorted({c.worker for c in conns})
        print(f"oca serve pid {server.proc.pid}, {args.workers} workers; {len(conns)} "
              f"connections on workers {', '.join(map(str, workers))}")

        start = time.monotonic()
        burst_at = start + args.before
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe(duplex=False)
        committer = ctx.Process(target=commit_burst, daemon=True, args=(
            app.index, app.disk, app.digests, SERVED_SIZE, args.changes,
            args.transactions, burst_at, theirs))
        committer.start()
        theirs.close()
        burst, problems = run_client(conns, app, args, burst_at, mine, start + args.timeout)
        end = time.monotonic()
        committer.join(10)
        for c in conns:
            c.sock.close()
        if len({c.worker for c in conns} - {0}) < args.workers:
            problems.append(f"connections reached {len(set(workers) - {0})} of the "
                            f"{args.workers} workers")

        per_worker: dict[int, dict] = {}
        for c in conns:
            w = per_worker.setdefault(c.worker, {"connections": 0, "responses": 0, "gap_s": 0.0,
                                                 "gap_at_s": None, "gap_before_s": 0.0,
                                                 "caught_up_s": None, "probes": 0})
            w["connections"] += 1
            w["responses"] += c.responses
            w["probes"] += c.probes
            w["gap_before_s"] = max(w["gap_before_s"], c.gap_before)
            if c.gap > w["gap_s"]:
                w["gap_s"] = c.gap
                w["gap_at_s"] = c.gap_at - (burst["start"] if burst else burst_at)
            if c.caught_up is not None and burst is not None:
                up = c.caught_up - burst["end"]
                w["caught_up_s"] = up if w["caught_up_s"] is None else max(w["caught_up_s"], up)
        latencies = sorted(x for c in conns for x in c.latencies)
        worst = max(per_worker.items(), key=lambda kv: kv[1]["gap_s"])
        report.update(
            workers=per_worker, connections=len(conns),
            responses=sum(c.responses for c in conns), seconds=round(end - start, 2),
            burst=burst, largest_gap_s=worst[1]["gap_s"], largest_gap_worker=worst[0],
            largest_gap_before_s=max(w["gap_before_s"] for w in per_worker.values()),
            p50_ms=1e3 * statistics.median(latencies) if latencies else None,
            p99_ms=1e3 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
            problems=problems)
        if burst:
            took = burst["end"] - burst["start"]
            print(f"burst: {args.changes:,} changes in {len(burst['transactions'])} transactions "
                  f"committed in {took:.2f}s ({args.changes / took:,.0f}/s; slowest "
                  f"transaction {max(burst['transactions']):.2f}s), on top of {args.base:,} rows")
        for pid, w in sorted(per_worker.items()):
            at = f" at {w['gap_at_s']:+.2f}s from the burst's start" if w["gap_at_s"] is not None \
                else ""
            up = (f"caught up {w['caught_up_s']:.2f}s after the burst's end"
                  if w["caught_up_s"] is not None else "did NOT catch up")
            print(f"  worker {pid}: {w['connections']} connections, {w['responses']:,} "
                  f"responses, largest gap {_ms(w['gap_s'])}{at} (before the burst: "
                  f"{_ms(w['gap_before_s'])}), {up}")
        print(f"responses: {report['responses']:,} in {report['seconds']}s, latency p50 "
              f"{report['p50_ms']:.2f} ms p99 {report['p99_ms']:.2f} ms")
        print(f"FIGURE burst: largest gap between responses {_ms(report['largest_gap_s'])} "
              f"(worker {worst[0]}) while {args.changes:,} index changes were committed; before "
              f"the burst {_ms(report['largest_gap_before_s'])}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"command: {command}")
        for p in problems:
            print(f"!! {p}")
        return 1 if problems else 0
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"\ninterrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if committer is not None and committer.is_alive():
            committer.kill()
            committer.join(5)
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {dir_}")
        else:
            shutil.rmtree(dir_, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
