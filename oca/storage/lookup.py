"""The serving map: id -> where its bytes are, in memory.

The serving path never queries SQLite per request (DESIGN.md): a worker builds
this map from the index once, and rebuilds it when the index's generation
changes. Objects on disks that are not servable (failed, missing) are left out,
so they answer 404 without touching the disk.
"""

from __future__ import annotations

from typing import NamedTuple

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
    with index.read():
        generation = index.generation()
        rows = index.locations()
    path = layout.object_path
    return generation, {
        oid: ObjectLocation(path(disk, oid, digest), size, digest, tier, ctype)
        for oid, size, digest, disk, tier, ctype in rows
        if disk in servable_disks
    }
