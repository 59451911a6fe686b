"""`oca serve` against nginx, same machine, same bytes: throughput, p99 latency, CPU per
request (user and system), idle memory.

    .venv/bin/python bench/serve/run.py [--rounds N] [--duration S] [--workers N]
                                        [--only oca|nginx] [--workload NAME]
    .venv/bin/python bench/serve/run.py --idle-connections 5000

Builds a throw-away appliance in a temporary folder (one 256 MiB object, 200 of 16 KiB,
50 of 2 MiB; seeded random bytes), hard-links the stored object files into an nginx
docroot so both servers read the same inodes (one page cache), starts nginx (Debian
package; sendfile, tcp_nopush, the same worker count, access log on) and `oca serve`,
and runs wrk (Debian package) against each in alternation: per workload a warm-up of
each, then R rounds, the server that goes first alternating. The figure is the median
of the per-round ratios oca/nginx of requests per second, with each side's p99 and each
side's user and system CPU microseconds per request (from /proc, summed over all of the
server's processes, those that come and go during a run included: Server.cpu_times).

The idle mode opens N keep-alive connections to each server in turn (each sends one
request, reads the answer, then stays idle) and reports the servers' RSS growth per
connection.

Both servers log every request; at the end each access log is checked against the
requests wrk completed and the statuses it holds. Runs during which other processes took
CPU are listed as noisy. Exit status: 0; 1 when a run had socket errors, error or wrong
statuses or wrong response sizes, a log missed requests, or oca serve would not start
(each flagged with `!!`); 2 when the set-up failed (nginx or wrk missing, ...); 130 when
interrupted. Everything started here is stopped, and the temporary folder removed (unless
--keep), on success, error or Ctrl-C. `make bench-serve` installs nginx and wrk first.
The workloads and how to read the figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, filesystem_of  # noqa: E402

MiB = 1 << 20
BIG_ID, BIG_SIZE = "big.mp4", 256 * MiB
RANGE_LENGTH = 1 * MiB
SMALL_PATTERN, SMALL_COUNT, SMALL_SIZE = "s%03d.m4s", 200, 16 << 10
MEDIUM_PATTERN, MEDIUM_COUNT, MEDIUM_SIZE = "m%02d.mp4", 50, 2 * MiB

OCA = "oca"
NGINX = "nginx"

# Targets from the issue (8): per workload the req/s ratio oca/nginx (Workload.target_ratio);
# on every workload p99 and user CPU per request no more than nginx's; idle RSS.
TARGET_P99_RATIO = 1.0
TARGET_USER_CPU_RATIO = 1.0
TARGET_IDLE_BYTES = 1024

# A run during which other processes (or the hypervisor) took more than this many cores
# is marked as noisy: the ratio compares two servers under different conditions.
OTHER_LOAD_CORES = 0.2

# Connections that warm the servers up before the idle-connection count (each fetches
# every 50th small object: 200 requests in all).
WARM_CONNECTIONS = 50

# A response carries its body plus a status line and headers well under this.
HEAD_ALLOWANCE = 2048


@dataclass(frozen=True)
class Workload:
    """One wrk workload: the Lua script, its arguments and what every answer must be."""

    name: str
    what: str
    script: str
    args: tuple[str, ...]
    status: int
    body: int
    ids: tuple[str, ...]
    target_ratio: float  # oca/nginx requests per second, at least


def _ids(pattern: str, count: int) -> tuple[str, ...]:
    return tuple(pattern % i for i in range(count))


def workloads(seed: int) -> dict[str, Workload]:
    """The three workloads of the issue, keyed by name."""
    return {w.name: w for w in (
        Workload("ranges", f"1 MiB ranges at random offsets of one {BIG_SIZE // MiB} MiB object",
                 "ranges.lua",
                 (f"id={BIG_ID}", f"size={BIG_SIZE}", f"length={RANGE_LENGTH}", f"seed={seed}"),
                 206, RANGE_LENGTH, (BIG_ID,), 1.0),
        Workload("small", f"whole {SMALL_SIZE >> 10} KiB objects, random among {SMALL_COUNT}",
                 "objects.lua", (f"ids={SMALL_PATTERN}", f"count={SMALL_COUNT}", f"seed={seed}"),
                 200, SMALL_SIZE, _ids(SMALL_PATTERN, SMALL_COUNT), 1.1),
        Workload("medium", f"whole {MEDIUM_SIZE // MiB} MiB objects, random among {MEDIUM_COUNT}",
                 "objects.lua", (f"ids={MEDIUM_PATTERN}", f"count={MEDIUM_COUNT}", f"seed={seed}"),
                 200, MEDIUM_SIZE, _ids(MEDIUM_PATTERN, MEDIUM_COUNT), 1.0),
    )}


class BenchError(Exception):
    """Something the operator has to fix before the benchmark can run."""


# -- processes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds of a server's processes so far, and how many processes were read."""

    user: float
    system: float
    processes: int

    @property
    def total(self) -> float:
        return self.user + self.system


@dataclass
class Server:
    """A server under test: its process (master / supervisor) and how to reach it."""

    name: str
    proc: subprocess.Popen
    port: int
    access_log: Path
    output: Path
    stop_signal: int
    # Requests this script knows completed (wrk's counts and its own checks).
    requests: int = 0
    stopped: bool = False

    def processes(self) -> list[psutil.Process]:
        """The server's process and all its descendants (workers, store watcher, ...), and
        any other process of the session it leads (start_new_session: one a child left
        behind when its parent died), each once, parents before their children."""
        try:
            top = psutil.Process(self.proc.pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        seen = {p.pid for p in tree}
        for p in psutil.process_iter():
            if p.pid not in seen:
                with contextlib.suppress(OSError):
                    if os.getsid(p.pid) == self.proc.pid:
                        tree.append(p)
                        seen.add(p.pid)
        return tree

    def rss(self) -> dict[int, int]:
        """RSS in bytes per process id."""
        out = {}
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                out[p.pid] = p.memory_info().rss
        return out

    def cpu_times(self) -> CpuTimes:
        """User and system CPU seconds used so far by all the server's processes, those
        that have exited included.

        From /proc/<pid>/stat of each live process (psutil's cpu_times): its own utime and
        stime plus cutime and cstime, the times of the children it has reaped. A child
        that ran during a wrk run and was reaped before its end (a restarted worker, a
        short-lived helper) is so in its parent's figure; one still alive in its own. The
        two samples around a run differ by all the CPU the tree used in between. Parents
        are read before their children: a child reaped in between would be in neither
        figure, so the sample is taken again (up to 5 times). Not counted: a child whose
        parent does not wait for it (its times go nowhere).
        """
        for _ in range(5):
            user = system = 0.0
            pids = 0
            complete = True
            for p in self.processes():
                try:
                    t = p.cpu_times()
                except psutil.NoSuchProcess:  # gone since listed
                    complete = False
                    continue
                user += t.user + t.children_user
                system += t.system + t.children_system
                pids += 1
            if complete:
                break
        return CpuTimes(user, system, pids)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (flushes nginx's buffered log), then SIGKILL of the group we started."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"!! {self.name} did not stop within {timeout:.0f}s of "
                      f"{signal.Signals(self.stop_signal).name}: killing its process group")
        # start_new_session=True made the server the leader of its own group: this kills
        # what it left behind (workers) and nothing else.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def output_tail(self, lines: int = 20) -> str:
        try:
            text = self.output.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by the servers and wrk); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs root
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = wanted, wanted
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def spawn(argv: list[str], output: Path, cwd: Path) -> subprocess.Popen:
    with open(output, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


def http_get(port: int, path: str, headers: dict | None = None,
             timeout: float = 10.0) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def wait_ready(server: Server, probe: str, timeout: float = 30.0) -> None:
    """Until GET *probe* answers 200; BenchError (with the server's output) otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise BenchError(f"{server.name} exited with status {server.proc.returncode} "
                             f"while starting; its output ({server.output}):\n"
                             f"{server.output_tail()}")
        try:
            status, _, _ = http_get(server.port, probe, timeout=2.0)
            server.requests += 1
            if status == 200:
                return
            last = f"GET {probe} answered {status}"
        except OSError as e:
            last = f"GET {probe}: {e}"
        time.sleep(0.1)
    raise BenchError(f"{server.name} not ready after {timeout:.0f}s ({last}); its output:\n"
                     f"{server.output_tail()}")


# -- the appliance and the bytes ---------------------------------------------------------

@dataclass
class Bench:
    """The temporary folder and what is in it."""

    dir: Path
    workers: int
    nofile: int
    oca_config: Path = field(init=False)
    docroot: Path = field(init=False)
    paths: dict[str, Path] = field(default_factory=dict)  # object id -> stored file

    def __post_init__(self) -> None:
        self.oca_config = self.dir / "oca.toml"
        self.docroot = self.dir / "nginx-root"


OCA_TOML = """\
# Generated by bench/serve/run.py: the appliance under test.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = {workers}
access_log = "oca-access.jsonl"

[store]
index = "index.sqlite"

[[store.disk]]
path = "ssd0"
tier = "ssd"
"""


def oca_cli() -> Path:
    return Path(sys.executable).parent / "oca"


def build_appliance(bench: Bench, seed: int, oca_port: int) -> None:
    """Write oca.toml, `oca init`, store the objects and hard-link them for nginx."""
    (bench.dir / "ssd0").mkdir()
    bench.oca_config.write_text(OCA_TOML.format(
        port=oca_port, admin_port=free_port(), workers=bench.workers))
    init = subprocess.run([str(oca_cli()), "-c", str(bench.oca_config), "init"],
                          capture_output=True, text=True)
    if init.returncode != 0:
        raise BenchError(f"`oca -c {bench.oca_config} init` failed ({init.returncode}):\n"
                         f"{init.stdout}{init.stderr}")
    try:
        from oca.config import load_config
        from oca.storage.store import Store
    except ImportError as e:
        raise BenchError(f"cannot import oca ({e}): run with the project's .venv/bin/python "
                         "(`make install` creates it)") from None
    objects = [(BIG_ID, BIG_SIZE)]
    objects += [(i, SMALL_SIZE) for i in _ids(SMALL_PATTERN, SMALL_COUNT)]
    objects += [(i, MEDIUM_SIZE) for i in _ids(MEDIUM_PATTERN, MEDIUM_COUNT)]
    rng = random.Random(seed)
    source = bench.dir / "source.tmp"
    (bench.docroot / "o").mkdir(parents=True)
    t0 = time.monotonic()
    # Store.put is what `oca put` calls; in-process it saves ~0.1 s of start-up per object.
    with Store(load_config(bench.oca_config)) as store:
        for object_id, size in objects:
            with open(source, "wb") as f:
                left = size
                while left:
                    n = min(left, MiB)
                    f.write(rng.randbytes(n))
                    left -= n
            store.put(object_id, source, "ssd")
            # The same dict `oca stat --json` prints; "path" is the file the server sends.
            path = Path(store.stat(object_id)["path"])
            os.link(path, bench.docroot / "o" / object_id)
            bench.paths[object_id] = path
    source.unlink()
    total = sum(size for _, size in objects)
    print(f"data: {len(objects)} objects, {total / MiB:.0f} MiB, stored and hard-linked into "
          f"the nginx docroot in {time.monotonic() - t0:.1f}s")


# -- nginx -------------------------------------------------------------------------------

NGINX_CONF = """\
# Generated by bench/serve/run.py: nginx as the peer of `oca serve`, on the same files.
{user}worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;

events {{
    worker_connections 10240;
}}

http {{
    types {{
        video/mp4 mp4;
        video/iso.segment m4s;
    }}
    default_type application/octet-stream;

    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    open_file_cache max=10000 inactive=60s;

    # One JSON line per request, the fields of oca's access log (dur_s: seconds, ms resolution).
    log_format oca escape=json '{{"ts":$msec,"appliance":"$hostname","object":"$uri",'
                               '"status":$status,"bytes":$body_bytes_sent,'
                               '"range":"$http_range","client":"$remote_addr",'
                               '"dur_s":$request_time}}';
    access_log {dir}/nginx-access.jsonl oca buffer=64k flush=1s;

    client_body_temp_path {dir}/nginx-temp/body;
    proxy_temp_path {dir}/nginx-temp/proxy;
    fastcgi_temp_path {dir}/nginx-temp/fastcgi;
    uwsgi_temp_path {dir}/nginx-temp/uwsgi;
    scgi_temp_path {dir}/nginx-temp/scgi;

    server {{
        listen 127.0.0.1:{port} reuseport;
        root {docroot};
        location /o/ {{
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                      else None)
    if not found:
        raise BenchError("nginx not found: `make bench-serve` installs it (Debian package nginx)")
    return found


def start_nginx(bench: Bench, port: int) -> Server:
    conf = bench.dir / "nginx.conf"
    (bench.dir / "nginx-temp").mkdir()
    # As root nginx would switch its workers to `nobody`, who cannot enter the 0700 temp
    # folder; oca serve runs as the invoking user here, so nginx's workers do too.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, workers=bench.workers, nofile=bench.nofile,
                                      dir=bench.dir, port=port, docroot=bench.docroot))
    binary = nginx_binary()
    output = bench.dir / "nginx.out"
    # -e: the error log before the config is read (the default path is root's /var/log).
    argv = [binary, "-c", str(conf), "-p", str(bench.dir), "-e", str(bench.dir / "nginx-error.log")]
    test = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    if test.returncode != 0:
        raise BenchError(f"nginx -t rejected {conf}:\n{test.stderr}")
    server = Server(NGINX, spawn(argv, output, bench.dir), port,
                    bench.dir / "nginx-access.jsonl", output, signal.SIGQUIT)
    wait_ready(server, "/o/" + SMALL_PATTERN % 0)
    return server


# -- oca serve ---------------------------------------------------------------------------

def oca_serve_available() -> tuple[bool, str]:
    """Whether this checkout has `oca serve`, and why not."""
    cli = oca_cli()
    if not os.access(cli, os.X_OK):
        return False, f"{cli} not found (run `make install`)"
    probe = subprocess.run([str(cli), "serve", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        why = (probe.stderr or probe.stdout).strip().splitlines()
        return False, (f"`{cli} serve --help` exited {probe.returncode}"
                       + (f": {why[-1]}" if why else ""))
    return True, ""


def start_oca(bench: Bench, port: int) -> Server:
    output = bench.dir / "oca-serve.out"
    argv = [str(oca_cli()), "serve", "-c", str(bench.oca_config)]
    server = Server(OCA, spawn(argv, output, bench.dir), port, bench.dir / "oca-access.jsonl",
                    output, signal.SIGTERM)
    try:
        wait_ready(server, "/o/" + SMALL_PATTERN % 0)
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


# -- same bytes --------------------------------------------------------------------------

def check_same_bytes(server: Server, bench: Bench, rng: random.Random) -> None:
    """One range, one small and one medium object: status, headers and every byte."""
    big = bench.paths[BIG_ID]
    first = rng.randrange(0, BIG_SIZE - RANGE_LENGTH)
    last = first + RANGE_LENGTH - 1
    status, head, body = http_get(server.port, f"/o/{BIG_ID}", {"Range": f"bytes={first}-{last}"})
    server.requests += 1
    with open(big, "rb") as f:
        f.seek(first)
        want = f.read(RANGE_LENGTH)
    problems = []
    if status != 206:
        problems.append(f"Range bytes={first}-{last} of {BIG_ID} answered {status}, not 206")
    elif head.get("content-range") != f"bytes {first}-{last}/{BIG_SIZE}":
        problems.append(f"Content-Range {head.get('content-range')!r} for bytes={first}-{last}")
    elif body != want:
        problems.append(f"bytes {first}-{last} of {BIG_ID} differ from the stored file")
    for object_id in (SMALL_PATTERN % 7, MEDIUM_PATTERN % 7):
        status, _, body = http_get(server.port, f"/o/{object_id}")
        server.requests += 1
        if status != 200:
            problems.append(f"GET /o/{object_id} answered {status}, not 200")
        elif body != bench.paths[object_id].read_bytes():
            problems.append(f"GET /o/{object_id}: body differs from the stored file")
    if problems:
        raise BenchError(f"{server.name} does not serve the stored bytes: " + "; ".join(problems))


# -- wrk ---------------------------------------------------------------------------------

_WRK_JSON = re.compile(r"^OCA-BENCH-JSON (\{.*\})$", re.M)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk not found: `make bench-serve` installs it (Debian package wrk)")
    return found


def machine_cores(t0, t1, wall: float) -> dict:
    """Whole-machine CPU between two psutil.cpu_times(), in cores: busy, irq, steal.

    Loopback TCP does much of its work in softirq context: /proc/stat counts it as such,
    while this kernel also charges most of it to the process it interrupted (server, wrk
    and irq add up to more than the busy cores). On a VM the host can take time away
    (steal), which shows in no per-process figure.
    """
    # guest time is already counted in user time.
    d = {k: getattr(t1, k) - getattr(t0, k) for k in t0._fields if not k.startswith("guest")}
    total = sum(d.values())
    idle = d.get("idle", 0.0) + d.get("iowait", 0.0)
    return {"machine_busy_cores": (total - idle) / wall,
            "irq_cores": (d.get("softirq", 0.0) + d.get("irq", 0.0)) / wall,
            "steal_cores": d.get("steal", 0.0) / wall}


def user_processes_cpu(exclude: set[int]) -> dict[int, tuple[float, float]]:
    """pid -> (start time, CPU seconds) of every user-space process not in *exclude*.

    Kernel threads (children of kthreadd, pid 2) are left out: ksoftirqd and the writeback
    workers are busy because of the benchmark itself.
    """
    out = {}
    for p in psutil.process_iter(["pid", "ppid", "create_time", "cpu_times"]):
        i = p.info
        if i["pid"] in exclude or i["pid"] == 2 or i["ppid"] == 2 or i["cpu_times"] is None:
            continue
        out[i["pid"]] = (i["create_time"], i["cpu_times"].user + i["cpu_times"].system)
    return out


def other_cores(before: dict, after: dict, wall: float) -> float:
    """Cores used between two user_processes_cpu() snapshots (new processes: all their time)."""
    used = 0.0
    for pid, (started, cpu) in after.items():
        old = before.get(pid)
        used += cpu - old[1] if old and old[0] == started else cpu
    return used / wall


def run_wrk(server: Server, workload: Workload, args: argparse.Namespace, duration: int) -> dict:
    """One wrk run against *server*; its figures, CPU use on both sides and any problems."""
    argv = [wrk_binary(), f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s",
            "--latency", "--timeout", "10s", "-s", str(HERE / workload.script),
            f"http://127.0.0.1:{server.port}", "--", *workload.args]
    mine = {os.getpid(), *(p.pid for p in server.processes())}
    others0 = user_processes_cpu(mine)
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine0 = psutil.cpu_times()
    cpu0 = server.cpu_times()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=duration + 60)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.monotonic() - t0
    cpu1 = server.cpu_times()
    machine1 = psutil.cpu_times()
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Processes the server started during the run are its own, not other load.
    mine |= {p.pid for p in server.processes()}
    others1 = user_processes_cpu(mine)
    found = _WRK_JSON.search(out)
    if proc.returncode != 0 or not found:
        raise BenchError(f"wrk against {server.name} failed (exit {proc.returncode}): "
                         f"{' '.join(map(shlex.quote, argv))}\n{out}{err}")
    s = json.loads(found.group(1))
    seconds = s["duration_us"] / 1e6
    requests = s["requests"]
    server.requests += requests
    lat = s["latency_us"]
    run = {
        "server": server.name, "workload": workload.name,
        "requests": requests, "seconds": round(seconds, 3),
        "req_s": requests / seconds, "mb_s": s["bytes"] / seconds / 1e6,
        "bytes_per_response": s["bytes"] / requests if requests else 0.0,
        "p50_ms": lat["p50"] / 1e3, "p90_ms": lat["p90"] / 1e3, "p99_ms": lat["p99"] / 1e3,
        "p999_ms": lat["p999"] / 1e3, "max_ms": lat["max"] / 1e3,
        "errors": s["errors"],
        "server_cores": (cpu1.total - cpu0.total) / wall,
        # CPU per request: what the server's processes used during the run / the requests
        # wrk completed (answers cut off when it stopped are a rounding error here).
        "user_s": cpu1.user - cpu0.user, "system_s": cpu1.system - cpu0.system,
        "user_us_per_request": (cpu1.user - cpu0.user) / max(requests, 1) * 1e6,
        "system_us_per_request": (cpu1.system - cpu0.system) / max(requests, 1) * 1e6,
        "server_processes": [cpu0.processes, cpu1.processes],
        "wrk_cores": (usage1.ru_utime + usage1.ru_stime
                      - usage0.ru_utime - usage0.ru_stime) / wall,
        **machine_cores(machine0, machine1, wall),
        "problems": [],
    }
    e = s["errors"]
    socket_errors = {k: e[k] for k in ("connect", "read", "write", "timeout") if e[k]}
    if socket_errors:
        run["problems"].append(f"socket errors {socket_errors}")
    if e["status"]:
        run["problems"].append(f"{e['status']} responses with status >= 400")
    if not requests:
        run["problems"].append("no request completed")
    else:
        # wrk counts every byte read, also of the responses cut off when it stopped: allow
        # one partial body per connection on top of body + head per response.
        low = workload.body
        high = workload.body + HEAD_ALLOWANCE + args.connections * workload.body / requests
        if not low <= run["bytes_per_response"] <= high:
            run["problems"].append(
                f"{run['bytes_per_response']:.0f} bytes per response, expected "
                f"{low}-{high:.0f} (a {workload.status} with a {workload.body}-byte body)")
    if stderr := err.strip():
        run["problems"].append(f"wrk stderr: {stderr[:200]}")
    # Whatever else ran on the machine took cores from one side and not the other. Counted
    # two ways, since neither sees everything: the processes seen at both ends (misses
    # those that came and went), and what the machine did beyond server, wrk and irq (an
    # under-estimate where the kernel also charges softirq time to the process it ran in).
    run["other_cores"] = max(
        other_cores(others0, others1, wall),
        run["machine_busy_cores"] - run["server_cores"] - run["wrk_cores"] - run["irq_cores"])
    run["noise"] = []
    if run["other_cores"] > OTHER_LOAD_CORES:
        run["noise"].append(f"other processes used {run['other_cores']:.2f} cores")
    if run["steal_cores"] > OTHER_LOAD_CORES:
        run["noise"].append(f"the hypervisor stole {run['steal_cores']:.2f} cores")
    return run


def measure(servers: dict[str, Server], workload: Workload, args: argparse.Namespace) -> list:
    """Warm-up of each server, then the rounds, alternating which server goes first."""
    names = [n for n in (OCA, NGINX) if n in servers]
    for name in names:
        warm = run_wrk(servers[name], workload, args, args.warmup)
        note = "  !! " + "; ".join(warm["problems"]) if warm["problems"] else ""
        print(f"  warm-up {name:5}  {warm['req_s']:10,.0f} req/s{note}")
    runs = []
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            run = run_wrk(servers[name], workload, args, args.duration)
            run["round"] = r
            runs.append(run)
            note = "  !! " + "; ".join(run["problems"] + run["noise"]) if (
                run["problems"] or run["noise"]) else ""
            print(f"  round {r + 1}/{args.rounds} {name:5}  {run['req_s']:10,.0f} req/s  "
                  f"{run['mb_s']:8,.0f} MB/s  p99 {run['p99_ms']:7.2f} ms  "
                  f"cpu/req user {run['user_us_per_request']:6.2f} us sys "
                  f"{run['system_us_per_request']:6.2f} us  "
                  f"cores: server {run['server_cores']:.2f} wrk {run['wrk_cores']:.2f} "
                  f"irq {run['irq_cores']:.2f} other {run['other_cores']:.2f} idle "
                  f"{(os.cpu_count() or 1) - run['machine_busy_cores']:.2f}{note}")
    return runs


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf") if a else 1.0


def summarize(runs: list[dict], names: list[str], workload: Workload) -> dict:
    """Medians per server, the medians of the per-round ratios oca/nginx, and the targets."""
    out: dict = {}
    for name in names:
        mine = [r for r in runs if r["server"] == name]
        out[name] = {k: statistics.median(r[k] for r in mine)
                     for k in ("req_s", "mb_s", "p50_ms", "p99_ms", "user_us_per_request",
                               "system_us_per_request", "server_cores", "wrk_cores",
                               "irq_cores", "other_cores", "machine_busy_cores")}
    if OCA in names and NGINX in names:
        by_round: dict[int, dict[str, dict]] = {}
        for r in runs:
            by_round.setdefault(r["round"], {})[r["server"]] = r
        for key, field_ in (("ratio", "req_s"), ("p99_ratio", "p99_ms"),
                            ("user_ratio", "user_us_per_request"),
                            ("system_ratio", "system_us_per_request")):
            per_round = [_ratio(b[OCA][field_], b[NGINX][field_]) for b in by_round.values()]
            out[key] = statistics.median(per_round)
            out[key + "s"] = per_round
        out["targets"] = {
            "req_s": {"ratio": out["ratio"], "target": f">= {workload.target_ratio}",
                      "met": out["ratio"] >= workload.target_ratio},
            "p99": {"ratio": out["p99_ratio"], "target": f"<= {TARGET_P99_RATIO}",
                    "met": out["p99_ratio"] <= TARGET_P99_RATIO},
            "user_cpu_per_request": {"ratio": out["user_ratio"],
                                     "target": f"<= {TARGET_USER_CPU_RATIO}",
                                     "met": out["user_ratio"] <= TARGET_USER_CPU_RATIO},
        }
    return out


# -- access logs -------------------------------------------------------------------------

_OBJECT = re.compile(rb'"object":\s*"(?:/o/)?([^"]*)"')
_STATUS = re.compile(rb'"status":\s*(\d+)')


def read_access_log(path: Path) -> tuple[int, Counter]:
    """(lines, Counter of (object id, status)) of a JSONL access log."""
    lines = 0
    seen: Counter = Counter()
    if not path.exists():
        return 0, seen
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            o, s = _OBJECT.search(line), _STATUS.search(line)
            seen[(o.group(1).decode() if o else "?", int(s.group(1)) if s else 0)] += 1
    return lines, seen


def check_access_log(server: Server, known: dict[str, Workload]) -> list[str]:
    """Every request completed must be logged; every status must be the workload's."""
    lines, seen = read_access_log(server.access_log)
    cut = lines - server.requests
    print(f"access log {server.name}: {lines:,} lines for {server.requests:,} completed requests"
          + (f" (+{cut:,}: answers cut off when wrk stopped)" if cut > 0 else ""))
    problems = []
    if lines < server.requests:
        problems.append(f"{server.name} logged {lines:,} lines for {server.requests:,} "
                        f"completed requests ({server.access_log})")
    expect = {i: w.status for w in known.values() for i in w.ids}
    wrong = Counter()
    for (object_id, status), n in seen.items():
        # Our own checks fetch whole small and medium objects and one range of the big one.
        if status != expect.get(object_id, 200) and status != 499:
            wrong[(object_id if object_id in expect else "other", status)] += n
    if wrong:
        top = ", ".join(f"{o} {s}: {n:,}" for (o, s), n in wrong.most_common(5))
        problems.append(f"{server.name} access log holds unexpected statuses ({top})")
    return problems


# -- idle connections --------------------------------------------------------------------

def _read_response(sock: socket.socket) -> int:
    """Read one HTTP/1.1 response with Content-Length; return its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    length = int(m.group(1)) if m else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of the body")
        body += chunk
    return status


def _server_side_established(port: int) -> int:
    return sum(1 for c in psutil.net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def idle_connections(server: Server, count: int) -> dict:
    """RSS of the server's processes before and with *count* idle keep-alive connections."""
    ids = _ids(SMALL_PATTERN, SMALL_COUNT)

    def request(object_id: str) -> bytes:
        return f"GET /o/{object_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    # Warm every worker first (open-file cache, log buffer, first-use allocations), so the
    # difference is what the idle connections hold: SO_REUSEPORT spreads connections over
    # the workers by a hash of the address pair, so use many.
    for c in range(WARM_CONNECTIONS):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            for i in range(c, SMALL_COUNT, WARM_CONNECTIONS):
                s.sendall(request(ids[i]))
                _read_response(s)
                server.requests += 1
    time.sleep(1.0)
    before = server.rss()
    socks: list[socket.socket] = []
    t0 = time.monotonic()
    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            socks.append(s)
            s.sendall(request(ids[i % SMALL_COUNT]))
            status = _read_response(s)
            s.setblocking(False)
            server.requests += 1
            if status != 200:
                raise BenchError(f"{server.name}: GET /o/{ids[i % SMALL_COUNT]} on idle "
                                 f"connection {i} answered {status}")
        opened = time.monotonic() - t0
        time.sleep(2.0)
        after = server.rss()
        server_side = _server_side_established(server.port)
        still_open = 0
        for s in socks:
            try:
                still_open += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    time.sleep(1.0)
    closed = server.rss()
    grown = sum(after.values()) - sum(before.values())
    return {
        "server": server.name, "connections": count, "open_seconds": round(opened, 2),
        "still_open_client": still_open, "established_server_side": server_side,
        "rss_before": before, "rss_after": after, "rss_closed": closed,
        "rss_growth": grown, "bytes_per_connection": grown / max(still_open, 1),
    }


# -- report ------------------------------------------------------------------------------

def describe_machine(bench_dir: Path) -> str:
    nginx = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True)
    wrk = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True)
    wrk_version = (wrk.stdout or wrk.stderr).split("Copyright")[0].strip()
    return (f"{os.cpu_count()} cores ({cpu_model()}), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"{nginx.stderr.strip().replace('nginx version: ', '')}, {wrk_version}; "
            f"files on {filesystem_of(str(bench_dir))}")


def _markdown(cols: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(v.rjust(w) if i else v.ljust(w)
                                for i, (v, w) in enumerate(zip(r, widths, strict=True))) + " |")


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def print_table(results: dict[str, dict], names: list[str]) -> None:
    both = len(names) == 2
    cols = ["workload"]
    for n in names:
        cols += [f"{n} req/s", f"{n} MB/s", f"{n} p99 ms"]
    if both:
        cols += ["req/s oca/nginx", "rounds", "p99 oca/nginx", "rounds"]
    rows = []
    for wl, s in results.items():
        row = [wl]
        for n in names:
            row += [f"{s[n]['req_s']:,.0f}", f"{s[n]['mb_s']:,.0f}", f"{s[n]['p99_ms']:.2f}"]
        if both:
            row += [f"{s['ratio']:.2f}x", _spread(s["ratios"]),
                    f"{s['p99_ratio']:.2f}x", _spread(s["p99_ratios"])]
        rows.append(row)
    _markdown(cols, rows)
    print("CPU per request, us (medians; all the server's processes, from /proc: user and "
          "system time):")
    cols = ["workload"]
    for n in names:
        cols += [f"{n} user", f"{n} sys"]
    if both:
        cols += ["user oca/nginx", "rounds", "sys oca/nginx", "rounds"]
    rows = []
    for wl, s in results.items():
        row = [wl]
        for n in names:
            row += [f"{s[n]['user_us_per_request']:.2f}", f"{s[n]['system_us_per_request']:.2f}"]
        if both:
            row += [f"{s['user_ratio']:.2f}x", _spread(s["user_ratios"]),
                    f"{s['system_ratio']:.2f}x", _spread(s["system_ratios"])]
        rows.append(row)
    _markdown(cols, rows)
    print(f"cores used of {os.cpu_count()} (medians; irq: interrupt and softirq time, mostly "
          "loopback TCP, largely also inside the processes' figures; other: anything else):")
    for wl, s in results.items():
        print(f"  {wl:7} " + " | ".join(
            f"{n} {s[n]['server_cores']:.2f}, wrk {s[n]['wrk_cores']:.2f}, irq "
            f"{s[n]['irq_cores']:.2f}, other {s[n]['other_cores']:.2f}" for n in names))
    if both:
        for wl, s in results.items():
            t = s["targets"]
            parts = [f"{label} {v['ratio']:.2f}x (target {v['target']}x: "
                     f"{'met' if v['met'] else 'NOT met'})"
                     for label, v in (("req/s", t["req_s"]), ("p99", t["p99"]),
                                      ("user CPU/request", t["user_cpu_per_request"]))]
            print(f"RATIO {wl}: oca/nginx " + ", ".join(parts)
                  + f", system CPU/request {s['system_ratio']:.2f}x (no target): "
                  + ("all met" if all(v["met"] for v in t.values()) else "NOT all met"))


# -- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="oca serve against nginx on the same machine and the same bytes.")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds per workload (5)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--warmup", type=int, default=3,
                   help="seconds of unmeasured wrk per server and workload first (3)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes of each server (default: CPU count)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="wrk threads (2)")
    p.add_argument("--only", choices=(OCA, NGINX), help="measure one server alone")
    p.add_argument("--workload", action="append", metavar="NAME",
                   help="ranges, small or medium (repeat or comma-separate; default all)")
    p.add_argument("--idle-connections", type=int, default=0, metavar="N",
                   help="instead of throughput: RSS per idle keep-alive connection, N of them")
    p.add_argument("--seed", type=int, default=1, help="seed of the bytes and the requests (1)")
    p.add_argument("--dir", help="where to make the temporary folder (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    args = p.parse_args(argv)
    known = workloads(args.seed)
    chosen = [n for w in (args.workload or [",".join(known)]) for n in w.split(",") if n]
    bad = [n for n in chosen if n not in known]
    if bad:
        p.error(f"unknown workload {', '.join(bad)} (expected {', '.join(known)})")
    args.plan = {n: known[n] for n in dict.fromkeys(chosen)}
    for key in ("rounds", "duration", "workers", "connections", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1")
    return args


def _terminate(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in sys.orig_argv)
    # Set explicitly: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    nofile = raise_fd_limit(max(4 * args.idle_connections + 1024, 16384))
    report: dict = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "settings": {k: v for k, v in vars(args).items() if k != "plan"}}
    try:
        report["machine"] = describe_machine(Path(args.dir or tempfile.gettempdir()))
        print(f"date: {report['date']}")
        print(f"machine: {report['machine']}")
        print(f"command: {command}")
        names = [n for n in (OCA, NGINX) if args.only in (None, n)]
        if OCA in names:
            ok, why = oca_serve_available()
            if not ok:
                if args.only == OCA:
                    raise BenchError(f"oca serve is not available: {why}")
                print(f"!! oca serve is not available: {why}\n"
                      f"!! measuring nginx alone: no ratio in this run")
                names.remove(OCA)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    bench_dir = Path(tempfile.mkdtemp(prefix="oca-bench-serve-", dir=args.dir))
    bench = Bench(bench_dir, args.workers, nofile)
    servers: dict[str, Server] = {}
    problems: list[str] = []
    noisy: list[str] = []
    try:
        print(f"folder: {bench_dir}; {args.workers} workers per server; fd limit {nofile}")
        oca_port = free_port()
        build_appliance(bench, args.seed, oca_port)
        check_rng = random.Random(args.seed)
        if NGINX in names:
            servers[NGINX] = start_nginx(bench, free_port())
            check_same_bytes(servers[NGINX], bench, check_rng)
        if OCA in names:
            try:
                servers[OCA] = start_oca(bench, oca_port)
                check_same_bytes(servers[OCA], bench, check_rng)
            except BenchError as e:
                if args.only == OCA:
                    raise
                print(f"!! oca serve did not start or serve correctly: {e}")
                problems.append(f"oca serve: {e}")
                if OCA in servers:
                    servers.pop(OCA).stop()
                names.remove(OCA)
                print("!! measuring nginx alone: no ratio in this run")
        print("servers: " + ", ".join(
            f"{s.name} pid {s.proc.pid} on 127.0.0.1:{s.port} "
            f"({len(s.processes()) - 1} child processes)" for s in servers.values()))

        if args.idle_connections:
            report["idle"] = {}
            for name in names:
                res = idle_connections(servers[name], args.idle_connections)
                report["idle"][name] = res
                print(f"idle {name}: {res['connections']:,} keep-alive connections opened in "
                      f"{res['open_seconds']}s, {res['still_open_client']:,} still open "
                      f"({res['established_server_side']:,} established server-side); "
                      f"RSS {sum(res['rss_before'].values()) / MiB:.1f} -> "
                      f"{sum(res['rss_after'].values()) / MiB:.1f} MiB "
                      f"({len(res['rss_after'])} processes), "
                      f"{sum(res['rss_closed'].values()) / MiB:.1f} MiB after closing them: "
                      f"{res['bytes_per_connection']:,.0f} bytes per idle connection")
                if res["still_open_client"] < res["connections"]:
                    problems.append(f"{name} closed {res['connections'] - res['still_open_client']}"
                                    " of the idle connections")
            if OCA in report["idle"]:
                b = report["idle"][OCA]["bytes_per_connection"]
                report["idle_target"] = {"bytes_per_connection": f"<= {TARGET_IDLE_BYTES}",
                                         "met": b <= TARGET_IDLE_BYTES}
                print(f"RATIO idle: oca {b:,.0f} bytes per idle connection (target <= "
                      f"{TARGET_IDLE_BYTES:,}): {'met' if b <= TARGET_IDLE_BYTES else 'NOT met'}"
                      + (f"; nginx {report['idle'][NGINX]['bytes_per_connection']:,.0f}"
                         if NGINX in report["idle"] else ""))
        else:
            report["runs"], report["summary"] = [], {}
            for wl in args.plan.values():
                print(f"workload {wl.name}: {wl.what}, {args.connections} connections, "
                      f"{args.threads} wrk threads, {args.rounds} x {args.duration}s per server")
                runs = measure(servers, wl, args)
                report["runs"] += runs
                report["summary"][wl.name] = summarize(runs, names, wl)
                problems += [f"{wl.name} {r['server']} round {r['round'] + 1}: {p}"
                             for r in runs for p in r["problems"]]
                noisy += [f"{wl.name} {r['server']} round {r['round'] + 1}: {n}"
                          for r in runs for n in r["noise"]]
            print()
            print_table(report["summary"], names)

        for server in servers.values():
            server.stop()
        for server in servers.values():
            problems += check_access_log(server, workloads(args.seed))
        report["problems"], report["noisy"] = problems, noisy
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"command: {command}")
        if noisy:
            print(f"!! {len(noisy)} of {len(report['runs'])} runs shared the machine with other "
                  "work (figures not clean; run again on an idle machine):")
            for n in noisy:
                print(f"!!   {n}")
        for p in problems:
            print(f"!! {p}")
        return 1 if problems else 0
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"\ninterrupted{f' ({e})' if str(e) else ''}: stopping the servers", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in servers.values():
            server.stop()
        if args.keep:
            print(f"kept {bench_dir}")
        else:
            shutil.rmtree(bench_dir, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
