"""Scale benchmark of `oca-fill plan`: a generated fleet, catalog and access logs.

    .venv/bin/python bench/fill/scale.py                # 1M objects, 100 x 10, 50M lines
    .venv/bin/python bench/fill/scale.py --objects 100000 --sites 10 --lines 2000000

Generates (once, cached under --dir) a catalog of titles with encodes of 100 MB to
5 GB, a topology of --sites sites of --appliances appliances behind --backbone
backbone nodes, and --lines access-log lines (Zipf-like popularity, a day of
timestamps, spread over the appliances, in several files, some gzipped), then runs
`oca-fill plan` on them under /usr/bin/time and prints wall time and peak RSS
against the targets (<= 60 s, <= 4 GB).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

NOW = 1_795_000_000  # pinned clock: the plan is reproducible
ENCODES = ("2160p", "1080p", "720p", "480p")


def make_catalog(path: Path, objects: int, rng: np.random.Generator) -> np.ndarray:
    titles = objects // len(ENCODES)
    t = np.repeat(np.arange(titles), len(ENCODES))
    e = np.tile(np.arange(len(ENCODES)), titles)
    ids = [f"t{ti:07d}-{ENCODES[ei]}.mp4" for ti, ei in zip(t.tolist(), e.tolist(),
                                                            strict=True)]
    base = np.exp(rng.uniform(np.log(100e6), np.log(5e9), titles))  # log-uniform sizes
    shares = np.array([1.0, 0.5, 0.25, 0.1])
    size = np.clip(base[t] * shares[e], 100e6, 5e9).astype(np.int64)
    release = np.where(rng.random(len(ids)) < 0.01, NOW + 86400, NOW - 86400 * 30)
    pl.DataFrame({"id": ids, "size": size, "title": [f"title{ti:07d}" for ti in t.tolist()],
                  "type": "video", "release": release}).write_csv(path)
    return np.array(ids, dtype=object)


def make_topology(path: Path, sites: int, appliances: int, backbone: int) -> list[str]:
    names = []
    topo = {"origin": {"name": "origin", "url": "http://127.0.0.1:9000"},
            "backbone": [{"name": f"bb{b}", "url": f"http://127.0.0.1:{9100 + b}",
                          "tiers": {"ssd": "20T", "hdd": "400T"}} for b in range(backbone)],
            "sites": [], "links": []}
    for b in range(backbone):
        topo["links"].append({"from": "origin", "to": f"bb{b}", "gbps": 400})
    for s in range(sites):
        site = f"isp{s:03d}"
        apps = []
        for a in range(appliances):
            name = f"{site}-a{a}"
            names.append(name)
            apps.append({"name": name, "url": f"http://127.0.0.1:{10000 + len(names)}",
                         "serve_gbps": 100, "tiers": {"ssd": "1T", "flash": "4T", "hdd": "30T"}})
        topo["sites"].append({"name": site, "upstream": f"bb{s % backbone}",
                              "fill_window": "02:00-08:00", "appliances": apps})
        topo["links"].append({"from": f"bb{s % backbone}", "to": site, "gbps": 40})
    path.write_text(json.dumps(topo, indent=1))
    return names


def make_logs(folder: Path, ids: np.ndarray, appliances: list[str], lines: int, files: int,
              rng: np.random.Generator) -> list[Path]:
    folder.mkdir(exist_ok=True)
    n_obj = len(ids)
    # Zipf-like popularity over a random permutation of the objects.
    ranks = np.arange(1, n_obj + 1, dtype=np.float64)
    p = ranks ** -0.9
    p /= p.sum()
    perm = rng.permutation(n_obj)
    apps = np.array(appliances, dtype=object)
    paths = []
    per_file = lines // files
    for f in range(files):
        n = per_file if f < files - 1 else lines - per_file * (files - 1)
        obj = perm[rng.choice(n_obj, size=n, p=p)]
        df = pl.DataFrame({
            "ts": NOW - rng.random(n) * 86400 * 3,
            "appliance": apps[rng.integers(0, len(apps), n)],
            "method": "GET",
            "object": ids[obj],
            "status": np.where(rng.random(n) < 0.9, 206, 200),
            "bytes": rng.integers(1 << 20, 4 << 20, n),
            "range": "bytes=0-2097151",
            "client": "192.0.2.1",
            "dur_ms": np.round(rng.random(n) * 20, 3),
            "tier": "hdd",
        })
        path = folder / f"access-{f:02d}.jsonl"
        df.write_ndjson(path)
        if f % 3 == 2:  # some rotated, compressed files
            with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb", 1) as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
            path.unlink()
            path = Path(str(path) + ".gz")
        paths.append(path)
        print(f"  {path.name}: {n} lines", file=sys.stderr)
    return paths


class PssSampler(threading.Thread):
    """Peak of the summed proportional set size (shared pages split between the processes
    sharing them: the job's real memory) of a process and its descendants, every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += p.memory_full_info().pss
            self.peak = max(self.peak, total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--appliances", type=int, default=10)
    ap.add_argument("--backbone", type=int, default=5)
    ap.add_argument("--lines", type=int, default=50_000_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/oca-fill-scale"))
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--nights", type=int, default=1,
                    help="plan this many nights, each on the one before (--previous)")
    args = ap.parse_args()
    key = f"{args.objects}-{args.sites}x{args.appliances}-{args.backbone}-{args.lines}"
    data = args.dir / key
    rng = np.random.default_rng(7)
    if not (data / "done").exists():
        print(f"generating {data} ...", file=sys.stderr)
        data.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        ids = make_catalog(data / "catalog.csv", args.objects, rng)
        names = make_topology(data / "topology.json", args.sites, args.appliances,
                              args.backbone)
        make_logs(data / "logs", ids, names, args.lines, args.files, rng)
        (data / "done").write_text("")
        print(f"generated in {time.monotonic() - t:.0f} s", file=sys.stderr)
    logs = sorted(str(p) for p in (data / "logs").iterdir())
    print(f"oca-fill plan: {args.objects} objects, {args.sites} sites x {args.appliances} "
          f"appliances, {args.lines} log lines (nproc {os.cpu_count()})")
    previous = None
    for night in range(1, args.nights + 1):
        out = data / f"out{night}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(Path(sys.executable).parent / "oca-fill"), "plan",
               "--catalog", str(data / "catalog.csv"), "--topology",
               str(data / "topology.json"), "--out", str(out),
               "--now", str(NOW + (night - 1) * 86400), "--json", "--logs", *logs]
        if previous is not None:
            cmd += ["--previous", str(previous)]
        if args.processes:
            cmd += ["--processes", str(args.processes)]
        if not run_night(night, cmd, out):
            return 1
        previous = out
    return 0


def run_night(night: int, cmd: list[str], out: Path) -> bool:
    t = time.monotonic()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = PssSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.monotonic() - t
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        print(stderr[-4000:], file=sys.stderr)
        return False
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    summary = json.loads(stdout)
    manifests = len(list(out.glob("*.json")))
    size = sum(p.stat().st_size for p in out.glob("*.json"))
    print(f"night {night}{' (--previous: the night before)' if night > 1 else ''}:")
    print(f"  wall {wall:.1f} s (target <= 60 s); memory (target <= 4096 MB): peak of the "
          f"sum of PSS over the job's processes {sampler.peak / 2**20:.0f} MB, peak RSS of "
          f"its largest process {rss_kb / 1024:.0f} MB")
    print(f"  {manifests} manifests, {size / 1e6:.0f} MB")
    steps = re.search(r"oca-fill: (planned in .*)", stderr)
    if steps:
        print(f"  {steps.group(1)}")
    print(f"  summary totals: {json.dumps(summary.get('totals', {}), sort_keys=True)}")
    return True


if __name__ == "__main__":
    sys.exit(main())
