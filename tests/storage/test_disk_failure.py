"""Disks that fail for real: EIO, a vanished mount, read-only, a full filesystem.

Each disk is its own filesystem: the two hdd disks are small loop-mounted ext4
images, ssd and flash are tmpfs. The failures are the kernel's own: EIO after an
ext4 shutdown ioctl, ``umount -l``, ``mount -o remount,ro``, ENOSPC from a full
filesystem. Commands run through the real CLI in fresh processes, so what a
failure leaves behind (sticky state in the index, tombstones) is what the next
process sees; set-up and a few mid-operation failures run in-process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from oca.digest import digest_bytes, digest_file
from oca.errors import StoreError, TierFullError
from oca.storage import faults, layout
from oca.storage.lookup import ObjectLocation, build_serving_map
from tests.conftest import Appliance, make_appliance, make_file
from tests.mounts import Mount, Mounts, mounts, needs_root
from tests.storage import servable

__all__ = ["mounts"]  # the fixture, imported for pytest

pytestmark = needs_root

MiB = 1 << 20
OBJ = 2 * MiB


@dataclass
class Rig:
    """An appliance whose four disks are four filesystems."""

    app: Appliance
    ssd: Mount
    flash: Mount
    hdd0: Mount
    hdd1: Mount
    src: Path
    _seed: int = 0

    @property
    def all(self) -> list[Mount]:
        return [self.ssd, self.flash, self.hdd0, self.hdd1]

    def source(self, size: int = OBJ) -> Path:
        self._seed += 1
        return make_file(self.src / f"src{self._seed}.bin", size, seed=self._seed)

    def put(self, object_id: str, tier: str, size: int = OBJ) -> str:
        """In-process put (set-up); returns the disk path it landed on."""
        with self.app.open() as store:
            return store.put(object_id, self.source(size), tier).disk

    def oca(self, *args: str):
        return self.app.oca(*args)

    def oca_json(self, *args: str):
        r = self.app.oca(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def disk_status(self) -> dict[str, dict]:
        return {d["path"]: d for d in self.oca_json("status")["disks"]}

    def serving(self) -> dict[str, ObjectLocation]:
        with self.app.open() as store:
            return build_serving_map(store.index, servable(store))[1]

    def index_disk(self, m: Mount):
        with self.app.open() as store:
            return store.index.disks()[str(m.path)]

    def records(self) -> dict:
        with self.app.open() as store:
            return {r.id: r for r in store.index.objects()}

    def reservations(self) -> dict:
        with self.app.open() as store:
            return store.index.reserved_by_disk()

    def files(self, sub: str, mounts: list[Mount] | None = None) -> list[str]:
        """Files under ``<disk>/<sub>/`` of the given (default: every) disk."""
        out = []
        for m in mounts or self.all:
            for dirpath, _dirs, names in os.walk(m.path / sub):
                out += [os.path.join(dirpath, n) for n in names]
        return sorted(out)


def make_rig(mounts: Mounts, tmp_path: Path, ssd_capacity: str | None = None) -> Rig:
    ssd, flash = mounts.tmpfs("ssd0", "40M"), mounts.tmpfs("flash0", "40M")
    # Capacity larger than the filesystem: the filesystem fills before the accounting.
    hdd0, hdd1 = mounts.ext4("hdd0", "48M"), mounts.ext4("hdd1", "48M")
    root = tmp_path / "app"
    root.mkdir()
    app = make_appliance(root, {"ssd": [ssd_capacity], "flash": [None], "hdd": ["1G", "1G"]},
                         disk_paths={"ssd": [ssd.path], "flash": [flash.path],
                                     "hdd": [hdd0.path, hdd1.path]})
    src = tmp_path / "src"
    src.mkdir()
    return Rig(app, ssd, flash, hdd0, hdd1, src)


@pytest.fixture
def rig(mounts: Mounts, tmp_path: Path) -> Rig:
    return make_rig(mounts, tmp_path)


def read_object(loc: ObjectLocation) -> bytes:
    with open(loc.path, "rb") as f:
        data = f.read()
    assert digest_bytes(data) == loc.xxh3
    return data


def landed_on(r, m: Mount) -> bool:
    """Did `oca put` / `oca mv` report the disk *m*?"""
    assert r.returncode == 0, r.stderr
    return f"({m.path})" in r.stdout


def on_fault(monkeypatch, point: str, action: Callable[[], None]) -> list[str]:
    """Run *action* once when the store passes fault point *point* (in this process)."""
    seen: list[str] = []

    def hook(name: str) -> None:
        if name == point and not seen:
            seen.append(name)
            action()

    monkeypatch.setattr(faults, "point", hook)
    return seen


# -- (a) EIO --------------------------------------------------------------------------

def test_eio_during_put_fails_the_disk_and_the_put_moves_on(rig: Rig, monkeypatch) -> None:
    """Placement picks hdd0, which dies before the write: sticky failure, object on hdd1."""
    assert rig.put("a.mp4", "hdd") == str(rig.hdd0.path)
    assert rig.put("b.mp4", "hdd") == str(rig.hdd1.path)
    rig.put("s.mp4", "ssd")
    src = rig.source()
    chosen: list[dict] = []

    with rig.app.open() as store:
        def die() -> None:
            chosen.append(store.index.reserved_by_disk())
            rig.hdd0.shutdown()

        seen = on_fault(monkeypatch, "put.after_reserve", die)
        rec = store.put("c.mp4", src, "hdd")
    assert seen and chosen == [{str(rig.hdd0.path): OBJ}], "placement did not pick hdd0"
    assert rec.disk == str(rig.hdd1.path)
    assert digest_file(store.path_of(rec))[0] == digest_bytes(src.read_bytes())
    assert rig.reservations() == {}
    assert rig.files("tmp", [rig.ssd, rig.flash, rig.hdd1]) == []

    # Persisted: a new process sees it failed, with the reason.
    rec0 = rig.index_disk(rig.hdd0)
    assert rec0.failed and "Input/output error" in rec0.reason
    st = rig.disk_status()[str(rig.hdd0.path)]
    assert st["state"] == "failed" and "Input/output error" in st["reason"]
    _check_failed_disk_left_out(rig)

    # Sticky: the filesystem coming back does not make the disk healthy by itself.
    rig.hdd0.unmount()
    rig.hdd0.mount()
    assert rig.disk_status()[str(rig.hdd0.path)]["state"] == "failed"
    assert "a.mp4" not in rig.serving()
    r = rig.oca("disk", "clear", str(rig.hdd0.path))
    assert r.returncode == 0, r.stderr
    assert rig.disk_status()[str(rig.hdd0.path)]["state"] == "ok"
    read_object(rig.serving()["a.mp4"])
    r = rig.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr


def test_eio_reading_the_source_of_a_move(rig: Rig, monkeypatch) -> None:
    """hdd0 dies while an object is copied off it: nothing moves, hdd0 is failed."""
    assert rig.put("a.mp4", "hdd") == str(rig.hdd0.path)
    before = rig.records()
    with rig.app.open() as store:
        seen = on_fault(monkeypatch, "move.after_reserve", rig.hdd0.shutdown)
        with pytest.raises(StoreError, match=r"cannot read .*a\.mp4.*Input/output error"):
            store.move("a.mp4", "ssd")
    assert seen
    assert rig.records() == before
    assert rig.reservations() == {}
    assert rig.files("tmp", [rig.ssd]) == [] and rig.files(layout.OBJECTS, [rig.ssd]) == []
    rec0 = rig.index_disk(rig.hdd0)
    assert rec0.failed and "Input/output error" in rec0.reason
    assert "a.mp4" not in rig.serving()


@pytest.mark.parametrize("first", ["verify", "put"])
def test_eio_found_by_the_cli_is_persisted(rig: Rig, first: str) -> None:
    """hdd0 dies while idle; the first command to touch it (verify or a put) records it."""
    assert rig.put("a.mp4", "hdd") == str(rig.hdd0.path)
    assert rig.put("b.mp4", "hdd") == str(rig.hdd1.path)
    rig.put("s.mp4", "ssd")
    rig.hdd0.shutdown()

    if first == "verify":
        r = rig.oca("verify")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"disk failed: {rig.hdd0.path}" in r.stdout
    else:
        r = rig.oca("put", "c.mp4", str(rig.source()), "--tier", "hdd")
        assert landed_on(r, rig.hdd1)
    rec0 = rig.index_disk(rig.hdd0)
    assert rec0.failed and "Input/output error" in rec0.reason
    st = rig.disk_status()[str(rig.hdd0.path)]
    assert st["state"] == "failed" and "Input/output error" in st["reason"]
    _check_failed_disk_left_out(rig)

    # A known failure is not a new finding: verify skips the disk's objects.
    r = rig.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout


def _check_failed_disk_left_out(rig: Rig) -> None:
    """hdd0 failed: its objects are not served; the other disks work as before."""
    serving = rig.serving()
    assert "a.mp4" not in serving
    for oid in set(serving) - {"a.mp4"}:
        read_object(serving[oid])
    info = rig.oca_json("stat", "a.mp4")
    assert info["servable"] is False and info["disk_state"] == "failed"
    assert rig.oca_json("stat", "b.mp4")["servable"] is True
    assert "a.mp4" in rig.records(), "a failed disk's objects stay indexed"

    r = rig.oca("put", "d.mp4", str(rig.source()), "--tier", "hdd")
    assert landed_on(r, rig.hdd1)
    r = rig.oca("put", "e.mp4", str(rig.source()), "--tier", "ssd")
    assert landed_on(r, rig.ssd)
    others = sorted(set(rig.records()) - {"a.mp4"})
    r = rig.oca("verify", *others)
    assert r.returncode == 0, r.stdout + r.stderr
    r = rig.oca_json("recover")
    assert str(rig.hdd0.path) in r["skipped_disks"]
    assert r["dropped_missing"] == [] and r["quarantined"] == []
    assert "a.mp4" in rig.records()


# -- (b) a mount that vanishes --------------------------------------------------------

def test_vanished_mount_heals_when_it_comes_back(rig: Rig) -> None:
    assert rig.put("a.mp4", "hdd") == str(rig.hdd0.path)
    assert rig.put("b.mp4", "hdd") == str(rig.hdd1.path)
    assert rig.put("r.mp4", "hdd") == str(rig.hdd0.path)
    r_path = rig.serving()["r.mp4"].path
    a = rig.serving()["a.mp4"]
    a_bytes = read_object(a)

    # A reader (a serving worker's sendfile) holds a file open: the unmount is lazy.
    fd = os.open(a.path, os.O_RDONLY)
    try:
        rig.hdd0.unmount(lazy=True)
        assert os.pread(fd, OBJ, 0) == a_bytes
    finally:
        os.close(fd)
    assert os.listdir(rig.hdd0.path) == []

    st = rig.disk_status()[str(rig.hdd0.path)]
    assert st["state"] == "failed" and "missing" in st["reason"]
    assert not rig.index_disk(rig.hdd0).failed, "a vanished mount is not sticky"
    r = rig.oca_json("recover")
    assert str(rig.hdd0.path) in r["skipped_disks"]
    assert r["dropped_missing"] == []
    assert "a.mp4" in rig.records()
    assert rig.oca_json("stat", "a.mp4")["servable"] is False
    serving = rig.serving()
    assert "a.mp4" not in serving
    read_object(serving["b.mp4"])

    r = rig.oca("put", "c.mp4", str(rig.source()), "--tier", "hdd")
    assert landed_on(r, rig.hdd1)
    r = rig.oca("verify", "b.mp4", "c.mp4")
    assert r.returncode == 0, r.stdout + r.stderr
    # rm of an object on the absent disk: unindexed now, its file removed once it is back.
    r = rig.oca("rm", "r.mp4")
    assert r.returncode == 0, r.stderr
    # init must not make the empty mount point the disk (its objects would be dropped).
    r = rig.oca("init")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith(f"oca: error: disk {rig.hdd0.path}: marker .oca-disk missing")
    assert len(r.stderr.splitlines()) == 1
    assert sorted(rig.records()) == ["a.mp4", "b.mp4", "c.mp4"]
    assert os.listdir(rig.hdd0.path) == [], "the store wrote into a bare mount point"

    rig.hdd0.mount()
    assert os.path.exists(r_path)
    assert rig.disk_status()[str(rig.hdd0.path)]["state"] == "ok"
    assert read_object(rig.serving()["a.mp4"]) == a_bytes
    assert rig.oca_json("stat", "a.mp4")["servable"] is True
    r = rig.oca_json("recover")
    assert r["skipped_disks"] == {} and r["strays_removed"] == [r_path]
    assert not any(r[k] for k in ("temp_removed", "adopted", "dropped_missing", "quarantined"))
    assert not os.path.exists(r_path)
    r = rig.oca("init")
    assert r.returncode == 0, r.stdout + r.stderr
    r = rig.oca("verify")
    assert r.returncode == 0 and "3 ok" in r.stdout, r.stdout + r.stderr


# -- (c) read-only ----------------------------------------------------------------------

def test_readonly_disk_serves_and_defers_removals(rig: Rig) -> None:
    assert rig.put("a.mp4", "hdd") == str(rig.hdd0.path)
    assert rig.put("b.mp4", "hdd") == str(rig.hdd1.path)
    assert rig.put("m.mp4", "hdd") == str(rig.hdd0.path)
    assert rig.put("q.mp4", "hdd") == str(rig.hdd1.path)
    assert rig.put("p.mp4", "hdd") == str(rig.hdd0.path)
    before = rig.records()
    a_path, m_path, p_path = (rig.serving()[i].path for i in ("a.mp4", "m.mp4", "p.mp4"))

    rig.hdd0.remount("ro")
    st = rig.disk_status()[str(rig.hdd0.path)]
    assert st["state"] == "readonly"
    serving = rig.serving()
    assert {"a.mp4", "b.mp4", "m.mp4"} <= set(serving)
    read_object(serving["a.mp4"])
    assert rig.oca_json("stat", "a.mp4")["servable"] is True

    r = rig.oca("put", "c.mp4", str(rig.source()), "--tier", "hdd")
    assert landed_on(r, rig.hdd1)
    r = rig.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr

    # rm: gone from the index at once, the file stays behind a tombstone.
    r = rig.oca("rm", "a.mp4")
    assert r.returncode == 0, r.stderr
    assert "a.mp4" not in rig.records() and "a.mp4" not in rig.serving()
    assert os.path.exists(a_path)
    with rig.app.open() as store:
        assert store.index.has_tombstone("a.mp4", str(rig.hdd0.path), before["a.mp4"].xxh3)
    # mv off the read-only disk: the copy is made, the old file stays as a stray.
    r = rig.oca("mv", "m.mp4", "--tier", "ssd")
    assert landed_on(r, rig.ssd)
    assert os.path.exists(m_path)
    # put --replace of an object on it: the new bytes go to hdd1, the old file stays.
    r = rig.oca("put", "p.mp4", str(rig.source()), "--tier", "hdd", "--replace")
    assert landed_on(r, rig.hdd1)
    assert os.path.exists(p_path)

    # Recovery while still read-only neither adopts the deleted object back nor fails.
    r = rig.oca_json("recover")
    assert sorted(r["pending"]) == sorted([a_path, m_path, p_path])
    assert r["adopted"] == [] and r["skipped_disks"] == {}
    assert "a.mp4" not in rig.records()
    assert rig.records()["m.mp4"].disk == str(rig.ssd.path)

    rig.hdd0.remount("rw")
    assert rig.disk_status()[str(rig.hdd0.path)]["state"] == "ok"
    r = rig.oca_json("recover")
    assert sorted(r["strays_removed"]) == sorted([a_path, m_path, p_path])
    assert not any(os.path.exists(p) for p in (a_path, m_path, p_path))
    with rig.app.open() as store:
        assert not store.index.has_tombstone("a.mp4", str(rig.hdd0.path),
                                             before["a.mp4"].xxh3)
    records = rig.records()
    assert sorted(records) == ["b.mp4", "c.mp4", "m.mp4", "p.mp4", "q.mp4"]
    assert records["p.mp4"].xxh3 != before["p.mp4"].xxh3
    on_disk = rig.files(layout.OBJECTS)
    with rig.app.open() as store:
        assert on_disk == sorted(store.path_of(rec) for rec in records.values())
    r = rig.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr


# -- (d) a filesystem that is really full -------------------------------------------------

def test_filesystem_fills_before_the_accounting(rig: Rig) -> None:
    """Configured 1G on 48M filesystems: puts stop on filesystem space, with a clear error."""
    stored = []
    for i in range(40):
        r = rig.oca("put", f"v{i}.mp4", str(rig.source(3 * MiB)), "--tier", "hdd")
        if r.returncode != 0:
            break
        stored.append(f"v{i}.mp4")
    else:
        pytest.fail("the hdd tier never filled up")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("oca: error: tier hdd is full")
    assert str(rig.hdd0.path) in lines[0] and str(rig.hdd1.path) in lines[0]
    assert len(stored) >= 4
    st = rig.disk_status()
    for m in (rig.hdd0, rig.hdd1):
        assert st[str(m.path)]["used"] < st[str(m.path)]["capacity"] // 4

    assert sorted(rig.records()) == sorted(stored)
    assert rig.files("tmp") == [] and rig.reservations() == {}
    r = rig.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr

    # Another disk takes the next put; room freed on hdd1 takes the one after.
    r = rig.oca("put", "next.mp4", str(rig.source(3 * MiB)), "--tier", "ssd")
    assert landed_on(r, rig.ssd)
    victim = next(rec for rec in rig.records().values() if rec.disk == str(rig.hdd1.path))
    assert rig.oca("rm", victim.id).returncode == 0
    r = rig.oca("put", "again.mp4", str(rig.source(3 * MiB)), "--tier", "hdd")
    assert landed_on(r, rig.hdd1)


def test_enospc_while_writing_moves_to_the_other_disk(rig: Rig, monkeypatch) -> None:
    """Something else fills hdd0 between the placement and the write: a real ENOSPC."""
    src = rig.source(3 * MiB)
    with rig.app.open() as store:
        seen = on_fault(monkeypatch, "put.after_reserve",
                        lambda: rig.hdd0.fill(leave=MiB // 2))
        rec = store.put("a.mp4", src, "hdd")
    assert seen
    assert rec.disk == str(rig.hdd1.path)
    assert rig.files("tmp") == [] and rig.reservations() == {}
    assert not rig.index_disk(rig.hdd0).failed, "ENOSPC is not a disk failure"
    assert rig.disk_status()[str(rig.hdd0.path)]["state"] == "full"
    assert rig.files(layout.OBJECTS, [rig.hdd0]) == []
    read_object(rig.serving()["a.mp4"])


def test_enospc_on_every_disk_of_the_tier_changes_nothing(rig: Rig, monkeypatch) -> None:
    rig.put("keep.mp4", "hdd")
    before = rig.records()
    src = rig.source(3 * MiB)

    def fill_both() -> None:
        rig.hdd0.fill(leave=MiB // 2)
        rig.hdd1.fill(leave=MiB // 2)

    with rig.app.open() as store:
        seen = on_fault(monkeypatch, "put.after_reserve", fill_both)
        with pytest.raises(TierFullError) as e:
            store.put("a.mp4", src, "hdd")
    assert seen
    msg = str(e.value)
    assert "tier hdd is full" in msg and "'a.mp4'" in msg
    # The disk that got the ENOSPC says so; the other one was full by then too.
    assert str(rig.hdd0.path) in msg and str(rig.hdd1.path) in msg
    assert ": full (No space left on device)" in msg
    assert rig.records() == before
    assert rig.files("tmp") == [] and rig.reservations() == {}
    assert [os.path.basename(p) for p in rig.files(layout.OBJECTS)] == [
        layout.object_name("keep.mp4", before["keep.mp4"].xxh3)]

    # The next put to another disk works.
    r = rig.oca("put", "b.mp4", str(rig.source()), "--tier", "flash")
    assert landed_on(r, rig.flash)


# -- (e) a tier full by its accounting ----------------------------------------------------

def test_tier_full_by_accounting(mounts: Mounts, tmp_path: Path) -> None:
    rig = make_rig(mounts, tmp_path, ssd_capacity="4M")
    assert rig.put("a.mp4", "ssd", 3 * MiB) == str(rig.ssd.path)
    rig.put("h.mp4", "hdd")
    before = rig.records()
    files_before = rig.files(layout.OBJECTS)

    for args in (["put", "b.mp4", str(rig.source()), "--tier", "ssd"],
                 ["mv", "h.mp4", "--tier", "ssd"]):
        r = rig.oca(*args)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("oca: error: tier ssd is full")
        assert str(rig.ssd.path) in lines[0]
        assert rig.records() == before
        assert rig.files(layout.OBJECTS) == files_before
        assert rig.files("tmp") == [] and rig.reservations() == {}
    r = rig.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr


# -- replacing a dead disk ---------------------------------------------------------------

def test_replace_a_dead_disk_with_a_new_filesystem(rig: Rig) -> None:
    assert rig.put("a.mp4", "hdd") == str(rig.hdd0.path)
    assert rig.put("b.mp4", "hdd") == str(rig.hdd1.path)
    b_bytes = read_object(rig.serving()["b.mp4"])

    # A healthy disk is not a new one: refused, nothing changed.
    r = rig.oca("disk", "replace", str(rig.hdd1.path))
    assert r.returncode == 1 and "same disk" in r.stderr and "disk clear" in r.stderr
    assert set(rig.records()) == {"a.mp4", "b.mp4"}

    rig.hdd0.shutdown()
    assert rig.oca("verify").returncode == 1
    rig.hdd0.teardown()  # the dead disk is pulled: only the empty mount point is left

    # Nothing mounted there yet: the root filesystem must not become the disk.
    r = rig.oca("disk", "replace", str(rig.hdd0.path))
    assert r.returncode == 1 and "not a mount point" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1
    assert "a.mp4" in rig.records() and rig.index_disk(rig.hdd0).failed
    assert os.listdir(rig.hdd0.path) == []

    new = Mount(rig.hdd0.path, "tmpfs", 40 << 20)
    rig.hdd0 = new
    new.mount()
    try:
        r = rig.oca("disk", "replace", str(new.path))
        assert r.returncode == 0, r.stderr
        assert r.stdout == (f"{new.path}: new disk in service; 1 object of the old disk "
                            "dropped from the index, to be filled again\n")
        assert set(rig.records()) == {"b.mp4"}
        rec = rig.index_disk(new)
        assert not rec.failed
        assert json.loads((new.path / ".oca-disk").read_text())["disk_id"] == rec.disk_id
        assert rig.disk_status()[str(new.path)]["state"] == "ok"
        assert read_object(rig.serving()["b.mp4"]) == b_bytes
        # The new disk takes objects again (it is the emptier of the two).
        assert rig.put("c.mp4", "hdd") == str(new.path)
        assert rig.oca("verify").returncode == 0
    finally:
        new.teardown()
