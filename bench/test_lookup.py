"""Serving-path lookup: id -> (path, size, digest, tier) over 1M indexed objects.

Ours: the in-memory serving map (oca.storage.lookup.build_serving_map), which is
what a worker consults per request. Peer, in the same run and on the same index:
one SQLite query per id (a prepared statement on one open connection, the
cheapest way to ask SQLite), plus the path computation the map did ahead of time.

Each round looks up the same batch of random existing ids on both sides; the ids
are fresh str objects every round, as a parsed URL would give (no cached hash).
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import xxhash

from oca import mediatypes
from oca.storage import layout
from oca.storage.index import Index
from oca.storage.lookup import ObjectLocation, build_serving_map
from tests.conftest import make_appliance

OBJECTS = int(os.environ.get("OCA_BENCH_OBJECTS", 1_000_000))
BATCH = 10_000
MAP_BUILD_ROUNDS = 3
MAP_LOOKUP_ROUNDS = 50
SQLITE_LOOKUP_ROUNDS = 10

# One title is encoded ~20 ways (video ladders, audio, subtitles); one encode is one object.
_ENCODES = (
    [f"h264-{h}p-{k}k.mp4" for h, k in ((240, 235), (360, 560), (480, 1050), (720, 3000),
                                           (1080, 5800))]
    + [f"hevc-{h}p-{k}k.mp4" for h, k in ((720, 2350), (1080, 4300), (1440, 8000),
                                            (2160, 15600))]
    + [f"av1-{h}p-{k}k.mp4" for h, k in ((1080, 3000), (2160, 11000))]
    + [f"aac-{lang}-128k.m4a" for lang in ("en", "es", "fr", "de")]
    + [f"eac3-{lang}-640k.m4a" for lang in ("en", "es")]
    + ["sub-en.vtt", "sub-es.vtt"]
)


def object_id(i: int) -> str:
    """The i-th object's id, e.g. '004711-hevc-2160p-15600k.mp4' (a new str on every call)."""
    return f"{i // len(_ENCODES):06d}-{_ENCODES[i % len(_ENCODES)]}"


@dataclass
class LookupIndex:
    root: Path
    index_path: str
    disks: set[str]
    build_seconds: float


@pytest.fixture(scope="session")
def lookup_index(tmp_path_factory: pytest.TempPathFactory):
    """A real index (Store.init on a four-disk appliance) holding OBJECTS rows; built once.

    The rows go in with one executemany in one transaction; the files need not
    exist, since neither side of the lookup touches them.
    """
    root = tmp_path_factory.mktemp("lookup")
    app = make_appliance(root)
    disks = [(str(p), tier) for tier, paths in app.disks.items() for p in paths]
    index_path = str(app.config().store.index)
    rng = random.Random(1)
    ctypes = {e: mediatypes.guess(e) for e in _ENCODES}
    now = time.time()

    def rows():
        for i in range(OBJECTS):
            oid = object_id(i)
            disk, tier = disks[i % len(disks)]
            yield (oid, rng.randrange(1 << 20, 4 << 30), xxhash.xxh3_128_hexdigest(oid.encode()),
                   disk, tier, ctypes[_ENCODES[i % len(_ENCODES)]], now)

    t0 = time.perf_counter()
    index = Index(index_path)
    try:
        with index.write() as db:
            db.executemany(
                "INSERT INTO objects (id, size, xxh3, disk, tier, content_type, mtime) "
                "VALUES (?,?,?,?,?,?,?)", rows())
        index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        index.close()
    yield LookupIndex(root, index_path, {d for d, _ in disks}, time.perf_counter() - t0)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def reader(lookup_index: LookupIndex):
    """A read-only index connection, as a serving worker would hold one."""
    index = Index(lookup_index.index_path, readonly=True)
    yield index
    index.close()


@pytest.fixture(scope="session")
def serving_map(lookup_index: LookupIndex, reader: Index, bench_report: dict):
    """The serving map, built once; its RSS growth is measured on this first build."""
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    _, m = build_serving_map(reader, lookup_index.disks)
    seconds = time.perf_counter() - t0
    gc.collect()
    rss = proc.memory_info().rss - rss0
    assert len(m) == OBJECTS
    fig = bench_report.setdefault("lookup", {"objects": OBJECTS, "lines": []})
    fig.update(map_rss_bytes=rss, map_first_build_s=seconds)
    return m


def _batch(round_no: int) -> list[str]:
    rng = random.Random(1000 + round_no)
    return [object_id(i) for i in rng.sample(range(OBJECTS), BATCH)]


def _batches():
    """pedantic setup: round r gets batch r on both sides (fresh strings each time)."""
    state = {"round": 0}

    def setup():
        ids = _batch(state["round"])
        state["round"] += 1
        return (ids,), {}
    return setup


def _ns_per_lookup(benchmark) -> float:
    return benchmark.stats.stats.median / BATCH * 1e9


@pytest.mark.benchmark(group="lookup-build")
def test_build_serving_map(benchmark, lookup_index, reader, serving_map, bench_report):
    """Building the map from the index: what a worker pays at start and on every reload."""
    result = benchmark.pedantic(build_serving_map, args=(reader, lookup_index.disks),
                                rounds=MAP_BUILD_ROUNDS, iterations=1)
    assert len(result[1]) == OBJECTS
    fig = bench_report["lookup"]
    secs = benchmark.stats.stats.median
    rss = fig["map_rss_bytes"]
    benchmark.extra_info.update(objects=OBJECTS, rss_growth_mb=round(rss / 1e6, 1),
                                index_build_s=round(lookup_index.build_seconds, 1))
    fig["lines"].append(
        f"index fill: {OBJECTS:,} rows by executemany in one transaction: "
        f"{lookup_index.build_seconds:.1f} s (set-up, not a figure of oca)")
    fig["lines"].append(
        f"serving map build, {OBJECTS:,} objects: {secs:.2f} s (median of {MAP_BUILD_ROUNDS}; "
        f"first build {fig['map_first_build_s']:.2f} s), RSS growth {rss / 1e6:.0f} MB "
        f"({rss / OBJECTS:.0f} B/object)")


@pytest.mark.benchmark(group="lookup")
def test_lookup_map(benchmark, serving_map, bench_report):
    """Ours: BATCH random existing ids from the in-memory map."""
    def lookup(ids: list[str]) -> int:
        get = serving_map.get
        found = 0
        for oid in ids:
            loc = get(oid)
            if loc is not None:
                found += 1
        return found

    found = benchmark.pedantic(lookup, setup=_batches(), rounds=MAP_LOOKUP_ROUNDS, iterations=1)
    assert found == BATCH
    ns = _ns_per_lookup(benchmark)
    benchmark.extra_info.update(batch=BATCH, ns_per_lookup=round(ns, 1))
    bench_report["lookup"]["map_ns"] = ns


@pytest.mark.benchmark(group="lookup")
def test_lookup_sqlite(benchmark, reader, serving_map, bench_report):
    """Peer: the same batches, one SQLite query per id on the same index."""
    db = reader.db
    sql = "SELECT size, xxh3, disk, tier, content_type, mtime FROM objects WHERE id = ?"
    path = layout.object_path

    def lookup(ids: list[str]) -> int:
        found = 0
        for oid in ids:
            row = db.execute(sql, (oid,)).fetchone()
            if row is not None:
                size, digest, disk, tier, ctype, mtime = row
                ObjectLocation(path(disk, oid, digest), size, digest, tier, ctype, disk,
                               int(mtime))
                found += 1
        return found

    # Both sides answer the same thing: check it on one batch, outside the timing.
    for oid in _batch(0)[:100]:
        size, digest, disk, tier, ctype, mtime = db.execute(sql, (oid,)).fetchone()
        assert serving_map[oid] == (path(disk, oid, digest), size, digest, tier, ctype, disk,
                                    int(mtime))

    found = benchmark.pedantic(lookup, setup=_batches(), rounds=SQLITE_LOOKUP_ROUNDS,
                               iterations=1)
    assert found == BATCH
    ns = _ns_per_lookup(benchmark)
    benchmark.extra_info.update(batch=BATCH, ns_per_lookup=round(ns, 1))
    bench_report["lookup"]["sqlite_ns"] = ns
