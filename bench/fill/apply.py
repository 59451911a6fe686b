"""`oca fill apply` against curl: the same objects from the same `oca serve` into the same
disk, one at a time and four at once, each curl download followed by the fsync the
agent does, on an ext4 disk (a loop-mounted image) and on a tmpfs.

    sudo .venv/bin/python bench/fill/apply.py [--sizes 64M,128M,256M,512M] [--rounds 2]
                                              [--disk ext4,tmpfs] [--dir DIR]

Needs root (mount). Prints one line per run and a table of MiB/s (medians) with the
ratio oca/curl and each side's CPU seconds (user + system, from the children's rusage).
The agent's figure includes what curl's does not: the xxh3 of every byte, the digest
check and the atomic commit into the index.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import xxhash

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OCA = str(BIN / "oca")
MiB = 1 << 20


def parse_size(text: str) -> int:
    from oca.units import parse_size as ps
    return ps(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def write_config(root: Path, disk: Path, capacity: str, name: str, extra: str = "") -> Path:
    cfg = root / "oca.toml"
    cfg.write_text(f'[server]\nname = "{name}"\n{extra}\n[store]\nindex = "{root}/index.sqlite"\n'
                   f'[[store.disk]]\npath = "{disk}"\ntier = "hdd"\ncapacity = "{capacity}"\n')
    return cfg


def make_object(path: Path, size: int, seed: int) -> str:
    """Pseudo-random bytes (fast: one random MiB, shifted per MiB); their xxh3-128."""
    block = bytearray(os.urandom(MiB))
    h = xxhash.xxh3_128()
    with open(path, "wb") as f:
        left, i = size, 0
        while left:
            block[:8] = (seed * 1_000_003 + i).to_bytes(8, "little")
            chunk = block if left >= MiB else block[:left]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
            i += 1
    return h.hexdigest()


class Source:
    """An `oca serve` holding the objects on an hdd folder of the root filesystem."""

    def __init__(self, root: Path, sizes: list[int]):
        root.mkdir(parents=True)
        (root / "disk").mkdir()
        self.port, admin = free_port(), free_port()
        self.cfg = write_config(root, root / "disk", "100T", "src",
                                f'listen = "127.0.0.1:{self.port}"\n'
                                f'admin_listen = "127.0.0.1:{admin}"\nworkers = 2\n'
                                f'access_log = "{root}/access.jsonl"')
        run(OCA, "-c", str(self.cfg), "init")
        self.objects = {}
        for i, size in enumerate(sizes):
            oid = f"obj{i}-{size // MiB}m.mp4"
            src = root / oid
            digest = make_object(src, size, i)
            run(OCA, "-c", str(self.cfg), "put", oid, str(src), "--tier", "hdd")
            src.unlink()
            self.objects[oid] = (size, digest)
        self.proc = subprocess.Popen([OCA, "-c", str(self.cfg), "serve"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # Warm the page cache: both contenders read from memory.
        for oid in self.objects:
            with urllib.request.urlopen(f"{self.base}/o/{oid}") as r:
                while r.read(8 * MiB):
                    pass

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


class Disk:
    def __init__(self, kind: str, mnt: Path, size: int):
        self.kind, self.mnt = kind, mnt
        mnt.mkdir(parents=True)
        if kind == "tmpfs":
            run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt))
            self.image = None
        else:
            self.image = mnt.with_suffix(".img")
            run("truncate", "-s", str(size), str(self.image))
            run("mkfs.ext4", "-q", "-F", str(self.image))
            run("mount", "-o", "loop", str(self.image), str(mnt))

    def umount(self) -> None:
        subprocess.run(["umount", str(self.mnt)], check=False)
        if self.image is not None:
            self.image.unlink(missing_ok=True)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_oca(work: Path, disk: Disk, src: Source, parallel: int) -> tuple[float, float]:
    root = work / "target"
    shutil.rmtree(root, ignore_errors=True)
    store_disk = disk.mnt / "store"
    shutil.rmtree(store_disk, ignore_errors=True)
    root.mkdir()
    store_disk.mkdir()
    cfg = write_config(root, store_disk, "100T", "a1")
    run(OCA, "-c", str(cfg), "init")
    manifest = root / "a1.json"
    manifest.write_text(json.dumps({
        "appliance": "a1", "generated": 1, "delete": [], "upstream": ["src"],
        "sources": {"src": src.base},
        "objects": [{"id": oid, "size": size, "xxh3": digest, "tier": "hdd", "source": "src",
                     "wave": 0} for oid, (size, digest) in src.objects.items()]}))
    cpu0, t0 = children_cpu(), time.monotonic()
    r = subprocess.run([OCA, "-c", str(cfg), "fill", "apply", str(manifest), "--parallel",
                        str(parallel), "--json"], capture_output=True, text=True)
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    if r.returncode != 0:
        raise SystemExit(f"oca fill apply failed: {r.stderr[-2000:]}")
    summary = json.loads(r.stdout)
    if summary["added"] != len(src.objects):
        raise SystemExit(f"oca fill apply added {summary['added']} of {len(src.objects)}")
    return wall, cpu


def run_curl(disk: Disk, src: Source, parallel: int) -> tuple[float, float]:
    out = disk.mnt / "curl"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    ids = list(src.objects)
    # Each job: curl into the file, then fsync it (as the agent's ingest does).
    fsync = ("import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); "
             "os.fsync(os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY))")
    cpu0, t0 = children_cpu(), time.monotonic()
    for start in range(0, len(ids), parallel):
        batch = ids[start:start + parallel]
        procs = [subprocess.Popen(["sh", "-c", f'curl -sf -o "$1" "$2" && "{sys.executable}" '
                                   f"-c '{fsync}' \"$1\"", "sh", str(out / oid),
                                   f"{src.base}/o/{oid}"]) for oid in batch]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit("curl failed")
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    for oid, (size, _) in src.objects.items():
        if (out / oid).stat().st_size != size:
            raise SystemExit(f"curl got a short {oid}")
    shutil.rmtree(out)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64M,128M,256M,512M")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--disk", default="ext4,tmpfs")
    ap.add_argument("--dir", default="/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it mounts an ext4 image and a tmpfs")
    sizes = [parse_size(x) for x in args.sizes.split(",")]
    total = sum(sizes)
    work = Path(args.dir) / f"oca-bench-apply-{os.getpid()}"
    work.mkdir(parents=True)
    src = None
    rows = []
    try:
        src = Source(work / "src", sizes)
        print(f"source: {len(sizes)} objects, {total / MiB:.0f} MiB, {src.base}", flush=True)
        for kind in args.disk.split(","):
            disk = Disk(kind, work / f"mnt-{kind}", int(total * 2.5) + 256 * MiB)
            try:
                for parallel in (1, 4):
                    got: dict[str, list[tuple[float, float]]] = {"oca": [], "curl": []}
                    for rnd in range(args.rounds):
                        for who in (("oca", "curl") if rnd % 2 == 0 else ("curl", "oca")):
                            wall, cpu = (run_oca(work, disk, src, parallel) if who == "oca"
                                         else run_curl(disk, src, parallel))
                            got[who].append((wall, cpu))
                            print(f"  {kind:5} parallel {parallel} round {rnd + 1} {who:4} "
                                  f"{total / MiB / wall:7.0f} MiB/s  cpu {cpu:5.2f} s",
                                  flush=True)
                    o = statistics.median(w for w, _ in got["oca"])
                    c = statistics.median(w for w, _ in got["curl"])
                    rows.append((kind, parallel, total / MiB / o, total / MiB / c, c / o,
                                 statistics.median(x for _, x in got["oca"]),
                                 statistics.median(x for _, x in got["curl"])))
            finally:
                disk.umount()
    finally:
        if src is not None:
            src.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n| disk | transfers at once | oca fill apply MiB/s | curl + fsync MiB/s | "
          "oca/curl | oca CPU s | curl CPU s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, par, o, c, ratio, ocpu, ccpu in rows:
        print(f"| {kind} | {par} | {o:.0f} | {c:.0f} | {ratio:.2f}x | {ocpu:.2f} | {ccpu:.2f} |")
    print(f"\ncommand: {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
