"""Scrub: re-hash stored objects and quarantine the ones whose bytes changed.

Hashing runs without the store lock (it may take hours on an HDD tier); only the
quarantine of a bad object takes the exclusive lock, and first checks that the
index still names the same file, so a concurrent move or replace is never
mistaken for corruption.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from ..digest import digest_file
from .disk import FAILED, OK, error_state
from .index import ObjectRecord
from .store import Store, quarantine


@dataclass
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    ok: int = 0
    corrupt: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed_disks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.missing or self.failed_disks)


def verify(store: Store, records: Iterable[ObjectRecord] | None = None,
           on_bytes: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-hash *records* (default: every object) and quarantine mismatches.

    *on_bytes(n)* receives the bytes hashed since the previous call (progress).
    """
    report = VerifyReport()
    store.reload_disks()
    for rec in list(records) if records is not None else list(store.index.objects()):
        disk = store.disks.get(rec.disk)
        if rec.disk in report.failed_disks:
            report.skipped.append({"id": rec.id, "disk": rec.disk, "reason": "disk failed"})
            continue
        h = store.probe(disk) if disk is not None else None
        if h is None or not h.servable:
            reason = "disk not configured" if h is None else f"disk {h.state}: {h.reason}"
            report.skipped.append({"id": rec.id, "disk": rec.disk, "reason": reason})
            if h is not None and h.io_error:
                # An I/O error found now is a finding, as one met while hashing is;
                # a failure already recorded (sticky) only skips.
                report.failed_disks[rec.disk] = h.reason or "failed"
            continue
        path = store.path_of(rec)
        done = 0

        def tick(total: int) -> None:
            nonlocal done
            if on_bytes is not None:
                on_bytes(total - done)
            done = total

        report.checked += 1
        try:
            actual, size = digest_file(path, on_bytes=tick)
        except FileNotFoundError:
            if disk.probe().state == FAILED:  # the mount went away under us
                report.failed_disks[rec.disk] = disk.probe().reason or "failed"
                continue
            with store.exclusive():
                cur = store.index.get(rec.id)
                if cur is not None and (cur.disk, cur.xxh3) == (rec.disk, rec.xxh3):
                    with store.index.write():
                        store.index.delete(rec.id)
                        store.index.add_quarantine(rec.id, rec.disk, rec.xxh3, None, path,
                                                   "file missing")
                    report.missing.append({"id": rec.id, "disk": rec.disk, "path": path})
            continue
        except OSError as e:
            if error_state(e) == OK:
                raise
            store._on_disk_error(disk, e, f"verifying {rec.id}")
            report.failed_disks[rec.disk] = f"{e.strerror or e} reading {path}"
            continue
        report.bytes += size
        if actual == rec.xxh3 and size == rec.size:
            report.ok += 1
            continue
        with store.exclusive():
            cur = store.index.get(rec.id)
            if cur is None or (cur.disk, cur.xxh3) != (rec.disk, rec.xxh3):
                report.ok += 1  # replaced or moved meanwhile: not ours to judge
                continue
            dest = quarantine(store, disk, rec.id, rec.xxh3, actual, path,
                              f"digest mismatch (size {size}, indexed {rec.size})")
        report.corrupt.append({"id": rec.id, "disk": rec.disk, "expected": rec.xxh3,
                               "actual": actual, "quarantined_to": dest or path})
    store.reload_disks()
    return report


