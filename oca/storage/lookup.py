"""The serving map: id -> where its bytes are, in memory.

The serving path never queries SQLite per request (DESIGN.md): a worker builds
this map from the index once, then follows the index's change feed
(index.changes_since). Objects on disks that are not servable (failed, missing)
can be left out, so they answer 404 without touching the disk.
"""

from __future__ import annotations

import gc
import os
from typing import NamedTuple

from xxhash import xxh3_64_hexdigest

from . import layout
from .index import Index


class ObjectLocation(NamedTuple):
    path: str
    size: int
    xxh3: str
    tier: str
    content_type: str
    disk: str
    mtime: int  # whole seconds: HTTP dates have no finer resolution


_COLUMNS = "id, size, xxh3, disk, tier, content_type, mtime"


def location(index: Index, object_id: str) -> ObjectLocation | None:
    """The location of one object, or None when it is not indexed."""
    row = index.db.execute(f"SELECT {_COLUMNS} FROM objects WHERE id = ?",
                           (object_id,)).fetchone()
    if row is None:
        return None
    oid, size, digest, disk, tier, ctype, mtime = row
    return ObjectLocation(layout.object_path(disk, oid, digest), size, digest, tier, ctype,
                          disk, int(mtime))


def build_serving_map(
    index: Index, servable_disks: set[str] | None = None
) -> tuple[int, dict[str, ObjectLocation]]:
    """(change-feed position, map) for every object on *servable_disks* (None: on any
    disk), read in one transaction."""
    prefixes: dict[str, str] = {}
    shared: dict[str, str] = {}  # one str object per distinct tier and content type
    out: dict[str, ObjectLocation] = {}
    # Building a million tuples would trigger the cyclic GC hundreds of times for
    # nothing (none of these objects can form a cycle): measured 25-30% of the time.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with index.read():
            seq = index.change_seq()
            for oid, size, digest, disk, tier, ctype, mtime in index.db.execute(
                    f"SELECT {_COLUMNS} FROM objects"):  # streamed, not fetched whole
                prefix = prefixes.get(disk)
                if prefix is None:
                    if servable_disks is not None and disk not in servable_disks:
                        continue
                    prefix = prefixes[disk] = os.path.join(disk, layout.OBJECTS) + os.sep
                    shared.setdefault(disk, disk)
                h = xxh3_64_hexdigest(oid.encode())
                out[oid] = ObjectLocation(
                    f"{prefix}{h[:2]}/{h[2:4]}/{oid}.{digest}", size, digest,
                    shared.setdefault(tier, tier), shared.setdefault(ctype, ctype),
                    shared[disk], int(mtime))
    finally:
        if gc_was_enabled:
            gc.enable()
    return seq, out
