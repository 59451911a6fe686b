"""Ingest throughput: Store.put of one file against `cp` of the same file, then fsync.

Both sides read the same source and write onto the same filesystem, alternating
round by round (cp first in even rounds, put first in odd ones) so that drift of
the machine hits both. Ours is the whole Store.put: reservation in the index,
fallocate, copy with xxh3-128 of every byte, fsync, digest check, rename, fsync
of the directory and the index commit. The peer is the real `cp` binary (GNU
coreutils copies in the kernel with copy_file_range: the bytes never reach user
space) followed by an fsync of the copy.

Page cache, the same for both sides and named in the report:
``cold``  sync and drop the page cache (echo 3 > /proc/sys/vm/drop_caches, root
          only) before each side, so the source is read from the disk;
``warm``  sync only; the source stays in the page cache, so the figure is the
          write path (copy, hash, writeback) alone.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from oca.storage import Store
from tests.conftest import make_appliance

from .machine import filesystem_of

SIZE = int(os.environ.get("OCA_BENCH_INGEST_MIB", 256)) << 20
ROUNDS = int(os.environ.get("OCA_BENCH_INGEST_ROUNDS", 10))
OBJECT_ID = "bench-ingest.mp4"
DROP_CACHES = "/proc/sys/vm/drop_caches"


@dataclass
class IngestBed:
    src: Path
    peer_dir: Path
    store: Store
    disk: Path
    filesystem: str


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory):
    """Source file, a one-disk appliance and the peer's folder, all on one filesystem.

    OCA_BENCH_DIR puts them on another filesystem (say a real appliance disk);
    by default they go under pytest's temporary folder.
    """
    if os.environ.get("OCA_BENCH_DIR"):
        root = Path(os.environ["OCA_BENCH_DIR"]) / f"oca-bench-{os.getpid()}"
        root.mkdir(parents=True)
    else:
        root = tmp_path_factory.mktemp("ingest")
    try:
        src = _write_source(root / "source.bin", SIZE)
        peer_dir = root / "peer"
        peer_dir.mkdir()
        app = make_appliance(root / "appliance", {"hdd": [f"{2 * SIZE + (64 << 20)}"]})
        disk = app.disks["hdd"][0]
        devices = {os.stat(p).st_dev for p in (src, peer_dir, disk)}
        if len(devices) != 1:
            pytest.fail(f"source, peer folder and disk are on different devices: {devices}")
        store = app.open()
        try:
            yield IngestBed(src, peer_dir, store, disk, filesystem_of(str(disk)))
        finally:
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _write_source(path: Path, size: int) -> Path:
    """*size* pseudo-random bytes (incompressible, reproducible), written in 8 MiB pieces."""
    rng = random.Random(7)
    with open(path, "wb") as f:
        for off in range(0, size, 8 << 20):
            f.write(rng.randbytes(min(8 << 20, size - off)))
        f.flush()
        os.fsync(f.fileno())
    return path


def _can_drop_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def _settle(cold: bool) -> None:
    os.sync()
    if cold:
        with open(DROP_CACHES, "w") as f:
            f.write("3\n")


def _cp_fsync(src: Path, dst: Path) -> float:
    """Seconds for `cp SRC DST` plus fsync of DST."""
    t0 = time.perf_counter()
    subprocess.run(["cp", "--", str(src), str(dst)], check=True)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    os.unlink(dst)
    return seconds


@pytest.mark.benchmark(group="ingest")
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_ingest_vs_cp(benchmark, bed: IngestBed, cache: str, bench_report: dict):
    """Store.put of a SIZE file, timed by pytest-benchmark; cp+fsync timed beside it."""
    cold = cache == "cold"
    if cold and not _can_drop_caches():
        pytest.skip(f"cold cache needs write access to {DROP_CACHES} (run as root)")
    dst = bed.peer_dir / "copy.bin"
    ours: list[float] = []
    peer: list[float] = []
    state = {"round": -1}  # round -1 is the warm-up of both sides, not recorded

    def record(times: list[float], seconds: float) -> None:
        if state["round"] >= 0:
            times.append(seconds)

    def setup():
        if state["round"] % 2 == 0:
            _settle(cold)
            record(peer, _cp_fsync(bed.src, dst))
        _settle(cold)

    def put():
        t0 = time.perf_counter()
        bed.store.put(OBJECT_ID, bed.src, "hdd")
        record(ours, time.perf_counter() - t0)

    def teardown():
        bed.store.delete(OBJECT_ID)
        if state["round"] % 2 != 0:
            _settle(cold)
            record(peer, _cp_fsync(bed.src, dst))
        state["round"] += 1

    if not cold:
        _settle(False)
        with open(bed.src, "rb") as f:
            while f.read(8 << 20):
                pass
    benchmark.pedantic(put, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=1,
                       iterations=1)

    assert len(ours) == len(peer) == ROUNDS
    mb = SIZE / 1e6
    ratios = [p / o for o, p in zip(ours, peer, strict=True)]  # (MB/o) / (MB/p)
    ours_mbs = mb / statistics.median(ours)
    peer_mbs = mb / statistics.median(peer)
    ratio = statistics.median(ratios)
    benchmark.extra_info.update(
        cache=cache, size_mib=SIZE >> 20, filesystem=bed.filesystem,
        ours_mb_s=round(ours_mbs), cp_fsync_mb_s=round(peer_mbs), ratio_median=round(ratio, 2),
        ratios=[round(r, 2) for r in ratios])
    fig = bench_report.setdefault("ingest", {"lines": []})
    fig["lines"].append(
        f"ingest {SIZE >> 20} MiB, {cache} cache, {ROUNDS} alternating rounds, "
        f"{bed.filesystem}: Store.put {ours_mbs:.0f} MB/s, cp+fsync {peer_mbs:.0f} MB/s "
        f"(medians, MB = 10^6 B)")
    fig["lines"].append(
        f"RATIO ingest ours/cp+fsync, {cache} cache: median {ratio:.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.80x)")
