"""Scrub: re-hash stored objects, quarantine the ones whose bytes changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oca.digest import digest_bytes
from oca.storage import layout
from oca.storage.scrub import VerifyReport, verify
from tests.conftest import make_file

SIZES = {"a.mp4": 70_000, "b.m4s": 1, "c.ts": 0, "d.mp4": (1 << 20) + 17}
TIERS = {"a.mp4": "ssd", "b.m4s": "flash", "c.ts": "hdd", "d.mp4": "hdd"}


@pytest.fixture
def filled(store, tmp_path):
    for i, (object_id, size) in enumerate(SIZES.items()):
        store.put(object_id, make_file(tmp_path / f"src{i}", size, seed=i), TIERS[object_id])
    return store


def flip_byte(path: str, offset: int) -> bytes:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x01
    Path(path).write_bytes(data)
    return bytes(data)


def test_clean_store_gives_a_clean_report_with_exact_counts(filled):
    progress: list[int] = []
    report = verify(filled, on_bytes=progress.append)
    assert report == VerifyReport(checked=4, bytes=sum(SIZES.values()), ok=4)
    assert report.clean is True
    assert sum(progress) == sum(SIZES.values())
    assert [r.id for r in filled.index.objects()] == sorted(SIZES)
    assert filled.index.quarantined() == []


def test_empty_store(store):
    report = verify(store)
    assert report == VerifyReport()
    assert report.clean is True


def test_flipped_byte_is_corrupt_and_quarantined(filled, appliance):
    rec = filled.get("d.mp4")
    path = filled.path_of(rec)
    bad = flip_byte(path, 500_000)
    others = {r.id: (r, Path(filled.path_of(r)).read_bytes())
              for r in filled.index.objects() if r.id != "d.mp4"}
    gen = filled.change_seq()
    report = verify(filled)
    assert report.clean is False
    assert (report.checked, report.ok, report.bytes) == (4, 3, sum(SIZES.values()))
    [entry] = report.corrupt
    dest = entry.pop("quarantined_to")
    assert entry == {"id": "d.mp4", "disk": rec.disk, "expected": rec.xxh3,
                     "actual": digest_bytes(bad)}
    assert os.path.dirname(dest) == os.path.join(rec.disk, layout.QUARANTINE)
    assert os.path.basename(dest).startswith(f"d.mp4.{rec.xxh3}.")
    assert Path(dest).read_bytes() == bad
    assert not os.path.exists(path)
    assert filled.index.get("d.mp4") is None
    assert filled.change_seq() == gen + 1
    [q] = filled.index.quarantined()
    assert (q["id"], q["disk"], q["expected"], q["actual"], q["path"]) == (
        "d.mp4", rec.disk, rec.xxh3, digest_bytes(bad), dest)
    assert q["reason"] == f"digest mismatch (size {rec.size}, indexed {rec.size})"
    # the others are untouched
    for object_id, (r, data) in others.items():
        assert filled.get(object_id) == r
        assert Path(filled.path_of(r)).read_bytes() == data
    # and the next scrub is clean again
    assert verify(filled) == VerifyReport(checked=3, bytes=sum(SIZES.values()) - rec.size, ok=3)


def test_one_byte_object_flipped(filled):
    rec = filled.get("b.m4s")
    flip_byte(filled.path_of(rec), 0)
    report = verify(filled)
    assert [c["id"] for c in report.corrupt] == ["b.m4s"]
    assert report.ok == 3


def test_truncated_file_is_corrupt(filled):
    rec = filled.get("a.mp4")
    path = filled.path_of(rec)
    head = Path(path).read_bytes()[:1000]
    os.truncate(path, 1000)
    report = verify(filled)
    assert [(c["id"], c["expected"], c["actual"]) for c in report.corrupt] == [
        ("a.mp4", rec.xxh3, digest_bytes(head))]
    assert report.bytes == sum(SIZES.values()) - 70_000 + 1000
    assert filled.index.get("a.mp4") is None
    [q] = filled.index.quarantined()
    assert q["reason"] == "digest mismatch (size 1000, indexed 70000)"


def test_file_grown_with_same_prefix_is_corrupt(filled):
    rec = filled.get("c.ts")  # zero bytes
    with open(filled.path_of(rec), "ab") as f:
        f.write(b"x")
    report = verify(filled)
    assert [c["id"] for c in report.corrupt] == ["c.ts"]


def test_deleted_file_is_missing(filled):
    rec = filled.get("b.m4s")
    path = filled.path_of(rec)
    os.unlink(path)
    report = verify(filled)
    assert report.missing == [{"id": "b.m4s", "disk": rec.disk, "path": path}]
    assert report.corrupt == []
    assert (report.checked, report.ok) == (4, 3)
    assert report.clean is False
    assert filled.index.get("b.m4s") is None
    [q] = filled.index.quarantined()
    assert (q["id"], q["expected"], q["actual"], q["path"], q["reason"]) == (
        "b.m4s", rec.xxh3, None, path, "file missing")


def test_verify_only_the_given_records(filled):
    flip_byte(filled.path_of(filled.get("a.mp4")), 10)
    report = verify(filled, [filled.get("d.mp4")])
    assert report == VerifyReport(checked=1, bytes=SIZES["d.mp4"], ok=1)
    assert filled.index.get("a.mp4") is not None


def test_objects_on_a_failed_disk_are_skipped(filled, appliance):
    rec = filled.get("a.mp4")
    filled.mark_failed(filled.disks[rec.disk], "I/O error")
    flip_byte(filled.path_of(rec), 0)
    report = verify(filled)
    assert report.skipped == [{"id": "a.mp4", "disk": rec.disk,
                               "reason": "disk failed: I/O error"}]
    assert (report.checked, report.ok, report.corrupt) == (3, 3, [])
    assert filled.get("a.mp4") == rec


def test_replaced_meanwhile_is_not_judged(filled, tmp_path):
    stale = filled.get("a.mp4")
    filled.put("a.mp4", make_file(tmp_path / "new", 500, seed=99), "ssd", replace=True)
    # the stale record names a file that no longer exists: not ours to call missing
    report = verify(filled, [stale])
    assert report.missing == []
    assert filled.get("a.mp4").size == 500
    assert filled.index.quarantined() == []
