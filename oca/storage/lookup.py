"""The serving map: id -> where its bytes are, in memory.

The serving path never queries SQLite per request (DESIGN.md): a worker builds
this map from the index once, and rebuilds it when the index's generation
changes. Objects on disks that are not servable (failed, missing) are left out,
so they answer 404 without touching the disk.
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


def build_serving_map(
    index: Index, servable_disks: set[str]
) -> tuple[int, dict[str, ObjectLocation]]:
    """(generation, map) for every object on a servable disk, read in one transaction."""
    prefixes = {d: os.path.join(d, layout.OBJECTS) + os.sep for d in servable_disks}
    shared: dict[str, str] = {}  # one str object per distinct tier and content type
    out: dict[str, ObjectLocation] = {}
    # Building a million tuples would trigger the cyclic GC hundreds of times for
    # nothing (none of these objects can form a cycle): measured 25-30% of the time.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with index.read():
            generation = index.generation()
            for oid, size, digest, disk, tier, ctype in index.iter_locations():
                prefix = prefixes.get(disk)
                if prefix is None:
                    continue
                h = xxh3_64_hexdigest(oid.encode())
                out[oid] = ObjectLocation(
                    f"{prefix}{h[:2]}/{h[2:4]}/{oid}.{digest}", size, digest,
                    shared.setdefault(tier, tier), shared.setdefault(ctype, ctype))
    finally:
        if gc_was_enabled:
            gc.enable()
    return generation, out
