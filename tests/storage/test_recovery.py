"""Start-up recovery: each inconsistent state is built by hand with real files."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from oca.digest import digest_bytes
from oca.storage import ObjectRecord, Store, layout
from oca.storage.recovery import RecoveryReport, recover
from tests.conftest import make_file


def all_files(store: Store) -> list[str]:
    """Every file below every disk (marker included), sorted."""
    return sorted(str(p) for d in store.disks for p in Path(d).rglob("*") if p.is_file())


def state(store: Store) -> tuple:
    return (store.change_seq(), list(store.index.objects()), all_files(store),
            store.index.quarantined())


def place(disk: str | Path, object_id: str, data: bytes, digest: str | None = None) -> str:
    """Write a committed-looking file for *object_id* on *disk*, as a crash would leave it."""
    path = layout.object_path(disk, object_id, digest or digest_bytes(data))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(data)
    return path


def disk_of(appliance, tier: str, i: int = 0) -> str:
    return str(appliance.disks[tier][i])


@pytest.fixture
def filled(store, tmp_path):
    """The store with three consistent objects, one per tier."""
    for i, tier in enumerate(("ssd", "flash", "hdd")):
        store.put(f"obj{i}.mp4", make_file(tmp_path / f"src{i}", 10_000 + i, seed=i), tier)
    return store


def test_consistent_store_changes_nothing_and_is_idempotent(filled):
    before = state(filled)
    for _ in range(2):
        report = recover(filled)
        assert report == RecoveryReport()
        assert report.changed is False
        assert state(filled) == before


def test_empty_store(store):
    report = recover(store)
    assert report.to_dict() == RecoveryReport().to_dict()


def test_leftover_temp_file_is_removed(filled, appliance):
    flash0 = disk_of(appliance, "flash")
    tmp = Path(layout.tmp_path(flash0, "half.mp4"))
    tmp.write_bytes(b"partial bytes")
    before = state(filled)
    report = recover(filled)
    assert report.temp_removed == [str(tmp)]
    assert report.changed is True
    assert not tmp.exists()
    assert os.listdir(layout.tmp_dir(flash0)) == []
    assert (before[0], before[1]) == (filled.change_seq(), list(filled.index.objects()))
    assert recover(filled).changed is False


def test_unindexed_committed_file_is_adopted(filled, appliance):
    hdd1 = disk_of(appliance, "hdd", 1)
    data = os.urandom(5000)
    path = place(hdd1, "seg-7.m4s", data)
    gen = filled.change_seq()
    report = recover(filled)
    assert report.adopted == ["seg-7.m4s"]
    rec = filled.get("seg-7.m4s")
    assert rec == ObjectRecord("seg-7.m4s", 5000, digest_bytes(data), hdd1, "hdd",
                               "video/iso.segment", os.stat(path).st_mtime)
    assert filled.path_of(rec) == path
    assert Path(path).read_bytes() == data
    assert filled.change_seq() == gen + 1
    assert recover(filled).changed is False


def test_adopted_zero_byte_file(store, appliance):
    path = place(disk_of(appliance, "ssd"), "empty", b"")
    assert recover(store).adopted == ["empty"]
    rec = store.get("empty")
    assert (rec.size, rec.xxh3, rec.content_type) == (0, digest_bytes(b""),
                                                       "application/octet-stream")
    assert store.path_of(rec) == path


def test_unindexed_file_with_wrong_bytes_is_quarantined(filled, appliance):
    ssd0 = disk_of(appliance, "ssd")
    good = os.urandom(3000)
    bad = bytearray(good)
    bad[1234] ^= 1
    name_digest = digest_bytes(good)
    path = place(ssd0, "bad.mp4", bytes(bad), digest=name_digest)
    before = list(filled.index.objects())
    report = recover(filled)
    assert report.quarantined == [path]
    assert report.adopted == []
    assert not os.path.exists(path)
    assert filled.index.get("bad.mp4") is None
    assert list(filled.index.objects()) == before
    qdir = Path(ssd0) / layout.QUARANTINE
    [qfile] = list(qdir.iterdir())
    assert qfile.name.startswith(f"bad.mp4.{name_digest}.")
    assert qfile.name.rsplit(".", 1)[1].isdigit()
    assert qfile.read_bytes() == bytes(bad)
    [entry] = filled.index.quarantined()
    assert {k: entry[k] for k in ("id", "disk", "expected", "actual", "path", "reason")} == {
        "id": "bad.mp4", "disk": ssd0, "expected": name_digest,
        "actual": digest_bytes(bytes(bad)), "path": str(qfile),
        "reason": "unindexed file does not match the digest in its name"}
    assert filled.status(io=False)["quarantined"] == 1
    assert recover(filled).changed is False


def test_stray_copy_on_another_disk_is_removed(filled, appliance):
    rec = filled.get("obj2.mp4")  # on hdd0
    assert rec.disk == disk_of(appliance, "hdd", 0)
    data = Path(filled.path_of(rec)).read_bytes()
    stray = place(disk_of(appliance, "hdd", 1), rec.id, data)
    stray_other_tier = place(disk_of(appliance, "ssd"), rec.id, data)
    before = state(filled)
    report = recover(filled)
    assert sorted(report.strays_removed) == sorted([stray, stray_other_tier])
    assert not os.path.exists(stray) and not os.path.exists(stray_other_tier)
    assert filled.get(rec.id) == rec
    assert Path(filled.path_of(rec)).read_bytes() == data
    assert state(filled)[:2] == before[:2]


def test_stray_copy_with_another_digest_is_removed(filled, appliance):
    rec = filled.get("obj1.mp4")  # on flash0
    old = place(rec.disk, rec.id, b"the bytes before a replace")
    assert old != filled.path_of(rec)
    report = recover(filled)
    assert report.strays_removed == [old]
    assert not os.path.exists(old)
    assert filled.get(rec.id) == rec
    assert os.path.exists(filled.path_of(rec))


def test_indexed_object_whose_file_is_gone_is_dropped(filled):
    rec = filled.get("obj0.mp4")
    os.unlink(filled.path_of(rec))
    gen = filled.change_seq()
    report = recover(filled)
    assert report.dropped_missing == ["obj0.mp4"]
    assert filled.index.get("obj0.mp4") is None
    assert [r.id for r in filled.index.objects()] == ["obj1.mp4", "obj2.mp4"]
    assert filled.change_seq() == gen + 1


def test_indexed_file_of_the_wrong_size_is_quarantined(filled):
    rec = filled.get("obj1.mp4")
    path = filled.path_of(rec)
    os.truncate(path, 100)
    report = recover(filled)
    assert report.quarantined == [path]
    assert filled.index.get("obj1.mp4") is None
    assert not os.path.exists(path)
    [entry] = filled.index.quarantined()
    assert (entry["id"], entry["expected"], entry["actual"]) == ("obj1.mp4", rec.xxh3, None)
    assert entry["reason"] == f"size 100 differs from the index's {rec.size}"
    assert Path(entry["path"]).stat().st_size == 100


def test_tombstoned_file_is_removed(filled):
    rec = filled.get("obj2.mp4")
    path = filled.path_of(rec)
    # A delete whose unlink failed: the entry is gone, a tombstone remembers the file.
    with filled.index.write():
        filled.index.delete(rec.id)
        filled.index.add_tombstone(rec.id, rec.disk, rec.xxh3)
    report = recover(filled)
    assert report.strays_removed == [path]
    assert report.adopted == []
    assert not os.path.exists(path)
    assert filled.index.get(rec.id) is None
    assert not filled.index.has_tombstone(rec.id, rec.disk, rec.xxh3)
    assert recover(filled).changed is False


def test_delete_on_a_failed_disk_leaves_a_tombstone_that_recovery_honours(filled, appliance):
    rec = filled.get("obj0.mp4")
    ssd0 = disk_of(appliance, "ssd")
    filled.mark_failed(filled.disks[ssd0], "I/O error")
    filled.delete("obj0.mp4")
    assert filled.index.get("obj0.mp4") is None
    assert os.path.exists(filled.path_of(rec))
    assert filled.index.has_tombstone(rec.id, ssd0, rec.xxh3)
    report = recover(filled)
    assert report.skipped_disks == {ssd0: "failed: I/O error"}
    assert os.path.exists(filled.path_of(rec))
    filled.clear_failed(ssd0)
    report = recover(filled)
    assert report.strays_removed == [filled.path_of(rec)]
    assert report.adopted == []
    assert not os.path.exists(filled.path_of(rec))
    assert filled.index.get("obj0.mp4") is None


def test_foreign_files_are_left_alone_and_reported(filled, appliance):
    hdd0 = Path(disk_of(appliance, "hdd", 0))
    rec = filled.get("obj2.mp4")
    shard_dir = Path(filled.path_of(rec)).parent
    notes = shard_dir / "notes.txt"
    notes.write_text("operator notes")
    # a valid object name in the wrong shard folder
    wrong_shard = hdd0 / "objects" / "zz" / "zz" / f"x.{digest_bytes(b'x')}"
    wrong_shard.parent.mkdir(parents=True)
    wrong_shard.write_bytes(b"x")
    # a folder where an object file would be
    folder = shard_dir / f"y.{digest_bytes(b'y')}"
    folder.mkdir()
    before = state(filled)
    report = recover(filled)
    assert sorted(report.foreign) == sorted([str(notes), str(wrong_shard), str(folder)])
    assert report.changed is False
    assert report.skipped_disks == {}
    assert state(filled) == before
    assert notes.read_text() == "operator notes"


def test_foreign_files_outside_shard_folders_do_not_stop_recovery(filled, appliance):
    # An operator's file directly in objects/ or at the first shard level must not make
    # recovery give up on the whole disk (and so skip its missing and unindexed objects).
    ssd0 = Path(disk_of(appliance, "ssd"))
    top = ssd0 / "objects" / "README"
    top.write_text("x")
    rec = filled.get("obj0.mp4")
    level1 = Path(filled.path_of(rec)).parent.parent / "stray-file"
    level1.write_text("y")
    os.unlink(filled.path_of(rec))
    adopted = place(ssd0, "new.ts", b"adopt me")
    report = recover(filled)
    assert report.skipped_disks == {}
    assert sorted(report.foreign) == sorted([str(top), str(level1)])
    assert report.dropped_missing == ["obj0.mp4"]
    assert report.adopted == ["new.ts"]
    assert filled.get("new.ts").disk == str(ssd0)
    assert filled.path_of(filled.get("new.ts")) == adopted
    assert top.read_text() == "x" and level1.read_text() == "y"


def test_disk_whose_marker_vanished_is_skipped(filled, appliance):
    ssd0 = disk_of(appliance, "ssd")
    rec = filled.get("obj0.mp4")
    tmp = Path(layout.tmp_path(ssd0, "x"))
    tmp.write_bytes(b"t")
    os.unlink(os.path.join(ssd0, layout.MARKER))
    # and its object file too, as an empty mount point would show
    moved = Path(filled.path_of(rec)).read_bytes()
    os.unlink(filled.path_of(rec))
    before = state(filled)
    report = recover(filled)
    assert report.skipped_disks == {
        ssd0: "failed: marker .oca-disk missing: filesystem not mounted?"}
    assert report.dropped_missing == []
    assert report.changed is False
    assert filled.get("obj0.mp4") == rec
    assert tmp.exists()
    assert state(filled) == before
    # the mount comes back: the marker proves it is the same disk, nothing is lost
    place(ssd0, rec.id, moved)
    shutil.copy(os.path.join(disk_of(appliance, "flash"), layout.MARKER),
                os.path.join(ssd0, layout.MARKER))
    assert recover(filled).skipped_disks[ssd0].startswith("failed: another disk is mounted here")


def test_disk_with_its_own_marker_back_recovers(filled, appliance):
    ssd0 = disk_of(appliance, "ssd")
    marker = Path(ssd0, layout.MARKER)
    saved = marker.read_bytes()
    marker.unlink()
    assert ssd0 in recover(filled).skipped_disks
    marker.write_bytes(saved)
    report = recover(filled)
    assert report.skipped_disks == {}
    assert report.changed is False
    assert Path(filled.path_of(filled.get("obj0.mp4"))).is_file()


def test_reservations_are_cleared(filled, appliance):
    with filled.index.write():
        filled.index.reserve(uuid.uuid4().hex, disk_of(appliance, "hdd"), 12345)
    report = recover(filled)
    assert report.reservations_cleared == 1
    assert report.changed is False
    assert filled.index.reserved_by_disk() == {}


def test_mixed_state_then_idempotent(filled, appliance):
    ssd0, hdd1 = disk_of(appliance, "ssd"), disk_of(appliance, "hdd", 1)
    Path(layout.tmp_path(ssd0, "t")).write_bytes(b"tmp")
    place(hdd1, "adopt.mp4", b"fine")
    place(hdd1, "quar.mp4", b"broken", digest=digest_bytes(b"not broken"))
    os.unlink(filled.path_of(filled.get("obj1.mp4")))
    report = recover(filled)
    assert (len(report.temp_removed), report.adopted, len(report.quarantined),
            report.dropped_missing) == (1, ["adopt.mp4"], 1, ["obj1.mp4"])
    after = state(filled)
    again = recover(filled)
    assert again.changed is False
    assert again == RecoveryReport()
    assert state(filled) == after


def test_recovery_reports_progress_per_file(filled):
    ticks = []
    recover(filled, on_file=lambda: ticks.append(1))
    assert len(ticks) == 3
