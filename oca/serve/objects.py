"""A worker's view of the store: id -> open file, with no SQLite and no disk probe.

The worker gets the whole serving map from the store watcher when it starts (before it
accepts a connection), then the watcher's deltas on the same socket (feed.py), applied as
they arrive: a burst of 100,000 index changes is 100,000 small dict updates spread over
the reads of the socket (at most READ_SIZE bytes, about 2,000 lines, per readability
event), never a rebuild on the event loop. Disk states come on the same feed; the
worker's own finding that a disk failed (EIO while serving) goes back to the watcher,
which makes it sticky in the index and tells every worker.

Files are opened on first use and kept open in an LRU of ``[server] open_file_cache``
entries (nginx's open_file_cache idea): a hit costs a dict lookup, not an open(2). The
open itself, the one call left that can block on a disk, runs on a thread of the disk's
own (one per disk, so a hung disk holds up only its own opens) and the loop waits for it
at most ``[store] disk_probe_timeout``: an open that does not return in that time marks
the disk hung in this worker, its objects answer as on a failed disk, and the loop goes
on. A normal open costs the thread hand-off on top of open(2) (~90 us; docs/daemon.md);
a hung disk costs each worker one wait of the timeout, once.

Per-object counters: every open entry counts its responses and body bytes (``hits``,
``body_bytes``, added to by the connection loop); the table sends them to the watcher
every HITS_INTERVAL and when an entry leaves the cache, and the watcher folds them into
the index (``oca stat``, ``oca ls``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import socket
import time

from _fastpath import EntryTable

from ..http.objects import DiskFailed, OpenObject
from ..storage import layout
from ..storage.disk import FAILED, error_state
from ..storage.lookup import ObjectLocation
from . import feed

log = logging.getLogger("oca.serve")

READ_SIZE = 256 << 10
"""Bytes of the feed read (and applied) per readability event."""
HITS_INTERVAL = 5.0
"""Seconds between two reports of the per-object counters to the watcher."""
HUNG_OPEN = "hung: an open(2) did not return in {timeout:g} s"


class FeedLost(Exception):
    """The connection to the store watcher closed."""


class ObjectTable:
    """id -> OpenObject for one worker, kept up to date by the store watcher's feed."""

    def __init__(self, cache_size: int, open_timeout: float, feed_path: str, slot: int):
        self.cache_size = cache_size
        self.open_timeout = open_timeout
        self.feed_path = feed_path
        self.slot = slot
        # The open objects, LRU, by id and by target: read by the connection loop.
        self.entries = EntryTable(cache_size)
        self.map: dict[str, ObjectLocation] = {}
        self.seq = -1  # the change-feed position the map is at; -1: no map yet
        self.disk_states: dict[str, str] = {}
        self.servable: set[str] = set()
        self.hung: dict[str, concurrent.futures.Future] = {}  # disk -> the open stuck on it
        self._openers: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._closers: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._next: dict[str, ObjectLocation] | None = None  # a whole map arriving
        self._shared: dict[str, str] = {}  # one str per distinct tier, type and disk
        self._lines = feed.Lines()
        self._sock: socket.socket | None = None
        self._loop = None
        self._outbox = bytearray()  # lines for the watcher while it is away
        self._counts: dict[str, list[int]] = {}  # counters of entries that left the cache
        self._hits_at = time.monotonic() + HITS_INTERVAL

    # -- the feed --------------------------------------------------------------

    def load(self, wait: float = 600.0) -> None:
        """Connect to the store watcher and read the whole map (blocking: at start-up,
        before the worker accepts anything). Raises FeedLost after *wait* seconds."""
        deadline = time.monotonic() + wait
        said = time.monotonic()
        while True:
            try:
                sock = self._connect()
                sock.settimeout(1.0)
                while self._next is not None or self.seq < 0:
                    try:
                        data = sock.recv(READ_SIZE)
                    except TimeoutError:
                        if time.monotonic() > deadline:
                            raise FeedLost("no map from the store watcher") from None
                        if time.monotonic() - said > 10:
                            log.info("worker %d: waiting for the store watcher", self.slot)
                            said = time.monotonic()
                        continue
                    if not data:
                        raise FeedLost("the store watcher closed the feed")
                    self._apply_lines(self._lines.feed(data))
                self._sock = sock
                return
            except (OSError, FeedLost) as e:
                self._disconnect()
                if time.monotonic() > deadline:
                    raise FeedLost(f"store watcher at {self.feed_path}: {e}") from None
                time.sleep(0.1)

    def attach(self, loop) -> None:
        """Follow the feed on *loop* from now on (after load)."""
        self._loop = loop
        if self._sock is not None:
            self._sock.setblocking(False)
            loop.add_reader(self._sock.fileno(), self.on_feed)

    def _connect(self) -> socket.socket:
        self._lines = feed.Lines()
        self._next = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.feed_path)
            sock.sendall(f"hello\t{self.slot}\t{self.seq}\n".encode() + self._outbox)
        except BaseException:
            sock.close()
            raise
        self._outbox.clear()
        return sock

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._next = None

    def on_feed(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            log.warning("worker %d: store watcher gone; serving map at change %d, "
                        "reconnecting", self.slot, self.seq)
            self._disconnect()
            return
        self._apply_lines(self._lines.feed(data))

    def reconnect(self) -> None:
        """Once a tick while the watcher is away: connect again, from our position."""
        if self._sock is not None or self._loop is None:
            return
        try:
            sock = self._connect()
        except OSError:
            return
        self._sock = sock
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self.on_feed)
        log.info("worker %d: store watcher back; following from change %d", self.slot,
                 self.seq)

    def _apply_lines(self, lines: list[str]) -> None:
        shared = self._shared.setdefault
        for line in lines:
            f = line.split("\t")
            tag = f[0]
            if tag == "+":
                oid, disk = f[1], shared(f[6], f[6])
                loc = ObjectLocation(layout.object_path(disk, oid, f[3]), int(f[2]), f[3],
                                     shared(f[4], f[4]), shared(f[5], f[5]), disk, int(f[7]))
                if self._next is not None:
                    self._next[oid] = loc
                else:
                    self.map[oid] = loc
                    self._forget(oid)
            elif tag == "-":
                if self._next is None:
                    self.map.pop(f[1], None)
                    self._forget(f[1])
            elif tag == "S":
                self.seq = int(f[1])
            elif tag == "D":
                self._disk_state(f[1], f[2], f[3])
            elif tag == "B":
                self._next = {}
            elif tag == "E":
                self.map, self._next = self._next or {}, None
                self.seq = int(f[1])
                for obj in self.entries.clear():
                    self._keep_counts(obj)
                log.info("worker %d: serving map of %d objects at change %d", self.slot,
                         len(self.map), self.seq)
            else:
                log.error("worker %d: bad feed line %r", self.slot, line[:200])

    def _disk_state(self, disk: str, state: str, reason: str) -> None:
        self.disk_states[disk] = state
        stuck = self.hung.get(disk)
        if stuck is not None and stuck.done():
            del self.hung[disk]
            stuck = None
        if state == FAILED or stuck is not None:
            if disk in self.servable:
                self.servable.discard(disk)
                self._drop_disk(disk)
        else:
            self.servable.add(disk)

    def _tell(self, line: str) -> None:
        """Send *line* to the watcher; kept while it is away or not reading."""
        self._outbox += line.encode()
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        if self._sock is None or not self._outbox:
            return
        try:
            n = self._sock.send(self._outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._disconnect()
            return
        del self._outbox[:n]

    # -- serving -----------------------------------------------------------------

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
        fd = self._open(loc)
        if fd is None:
            return None
        obj = OpenObject(object_id, fd, loc)
        out = self.entries.add(obj)
        if out is not None:
            self._keep_counts(out)
        return obj

    def _open(self, loc: ObjectLocation) -> int | None:
        opener = self._openers.get(loc.disk)
        if opener is None:
            opener = self._openers[loc.disk] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="open")
        future = opener.submit(os.open, loc.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return future.result(self.open_timeout)
        except concurrent.futures.TimeoutError:
            reason = HUNG_OPEN.format(timeout=self.open_timeout)
            log.error("worker %d: disk %s %s (opening %s)", self.slot, loc.disk, reason,
                      loc.path)
            # The thread stays blocked until the disk answers; its fd is closed then.
            future.add_done_callback(_close_result)
            self.hung[loc.disk] = future
            del self._openers[loc.disk]
            self.servable.discard(loc.disk)
            self._drop_disk(loc.disk)
            raise DiskFailed(loc.disk) from None
        except FileNotFoundError:
            return None  # removed a moment ago; the feed will say so
        except OSError as e:
            if error_state(e) == FAILED:
                self.fail_disk(loc.disk, f"{e.strerror} opening {loc.path}")
                raise DiskFailed(loc.disk) from None
            return None

    def _forget(self, object_id: str) -> None:
        """Drop *object_id* from the open cache, keeping its counters for the report."""
        obj = self.entries.remove(object_id)
        if obj is not None:
            self._keep_counts(obj)

    def _keep_counts(self, obj: OpenObject) -> None:
        hits = obj.hits
        if hits:
            acc = self._counts.get(obj.id)
            if acc is None:
                self._counts[obj.id] = [hits, obj.body_bytes]
            else:
                acc[0] += hits
                acc[1] += obj.body_bytes
            obj.hits = obj.body_bytes = 0

    def fail_disk(self, disk: str, reason: str) -> None:
        """An I/O error while serving: stop serving the disk here and tell the watcher,
        which records the failure (sticky, in the index) and tells every worker."""
        if disk not in self.servable:
            return
        log.error("worker %d: disk %s failed: %s", self.slot, disk, reason)
        self.servable.discard(disk)
        self.disk_states[disk] = FAILED
        self._drop_disk(disk)
        self._tell(f"failed\t{disk}\t{feed.clean(reason)}\n")

    def _drop_disk(self, disk: str) -> None:
        """Forget the open objects of a failed or hung disk. Their fds are closed on a
        thread of the disk's own: close(2) of a file on a hung mount blocks too (FUSE
        sends a flush), and must not block the loop."""
        dropped = []
        for obj in [obj for obj in self.entries if obj.disk == disk]:
            dropped.append(obj)
            self._forget(obj.id)
        obj = None
        if dropped:
            closer = self._closers.get(disk)
            if closer is None:
                closer = self._closers[disk] = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="close")
            closer.submit(dropped.clear)  # the last references go on that thread
            del dropped

    # -- counters ------------------------------------------------------------------

    def report_hits(self, now: float | None = None) -> None:
        """Send the counters gathered since the last report to the watcher."""
        for obj in self.entries:
            if obj.hits:
                self._keep_counts(obj)
        if not self._counts:
            return
        ts = time.time() if now is None else now
        lines = "".join(f"hits\t{oid}\t{h}\t{b}\t{ts:.3f}\n"
                        for oid, (h, b) in self._counts.items())
        self._counts = {}
        self._tell(lines)

    def tick(self) -> None:
        """Once a second: reconnect to a restarted watcher, report counters."""
        self.reconnect()
        self._flush_outbox()
        now = time.monotonic()
        if now >= self._hits_at:
            self._hits_at = now + HITS_INTERVAL
            self.report_hits()

    def close(self, wait: float = 2.0) -> None:
        """At exit: the last counters to the watcher (waiting up to *wait* s), then close."""
        self.report_hits()
        sock = self._sock
        if sock is not None and self._outbox:
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.settimeout(wait)
                sock.sendall(self._outbox)
                self._outbox.clear()
        elif sock is None and self._outbox:
            with contextlib.suppress(OSError):
                sock = self._connect()  # sends the outbox after hello
                sock.close()
        self._disconnect()
        for pool in (*self._openers.values(), *self._closers.values()):
            pool.shutdown(wait=False)

    @property
    def healthy(self) -> bool:
        """At least one disk is servable."""
        return bool(self.servable)


def _close_result(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is None:
        with contextlib.suppress(OSError):
            os.close(future.result())

