"""The fill agent's receive path with three HTTP clients: the standard library's
``http.client`` (what ``oca/fill/source.py`` uses: ``readinto`` a reused buffer),
httpx (``iter_raw``) and aiohttp (``iter_chunked``). Each fetches the same objects from
the same ``oca serve`` and does what the agent's ingest does with every byte: xxh3 it and
write it to a file on a tmpfs, fsynced at the end. One at a time, then four at once
(threads for http.client and httpx, one event loop for aiohttp).

    sudo .venv/bin/python bench/fill/clients.py [--sizes 256M,256M,256M,256M] [--rounds 3]

Prints MiB/s and CPU seconds of this process (user + system) per client, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply import MiB, Source, parse_size  # noqa: E402

CHUNK = MiB


def sink(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    return fd, xxhash.xxh3_128()


def done(fd: int, h) -> str:
    os.fsync(fd)
    os.close(fd)
    return h.hexdigest()


def with_http_client(base: str, oid: str, path: Path) -> str:
    host = base.split("//")[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("GET", f"/o/{oid}")
    resp = conn.getresponse()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd, h = sink(path)
    while n := resp.readinto(buf):
        h.update(view[:n])
        os.write(fd, view[:n])
    conn.close()
    return done(fd, h)


def with_httpx(client: httpx.Client, base: str, oid: str, path: Path) -> str:
    fd, h = sink(path)
    with client.stream("GET", f"{base}/o/{oid}") as r:
        for chunk in r.iter_raw(CHUNK):
            h.update(chunk)
            os.write(fd, chunk)
    return done(fd, h)


async def with_aiohttp(session: aiohttp.ClientSession, base: str, oid: str, path: Path) -> str:
    fd, h = sink(path)
    async with session.get(f"{base}/o/{oid}") as r:
        async for chunk in r.content.iter_chunked(CHUNK):
            h.update(chunk)
            os.write(fd, chunk)
    return done(fd, h)


def run(kind: str, src: Source, out: Path, parallel: int) -> tuple[float, float]:
    ids = list(src.objects)
    paths = [out / oid for oid in ids]
    jobs = list(zip(ids, paths, strict=True))
    cpu0, t0 = time.process_time(), time.monotonic()
    if kind == "http.client":
        with ThreadPoolExecutor(parallel) as pool:
            got = list(pool.map(lambda a: with_http_client(src.base, *a), jobs))
    elif kind == "httpx":
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(parallel) as pool:
            got = list(pool.map(lambda a: with_httpx(client, src.base, *a), jobs))
    else:
        async def main() -> list[str]:
            sem = asyncio.Semaphore(parallel)
            async with aiohttp.ClientSession() as session:
                async def one(oid, path):
                    async with sem:
                        return await with_aiohttp(session, src.base, oid, path)
                return await asyncio.gather(*(one(o, p) for o, p in jobs))
        got = asyncio.run(main())
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    want = [src.objects[oid][1] for oid in ids]
    if got != want:
        raise SystemExit(f"{kind}: digests differ")
    for p in paths:
        p.unlink()
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256M,256M,256M,256M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it mounts a tmpfs")
    sizes = [parse_size(x) for x in args.sizes.split(",")]
    total = sum(sizes)
    work = Path(args.dir) / f"oca-bench-clients-{os.getpid()}"
    work.mkdir(parents=True)
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={total + 256 * MiB}", "tmpfs",
                    str(mnt)], check=True)
    src = None
    rows = []
    try:
        src = Source(work / "src", sizes)
        kinds = ("http.client", "httpx", "aiohttp")
        for parallel in (1, 4):
            got = {k: [] for k in kinds}
            for rnd in range(args.rounds):
                for kind in kinds[rnd % 3:] + kinds[:rnd % 3]:
                    got[kind].append(run(kind, src, mnt, parallel))
            for kind in kinds:
                wall = statistics.median(w for w, _ in got[kind])
                cpu = statistics.median(c for _, c in got[kind])
                rows.append((kind, parallel, total / MiB / wall, cpu))
                print(f"  {kind:12} parallel {parallel}: {total / MiB / wall:6.0f} MiB/s, "
                      f"cpu {cpu:.2f} s", flush=True)
    finally:
        if src is not None:
            src.stop()
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print("\n| client | transfers at once | MiB/s | CPU s (user + system) |")
    print("| --- | ---: | ---: | ---: |")
    for kind, par, rate, cpu in rows:
        print(f"| {kind} | {par} | {rate:.0f} | {cpu:.2f} |")
    print(f"\ncommand: {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
