"""The serving map: id -> where its bytes are, in memory.

The serving path never queries SQLite (DESIGN.md): the store watcher of ``oca serve``
reads this map from the index (``Store.serving_map``) and the locations of what changed
(``Store.locations``), and sends them to the workers. The SQL is the index's
(``Index.location_rows``); this module makes the rows into locations.
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


def locations(index: Index, ids) -> dict[str, ObjectLocation | None]:
    """The location of every id in *ids* (None: not indexed), read in one transaction."""
    out: dict[str, ObjectLocation | None] = dict.fromkeys(ids)
    with index.read():
        for oid, size, digest, disk, tier, ctype, mtime in index.location_rows(out):
            out[oid] = ObjectLocation(layout.object_path(disk, oid, digest), size, digest,
                                      tier, ctype, disk, int(mtime))
    return out


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
            for oid, size, digest, disk, tier, ctype, mtime in index.location_rows():
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
