"""The object index: SQLite in WAL mode, shared by every process of the appliance.

The index is the truth about which objects exist; files on disk are reconciled
to it at start-up (recovery.py). ``synchronous=NORMAL`` is enough: under WAL a
crash of the process loses nothing committed, and a power loss can lose only the
last transactions, which recovery repairs from the self-describing files
(an object renamed into place is adopted again, a delete or move already done on
disk is seen as a missing or stray file).

Every change to what an object *is* appends its id to the change feed (the
``changes`` table, by trigger, in the same transaction), whichever process makes
it; the store watcher follows the feed and publishes deltas to the serving
workers. All of the store's SQL is in this module: the rest of ``oca/storage``
calls these methods, and everything outside it calls ``Store``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import StoreError

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    id           TEXT PRIMARY KEY,
    size         INTEGER NOT NULL,
    xxh3         TEXT NOT NULL,
    disk         TEXT NOT NULL,
    tier         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    mtime        REAL NOT NULL,
    hits         INTEGER NOT NULL DEFAULT 0,
    bytes_served INTEGER NOT NULL DEFAULT 0,
    last_hit     REAL
);
CREATE INDEX IF NOT EXISTS objects_disk ON objects(disk);
CREATE TABLE IF NOT EXISTS disks (
    path    TEXT PRIMARY KEY,
    disk_id TEXT NOT NULL,
    tier    TEXT NOT NULL,
    failed  INTEGER NOT NULL DEFAULT 0,
    reason  TEXT,
    since   REAL
);
CREATE TABLE IF NOT EXISTS reservations (
    token   TEXT PRIMARY KEY,
    disk    TEXT NOT NULL,
    bytes   INTEGER NOT NULL,
    pid     INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    id    TEXT NOT NULL,
    disk  TEXT NOT NULL,
    xxh3  TEXT NOT NULL,
    ts    REAL NOT NULL,
    PRIMARY KEY (id, disk, xxh3)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id       TEXT NOT NULL,
    disk     TEXT NOT NULL,
    expected TEXT,
    actual   TEXT,
    path     TEXT,
    reason   TEXT NOT NULL,
    ts       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL);
"""

# The change feed: every change to what an object *is* (not its hit counters)
# appends its id to `changes`, in the same transaction, whichever process makes
# it. A server polls `changes` once a second and updates only those entries of
# its in-memory map, instead of rebuilding a million entries.
_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS objects_changes_insert AFTER INSERT ON objects "
    "BEGIN INSERT INTO changes (id) VALUES (NEW.id); END",
    "CREATE TRIGGER IF NOT EXISTS objects_changes_update "
    "AFTER UPDATE OF size, xxh3, disk, tier, content_type, mtime ON objects "
    "BEGIN INSERT INTO changes (id) VALUES (NEW.id); END",
    "CREATE TRIGGER IF NOT EXISTS objects_changes_delete AFTER DELETE ON objects "
    "BEGIN INSERT INTO changes (id) VALUES (OLD.id); END",
)

_LOCATION_COLS = "id, size, xxh3, disk, tier, content_type, mtime"

_IN_CHUNK = 500
"""Ids per ``IN (...)`` query: under SQLite's 999-variable limit of older builds."""

_OBJECT_COLS = "id, size, xxh3, disk, tier, content_type, mtime, hits, bytes_served, last_hit"


@dataclass(frozen=True)
class ObjectRecord:
    """One indexed object."""

    id: str
    size: int
    xxh3: str
    disk: str
    tier: str
    content_type: str
    mtime: float
    hits: int = 0
    bytes_served: int = 0
    last_hit: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DiskRecord:
    """A disk as the index knows it: identity and the sticky failure flag."""

    path: str
    disk_id: str
    tier: str
    failed: bool
    reason: str | None
    since: float | None


class Index:
    """SQLite-backed object index. One instance per process; not shared across threads."""

    def __init__(self, path: Path | str, readonly: bool = False):
        self.path = str(path)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self.db = self._connect(uri, uri=True)
        else:
            parent = os.path.dirname(self.path) or "."
            if not os.path.isdir(parent):
                raise StoreError(f"index directory {parent} does not exist")
            self.db = self._connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            with self.write():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                for stmt in _TRIGGERS:
                    self.db.execute(stmt)
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema' AND value < ?",
                                (SCHEMA_VERSION, SCHEMA_VERSION))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                                (SCHEMA_VERSION,))
        self.db.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open index {target}: {e}") from None
        return db

    def close(self) -> None:
        self.db.close()

    # -- transactions -------------------------------------------------------

    def write(self) -> _Txn:
        """``with index.write():`` one IMMEDIATE transaction (takes the write lock at once)."""
        return _Txn(self.db, "BEGIN IMMEDIATE")

    def read(self) -> _Txn:
        """``with index.read():`` one consistent snapshot for several queries."""
        return _Txn(self.db, "BEGIN")

    # -- objects ------------------------------------------------------------

    def get(self, object_id: str) -> ObjectRecord | None:
        row = self.db.execute(
            f"SELECT {_OBJECT_COLS} FROM objects WHERE id = ?", (object_id,)
        ).fetchone()
        return ObjectRecord(*row) if row else None

    def put(self, rec: ObjectRecord) -> None:
        """Insert or replace *rec*, keeping hit counters of a replaced object. In a write txn."""
        self.db.execute(
            f"INSERT INTO objects ({_OBJECT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET size=excluded.size, xxh3=excluded.xxh3, "
            "disk=excluded.disk, tier=excluded.tier, content_type=excluded.content_type, "
            "mtime=excluded.mtime",
            (rec.id, rec.size, rec.xxh3, rec.disk, rec.tier, rec.content_type, rec.mtime,
             rec.hits, rec.bytes_served, rec.last_hit),
        )

    def delete(self, object_id: str) -> None:
        """Drop *object_id*. In a write txn."""
        self.db.execute("DELETE FROM objects WHERE id=?", (object_id,))

    def objects(self, tier: str | None = None, disk: str | None = None) -> Iterator[ObjectRecord]:
        """All objects, optionally of one tier or disk, ordered by id."""
        sql = f"SELECT {_OBJECT_COLS} FROM objects"
        where, args = [], []
        if tier:
            where.append("tier = ?")
            args.append(tier)
        if disk:
            where.append("disk = ?")
            args.append(disk)
        if where:
            sql += " WHERE " + " AND ".join(where)
        for row in self.db.execute(sql + " ORDER BY id", args):
            yield ObjectRecord(*row)

    def location_rows(self) -> Iterator[tuple[str, int, str, str, str, str, float]]:
        """(id, size, xxh3, disk, tier, content_type, mtime) of every object, streamed
        from the cursor (not fetched whole). Hold ``read()`` for a consistent snapshot."""
        return self.db.execute(f"SELECT {_LOCATION_COLS} FROM objects")

    def location_rows_of(self, ids: Iterable[str]
                         ) -> Iterator[tuple[str, int, str, str, str, str, float]]:
        """The rows of ``location_rows`` for those of *ids* that are indexed, in chunks
        of ``_IN_CHUNK`` ids per ``IN (...)`` query. Hold ``read()`` for one snapshot."""
        batch: list[str] = []
        for object_id in ids:
            batch.append(object_id)
            if len(batch) == _IN_CHUNK:
                yield from self._location_rows_in(batch)
                batch = []
        if batch:
            yield from self._location_rows_in(batch)

    def _location_rows_in(self, batch: list[str]):
        marks = ",".join("?" * len(batch))
        return self.db.execute(
            f"SELECT {_LOCATION_COLS} FROM objects WHERE id IN ({marks})", batch).fetchall()

    def drop_disk(self, path: str, disk_id: str) -> int:
        """A disk was replaced by a new, empty filesystem with marker *disk_id*: forget its
        objects, tombstones, reservations and failure. Returns the objects dropped."""
        with self.write() as db:
            dropped = db.execute("DELETE FROM objects WHERE disk=?", (path,)).rowcount
            db.execute("DELETE FROM tombstones WHERE disk=?", (path,))
            db.execute("DELETE FROM reservations WHERE disk=?", (path,))
            db.execute("UPDATE disks SET disk_id=?, failed=0, reason=NULL, since=NULL "
                       "WHERE path=?", (disk_id, path))
        return dropped

    def change_seq(self) -> int:
        """The newest change-feed position (0 when there has been none)."""
        return self.db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]

    def changes_since(self, seq: int, limit: int) -> tuple[list[str], int, bool]:
        """(ids changed after *seq*, newest seq, complete). *complete* is False when
        the feed was pruned past *seq* or holds more than *limit* changes: the
        caller must then reload everything."""
        first = self.db.execute("SELECT min(seq) FROM changes").fetchone()[0]
        rows = self.db.execute(
            "SELECT seq, id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit + 1)
        ).fetchall()
        if not rows:
            return [], seq, True
        complete = len(rows) <= limit and (first is None or first <= seq + 1)
        return [i for _, i in rows[:limit]], rows[min(len(rows), limit) - 1][0], complete

    def prune_changes(self, keep: int = 100_000) -> int:
        """Drop all but the newest *keep* changes (a reader that falls behind reloads)."""
        with self.write():
            return self.db.execute(
                "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (keep,)
            ).rowcount

    def usage_by_disk(self) -> dict[str, tuple[int, int]]:
        """disk -> (objects, bytes) as indexed."""
        return {
            d: (n, b or 0)
            for d, n, b in self.db.execute(
                "SELECT disk, COUNT(*), SUM(size) FROM objects GROUP BY disk"
            )
        }

    def add_hits(self, counts: Iterable[tuple[str, int, int, float]]) -> None:
        """Add (id, hits, bytes, last_hit) rows to the counters, in one transaction.

        Counters are not content: they add nothing to the change feed. Ids that are
        not indexed (deleted since they were served) are ignored.
        """
        with self.write():
            self.db.executemany(
                "UPDATE objects SET hits = hits + ?, bytes_served = bytes_served + ?, "
                "last_hit = max(coalesce(last_hit, 0), ?) WHERE id = ?",
                [(h, b, ts, i) for i, h, b, ts in counts],
            )

    # -- disks --------------------------------------------------------------

    def disks(self) -> dict[str, DiskRecord]:
        return {
            r[0]: DiskRecord(r[0], r[1], r[2], bool(r[3]), r[4], r[5])
            for r in self.db.execute("SELECT path, disk_id, tier, failed, reason, since FROM disks")
        }

    def add_disk(self, path: str, disk_id: str, tier: str) -> None:
        with self.write():
            self.db.execute(
                "INSERT INTO disks (path, disk_id, tier) VALUES (?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET disk_id=excluded.disk_id, tier=excluded.tier",
                (path, disk_id, tier),
            )

    def set_disk_failed(self, path: str, reason: str | None) -> None:
        """Set (reason given) or clear (None) the sticky failure of a disk."""
        with self.write():
            self.db.execute(
                "UPDATE disks SET failed=?, reason=?, since=? WHERE path=?",
                (1 if reason else 0, reason, time.time() if reason else None, path),
            )

    # -- reservations -------------------------------------------------------

    def reserved_by_disk(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT disk, SUM(bytes) FROM reservations GROUP BY disk"))

    def reserve(self, token: str, disk: str, nbytes: int) -> None:
        """Hold *nbytes* on *disk* for an ingest in flight. In a write txn."""
        self.db.execute(
            "INSERT INTO reservations VALUES (?,?,?,?,?)",
            (token, disk, nbytes, os.getpid(), time.time()),
        )

    def release_dead(self, alive: Callable[[int], bool]) -> int:
        """Drop the reservations of processes that are gone (killed mid-ingest). In a
        write txn. Returns the reservations dropped."""
        dead = [pid for (pid,) in self.db.execute("SELECT DISTINCT pid FROM reservations")
                if not alive(pid)]
        n = 0
        for pid in dead:
            n += self.db.execute("DELETE FROM reservations WHERE pid=?", (pid,)).rowcount
        return n

    def release(self, token: str) -> None:
        self.db.execute("DELETE FROM reservations WHERE token=?", (token,))

    def clear_reservations(self) -> int:
        """Drop every reservation (recovery, holding the store's exclusive lock)."""
        with self.write():
            return self.db.execute("DELETE FROM reservations").rowcount

    # -- tombstones and quarantine ------------------------------------------

    def add_tombstone(self, object_id: str, disk: str, digest: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO tombstones VALUES (?,?,?,?)",
            (object_id, disk, digest, time.time()),
        )

    def has_tombstone(self, object_id: str, disk: str, digest: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM tombstones WHERE id=? AND disk=? AND xxh3=?", (object_id, disk, digest)
        ).fetchone() is not None

    def drop_tombstone(self, object_id: str, disk: str, digest: str) -> None:
        self.db.execute(
            "DELETE FROM tombstones WHERE id=? AND disk=? AND xxh3=?", (object_id, disk, digest)
        )

    def add_quarantine(self, object_id: str, disk: str, expected: str | None,
                       actual: str | None, path: str | None, reason: str) -> None:
        self.db.execute(
            "INSERT INTO quarantine VALUES (?,?,?,?,?,?,?)",
            (object_id, disk, expected, actual, path, reason, time.time()),
        )

    def quarantined(self) -> list[dict]:
        cols = ("id", "disk", "expected", "actual", "path", "reason", "ts")
        return [dict(zip(cols, r, strict=True)) for r in self.db.execute(
            f"SELECT {', '.join(cols)} FROM quarantine ORDER BY ts, id")]


class _Txn:
    def __init__(self, db: sqlite3.Connection, begin: str):
        self.db = db
        self.begin = begin

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
