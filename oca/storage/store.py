"""The tiered store: put, move, delete, stat, list, status.

Every change follows one order so that a crash at any point leaves either the
old state or the new one (docs/storage.md walks through each crash point):

    put    reserve room -> temp file on the target disk -> copy + hash -> fsync
           -> check digest -> rename into objects/ -> fsync dir -> index (commit)
           -> unlink a replaced file
    move   the same onto a disk of the new tier, then index -> unlink the old file
    delete unlink -> fsync dir -> index (a tombstone when the unlink failed)

Recovery (recovery.py) and quarantine take the store's lock exclusively;
put, move and delete take it shared, so recovery never sees half an operation
of a live process.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from .. import mediatypes
from ..config import TIERS, Config
from ..digest import is_digest, new_hasher
from ..errors import (
    DigestMismatchError,
    ObjectExistsError,
    StoreError,
    TierFullError,
    UnknownObjectError,
    UsageError,
)
from ..ids import check_id
from ..units import format_size
from . import faults, layout, placement
from .disk import (
    FAILED,
    FULL,
    MIN_FREE,
    OK,
    Disk,
    DiskHealth,
    error_state,
    read_marker,
    write_marker,
)
from .index import Index, ObjectRecord
from .lookup import ObjectLocation, build_serving_map, locations
from .probe import DiskFacts, DiskProber

COPY_CHUNK = 1 << 20
"""Bytes per read/write while copying: large enough that syscalls cost little
next to the copy, small enough to stay in L2/L3 for the hash."""

ProgressFn = Callable[[int], None]


class _ReadError(Exception):
    def __init__(self, exc: OSError):
        self.exc = exc


class _WriteError(Exception):
    def __init__(self, exc: OSError):
        self.exc = exc


def check_tier(tier: str) -> str:
    """Return *tier* if it is a tier name, else raise UsageError."""
    if tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")
    return tier


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ReadInto = Callable[[memoryview], int]
"""Fills the buffer from a source; returns the bytes read, 0 at the end of the source."""


def _fd_reader(fd: int) -> ReadInto:
    return lambda buf: os.readv(fd, [buf])


def _stream_reader(source: BinaryIO | int) -> ReadInto:
    """A ReadInto for a file descriptor or any object with ``readinto`` (a socket's
    ``makefile('rb')``, an ``http.client.HTTPResponse``, an open file)."""
    if isinstance(source, int):
        return _fd_reader(source)
    readinto = getattr(source, "readinto", None)
    if readinto is None:
        raise UsageError(f"cannot read from {source!r}: not a file descriptor or a binary "
                         "stream with readinto()")
    return lambda buf: readinto(buf) or 0  # None: a non-blocking stream with nothing yet


def _copy(read_into: ReadInto, dst_fd: int, fault: str, on_bytes: ProgressFn | None,
          limit: int | None = None, hasher=None, done: int = 0) -> tuple[str, int]:
    """Copy from *read_into* to dst (at its offset), hashing the bytes written, until the
    source ends or *limit* bytes are copied; return (digest, bytes copied). *hasher*
    already holds the first *done* bytes of the object (a resumed ingest): the digest
    and ``on_bytes`` count them."""
    h = new_hasher() if hasher is None else hasher
    buf = bytearray(COPY_CHUNK)
    view = memoryview(buf)
    total = 0
    while limit is None or total < limit:
        want = view if limit is None else view[:min(COPY_CHUNK, limit - total)]
        try:
            n = read_into(want)
        except (OSError, http.client.HTTPException) as e:
            raise _ReadError(e) from None
        if n == 0:
            break
        chunk = view[:n]
        h.update(chunk)
        off = 0
        while off < n:
            try:
                off += os.write(dst_fd, chunk[off:])
            except OSError as e:
                raise _WriteError(e) from None
        total += n
        faults.bytes_written(fault, done + total)
        if on_bytes is not None:
            on_bytes(done + total)
    return h.hexdigest(), total


class PartialIngestError(StoreError):
    """A stream ended (or failed) before all of an object's bytes arrived. Nothing is
    indexed; when *resumable*, the *got* bytes are kept on disk for ``put_stream(...,
    start=got)``."""

    def __init__(self, message: str, object_id: str, got: int, expected: int,
                 resumable: bool):
        super().__init__(message)
        self.object_id = object_id
        self.got = got
        self.expected = expected
        self.resumable = resumable


class Store:
    """An opened store: the index plus the configured disks."""

    def __init__(self, config: Config, *, create: bool = False):
        self.config = config
        index_path = str(config.store.index)
        if not create and not os.path.exists(index_path):
            raise StoreError(
                f"index {index_path} not found: run `oca init -c {config.path}` first")
        self.index = Index(index_path)
        self._lock_path = index_path + ".lock"
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self.disks: dict[str, Disk] = {}
        self._prober = DiskProber()
        self.reload_disks()

    def close(self) -> None:
        """Close the index and the lock. Probe children still stuck on a hung disk are
        left to init (they cannot be killed out of an uninterruptible wait)."""
        self.index.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- set-up -------------------------------------------------------------

    @classmethod
    def init(cls, config: Config) -> Store:
        """Create the index and initialise every disk (idempotent); return the open store.

        A disk that already carries a marker keeps its identity, so re-running
        init over disks with objects (after losing the index) adopts them at
        the next recovery.
        """
        parent = os.path.dirname(str(config.store.index))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create index directory {parent}: {e.strerror}") from None
        for d in config.store.disks:
            if not os.path.isdir(d.path):
                raise StoreError(
                    f"disk {d.path} does not exist or is not a directory: mount or create it first")
        store = cls(config, create=True)
        try:
            known = store.index.disks()
            for d in config.store.disks:
                path = str(d.path)
                try:
                    marker = read_marker(path)
                    rec = known.get(path)
                    if marker and marker.get("disk_id"):
                        if rec and rec.disk_id != marker["disk_id"]:
                            raise StoreError(
                                f"disk {path}: marker disk_id {marker['disk_id']} differs from the "
                                f"index's {rec.disk_id}: another disk is mounted there")
                        disk_id = marker["disk_id"]
                        if marker.get("tier") != d.tier:
                            write_marker(path, d.tier, disk_id)
                    elif marker is None and rec is not None:
                        # An empty mount point: stamping it would make the root
                        # filesystem this disk and drop its objects from the index.
                        raise StoreError(
                            f"disk {path}: marker {layout.MARKER} missing, but the index knows "
                            f"this disk (disk_id {rec.disk_id}): is its filesystem mounted? "
                            "Mount it and run init again")
                    else:
                        disk_id = write_marker(path, d.tier)
                    for sub in (layout.OBJECTS, layout.TMP, layout.QUARANTINE):
                        layout.ensure_dir(os.path.join(path, sub))
                except OSError as e:
                    raise StoreError(f"cannot initialise disk {path}: {e.strerror or e}") from None
                store.index.add_disk(path, disk_id, d.tier)
            store.reload_disks()
        except BaseException:
            store.close()
            raise
        return store

    def reload_disks(self) -> None:
        """Re-read the disks' index records (sticky failures set by other processes)."""
        records = self.index.disks()
        self.disks = {str(d.path): Disk(d, records.get(str(d.path)))
                      for d in self.config.store.disks}

    # -- locking ------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            # A probe child stuck on a hung disk must not keep the flock held after we die.
            self._prober.close_in_child = (self._lock_fd,)
        if self._lock_depth:
            # Re-entrant within one process: the outer hold already covers us.
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        fcntl.flock(self._lock_fd, mode)
        self._lock_depth = 1
        try:
            yield
        finally:
            self._lock_depth = 0
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def shared(self):
        """Hold while changing objects: excludes recovery and quarantine, not other changes."""
        return self._locked(fcntl.LOCK_SH)

    def exclusive(self):
        """Hold while reconciling disks and index: no change is in flight meanwhile."""
        return self._locked(fcntl.LOCK_EX)

    # -- health -------------------------------------------------------------

    @property
    def probe_timeout(self) -> float:
        """``[store] disk_probe_timeout``: seconds before a silent disk is reported hung."""
        return self.config.store.disk_probe_timeout

    def _probe_facts(self, disks: Iterable[Disk], timeout: float | None = None,
                     with_io: bool = False) -> dict[str, DiskFacts]:
        """Probe *disks* in parallel, each in a forked child (probe.py), within *timeout*
        (default ``probe_timeout``); make an I/O error sticky, as one met while reading or
        writing is (disk.py): a flaky disk must not drift back into service. A hang is
        not made sticky. Not inside an index transaction (it may write a failure)."""
        disks = list(disks)
        facts = self._prober.run(disks, self.probe_timeout if timeout is None else timeout,
                                 with_io)
        failed = [d for d in disks if facts[d.path].health.io_error]
        for disk in failed:
            self.index.set_disk_failed(disk.path, facts[disk.path].health.reason or "I/O error")
        if failed:
            self.reload_disks()
        return facts

    def probe(self, disk: Disk, timeout: float | None = None) -> DiskHealth:
        """Probe one disk (sticky failure, marker, read-only flag), in a child, within
        *timeout* seconds (default ``probe_timeout``): a disk that does not answer is
        ``failed`` with ``hung`` in the reason. Never blocks longer, never raises."""
        return self._probe_facts([disk], timeout)[disk.path].health

    def probe_all(self, timeout: float | None = None) -> dict[str, DiskHealth]:
        """Probe every configured disk in parallel (the store watcher's round): disk path
        -> health, within *timeout* seconds in all (default ``probe_timeout``). The disks'
        index records (sticky failures set by other processes) are re-read first."""
        self.reload_disks()
        return {p: f.health for p, f in self._probe_facts(self.disks.values(), timeout).items()}

    def health(self, disk: Disk, usage: dict | None = None, reserved: dict | None = None,
               facts: DiskFacts | None = None) -> DiskHealth:
        """The disk's health including ``full`` from accounting and filesystem space
        (probing it first unless *facts* of a probe are given)."""
        facts = self._probe_facts([disk])[disk.path] if facts is None else facts
        h = facts.health
        if h.state != OK:
            return h
        usage = self.index.usage_by_disk() if usage is None else usage
        reserved = self.index.reserved_by_disk() if reserved is None else reserved
        used = usage.get(disk.path, (0, 0))[1] + reserved.get(disk.path, 0)
        cap = disk.capacity(facts.fs_size)
        if used >= cap:
            return DiskHealth(FULL, f"capacity {format_size(cap)} used up")
        if facts.fs_free <= MIN_FREE:
            return DiskHealth(FULL, "filesystem full")
        return h

    def mark_failed(self, disk: Disk, reason: str) -> None:
        """Record a sticky failure: the disk's objects stop being servable."""
        self.index.set_disk_failed(disk.path, reason)
        self.reload_disks()

    def clear_failed(self, path: str) -> DiskHealth:
        """Operator action: forget a sticky failure and probe the disk again."""
        disk = self._disk(os.path.normpath(os.path.abspath(path)))
        self.index.set_disk_failed(disk.path, None)
        self.reload_disks()
        return self.health(self.disks[disk.path])

    # -- the store watcher's view ------------------------------------------

    def serving_map(self) -> tuple[int, dict[str, ObjectLocation]]:
        """(change-feed position, id -> location of every indexed object), read in one
        transaction. Objects on failed disks are included: whether a disk is servable
        is the watcher's to decide from ``probe_all``, not a filter here."""
        return build_serving_map(self.index)

    def change_seq(self) -> int:
        """The newest change-feed position (0 when there has been none)."""
        return self.index.change_seq()

    def changes_since(self, seq: int, limit: int) -> tuple[list[str], int, bool]:
        """(ids changed after *seq*, newest seq returned, complete). Ids may repeat. Not
        complete when the feed was pruned past *seq* or holds more than *limit* changes:
        the caller then takes the next batch from the returned seq or, when pruned,
        reloads ``serving_map()``."""
        return self.index.changes_since(seq, limit)

    def locations(self, ids: Iterable[str]) -> dict[str, ObjectLocation | None]:
        """Every id of *ids* -> its location, or None when it is not indexed (deleted),
        read in one transaction with ``IN (...)`` queries of 500 ids. Measured: 100,000
        ids against an index of 100,000 objects in 0.25 s (tests/storage/test_watcher_api.py
        ``test_locations_of_100000_ids``)."""
        return locations(self.index, ids)

    def add_hits(self, counts: Iterable[tuple[str, int, int, float]]) -> None:
        """Add (id, hits, body bytes sent, last-hit epoch) to the objects' counters, in one
        transaction; ids that are not indexed are ignored. Not a change-feed event."""
        self.index.add_hits(counts)

    def prune_changes(self, keep: int = 100_000) -> int:
        """Drop all but the newest *keep* change-feed entries; returns how many went. A
        reader that falls behind the pruned feed reloads ``serving_map()``."""
        return self.index.prune_changes(keep)

    def replace_disk(self, path: str, force: bool = False) -> int:
        """Operator action: the disk at *path* was swapped for a new, empty filesystem.

        The old disk's objects are dropped from the index (a fill brings them
        back), the new filesystem gets a marker and the store's folders, and the
        disk's failure is forgotten. Refused when the filesystem at *path* already
        carries a marker (not a new disk), when it holds files, and when *path* is
        not a mount point unless *force* (a disk that is a plain folder): an empty
        mount point with nothing mounted must not become the disk. Returns the
        number of objects dropped.
        """
        disk = self._disk(os.path.normpath(os.path.abspath(path)))
        with self.exclusive():
            try:
                marker = read_marker(disk.path)
            except OSError as e:
                raise StoreError(f"disk {disk.path}: cannot read: {e.strerror or e}") from None
            if marker is not None:
                same = disk.record is not None and marker.get("disk_id") == disk.record.disk_id
                raise StoreError(
                    f"disk {disk.path} already carries a marker ({layout.MARKER}, disk_id "
                    f"{marker.get('disk_id')}): "
                    + ("it is the same disk; use `oca disk clear` to bring it back" if same
                       else "not a new, empty filesystem; nothing changed"))
            if not force and not os.path.ismount(disk.path):
                raise StoreError(f"disk {disk.path} is not a mount point: mount the new "
                                 "filesystem there first (--force for a disk that is a folder)")
            leftovers = sorted(set(os.listdir(disk.path)) - {"lost+found"})
            if leftovers:
                raise StoreError(f"disk {disk.path} is not empty ({', '.join(leftovers[:3])}): "
                                 "mount the new, empty filesystem there; nothing changed")
            try:
                disk_id = write_marker(disk.path, disk.tier)
                for sub in (layout.OBJECTS, layout.TMP, layout.QUARANTINE):
                    layout.ensure_dir(os.path.join(disk.path, sub))
            except OSError as e:
                raise StoreError(f"cannot initialise disk {disk.path}: {e.strerror or e}") from None
            dropped = self.index.drop_disk(disk.path, disk_id)
            self.reload_disks()
        return dropped

    def _disk(self, path: str) -> Disk:
        try:
            return self.disks[path]
        except KeyError:
            raise UsageError(f"{path} is not a configured disk") from None

    def _on_disk_error(self, disk: Disk, exc: OSError, doing: str) -> str:
        state = error_state(exc)
        if state == FAILED:
            self.mark_failed(disk, f"{exc.strerror or exc} while {doing}")
        return state

    # -- reading ------------------------------------------------------------

    def get(self, object_id: str) -> ObjectRecord:
        """The indexed record of *object_id*; UnknownObjectError when there is none."""
        check_id(object_id)
        rec = self.index.get(object_id)
        if rec is None:
            raise UnknownObjectError(f"no object {object_id!r} in the store")
        return rec

    def find(self, object_id: str) -> ObjectRecord | None:
        """The indexed record of *object_id*, or None when there is none."""
        check_id(object_id)
        return self.index.get(object_id)

    @property
    def index_path(self) -> str:
        """The SQLite index file."""
        return self.index.path

    def path_of(self, rec: ObjectRecord) -> str:
        return layout.object_path(rec.disk, rec.id, rec.xxh3)

    def stat(self, object_id: str) -> dict:
        """Everything known about one object, for `oca stat`."""
        rec = self.get(object_id)
        disk = self.disks.get(rec.disk)
        h = self.probe(disk) if disk else DiskHealth(FAILED, "disk not in the config")
        d = rec.to_dict()
        d.update(path=self.path_of(rec), disk_state=h.state, servable=h.servable)
        return d

    def objects(self, tier: str | None = None) -> Iterator[ObjectRecord]:
        if tier is not None:
            check_tier(tier)
        return self.index.objects(tier=tier)

    # -- put ----------------------------------------------------------------

    def put(self, object_id: str, source: str | os.PathLike, tier: str, *,
            content_type: str | None = None, expected_digest: str | None = None,
            replace: bool = False, on_bytes: ProgressFn | None = None) -> ObjectRecord:
        """Ingest the file *source* as *object_id* on a disk of *tier*, atomically."""
        check_id(object_id)
        check_tier(tier)
        content_type = mediatypes.check(content_type) if content_type else mediatypes.guess(
            object_id)
        if expected_digest is not None and not is_digest(expected_digest):
            raise UsageError(
                f"invalid digest {expected_digest!r}: expected 32 lowercase hex digits")
        try:
            src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise StoreError(f"cannot read {source}: {e.strerror}") from None
        try:
            st = os.fstat(src_fd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"cannot read {source}: not a regular file")
            with self.shared():
                old = self.index.get(object_id)
                if old is not None and not replace:
                    raise ObjectExistsError(
                        f"object {object_id!r} already stored (tier {old.tier}, {old.xxh3}); "
                        "use --replace to overwrite it")
                try:
                    disk, digest, token = self._write_to_tier(
                        object_id, src_fd, st.st_size, tier, expected_digest, "put", on_bytes,
                        source_name=str(source))
                except _ReadError as r:
                    raise StoreError(f"cannot read {source}: {r.exc.strerror}") from None
                rec = ObjectRecord(object_id, st.st_size, digest, disk.path, tier, content_type,
                                   time.time())
                self._commit(rec, token, expect_old=old)
                faults.point("put.after_index")
                if old is not None and (old.disk, old.xxh3) != (rec.disk, rec.xxh3):
                    self._unlink_quietly(old)
                return self.index.get(object_id) or rec
        finally:
            os.close(src_fd)

    def put_stream(self, object_id: str, source: BinaryIO | int, size: int, tier: str, *,
                   xxh3: str | None = None, start: int = 0, content_type: str | None = None,
                   replace: bool = False, on_bytes: ProgressFn | None = None) -> ObjectRecord:
        """Ingest *size* bytes read from *source* (a file descriptor, or a binary stream
        with ``readinto``: a socket's ``makefile('rb')``, an ``http.client.HTTPResponse``)
        as *object_id* on a disk of *tier*, atomically, as ``put`` does: reservation,
        temp file on the target disk, fsync, digest check, rename, fsync dir, index.

        Exactly *size* bytes are read (the source may go on: a keep-alive connection).
        With *xxh3* (the expected digest) the temp file is resumable: it is named after
        (object_id, xxh3), and when the source ends early or fails (a dropped
        connection, a timeout) the bytes got are fsynced and kept, and
        PartialIngestError says how many. ``partial_size(object_id, xxh3)`` tells them
        later (another process, after a restart); ``put_stream(..., start=n)`` with a
        source whose first byte is the object's byte *n* (``Range: bytes=n-``)
        continues: the kept prefix is re-hashed so the digest covers the whole file, a
        longer partial is cut to *n*. ``start=0`` discards a partial and starts over.
        A digest mismatch discards the partial (DigestMismatchError), nothing indexed.
        Without *xxh3* nothing is kept on failure. *on_bytes(n)* gets the bytes of the
        object on disk so far, counting a resumed prefix.
        """
        check_id(object_id)
        check_tier(tier)
        content_type = mediatypes.check(content_type) if content_type else mediatypes.guess(
            object_id)
        if xxh3 is not None and not is_digest(xxh3):
            raise UsageError(f"invalid digest {xxh3!r}: expected 32 lowercase hex digits")
        if size < 0 or not 0 <= start <= size:
            raise UsageError(f"object {object_id!r}: start {start} must be within size {size}")
        if start and xxh3 is None:
            raise UsageError(f"object {object_id!r}: resuming (start={start}) needs the "
                             "expected xxh3, which names the partial file")
        read_into = _stream_reader(source)
        with self.shared():
            old = self.index.get(object_id)
            if old is not None and not replace:
                raise ObjectExistsError(
                    f"object {object_id!r} already stored (tier {old.tier}, {old.xxh3}); "
                    "use --replace to overwrite it")
            found = self._find_partial(object_id, xxh3) if xxh3 is not None else None
            if found is not None and found[0].tier != tier:
                self._discard_partial(object_id, found[0], found[1])
                found = None
            if start and (found is None or found[2] < start):
                have = found[2] if found else 0
                raise StoreError(
                    f"object {object_id!r}: cannot resume at byte {start}: "
                    + (f"the partial ingest on {found[0].path} has {have} bytes"
                       if found else f"no partial ingest of it on tier {tier}")
                    + "; start again from byte 0")
            disk, token = self._reserve(object_id, tier, size, {}, "stream",
                                        only=found[0].path if found else None)
            try:
                digest = self._write_stream(disk, object_id, read_into, size, start, xxh3,
                                            on_bytes)
            except _WriteError as w:
                self._release(token)
                self._on_disk_error(disk, w.exc, f"writing {object_id}")
                raise StoreError(
                    f"cannot write {object_id!r} to {disk.path}: {w.exc.strerror}") from None
            except BaseException:
                self._release(token)
                raise
            rec = ObjectRecord(object_id, size, digest, disk.path, tier, content_type,
                               time.time())
            self._commit(rec, token, expect_old=old)
            faults.point("stream.after_index")
            if old is not None and (old.disk, old.xxh3) != (rec.disk, rec.xxh3):
                self._unlink_quietly(old)
            return self.index.get(object_id) or rec

    def partial_size(self, object_id: str, xxh3: str) -> int:
        """Bytes of a partial ingest of (*object_id*, *xxh3*) kept on some disk for
        ``put_stream(..., start=n)``; 0 when there is none."""
        check_id(object_id)
        found = self._find_partial(object_id, xxh3)
        return found[2] if found else 0

    def _find_partial(self, object_id: str, xxh3: str) -> tuple[Disk, str, int] | None:
        """(disk, path, bytes) of the partial file of (*object_id*, *xxh3*) on a disk that
        answers its probe as writable; None when there is none."""
        probed = self._probe_facts(self.disks.values())
        for disk in self.disks.values():
            if probed[disk.path].health.state not in (OK, FULL):
                continue
            path = layout.partial_path(disk.path, object_id, xxh3)
            try:
                return disk, path, os.stat(path).st_size
            except FileNotFoundError:
                continue
            except OSError as e:
                self._on_disk_error(disk, e, f"looking for {path}")
        return None

    def _discard_partial(self, object_id: str, disk: Disk, path: str) -> None:
        """Remove a partial file, unless a live ingest holds it (StoreError then)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as e:
            self._on_disk_error(disk, e, f"opening {path}")
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"object {object_id!r} is being ingested by another process "
                                 f"({path}); nothing changed") from None
            os.unlink(path)
        except OSError as e:
            self._on_disk_error(disk, e, f"removing {path}")
        finally:
            os.close(fd)

    def _write_stream(self, disk: Disk, object_id: str, read_into: ReadInto, size: int,
                      start: int, xxh3: str | None, on_bytes: ProgressFn | None) -> str:
        """Write bytes *start*.. of the object from *read_into* into its temp file on
        *disk* (the partial file when *xxh3* is given), verify and rename it into place;
        return the digest. The partial is kept on a read failure, removed otherwise."""
        resumable = xxh3 is not None
        tmp = (layout.partial_path(disk.path, object_id, xxh3) if resumable
               else layout.tmp_path(disk.path, object_id))
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (0 if resumable else os.O_EXCL)
        try:
            fd = os.open(tmp, flags, 0o644)
        except OSError as e:
            raise _WriteError(e) from None
        keep = False
        try:
            try:
                # Two fills of one object at once: the second must not write the same file.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                keep = True  # it is the other process's
                raise StoreError(f"object {object_id!r} is being ingested by another process "
                                 f"({tmp}); nothing changed") from None
            try:
                h = new_hasher()
                try:
                    os.ftruncate(fd, start)
                    done = 0
                    while done < start:  # the kept prefix, so that the digest covers it all
                        chunk = os.pread(fd, min(COPY_CHUNK, start - done), done)
                        if not chunk:
                            break
                        h.update(chunk)
                        done += len(chunk)
                    os.lseek(fd, start, os.SEEK_SET)
                except OSError as e:
                    raise _WriteError(e) from None
                try:
                    digest, n = _copy(read_into, fd, "stream.write", on_bytes,
                                      limit=size - start, hasher=h, done=start)
                    failure = None
                except _ReadError as r:
                    n, failure = os.lseek(fd, 0, os.SEEK_END) - start, r.exc
                got = start + n
                if got < size:
                    keep = resumable
                    with contextlib.suppress(OSError):
                        os.fsync(fd)  # what is kept must be there after a power cut
                    why = f"the source failed ({failure})" if failure else "the source ended"
                    raise PartialIngestError(
                        f"object {object_id!r}: {why} after {got} of {size} bytes; "
                        + (f"{got} bytes kept in {tmp}: resume with start={got}" if resumable
                           else "nothing kept (no expected digest to resume against)"),
                        object_id, got, size, resumable)
                try:
                    os.fsync(fd)
                except OSError as e:
                    raise _WriteError(e) from None
            finally:
                os.close(fd)
            self._install(tmp, disk, object_id, digest, xxh3, "stream", f"stream of {object_id}")
        except BaseException:
            if not keep:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        faults.point("stream.after_rename")
        return digest

    def _commit(self, rec: ObjectRecord, token: str, expect_old: ObjectRecord | None) -> None:
        """Index *rec*, unless another process changed the id since we looked."""
        with self.index.write():
            self.index.release(token)
            cur = self.index.get(rec.id)
            if _identity(cur) != _identity(expect_old):
                conflict = True
            else:
                conflict = False
                self.index.put(rec)
                self.index.drop_tombstone(rec.id, rec.disk, rec.xxh3)
        if conflict:
            if _identity(cur) != (rec.disk, rec.xxh3):
                self._unlink_quietly(rec)
            raise StoreError(f"object {rec.id!r} was changed by another process meanwhile; "
                             "nothing was changed, try again")

    def _unlink_quietly(self, rec: ObjectRecord) -> bool:
        """Remove the file of a record no longer indexed; False when it could not be removed
        (recovery removes it later: it is a stray once the index names another file)."""
        path = self.path_of(rec)
        disk = self.disks.get(rec.disk)
        if disk is None or self.probe(disk).state != OK:
            return False
        try:
            os.unlink(path)
            layout.fsync_dir(os.path.dirname(path))
        except FileNotFoundError:
            return True
        except OSError as e:
            self._on_disk_error(disk, e, f"removing {path}")
            return False
        return True

    def _reserve(self, object_id: str, tier: str, size: int,
                 skip: dict[str, str], fault: str, only: str | None = None) -> tuple[Disk, str]:
        """Choose a disk of *tier* (*only* that one, when given) with room for *size*
        bytes and reserve the room."""
        token = uuid.uuid4().hex
        probed = self._probe_facts(d for d in self.disks.values() if d.tier == tier)
        with self.index.write():
            self.index.release_dead(_pid_alive)
            usage = self.index.usage_by_disk()
            reserved = self.index.reserved_by_disk()
            reasons = dict(skip)
            candidates = []
            for disk in self.disks.values():
                if disk.tier != tier or disk.path in skip or only not in (None, disk.path):
                    continue
                h = self.health(disk, usage, reserved, probed[disk.path])
                if h.state not in (OK, FULL):
                    reasons[disk.path] = f"{h.state} ({h.reason})"
                    continue
                cap = disk.capacity(probed[disk.path].fs_size)
                used = usage.get(disk.path, (0, 0))[1] + reserved.get(disk.path, 0)
                room = min(cap - used, probed[disk.path].fs_free - MIN_FREE)
                candidates.append(placement.Candidate(disk.path, cap, used, room))
                if room < size:
                    reasons[disk.path] = f"{format_size(max(room, 0))} free"
            ordered = placement.order(candidates, size)
            if not ordered:
                if not any(d.tier == tier for d in self.disks.values()):
                    raise TierFullError(f"tier {tier} has no disks configured")
                detail = "; ".join(f"{p}: {r}" for p, r in sorted(reasons.items()))
                raise TierFullError(
                    f"tier {tier} is full: no disk has room for {object_id!r} "
                    f"({format_size(size)}): {detail}")
            choice = ordered[0]
            self.index.reserve(token, choice.path, size)
        faults.point(f"{fault}.after_reserve")
        return self.disks[choice.path], token

    def _write_to_tier(self, object_id: str, src_fd: int, size: int, tier: str,
                       expect: str | None, fault: str, on_bytes: ProgressFn | None,
                       source_name: str) -> tuple[Disk, str, str]:
        """Write the object to some disk of *tier*; on a disk error try the next disk.

        Returns (disk, digest, reservation token); the file is committed on disk
        but not yet indexed.
        """
        skip: dict[str, str] = {}
        while True:
            disk, token = self._reserve(object_id, tier, size, skip, fault)
            try:
                digest = self._write_object(disk, object_id, src_fd, size, expect, fault,
                                            on_bytes, source_name)
                return disk, digest, token
            except _WriteError as w:
                self._release(token)
                state = self._on_disk_error(disk, w.exc, f"writing {object_id}")
                if state == OK:
                    raise StoreError(
                        f"cannot write {object_id!r} to {disk.path}: {w.exc.strerror}") from None
                skip[disk.path] = f"{state} ({w.exc.strerror})"
                os.lseek(src_fd, 0, os.SEEK_SET)
            except BaseException:
                self._release(token)
                raise

    def _release(self, token: str) -> None:
        with self.index.write():
            self.index.release(token)

    def _write_object(self, disk: Disk, object_id: str, src_fd: int, size: int,
                      expect: str | None, fault: str, on_bytes: ProgressFn | None,
                      source_name: str) -> str:
        tmp = layout.tmp_path(disk.path, object_id)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _WriteError(e) from None
        try:
            try:
                try:
                    if size:
                        # Claim the blocks first: ENOSPC now, not after writing gigabytes.
                        os.posix_fallocate(fd, 0, size)
                except OSError as e:
                    if error_state(e) != OK:
                        raise _WriteError(e) from None
                digest, n = _copy(_fd_reader(src_fd), fd, f"{fault}.write", on_bytes)
                if n != size:
                    raise StoreError(
                        f"{source_name} changed size while being read ({size} -> {n} bytes)")
                try:
                    os.fsync(fd)
                except OSError as e:
                    raise _WriteError(e) from None
            finally:
                os.close(fd)
            self._install(tmp, disk, object_id, digest, expect, fault, source_name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        faults.point(f"{fault}.after_rename")
        return digest

    @staticmethod
    def _install(tmp: str, disk: Disk, object_id: str, digest: str, expect: str | None,
                 fault: str, source_name: str) -> None:
        """The written, fsynced temp file *tmp*: check its digest, rename it into
        ``objects/``, fsync the directory. The caller unlinks *tmp* on an exception."""
        faults.point(f"{fault}.after_fsync")
        if expect is not None and digest != expect:
            raise DigestMismatchError(
                f"{source_name} does not match the expected digest: "
                f"got {digest}, expected {expect}")
        final = layout.object_path(disk.path, object_id, digest)
        try:
            layout.ensure_dir(os.path.dirname(final))
            os.rename(tmp, final)
            layout.fsync_dir(os.path.dirname(final))
        except OSError as e:
            raise _WriteError(e) from None

    # -- move ---------------------------------------------------------------

    def move(self, object_id: str, tier: str, on_bytes: ProgressFn | None = None) -> ObjectRecord:
        """Move *object_id* to a disk of *tier* (promote or demote), atomically."""
        check_id(object_id)
        check_tier(tier)
        with self.shared():
            rec = self.get(object_id)
            if rec.tier == tier:
                raise StoreError(f"object {object_id!r} is already on tier {tier}")
            src_disk = self.disks.get(rec.disk)
            h = self.probe(src_disk) if src_disk else DiskHealth(FAILED, "not in the config")
            if not h.servable:
                raise StoreError(f"cannot move {object_id!r}: its disk {rec.disk} is {h.state} "
                                 f"({h.reason})")
            src = self.path_of(rec)
            try:
                src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                self._on_disk_error(src_disk, e, f"opening {src}")
                raise StoreError(f"cannot read {src}: {e.strerror}") from None
            try:
                disk, digest, token = self._write_to_tier(
                    object_id, src_fd, rec.size, tier, rec.xxh3, "move", on_bytes, src)
            except DigestMismatchError:
                raise StoreError(f"object {object_id!r} on {rec.disk} does not match its digest "
                                 "(corrupt): nothing moved; run `oca verify`") from None
            except _ReadError as r:
                self._on_disk_error(src_disk, r.exc, f"reading {src}")
                raise StoreError(f"cannot read {src}: {r.exc.strerror}") from None
            finally:
                os.close(src_fd)
            new = ObjectRecord(rec.id, rec.size, digest, disk.path, tier, rec.content_type,
                               rec.mtime, rec.hits, rec.bytes_served, rec.last_hit)
            self._commit(new, token, expect_old=rec)
            faults.point("move.after_index")
            self._unlink_quietly(rec)
            faults.point("move.after_unlink")
            return self.index.get(object_id) or new

    # -- delete -------------------------------------------------------------

    def delete(self, object_id: str) -> ObjectRecord:
        """Remove *object_id*: its file, then its index entry."""
        with self.shared():
            rec = self.get(object_id)
            removed = self._unlink_quietly(rec)
            faults.point("delete.after_unlink")
            with self.index.write():
                cur = self.index.get(object_id)
                if _identity(cur) == _identity(rec):
                    self.index.delete(object_id)
                    if not removed:
                        # The file could not be unlinked (disk failed or read-only):
                        # recovery must not adopt it back when the disk returns.
                        self.index.add_tombstone(rec.id, rec.disk, rec.xxh3)
                    return rec
            raise StoreError(f"object {object_id!r} was changed by another process meanwhile; "
                             "try again")

    # -- status -------------------------------------------------------------

    def status(self, io: bool = True) -> dict:
        """Per tier and per disk: capacity, used, objects, health, I/O counters. The disks
        are probed in parallel within ``probe_timeout`` (a hung disk is ``failed`` with
        ``hung`` in its reason), so this returns in about that time at worst."""
        self.reload_disks()
        usage = self.index.usage_by_disk()
        reserved = self.index.reserved_by_disk()
        disks = []
        tiers = {t: {"capacity": 0, "used": 0, "objects": 0, "disks": 0, "healthy": 0}
                 for t in TIERS}
        probed = self._probe_facts(self.disks.values(), with_io=io)
        for disk in self.disks.values():
            facts = probed[disk.path]
            h = self.health(disk, usage, reserved, facts)
            n, used = usage.get(disk.path, (0, 0))
            fs_size, fs_free = (facts.fs_size, facts.fs_free) if h.state != FAILED else (0, 0)
            cap = (disk.capacity(facts.fs_size) if h.state != FAILED or disk.configured_capacity
                   else 0)
            disks.append({
                "path": disk.path, "tier": disk.tier, "state": h.state, "reason": h.reason,
                "capacity": cap, "used": used, "reserved": reserved.get(disk.path, 0),
                "objects": n, "fs_size": fs_size, "fs_free": fs_free,
                "io": facts.io if h.state != FAILED else None,
            })
            t = tiers[disk.tier]
            t["capacity"] += cap
            t["used"] += used
            t["objects"] += n
            t["disks"] += 1
            t["healthy"] += h.servable
        unconfigured = {p: {"objects": n, "used": b} for p, (n, b) in usage.items()
                        if p not in self.disks}
        return {
            "index": self.index.path,
            "objects": sum(n for n, _ in usage.values()),
            "tiers": tiers,
            "disks": disks,
            "unconfigured_disks": unconfigured,
            "quarantined": len(self.index.quarantined()),
        }


def _identity(rec: ObjectRecord | None) -> tuple[str, str] | None:
    return None if rec is None else (rec.disk, rec.xxh3)


def quarantine(store: Store, disk: Disk, object_id: str, digest: str, actual: str | None,
               path: str, reason: str) -> str | None:
    """Set a bad file aside and stop indexing it. Caller holds ``store.exclusive()``.

    The file moves to ``<disk>/quarantine/`` (kept for an operator to inspect,
    never served); when the disk cannot take the rename (read-only) the file
    stays, the index entry goes all the same, and the next recovery quarantines
    it. Returns the quarantined path, or None when the file stayed in place.
    """
    dest: str | None = layout.quarantine_path(disk.path, object_id, digest, time.time())
    try:
        layout.ensure_dir(os.path.dirname(dest))
        os.rename(path, dest)
        layout.fsync_dir(os.path.dirname(path))
        layout.fsync_dir(os.path.dirname(dest))
    except FileNotFoundError:
        dest = None
    except OSError as e:
        store._on_disk_error(disk, e, f"quarantining {path}")
        dest = None
    with store.index.write():
        cur = store.index.get(object_id)
        if cur is not None and (cur.disk, cur.xxh3) == (disk.path, digest):
            store.index.delete(object_id)
        store.index.add_quarantine(object_id, disk.path, digest, actual, dest or path, reason)
    return dest
