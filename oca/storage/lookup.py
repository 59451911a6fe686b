"""Where an object's bytes are: index rows turned into ``ObjectLocation`` values.

The serving path never queries SQLite per request (DESIGN.md): the store watcher
reads the whole map once (``build_serving_map``), then follows the change feed and
reads only the changed ids (``locations``), and publishes deltas to the workers.
The SQL is in index.py; this module only builds the values (one shared ``str`` per
disk, tier and content type, so that a million entries stay small). ``Store``
(store.py) is the face callers use: ``Store.serving_map`` and ``Store.locations``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable
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


class _Builder:
    """Turns location rows into ObjectLocations, sharing repeated strings."""

    def __init__(self, servable_disks: set[str] | None = None):
        self.servable_disks = servable_disks
        self.prefixes: dict[str, str] = {}
        self.shared: dict[str, str] = {}

    def __call__(self, row) -> ObjectLocation | None:
        oid, size, digest, disk, tier, ctype, mtime = row
        prefix = self.prefixes.get(disk)
        if prefix is None:
            if self.servable_disks is not None and disk not in self.servable_disks:
                return None
            prefix = self.prefixes[disk] = os.path.join(disk, layout.OBJECTS) + os.sep
            self.shared.setdefault(disk, disk)
        shared = self.shared
        h = xxh3_64_hexdigest(oid.encode())
        return ObjectLocation(
            f"{prefix}{h[:2]}/{h[2:4]}/{oid}.{digest}", size, digest,
            shared.setdefault(tier, tier), shared.setdefault(ctype, ctype),
            shared[disk], int(mtime))


def location(index: Index, object_id: str) -> ObjectLocation | None:
    """The location of one object, or None when it is not indexed."""
    return locations(index, (object_id,))[object_id]


def locations(index: Index, ids: Iterable[str]) -> dict[str, ObjectLocation | None]:
    """Every id of *ids* -> its location, or None when it is not indexed; one read
    transaction, ``IN (...)`` queries of a few hundred ids each."""
    wanted = list(dict.fromkeys(ids))
    out: dict[str, ObjectLocation | None] = dict.fromkeys(wanted)
    build = _Builder()
    with index.read():
        for row in index.location_rows_of(wanted):
            out[row[0]] = build(row)
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
    # The loop is _Builder's, inlined: a call per row would cost a million calls.
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
