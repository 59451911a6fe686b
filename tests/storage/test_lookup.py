"""The serving map: id -> (path, size, digest, tier, content type), built from the index."""

from __future__ import annotations

import os

from oca.digest import digest_bytes
from oca.storage import layout
from oca.storage.index import Index
from oca.storage.lookup import ObjectLocation, build_serving_map, locations
from tests.conftest import make_file
from tests.storage import servable


def put_three(store, tmp_path):
    srcs = {i: make_file(tmp_path / f"s{i}", 1000 * (i + 1), seed=i) for i in range(3)}
    store.put("a.mp4", srcs[0], "ssd")
    store.put("b.m4s", srcs[1], "flash")
    store.put("c", srcs[2], "hdd", content_type="video/webm")
    return {k: v.read_bytes() for k, v in zip(("a.mp4", "b.m4s", "c"), srcs.values(),
                                              strict=True)}


def test_map_holds_exact_locations(store, appliance, tmp_path):
    data = put_three(store, tmp_path)
    generation, serving = build_serving_map(store.index, servable(store))
    ssd0, flash0, hdd0 = (str(appliance.disks[t][0]) for t in ("ssd", "flash", "hdd"))
    d = {k: digest_bytes(v) for k, v in data.items()}
    mtimes = {r.id: int(r.mtime) for r in store.index.objects()}
    assert serving == {
        "a.mp4": ObjectLocation(layout.object_path(ssd0, "a.mp4", d["a.mp4"]), 1000, d["a.mp4"],
                                "ssd", "video/mp4", ssd0, mtimes["a.mp4"]),
        "b.m4s": ObjectLocation(layout.object_path(flash0, "b.m4s", d["b.m4s"]), 2000,
                                d["b.m4s"], "flash", "video/iso.segment", flash0, mtimes["b.m4s"]),
        "c": ObjectLocation(layout.object_path(hdd0, "c", d["c"]), 3000, d["c"], "hdd",
                            "video/webm", hdd0, mtimes["c"]),
    }
    for object_id, loc in serving.items():
        assert locations(store.index, [object_id]) == {object_id: loc}
    assert locations(store.index, ["nope"]) == {"nope": None}
    for object_id, loc in serving.items():
        with open(loc.path, "rb") as f:
            assert f.read() == data[object_id]
    assert generation == store.index.change_seq()


def test_empty_index(store):
    generation, serving = build_serving_map(store.index, servable(store))
    assert serving == {}
    assert generation == store.index.change_seq() == 0


def test_objects_on_non_servable_disks_are_left_out(store, appliance, tmp_path):
    put_three(store, tmp_path)
    ssd0 = str(appliance.disks["ssd"][0])
    flash0 = str(appliance.disks["flash"][0])
    store.mark_failed(store.disks[ssd0], "I/O error")
    os.unlink(os.path.join(flash0, layout.MARKER))  # the mount vanished
    servable_paths = servable(store)
    assert servable_paths == {str(p) for p in appliance.disks["hdd"]}
    generation, serving = build_serving_map(store.index, servable_paths)
    assert sorted(serving) == ["c"]
    assert generation == store.index.change_seq()


def test_generation_follows_changes(store, tmp_path):
    src = make_file(tmp_path / "s", 100)
    g0, m0 = build_serving_map(store.index, servable(store))
    store.put("x", src, "ssd")
    g1, m1 = build_serving_map(store.index, servable(store))
    store.move("x", "hdd")
    g2, m2 = build_serving_map(store.index, servable(store))
    store.delete("x")
    g3, m3 = build_serving_map(store.index, servable(store))
    assert g0 < g1 < g2 < g3
    assert g3 == store.index.change_seq()
    assert (m0, m3) == ({}, {})
    assert (m1["x"].tier, m2["x"].tier) == ("ssd", "hdd")
    assert m1["x"].path != m2["x"].path


def test_read_only_index_of_a_worker(store, appliance, tmp_path):
    data = put_three(store, tmp_path)
    reader = Index(appliance.config().store.index, readonly=True)
    try:
        generation, serving = build_serving_map(reader, servable(store))
        assert generation == store.index.change_seq()
        assert {k: (v.size, v.xxh3) for k, v in serving.items()} == {
            k: (len(v), digest_bytes(v)) for k, v in data.items()}
        store.delete("a.mp4")
        generation2, serving2 = build_serving_map(reader, servable(store))
        assert generation2 == generation + 1
        assert sorted(serving2) == ["b.m4s", "c"]
    finally:
        reader.close()


def test_change_feed_names_each_changed_id(store, tmp_path):
    src = make_file(tmp_path / "s", 100)
    seq0 = store.index.change_seq()
    store.put("x", src, "ssd")
    store.put("y", src, "hdd")
    store.index.add_hits([("x", 1, 100, 1.0)])  # counters are not changes
    store.move("x", "flash")
    store.delete("y")
    ids, seq, complete = store.index.changes_since(seq0, limit=100)
    assert (ids, complete) == (["x", "y", "x", "y"], True)
    assert seq == store.index.change_seq() == seq0 + 4
    assert store.index.changes_since(seq, limit=100) == ([], seq, True)
    # More changes than the caller takes at once, or a pruned feed: reload everything.
    assert store.index.changes_since(seq0, limit=2)[2] is False
    assert store.index.prune_changes(keep=1) == 3
    assert store.index.changes_since(seq0, limit=100)[2] is False
    assert store.index.changes_since(seq - 1, limit=100) == (["y"], seq, True)
