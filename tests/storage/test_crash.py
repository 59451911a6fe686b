"""Crash consistency: SIGKILL the real CLI at every fault point, recover, check invariants.

DESIGN.md: "A crash at any point leaves either the old state or the new one, never
a half object that gets served." Each case runs ``oca put|mv|rm`` with
``OCA_FAULT=<point>`` (oca/storage/faults.py), checks that the process died of
SIGKILL, runs ``oca recover --json`` and then checks, from the index and from the
disks themselves, that

* the object is wholly in the old state or wholly in the new one (index record and
  exactly one file with those bytes), and which of the two is fixed per point;
* no disk has anything in ``tmp/`` or ``quarantine/``, no reservation is left;
* every disk's ``objects/`` holds exactly the indexed objects, one file each,
  whose bytes hash to the indexed digest; unrelated objects are untouched;
* ``oca verify`` exits 0.

Where the commit point lies: the index transaction, except for a put of a *new*
id, where the rename into ``objects/`` already commits: recovery adopts a
self-describing file whose bytes match the digest in its name (layout.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from oca.digest import digest_bytes, digest_file
from oca.storage import layout
from oca.storage.index import ObjectRecord
from oca.storage.lookup import build_serving_map
from tests.conftest import Appliance, make_appliance, make_file
from tests.storage import servable

OBJECT = "title-1080p.mp4"
SIZE = 3 * 1024 * 1024 + 4321  # four copy chunks (store.COPY_CHUNK is 1 MiB), the last short
UNRELATED = {"intro.mp4": ("ssd", 200_000), "poster.jpg": ("flash", 50_000),
             "trailer.mp4": ("hdd", 300_000)}

# Byte offsets at which a copy dies: seeded, so a failure reproduces.
_rng = random.Random(20240611)
OFFSETS = {op: sorted(_rng.sample(range(1, SIZE + 1), 3)) for op in ("put", "replace", "mv")}

OLD, NEW = "old", "new"


@dataclass(frozen=True)
class Case:
    op: str      # put (new id) | replace | mv-up (hdd -> ssd) | mv-down (ssd -> hdd) | rm
    fault: str   # OCA_FAULT value
    wins: str    # OLD or NEW after recovery
    temp: bool = False  # a temp file was alive at the kill (recovery must remove it)

    @property
    def id(self) -> str:
        return f"{self.op}-{self.fault}"


def _cases() -> list[Case]:
    cases = []
    # put of a new id: the old state is "absent".
    cases.append(Case("put", "put.after_reserve", OLD))
    cases += [Case("put", f"put.write@{n}", OLD, temp=True) for n in OFFSETS["put"]]
    cases.append(Case("put", "put.after_fsync", OLD, temp=True))
    cases.append(Case("put", "put.after_rename", NEW))  # adopted by recovery
    cases.append(Case("put", "put.after_index", NEW))
    # put --replace: the rename leaves a second file the index does not name (a stray).
    cases.append(Case("replace", "put.after_reserve", OLD))
    cases += [Case("replace", f"put.write@{n}", OLD, temp=True) for n in OFFSETS["replace"]]
    cases.append(Case("replace", "put.after_fsync", OLD, temp=True))
    cases.append(Case("replace", "put.after_rename", OLD))
    cases.append(Case("replace", "put.after_index", NEW))
    for op in ("mv-up", "mv-down"):
        cases.append(Case(op, "move.after_reserve", OLD))
        offsets = OFFSETS["mv"] if op == "mv-up" else [1, SIZE]
        cases += [Case(op, f"move.write@{n}", OLD, temp=True) for n in offsets]
        cases.append(Case(op, "move.after_fsync", OLD, temp=True))
        cases.append(Case(op, "move.after_rename", OLD))
        cases.append(Case(op, "move.after_index", NEW))
        cases.append(Case(op, "move.after_unlink", NEW))
    # rm unlinks first: once the file is gone the delete has happened.
    cases.append(Case("rm", "delete.after_unlink", NEW))
    return cases


CASES = _cases()


# -- what is on the disks -----------------------------------------------------------

def disk_files(app: Appliance) -> dict[str, list[str]]:
    """Every file under each disk's tmp/, quarantine/ and objects/ (paths)."""
    found: dict[str, list[str]] = {"tmp": [], "quarantine": [], "objects": []}
    for paths in app.disks.values():
        for disk in paths:
            for sub in found:
                for dirpath, _dirs, files in os.walk(disk / sub):
                    found[sub] += [os.path.join(dirpath, f) for f in files]
    return found


def check_consistent(app: Appliance) -> dict[str, ObjectRecord]:
    """The invariants that hold after any recovery; returns the index's records by id."""
    files = disk_files(app)
    assert files["tmp"] == [], "temp files left after recovery"
    assert files["quarantine"] == [], "something was quarantined"
    with app.open() as store:
        records = {r.id: r for r in store.index.objects()}
        assert store.index.reserved_by_disk() == {}, "reservations left after recovery"
        assert store.index.quarantined() == []
        servable_paths = servable(store)
        _, serving = build_serving_map(store.index, servable_paths)
        indexed_paths = {store.path_of(r): r for r in records.values()}
    on_disk = sorted(files["objects"])
    assert on_disk == sorted(indexed_paths), "disks and index disagree"
    for path, rec in indexed_paths.items():
        assert layout.parse_object_name(os.path.basename(path)) == (rec.id, rec.xxh3)
        assert rec.disk in servable_paths
        assert digest_file(path) == (rec.xxh3, rec.size), f"{rec.id}: bytes differ from index"
        assert serving[rec.id].path == path
    assert set(serving) == set(records)
    return records


# -- the scenario ---------------------------------------------------------------------

@dataclass
class Scenario:
    app: Appliance
    before: dict[str, ObjectRecord]   # index before the faulted command
    old: ObjectRecord | None          # the object before
    new_bytes: bytes | None           # the object's bytes after a put/replace
    new_tier: str | None              # tier after success (None: deleted)
    argv: list[str]


def make_scenario(root: Path, op: str) -> Scenario:
    app = make_appliance(root / "app")
    src_dir = root / "src"
    src_dir.mkdir()
    old_src = make_file(src_dir / "old.bin", SIZE, seed=1)
    new_src = make_file(src_dir / "new.bin", SIZE, seed=2)
    with app.open() as store:
        for i, (oid, (tier, size)) in enumerate(UNRELATED.items()):
            store.put(oid, make_file(src_dir / oid, size, seed=10 + i), tier)
        old = None
        if op != "put":
            old = store.put(OBJECT, old_src, "ssd" if op == "mv-down" else "hdd")
        before = {r.id: r for r in store.index.objects()}
    new_bytes = new_src.read_bytes()
    if op == "put":
        return Scenario(app, before, None, new_bytes, "hdd",
                        ["put", OBJECT, str(new_src), "--tier", "hdd"])
    if op == "replace":
        return Scenario(app, before, old, new_bytes, "hdd",
                        ["put", OBJECT, str(new_src), "--tier", "hdd", "--replace"])
    if op == "mv-up":
        return Scenario(app, before, old, None, "ssd", ["mv", OBJECT, "--tier", "ssd"])
    if op == "mv-down":
        return Scenario(app, before, old, None, "hdd", ["mv", OBJECT, "--tier", "hdd"])
    assert op == "rm"
    return Scenario(app, before, old, None, None, ["rm", OBJECT])


def check_object(sc: Scenario, records: dict[str, ObjectRecord], wins: str) -> None:
    """The object is wholly the old or wholly the new state, as *wins* says."""
    rec = records.get(OBJECT)
    if wins == OLD:
        assert rec == sc.old
        return
    if sc.new_tier is None:
        assert rec is None, "deleted object came back"
        return
    assert rec is not None, "committed object was lost"
    assert rec.tier == sc.new_tier
    assert rec.size == SIZE
    if sc.new_bytes is not None:
        assert rec.xxh3 == digest_bytes(sc.new_bytes)
    else:  # a move keeps the bytes and the counters
        assert (rec.xxh3, rec.content_type, rec.mtime) == (
            sc.old.xxh3, sc.old.content_type, sc.old.mtime)
    if sc.old is not None and (sc.old.disk, sc.old.xxh3) != (rec.disk, rec.xxh3):
        assert not os.path.exists(layout.object_path(sc.old.disk, OBJECT, sc.old.xxh3))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_crash_then_recover(tmp_path: Path, case: Case) -> None:
    sc = make_scenario(tmp_path, case.op)
    r = sc.app.oca(*sc.argv, env={"OCA_FAULT": case.fault})
    assert r.returncode == -signal.SIGKILL, (
        f"oca {' '.join(sc.argv)} with OCA_FAULT={case.fault} did not die at the fault: "
        f"rc {r.returncode}, stderr {r.stderr!r}")

    r = sc.app.oca("recover", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["skipped_disks"] == {}
    assert report["quarantined"] == [] and report["pending"] == [] and report["foreign"] == []
    if case.temp:
        assert len(report["temp_removed"]) == 1
        assert f"/{OBJECT}." in report["temp_removed"][0]
    else:
        assert report["temp_removed"] == []

    records = check_consistent(sc.app)
    check_object(sc, records, case.wins)
    unrelated = {k: v for k, v in records.items() if k != OBJECT}
    assert unrelated == {k: v for k, v in sc.before.items() if k != OBJECT}

    r = sc.app.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr

    # Recovery is idempotent: a second run finds nothing to do.
    r = sc.app.oca("recover", "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["reservations_cleared"] == 0
    assert not any(again[k] for k in ("temp_removed", "adopted", "strays_removed",
                                      "dropped_missing", "quarantined", "pending"))


@pytest.mark.parametrize("op", ["put", "replace", "mv-up", "mv-down", "rm"])
def test_without_fault_new_state(tmp_path: Path, op: str) -> None:
    """The same commands unarmed: they succeed and leave the new state (the reference)."""
    sc = make_scenario(tmp_path, op)
    r = sc.app.oca(*sc.argv)
    assert r.returncode == 0, r.stderr
    records = check_consistent(sc.app)
    check_object(sc, records, NEW)


def test_cases_cover_every_fault_point() -> None:
    """Every fault point named in the store is exercised by some case."""
    import re

    import oca.storage.store as store_module
    from tests.storage.test_put_stream import STREAM_FAULTS

    text = Path(store_module.__file__).read_text()
    named = set(re.findall(r'faults\.point\("([a-z_.]+)"\)', text))
    templated = set(re.findall(r'faults\.point\(f"\{fault\}\.([a-z_]+)"\)', text))
    named |= {f"{op}.{p}" for op in ("put", "move", "stream") for p in templated
              if (op, p) != ("stream", "write")}
    if re.search(r'f"\{fault\}\.write"', text):
        named |= {"put.write", "move.write"}
    named |= set(re.findall(r'"(stream\.[a-z_]+)"', text))
    # put_stream's points are crashed in test_put_stream.py (a stream, not the CLI)
    covered = {c.fault.partition("@")[0] for c in CASES} | set(STREAM_FAULTS)
    assert named, "no fault points found in store.py"
    assert named <= covered, f"fault points without a crash case: {sorted(named - covered)}"
