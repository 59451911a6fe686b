"""A worker's view of the store: id -> open file, without SQLite per request.

A worker loads the whole serving map once (storage.lookup), then follows the
index's change feed once a second, so that `oca put/rm/mv/verify` from another
process are seen within a second. Files are opened on first use and kept open
in an LRU of ``[server] open_file_cache`` entries (nginx's open_file_cache idea):
a hit costs a dict lookup, not an open(2).
"""

from __future__ import annotations

import logging
import os
import time

from _fastpath import EntryTable

from ..http.objects import DiskFailed, OpenObject
from ..storage import Store
from ..storage.disk import FAILED, error_state
from ..storage.lookup import build_serving_map, location

log = logging.getLogger("oca.serve")

CHANGES_PER_REFRESH = 10_000
"""More changes than this in one second (a bulk fill): reload the whole map."""


class ObjectTable:
    """id -> OpenObject for one worker."""

    def __init__(self, store: Store, cache_size: int):
        self.store = store
        self.cache_size = cache_size
        # The open objects, LRU, by id and by target: read by the connection loop.
        self.entries = EntryTable(cache_size)
        self.servable: set[str] = set()
        self.disk_states: dict[str, str] = {}
        t0 = time.monotonic()
        self.seq, self.map = build_serving_map(store.index)
        log.info("serving map: %d objects in %.2f s", len(self.map), time.monotonic() - t0)
        self.refresh_disks()

    def get(self, object_id: str) -> OpenObject | None:
        """The open object, None when unknown; DiskFailed when its disk is failed."""
        obj = self.entries.get(object_id)
        if obj is not None:
            if obj.disk not in self.servable:
                raise DiskFailed(obj.disk)
            return obj
        loc = self.map.get(object_id)
        if loc is None:
            return None
        if loc.disk not in self.servable:
            raise DiskFailed(loc.disk)
        try:
            fd = os.open(loc.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # removed a moment ago; the change feed will say so
        except OSError as e:
            if error_state(e) == FAILED:
                self.fail_disk(loc.disk, f"{e.strerror} opening {loc.path}")
                raise DiskFailed(loc.disk) from None
            return None
        obj = OpenObject(object_id, fd, loc)
        self._forget(self.entries.add(obj))
        return obj

    def _forget(self, obj: OpenObject | None) -> None:
        """*obj* left the open entries (evicted, removed, replaced): its counters
        (``hits``, ``body_bytes``) are what it counted since it was opened."""

    def fail_disk(self, disk: str, reason: str) -> None:
        """An I/O error while serving: record the failure (sticky, in the index)."""
        if disk not in self.servable:
            return
        self.servable.discard(disk)
        d = self.store.disks.get(disk)
        if d is not None:
            log.error("disk %s failed: %s", disk, reason)
            self.store.mark_failed(d, reason)
        self._drop_disk(disk)

    def _drop_disk(self, disk: str) -> None:
        for obj in [obj for obj in self.entries if obj.disk == disk]:
            self._forget(self.entries.remove(obj.id))

    def refresh_disks(self) -> None:
        self.store.reload_disks()
        states = {path: self.store.probe(d).state for path, d in self.store.disks.items()}
        # Objects on a disk no longer in the config are not served either: not in the set.
        servable = {p for p, s in states.items() if s != FAILED}
        for disk in self.servable - servable:
            self._drop_disk(disk)
        self.servable = servable
        self.disk_states = states

    def refresh(self) -> None:
        """Once a second: disk health and the index's change feed."""
        self.refresh_disks()
        ids, seq, complete = self.store.index.changes_since(self.seq, CHANGES_PER_REFRESH)
        if not complete:
            t0 = time.monotonic()
            self.seq, self.map = build_serving_map(self.store.index)
            for obj in self.entries.clear():
                self._forget(obj)
            log.info("serving map reloaded: %d objects in %.2f s", len(self.map),
                     time.monotonic() - t0)
            return
        for oid in set(ids):
            loc = location(self.store.index, oid)
            if loc is None:
                self.map.pop(oid, None)
            else:
                self.map[oid] = loc
            self._forget(self.entries.remove(oid))
        self.seq = seq

    @property
    def healthy(self) -> bool:
        """At least one disk is servable."""
        return bool(self.servable)
