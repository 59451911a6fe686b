"""The tiered store: put, replace, move, delete, placement, capacity, health, status.

Every test works on real folders under tmp_path and checks what is on disk and in
the index, not only what the call returned.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from oca.digest import digest_bytes
from oca.errors import (
    DigestMismatchError,
    ObjectExistsError,
    StoreError,
    TierFullError,
    UnknownObjectError,
    UsageError,
)
from oca.ids import BadIdError
from oca.storage import ObjectRecord, Store, layout
from tests.conftest import make_appliance, make_file
from tests.storage import servable

K = 1024


def files_under(disk: Path | str, sub: str) -> list[str]:
    """Relative paths of every file below <disk>/<sub>, sorted."""
    root = Path(disk) / sub
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def disk_files(store: Store) -> dict[str, tuple[list[str], list[str]]]:
    return {p: (files_under(p, layout.OBJECTS), files_under(p, layout.TMP)) for p in store.disks}


def snapshot(store: Store) -> tuple:
    """Everything a refused operation must leave as it was."""
    return (store.change_seq(), list(store.index.objects()), disk_files(store),
            store.index.reserved_by_disk())


def disk_of(appliance, tier: str, i: int = 0) -> str:
    return str(appliance.disks[tier][i])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


@pytest.fixture
def small(tmp_path):
    """Factory for an appliance with small capacities, opened; closed at teardown."""
    opened: list[Store] = []

    def make(layout_: dict[str, list[str | None]]):
        app = make_appliance(tmp_path / "small", layout_)
        s = app.open()
        opened.append(s)
        return app, s

    yield make
    for s in opened:
        s.close()


# -- put ---------------------------------------------------------------------------


def test_put_writes_exact_bytes_at_the_layout_path(store, appliance, tmp_path):
    src = make_file(tmp_path / "src.bin", 100_000, seed=1)
    data = src.read_bytes()
    gen = store.change_seq()
    rec = store.put("title.mp4", src, "ssd")
    ssd0 = disk_of(appliance, "ssd")
    assert rec == ObjectRecord("title.mp4", 100_000, digest_bytes(data), ssd0, "ssd",
                               "video/mp4", rec.mtime)
    assert rec.hits == 0 and rec.bytes_served == 0 and rec.last_hit is None
    path = layout.object_path(ssd0, "title.mp4", digest_bytes(data))
    assert store.path_of(rec) == path
    assert Path(path).read_bytes() == data
    a, b = layout.shard("title.mp4")
    assert files_under(ssd0, "objects") == [f"{a}/{b}/title.mp4.{digest_bytes(data)}"]
    assert files_under(ssd0, "tmp") == []
    assert store.get("title.mp4") == rec
    assert store.change_seq() == gen + 1
    assert store.index.reserved_by_disk() == {}
    # the source is left alone
    assert src.read_bytes() == data


def test_put_content_type_guessed_or_explicit(store, tmp_path):
    src = make_file(tmp_path / "s", 10)
    assert store.put("seg.m4s", src, "hdd").content_type == "video/iso.segment"
    assert store.put("blob", src, "hdd").content_type == "application/octet-stream"
    rec = store.put("x.mp4", src, "hdd", content_type="video/webm; codecs=vp9")
    assert rec.content_type == "video/webm; codecs=vp9"
    assert store.get("x.mp4").content_type == "video/webm; codecs=vp9"


def test_put_each_tier(store, appliance, tmp_path):
    src = make_file(tmp_path / "s", 4096)
    for tier in ("ssd", "flash", "hdd"):
        rec = store.put(f"o-{tier}", src, tier)
        assert rec.tier == tier
        assert rec.disk == disk_of(appliance, tier)
        assert Path(store.path_of(rec)).read_bytes() == src.read_bytes()
    assert [r.id for r in store.objects(tier="flash")] == ["o-flash"]
    assert [r.id for r in store.objects()] == ["o-flash", "o-hdd", "o-ssd"]


def test_put_with_matching_expected_digest(store, tmp_path):
    src = make_file(tmp_path / "s", 5000, seed=3)
    rec = store.put("a", src, "ssd", expected_digest=digest_bytes(src.read_bytes()))
    assert rec.xxh3 == digest_bytes(src.read_bytes())


def test_put_zero_byte_object(store, appliance, tmp_path):
    src = tmp_path / "empty"
    src.write_bytes(b"")
    rec = store.put("empty.vtt", src, "flash")
    assert rec.size == 0
    assert rec.xxh3 == digest_bytes(b"")
    assert rec.content_type == "text/vtt"
    assert Path(store.path_of(rec)).read_bytes() == b""
    assert store.status(io=False)["tiers"]["flash"]["objects"] == 1


def test_put_reports_progress(store, tmp_path):
    src = make_file(tmp_path / "s", 3 * (1 << 20) + 5)
    seen: list[int] = []
    store.put("big", src, "hdd", on_bytes=seen.append)
    assert seen == [1 << 20, 2 << 20, 3 << 20, 3 * (1 << 20) + 5]


def test_put_existing_without_replace_changes_nothing(store, tmp_path):
    first = make_file(tmp_path / "one", 2000, seed=1)
    other = make_file(tmp_path / "two", 3000, seed=2)
    rec = store.put("a.mp4", first, "ssd")
    before = snapshot(store)
    with pytest.raises(ObjectExistsError) as e:
        store.put("a.mp4", other, "hdd")
    assert str(e.value) == (f"object 'a.mp4' already stored (tier ssd, {rec.xxh3}); "
                            "use --replace to overwrite it")
    assert snapshot(store) == before
    assert Path(store.path_of(rec)).read_bytes() == first.read_bytes()


def test_replace_with_new_bytes(store, appliance, tmp_path):
    old_src = make_file(tmp_path / "one", 2000, seed=1)
    new_src = make_file(tmp_path / "two", 3000, seed=2)
    old = store.put("a.mp4", old_src, "ssd")
    store.index.add_hits([("a.mp4", 7, 14000, 1000.0)])
    gen = store.change_seq()
    new = store.put("a.mp4", new_src, "ssd", replace=True)
    assert (new.size, new.xxh3, new.disk, new.tier) == (
        3000, digest_bytes(new_src.read_bytes()), disk_of(appliance, "ssd"), "ssd")
    assert (new.hits, new.bytes_served, new.last_hit) == (7, 14000, 1000.0)
    assert Path(store.path_of(new)).read_bytes() == new_src.read_bytes()
    assert not os.path.exists(store.path_of(old))
    assert files_under(new.disk, "objects") == [
        os.path.relpath(store.path_of(new), os.path.join(new.disk, "objects"))]
    assert store.change_seq() == gen + 1
    assert store.get("a.mp4") == new


def test_replace_onto_another_tier_removes_the_old_file(store, appliance, tmp_path):
    old = store.put("a", make_file(tmp_path / "one", 2000, seed=1), "ssd")
    new = store.put("a", make_file(tmp_path / "two", 2000, seed=2), "hdd", replace=True)
    assert new.tier == "hdd"
    assert not os.path.exists(store.path_of(old))
    assert files_under(disk_of(appliance, "ssd"), "objects") == []
    assert store.status(io=False)["tiers"]["ssd"]["used"] == 0


def test_replace_with_the_same_bytes_keeps_one_file(store, appliance, tmp_path):
    src = make_file(tmp_path / "one", 2000, seed=1)
    old = store.put("a", src, "ssd")
    new = store.put("a", src, "ssd", replace=True)
    assert store.path_of(new) == store.path_of(old)
    assert Path(store.path_of(new)).read_bytes() == src.read_bytes()
    assert len(files_under(disk_of(appliance, "ssd"), "objects")) == 1


def test_digest_mismatch_leaves_nothing(store, tmp_path):
    src = make_file(tmp_path / "s", 50_000)
    wrong = "0" * 32
    before = snapshot(store)
    with pytest.raises(DigestMismatchError) as e:
        store.put("a.mp4", src, "ssd", expected_digest=wrong)
    assert str(e.value) == (f"{src} does not match the expected digest: "
                            f"got {digest_bytes(src.read_bytes())}, expected {wrong}")
    assert snapshot(store) == before
    assert store.index.get("a.mp4") is None


def test_digest_mismatch_on_replace_keeps_the_old_object(store, tmp_path):
    old = store.put("a", make_file(tmp_path / "one", 100), "ssd")
    before = snapshot(store)
    with pytest.raises(DigestMismatchError):
        store.put("a", make_file(tmp_path / "two", 100, seed=9), "ssd", replace=True,
                  expected_digest="f" * 32)
    assert snapshot(store) == before
    assert store.get("a") == old


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"object_id": "../etc/passwd"}, BadIdError,
     "invalid object id '../etc/passwd': character '/' not allowed (A-Z a-z 0-9 . _ -)"),
    ({"object_id": ".a"}, BadIdError, "invalid object id '.a': must start with a letter or digit"),
    ({"tier": "nvme"}, UsageError, "unknown tier 'nvme' (expected one of ssd, flash, hdd)"),
    ({"tier": "SSD"}, UsageError, "unknown tier 'SSD' (expected one of ssd, flash, hdd)"),
    ({"content_type": "video"}, UsageError,
     "invalid content type 'video': expected type/subtype, e.g. video/mp4"),
    ({"content_type": "video/mp4\r\nX: y"}, UsageError,
     "invalid content type 'video/mp4\\r\\nX: y': expected type/subtype, e.g. video/mp4"),
    ({"expected_digest": "ABC"}, UsageError,
     "invalid digest 'ABC': expected 32 lowercase hex digits"),
    ({"expected_digest": "A" * 32}, UsageError,
     f"invalid digest '{'A' * 32}': expected 32 lowercase hex digits"),
])
def test_bad_arguments_change_nothing(store, tmp_path, kwargs, error, message):
    src = make_file(tmp_path / "s", 100)
    store.put("existing", src, "hdd")
    before = snapshot(store)
    args = {"object_id": "new.mp4", "source": src, "tier": "ssd", **kwargs}
    with pytest.raises(error) as e:
        store.put(**args)
    assert str(e.value) == message
    assert snapshot(store) == before


def test_source_missing(store, tmp_path):
    before = snapshot(store)
    with pytest.raises(StoreError) as e:
        store.put("a", tmp_path / "nope.bin", "ssd")
    assert str(e.value) == f"cannot read {tmp_path / 'nope.bin'}: No such file or directory"
    assert snapshot(store) == before


def test_source_is_a_directory(store, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    before = snapshot(store)
    with pytest.raises(StoreError) as e:
        store.put("a", folder, "ssd")
    assert str(e.value) == f"cannot read {folder}: not a regular file"
    assert snapshot(store) == before


def test_get_unknown_and_bad_id(store):
    with pytest.raises(UnknownObjectError, match=r"^no object 'nope' in the store$"):
        store.get("nope")
    with pytest.raises(BadIdError):
        store.get("a/b")


def test_open_without_index_says_run_init(tmp_path):
    app = make_appliance(tmp_path, {"ssd": ["1M"]}, init=False)
    with pytest.raises(StoreError) as e:
        app.open()
    assert str(e.value) == (f"index {tmp_path / 'var' / 'index.sqlite'} not found: "
                            f"run `oca init -c {app.config_path}` first")


def test_init_is_idempotent_and_keeps_disk_identity(appliance, tmp_path):
    with appliance.open() as s:
        ids = {p: r.disk_id for p, r in s.index.disks().items()}
        rec = s.put("a", make_file(tmp_path / "s", 100), "ssd")
    Store.init(appliance.config()).close()
    with appliance.open() as s:
        assert {p: r.disk_id for p, r in s.index.disks().items()} == ids
        assert s.get("a") == rec
    for path in ids:
        assert (Path(path) / ".oca-disk").is_file()


def test_init_refuses_a_missing_disk_folder(tmp_path):
    app = make_appliance(tmp_path, {"ssd": ["1M"]}, init=False)
    app.disks["ssd"][0].rmdir()
    with pytest.raises(StoreError) as e:
        Store.init(app.config())
    assert str(e.value) == (f"disk {app.disks['ssd'][0]} does not exist or is not a directory: "
                            "mount or create it first")


# -- placement and capacity ---------------------------------------------------------


def test_placement_fills_by_free_share_ties_by_path(small, tmp_path):
    # hdd0 is the smaller disk: a tie between equal free shares goes to it by path,
    # otherwise the disk with the larger share of its capacity free wins.
    app, s = small({"hdd": ["100K", "200K"]})
    src = make_file(tmp_path / "s", 50 * K)
    chosen = [Path(s.put(f"o{i}", src, "hdd").disk).name for i in range(6)]
    assert chosen == ["hdd0", "hdd1", "hdd1", "hdd0", "hdd1", "hdd1"]
    with pytest.raises(TierFullError):
        s.put("o6", src, "hdd")


def test_placement_is_deterministic(tmp_path):
    runs = []
    for n in range(2):
        app = make_appliance(tmp_path / f"run{n}", {"hdd": ["300K", "300K", "150K"]})
        with app.open() as s:
            runs.append([Path(s.put(f"o{i}", make_file(tmp_path / "s", 30 * K), "hdd").disk).name
                         for i in range(10)])
    assert runs[0] == runs[1]
    assert runs[0][:3] == ["hdd0", "hdd1", "hdd2"]


def test_tier_full_names_tier_and_each_disk_and_writes_nothing(small, tmp_path):
    app, s = small({"ssd": ["1M"], "hdd": ["100K", "100K"]})
    s.put("a", make_file(tmp_path / "a", 80 * K), "hdd")
    s.put("b", make_file(tmp_path / "b", 90 * K), "hdd")
    before = snapshot(s)
    with pytest.raises(TierFullError) as e:
        s.put("big.mp4", make_file(tmp_path / "c", 30 * K), "hdd")
    hdd0, hdd1 = (disk_of(app, "hdd", i) for i in (0, 1))
    assert str(e.value) == (f"tier hdd is full: no disk has room for 'big.mp4' (30K): "
                            f"{hdd0}: 20K free; {hdd1}: 10K free")
    assert snapshot(s) == before


def test_object_exactly_filling_the_capacity_is_accepted(small, tmp_path):
    app, s = small({"ssd": ["100K"]})
    s.put("a", make_file(tmp_path / "a", 60 * K), "ssd")
    rec = s.put("b", make_file(tmp_path / "b", 40 * K), "ssd")
    assert rec.size == 40 * K
    st = s.status(io=False)
    assert st["disks"][0]["used"] == st["disks"][0]["capacity"] == 100 * K
    assert (st["disks"][0]["state"], st["disks"][0]["reason"]) == ("full", "capacity 100K used up")
    with pytest.raises(TierFullError) as e:
        s.put("c", make_file(tmp_path / "c", 1), "ssd")
    assert str(e.value) == (f"tier ssd is full: no disk has room for 'c' (1): "
                            f"{disk_of(app, 'ssd')}: 0 free")


def test_one_byte_over_the_capacity_is_refused(small, tmp_path):
    app, s = small({"ssd": ["100K"]})
    with pytest.raises(TierFullError) as e:
        s.put("a", make_file(tmp_path / "a", 100 * K + 1), "ssd")
    assert str(e.value) == (f"tier ssd is full: no disk has room for 'a' (100K): "
                            f"{disk_of(app, 'ssd')}: 100K free")
    assert files_under(disk_of(app, "ssd"), "objects") == []
    assert files_under(disk_of(app, "ssd"), "tmp") == []


def test_tier_without_disks(small, tmp_path):
    app, s = small({"ssd": ["1M"]})
    with pytest.raises(TierFullError, match=r"^tier hdd has no disks configured$"):
        s.put("a", make_file(tmp_path / "a", 1), "hdd")


def test_reservations_released_after_success_and_failure(store, tmp_path):
    src = make_file(tmp_path / "s", 1000)
    store.put("a", src, "ssd")
    assert store.index.reserved_by_disk() == {}
    with pytest.raises(DigestMismatchError):
        store.put("b", src, "ssd", expected_digest="1" * 32)
    assert store.index.reserved_by_disk() == {}
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(65 << 20)  # sparse: larger than ssd0's 64M capacity
    with pytest.raises(TierFullError):
        store.put("c", big, "ssd")
    assert store.index.reserved_by_disk() == {}


def test_live_reservation_counts_against_capacity(small, tmp_path):
    app, s = small({"ssd": ["100K"]})
    ssd0 = disk_of(app, "ssd")
    with s.index.write():
        s.index.reserve("inflight", ssd0, 80 * K)  # held by this (live) process
    with pytest.raises(TierFullError, match=r": .*ssd0: 20K free$"):
        s.put("a", make_file(tmp_path / "a", 30 * K), "ssd")
    assert s.index.reserved_by_disk() == {ssd0: 80 * K}
    with s.index.write():
        s.index.release("inflight")
    assert s.put("a", make_file(tmp_path / "a", 30 * K), "ssd").disk == ssd0


def test_stale_reservation_of_a_dead_process_is_cleared(small, tmp_path):
    app, s = small({"ssd": ["100K"]})
    ssd0 = disk_of(app, "ssd")
    with s.index.write() as db:
        db.execute("INSERT INTO reservations VALUES (?,?,?,?,?)",
                   (uuid.uuid4().hex, ssd0, 100 * K, dead_pid(), 0.0))
    assert s.index.reserved_by_disk() == {ssd0: 100 * K}
    rec = s.put("a", make_file(tmp_path / "a", 100 * K), "ssd")
    assert rec.disk == ssd0
    assert s.index.reserved_by_disk() == {}


# -- hits ------------------------------------------------------------------------------


def test_add_hits_accumulates_without_a_change_feed_entry(store, tmp_path):
    src = make_file(tmp_path / "s", 10)
    store.put("a", src, "ssd")
    store.put("b", src, "ssd")
    gen = store.change_seq()
    store.index.add_hits([("a", 2, 200, 50.0), ("b", 1, 10, 60.0)])
    store.index.add_hits([("a", 3, 300, 40.0), ("unknown", 9, 9, 99.0)])
    a, b = store.get("a"), store.get("b")
    assert (a.hits, a.bytes_served, a.last_hit) == (5, 500, 50.0)
    assert (b.hits, b.bytes_served, b.last_hit) == (1, 10, 60.0)
    assert store.index.get("unknown") is None
    assert store.change_seq() == gen


# -- move ----------------------------------------------------------------------------


def test_move_across_tiers_keeps_bytes_digest_and_counters(store, appliance, tmp_path):
    src = make_file(tmp_path / "s", 200_000, seed=5)
    data = src.read_bytes()
    rec = store.put("t.mp4", src, "ssd", content_type="video/mp4; codecs=avc1")
    store.index.add_hits([("t.mp4", 4, 800_000, 123.0)])
    paths = [store.path_of(rec)]
    for tier in ("hdd", "flash"):
        gen = store.change_seq()
        moved = store.move("t.mp4", tier)
        assert (moved.tier, moved.disk) == (tier, disk_of(appliance, tier))
        assert (moved.size, moved.xxh3, moved.content_type, moved.mtime) == (
            rec.size, rec.xxh3, rec.content_type, rec.mtime)
        assert (moved.hits, moved.bytes_served, moved.last_hit) == (4, 800_000, 123.0)
        assert store.get("t.mp4") == moved
        assert Path(store.path_of(moved)).read_bytes() == data
        assert not os.path.exists(paths[-1])
        assert store.change_seq() == gen + 1
        paths.append(store.path_of(moved))
    for tier in ("ssd", "hdd"):
        for d in appliance.disks[tier]:
            assert files_under(d, "objects") == []
            assert files_under(d, "tmp") == []
    assert store.index.reserved_by_disk() == {}


def test_move_to_the_same_tier_is_refused(store, tmp_path):
    store.put("a", make_file(tmp_path / "s", 10), "hdd")
    before = snapshot(store)
    with pytest.raises(StoreError, match=r"^object 'a' is already on tier hdd$"):
        store.move("a", "hdd")
    assert snapshot(store) == before


def test_move_unknown_bad_tier_bad_id(store):
    with pytest.raises(UnknownObjectError, match=r"^no object 'nope' in the store$"):
        store.move("nope", "hdd")
    with pytest.raises(UsageError, match=r"unknown tier 'tape'"):
        store.move("nope", "tape")
    with pytest.raises(BadIdError):
        store.move("../x", "hdd")


def test_move_to_a_full_tier_changes_nothing(small, tmp_path):
    app, s = small({"ssd": ["10K"], "hdd": ["1M"]})
    rec = s.put("a", make_file(tmp_path / "a", 20 * K), "hdd")
    before = snapshot(s)
    with pytest.raises(TierFullError, match=r"^tier ssd is full: no disk has room for 'a'"):
        s.move("a", "ssd")
    assert snapshot(s) == before
    assert Path(s.path_of(rec)).is_file()


def test_move_of_a_corrupt_object_is_refused(store, tmp_path):
    rec = store.put("a", make_file(tmp_path / "s", 5000), "ssd")
    path = Path(store.path_of(rec))
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(data)
    before = snapshot(store)
    with pytest.raises(StoreError) as e:
        store.move("a", "hdd")
    assert str(e.value) == (f"object 'a' on {rec.disk} does not match its digest (corrupt): "
                            "nothing moved; run `oca verify`")
    assert snapshot(store) == before


# -- delete --------------------------------------------------------------------------


def test_delete_removes_file_and_entry(store, tmp_path):
    rec = store.put("a", make_file(tmp_path / "s", 1000), "flash")
    keep = store.put("b", make_file(tmp_path / "s", 1000), "flash")
    gen = store.change_seq()
    assert store.delete("a") == rec
    assert not os.path.exists(store.path_of(rec))
    assert store.index.get("a") is None
    assert store.get("b") == keep
    assert Path(store.path_of(keep)).is_file()
    assert store.change_seq() == gen + 1
    with pytest.raises(UnknownObjectError, match=r"^no object 'a' in the store$"):
        store.delete("a")
    with pytest.raises(BadIdError):
        store.delete("a/b")


def test_delete_then_put_again(store, tmp_path):
    src = make_file(tmp_path / "s", 1000)
    store.put("a", src, "ssd")
    store.delete("a")
    rec = store.put("a", src, "ssd")
    assert Path(store.path_of(rec)).read_bytes() == src.read_bytes()


# -- status and disk health ------------------------------------------------------------


def test_status_numbers_per_tier_and_disk(store, appliance, tmp_path):
    store.put("a", make_file(tmp_path / "a", 100 * K), "ssd")
    store.put("b", make_file(tmp_path / "b", 30 * K), "hdd")
    store.put("c", make_file(tmp_path / "c", 20 * K), "hdd")
    st = store.status(io=False)
    assert st["index"] == str(appliance.root / "var" / "index.sqlite")
    assert st["objects"] == 3
    assert st["quarantined"] == 0
    assert st["unconfigured_disks"] == {}
    assert st["tiers"] == {
        "ssd": {"capacity": 64 << 20, "used": 100 * K, "objects": 1, "disks": 1, "healthy": 1},
        "flash": {"capacity": 128 << 20, "used": 0, "objects": 0, "disks": 1, "healthy": 1},
        "hdd": {"capacity": 512 << 20, "used": 50 * K, "objects": 2, "disks": 2, "healthy": 2},
    }
    by_path = {d["path"]: d for d in st["disks"]}
    assert list(by_path) == [disk_of(appliance, t, i)
                             for t, i in (("ssd", 0), ("flash", 0), ("hdd", 0), ("hdd", 1))]
    hdd0, hdd1 = by_path[disk_of(appliance, "hdd", 0)], by_path[disk_of(appliance, "hdd", 1)]
    assert (hdd0["objects"], hdd0["used"], hdd1["objects"], hdd1["used"]) == (1, 30 * K, 1, 20 * K)
    for d in st["disks"]:
        assert (d["state"], d["reason"], d["reserved"], d["io"]) == ("ok", None, 0, None)
        assert d["fs_size"] > 0 and d["fs_free"] > 0


def test_mark_failed_and_clear(store, appliance, tmp_path):
    rec = store.put("a", make_file(tmp_path / "a", 1000), "ssd")
    ssd0 = disk_of(appliance, "ssd")
    assert store.stat("a")["servable"] is True
    seq = store.change_seq()
    store.mark_failed(store.disks[ssd0], "Input/output error while reading")
    assert store.change_seq() == seq  # a disk's health is the watcher's probe, not a change
    info = store.stat("a")
    assert (info["disk_state"], info["servable"]) == ("failed", False)
    assert info["path"] == store.path_of(rec)
    assert ssd0 not in servable(store)
    st = store.status(io=False)
    d = next(d for d in st["disks"] if d["path"] == ssd0)
    assert (d["state"], d["reason"]) == ("failed", "Input/output error while reading")
    assert st["tiers"]["ssd"]["healthy"] == 0
    # the failure is sticky: another process opening the store sees it
    with appliance.open() as other:
        assert other.stat("a")["servable"] is False
    health = store.clear_failed(ssd0)
    assert (health.state, health.servable) == ("ok", True)
    assert store.stat("a")["servable"] is True
    assert ssd0 in servable(store)


def test_clear_failed_of_an_unknown_path(store, tmp_path):
    with pytest.raises(UsageError, match=r"is not a configured disk$"):
        store.clear_failed(str(tmp_path / "elsewhere"))


def test_put_to_a_tier_whose_only_disk_failed(store, appliance, tmp_path):
    ssd0 = disk_of(appliance, "ssd")
    store.mark_failed(store.disks[ssd0], "I/O error")
    before = snapshot(store)
    with pytest.raises(TierFullError) as e:
        store.put("a", make_file(tmp_path / "a", 10), "ssd")
    assert str(e.value) == (f"tier ssd is full: no disk has room for 'a' (10): "
                            f"{ssd0}: failed (I/O error)")
    assert snapshot(store) == before


def test_put_falls_back_to_the_healthy_disk_of_the_tier(store, appliance, tmp_path):
    hdd0, hdd1 = disk_of(appliance, "hdd", 0), disk_of(appliance, "hdd", 1)
    store.mark_failed(store.disks[hdd0], "I/O error")
    recs = [store.put(f"o{i}", make_file(tmp_path / "s", 1000, seed=i), "hdd") for i in range(3)]
    assert {r.disk for r in recs} == {hdd1}
    assert files_under(hdd0, "objects") == []


def test_disk_without_marker_is_failed_and_not_written(store, appliance, tmp_path):
    ssd0 = disk_of(appliance, "ssd")
    rec = store.put("a", make_file(tmp_path / "a", 10), "ssd")
    os.unlink(os.path.join(ssd0, ".oca-disk"))
    info = store.stat("a")
    assert (info["disk_state"], info["servable"]) == ("failed", False)
    with pytest.raises(TierFullError, match=r"failed \(marker \.oca-disk missing"):
        store.put("b", make_file(tmp_path / "b", 10), "ssd")
    assert store.get("a") == rec
