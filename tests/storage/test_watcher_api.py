"""The Store methods the store watcher uses: serving map, change feed, locations in
bulk, hit counters, pruning, probes of every disk with a timeout."""

from __future__ import annotations

import os
import time

from oca.storage import layout
from oca.storage.index import ObjectRecord
from oca.storage.lookup import ObjectLocation
from tests.conftest import make_file


def put_two(store, tmp_path):
    a = store.put("a.mp4", make_file(tmp_path / "a", 1000, seed=1), "ssd")
    b = store.put("b.m4s", make_file(tmp_path / "b", 2000, seed=2), "hdd")
    return a, b


def test_serving_map_is_every_object_at_the_feed_position(store, tmp_path):
    a, b = put_two(store, tmp_path)
    seq, serving = store.serving_map()
    assert seq == store.change_seq() == 2
    assert set(serving) == {"a.mp4", "b.m4s"}
    assert serving["a.mp4"] == ObjectLocation(store.path_of(a), 1000, a.xxh3, "ssd",
                                              a.content_type, a.disk, int(a.mtime))


def test_changes_since_follows_puts_and_deletes(store, tmp_path):
    put_two(store, tmp_path)
    seq0 = store.change_seq()
    store.delete("a.mp4")
    ids, seq, complete = store.changes_since(seq0, limit=10)
    assert (ids, seq, complete) == (["a.mp4"], seq0 + 1, True)
    assert store.changes_since(seq, limit=10) == ([], seq, True)
    assert store.changes_since(0, limit=1)[2] is False


def test_locations_answers_every_id_asked(store, tmp_path):
    a, b = put_two(store, tmp_path)
    got = store.locations(["b.m4s", "gone", "a.mp4", "b.m4s"])
    assert list(got) == ["b.m4s", "gone", "a.mp4"]
    assert got["gone"] is None
    assert got["a.mp4"].path == store.path_of(a)
    assert got["b.m4s"].path == store.path_of(b) and got["b.m4s"].tier == "hdd"
    assert store.locations([]) == {}


def test_locations_of_100000_ids(store):
    """The figure in Store.locations' docstring: 100,000 ids, half indexed."""
    disk = next(iter(store.disks))
    with store.index.write():
        for i in range(0, 100_000, 2):
            store.index.put(ObjectRecord(f"o{i}", i, "0" * 32, disk, "ssd", "video/mp4", 1.0))
    ids = [f"o{i}" for i in range(100_000)]
    t0 = time.perf_counter()
    got = store.locations(ids)
    elapsed = time.perf_counter() - t0
    print(f"locations of 100,000 ids: {elapsed:.3f} s")
    assert len(got) == 100_000
    assert sum(v is None for v in got.values()) == 50_000
    assert got["o4"].path == layout.object_path(disk, "o4", "0" * 32)


def test_add_hits_accumulates_and_ignores_unknown_ids(store, tmp_path):
    put_two(store, tmp_path)
    seq = store.change_seq()
    store.add_hits([("a.mp4", 2, 2000, 50.0), ("unknown", 9, 9, 99.0)])
    store.add_hits([("a.mp4", 1, 1000, 40.0)])
    rec = store.get("a.mp4")
    assert (rec.hits, rec.bytes_served, rec.last_hit) == (3, 3000, 50.0)
    assert store.change_seq() == seq  # counters are not changes


def test_prune_changes_keeps_the_newest(store, tmp_path):
    put_two(store, tmp_path)
    store.delete("a.mp4")
    assert store.prune_changes(keep=1) == 2
    assert store.changes_since(0, limit=10)[2] is False
    assert store.changes_since(2, limit=10) == (["a.mp4"], 3, True)


def test_probe_all_reports_every_disk(store, appliance):
    health = store.probe_all()
    assert set(health) == set(store.disks)
    assert all(h.state == "ok" and not h.hung for h in health.values())
    ssd0 = str(appliance.disks["ssd"][0])
    os.unlink(os.path.join(ssd0, layout.MARKER))
    h = store.probe_all()[ssd0]
    assert (h.state, h.hung) == ("failed", False) and "marker" in h.reason


def hang_marker(disk: str) -> None:
    """Make the disk's probe block: its marker becomes a FIFO nobody writes (open blocks)."""
    marker = os.path.join(disk, layout.MARKER)
    os.rename(marker, marker + ".real")
    os.mkfifo(marker)


def release_marker(disk: str) -> None:
    """Let a probe blocked by hang_marker go (open a writer), then put the marker back."""
    marker = os.path.join(disk, layout.MARKER)
    fd = os.open(marker, os.O_RDWR | os.O_NONBLOCK)  # a reader/writer: opens without blocking
    time.sleep(0.2)
    os.close(fd)
    os.rename(marker + ".real", marker)


def test_probe_all_reports_a_hung_disk_within_the_timeout(store, appliance):
    hdd0 = str(appliance.disks["hdd"][0])
    hang_marker(hdd0)
    try:
        t0 = time.monotonic()
        health = store.probe_all(timeout=0.5)
        assert time.monotonic() - t0 < 1.5
        assert (health[hdd0].state, health[hdd0].hung) == ("failed", True)
        assert health[hdd0].reason == "hung: no answer to a probe in 0.5 s"
        assert all(h.state == "ok" for p, h in health.items() if p != hdd0)
        assert not store.index.disks()[hdd0].failed  # a hang is not sticky
        stuck = store._prober.stuck()
        assert list(stuck) == [hdd0]
        # while the first child is stuck, no second one: reported hung at once
        t0 = time.monotonic()
        again = store.probe(store.disks[hdd0], timeout=5)
        assert time.monotonic() - t0 < 0.5
        assert again.hung and "no answer for" in again.reason
        assert store._prober.stuck() == stuck
    finally:
        release_marker(hdd0)
    deadline = time.monotonic() + 5
    while store._prober.stuck() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store._prober.stuck() == {}
    assert store.probe_all(timeout=2)[hdd0].state == "ok"


def test_status_with_a_hung_disk_returns(store, appliance):
    hdd1 = str(appliance.disks["hdd"][1])
    hang_marker(hdd1)
    try:
        t0 = time.monotonic()
        result = store.status()
        assert time.monotonic() - t0 < store.probe_timeout + 1
        d = next(d for d in result["disks"] if d["path"] == hdd1)
        assert d["state"] == "failed" and d["reason"].startswith("hung: ")
        assert result["tiers"]["hdd"]["healthy"] == 1
    finally:
        release_marker(hdd1)
