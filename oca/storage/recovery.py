"""Start-up recovery: make the index and the disks agree.

Run with the store's exclusive lock, so no put, move or delete is half done
meanwhile. For each disk that is present (marker matches) and readable:

* ``tmp/`` is emptied: a temp file is an ingest or move that never committed.
  Except the resumable partial files of stream ingests (``<id>.<xxh3>.partial``,
  Store.put_stream): one modified in the last ``PARTIAL_KEEP`` seconds (24 h) is
  kept for the fill to resume with a range request; an older one is removed. (No
  live process is writing one meanwhile: an ingest holds the store's lock shared.)
* A file under ``objects/`` whose (id, digest) the index names on this disk is
  kept (a size that differs from the index's is corruption: quarantined).
* A file whose id the index places elsewhere, or with another digest, is a stray
  copy from an interrupted move or replace: removed.
* A file with a tombstone (deleted while its disk could not be written): removed.
* A file whose id is not indexed at all was renamed into place but not indexed:
  adopted when its bytes hash to the digest in its name, else quarantined.
* An indexed object of this disk whose file is absent is dropped from the index.

A disk that is failed or absent is skipped whole: its objects stay indexed (not
servable) so that nothing is forgotten because a mount went away.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import asdict, dataclass, field

from .. import mediatypes
from ..digest import digest_file
from . import layout
from .disk import OK, Disk, error_state
from .index import ObjectRecord
from .store import Store, quarantine

PARTIAL_KEEP = 24 * 3600
"""Seconds a partial stream ingest of a dead process is kept for a resume: a fill
that failed tonight resumes in tomorrow's window at the latest."""


@dataclass
class RecoveryReport:
    reservations_cleared: int = 0
    temp_removed: list[str] = field(default_factory=list)
    partials_kept: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    strays_removed: list[str] = field(default_factory=list)
    dropped_missing: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    skipped_disks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def changed(self) -> bool:
        return any((self.temp_removed, self.adopted, self.strays_removed, self.dropped_missing,
                    self.quarantined))


class _DiskError(Exception):
    pass


def recover(store: Store, on_file=None) -> RecoveryReport:
    """Reconcile every disk with the index; see the module docstring. *on_file()* ticks
    once per file examined (progress)."""
    report = RecoveryReport()
    with store.exclusive():
        store.reload_disks()
        report.reservations_cleared = store.index.clear_reservations()
        for disk in store.disks.values():
            h = store.probe(disk)
            if not h.servable:
                report.skipped_disks[disk.path] = f"{h.state}: {h.reason}"
                continue
            try:
                _recover_disk(store, disk, h.state == OK, report, on_file)
            except _DiskError as e:
                report.skipped_disks[disk.path] = f"failed: {e}"
        store.reload_disks()
    return report


def _remove(path: str, writable: bool, report_list: list[str], report: RecoveryReport) -> None:
    if not writable:
        report.pending.append(path)
        return
    os.unlink(path)
    report_list.append(path)


def _is_dir(path: str) -> bool:
    """os.path.isdir, except that an I/O error propagates (it fails the disk instead of
    making a shard folder look foreign and its objects missing)."""
    return stat.S_ISDIR(os.stat(path).st_mode)


def _recover_disk(store: Store, disk: Disk, writable: bool, report: RecoveryReport,
                  on_file) -> None:
    index = store.index
    try:
        tmp = layout.tmp_dir(disk.path)
        if os.path.isdir(tmp):
            now = time.time()
            for name in sorted(os.listdir(tmp)):
                path = os.path.join(tmp, name)
                if (name.endswith(layout.PARTIAL_SUFFIX)
                        and now - os.stat(path).st_mtime < PARTIAL_KEEP):
                    report.partials_kept.append(path)
                    continue
                _remove(path, writable, report.temp_removed, report)
            if writable and report.temp_removed:
                layout.fsync_dir(tmp)
        indexed = {r.id: r for r in index.objects(disk=disk.path)}
        seen: set[str] = set()
        root = os.path.join(disk.path, layout.OBJECTS)
        try:
            top = sorted(os.listdir(root))
        except FileNotFoundError:
            top = []  # not os.path.isdir: it answers False on EIO, and all would look missing
        for a in top:
            if not _is_dir(os.path.join(root, a)):
                report.foreign.append(os.path.join(root, a))
                continue
            for b in sorted(os.listdir(os.path.join(root, a))):
                shard_dir = os.path.join(root, a, b)
                if not _is_dir(shard_dir):
                    report.foreign.append(shard_dir)
                    continue
                for name in sorted(os.listdir(shard_dir)):
                    if on_file:
                        on_file()
                    _recover_file(store, disk, writable, report, indexed, seen,
                                  (a, b), shard_dir, name)
    except OSError as e:
        if error_state(e) != OK:
            store.mark_failed(disk, f"{e.strerror or e} during recovery")
        raise _DiskError(e.strerror or str(e)) from None
    missing = [i for i in indexed if i not in seen]
    if missing:
        with index.write():
            for object_id in missing:
                index.delete(object_id)
        report.dropped_missing.extend(missing)


def _recover_file(store: Store, disk: Disk, writable: bool, report: RecoveryReport,
                  indexed: dict[str, ObjectRecord], seen: set[str], where: tuple[str, str],
                  shard_dir: str, name: str) -> None:
    index = store.index
    path = os.path.join(shard_dir, name)
    parsed = layout.parse_object_name(name)
    if parsed is None or layout.shard(parsed[0]) != where or not os.path.isfile(path):
        report.foreign.append(path)
        return
    object_id, digest = parsed
    rec = indexed.get(object_id)
    if rec is not None and rec.xxh3 == digest:
        seen.add(object_id)
        size = os.stat(path).st_size
        if size != rec.size:
            quarantine(store, disk, object_id, digest, None, path,
                       f"size {size} differs from the index's {rec.size}")
            report.quarantined.append(path)
        return
    if index.get(object_id) is not None:
        _remove(path, writable, report.strays_removed, report)
        return
    if index.has_tombstone(object_id, disk.path, digest):
        _remove(path, writable, report.strays_removed, report)
        if writable:
            with index.write():
                index.drop_tombstone(object_id, disk.path, digest)
        return
    actual, size = digest_file(path)
    if actual == digest:
        with index.write():
            index.put(ObjectRecord(object_id, size, digest, disk.path, disk.tier,
                                   mediatypes.guess(object_id), os.stat(path).st_mtime))
        report.adopted.append(object_id)
    else:
        quarantine(store, disk, object_id, digest, actual, path,
                   "unindexed file does not match the digest in its name")
        report.quarantined.append(path)


