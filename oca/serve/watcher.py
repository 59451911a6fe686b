"""The store watcher: the one process of ``oca serve`` that reads the index and probes
the disks, so that the serving workers never do either on their event loop.

It follows the index's change feed (every FEED_INTERVAL), probes every disk (every
PROBE_INTERVAL; a probe that does not answer within ``[store] disk_probe_timeout``
reports the disk failed, ``hung``: storage runs each probe in a child process, so a
hung mount blocks that child, never this process), and sends what changed to each worker
over the feed (feed.py). It folds the workers' per-object hit and byte counters into the
index every HITS_INTERVAL in one transaction, and prunes the change feed every
PRUNE_INTERVAL. One thread, one ``selectors`` loop: SQLite calls are short and made
here only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time

from ..config import Config
from ..errors import OcaError
from ..storage import Store
from . import feed

log = logging.getLogger("oca.serve")

FEED_INTERVAL = 0.2
"""Seconds between two reads of the change feed: how soon a put or rm is served."""
PROBE_INTERVAL = 1.0
"""Seconds between two probes of every disk."""
HITS_INTERVAL = 5.0
"""Seconds between two folds of the workers' hit counters into the index."""
PRUNE_INTERVAL = 60.0
FEED_BATCH = 10_000
"""Changes read and sent per query; a burst of 100,000 goes out in ten batches, the
worker applying each as it arrives."""
BATCHES_PER_ROUND = 4
"""Batches sent to one group of workers before the loop turns to sockets again."""
SEND_SIZE = 1 << 20


class Client:
    """One worker's connection."""

    __slots__ = ("sock", "lines", "out", "seq", "slot", "name")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.lines = feed.Lines()
        self.out = bytearray()
        self.seq: int | None = None  # None until hello; then the change it has
        self.slot = -1
        self.name = "worker ?"


class StoreWatcher:
    """The store watcher role: ``run()`` in the child after the fork."""

    def __init__(self, config: Config, listen_sock: socket.socket):
        self.config = config
        self.listen_sock = listen_sock
        self.clients: dict[int, Client] = {}
        self.disks: dict[str, tuple[str, str | None]] = {}  # path -> (state, reason)
        self.hits: dict[str, list] = {}  # id -> [hits, bytes, last ts]
        self.stopping = False
        self.timeout = config.store.disk_probe_timeout

    # -- main ----------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.store = Store(self.config)
        self.selector = selectors.DefaultSelector()
        self.listen_sock.setblocking(False)
        self.selector.register(self.listen_sock, selectors.EVENT_READ)
        log.info("store watcher (pid %d): feed every %.1f s, disk probes every %.0f s "
                 "(timeout %g s)", os.getpid(), FEED_INTERVAL, PROBE_INTERVAL,
                 self.timeout)
        self.probe()
        now = time.monotonic()
        next_feed, next_probe = now, now + PROBE_INTERVAL
        next_hits, next_prune = now + HITS_INTERVAL, now + PRUNE_INTERVAL
        try:
            while not self.stopping:
                wait = max(0.0, min(next_feed, next_probe) - time.monotonic())
                for key, events in self.selector.select(wait):
                    if key.fileobj is self.listen_sock:
                        self.accept()
                    else:
                        client = key.data
                        if events & selectors.EVENT_READ:
                            self.read(client)
                        if events & selectors.EVENT_WRITE and client.sock.fileno() >= 0:
                            self.write(client)
                now = time.monotonic()
                if now >= next_probe:
                    self.probe()
                    next_probe = time.monotonic() + PROBE_INTERVAL
                if now >= next_feed:
                    self.follow()
                    next_feed = time.monotonic() + FEED_INTERVAL
                if now >= next_hits:
                    self.fold_hits()
                    next_hits = now + HITS_INTERVAL
                if now >= next_prune:
                    self.store.prune_changes()
                    next_prune = now + PRUNE_INTERVAL
        finally:
            self.finish()
        return 0

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def finish(self) -> None:
        """At exit: read what the workers still sent (their last hits), fold it, close."""
        for client in list(self.clients.values()):
            with contextlib.suppress(OSError):
                client.sock.setblocking(False)
                while True:
                    data = client.sock.recv(1 << 16)
                    if not data:
                        break
                    self.received(client, data)
        with contextlib.suppress(OcaError):
            self.fold_hits()
        for client in list(self.clients.values()):
            self.drop(client)
        self.store.close()
        log.info("store watcher stopped")

    # -- sockets -------------------------------------------------------------

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listen_sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            client = Client(sock)
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ, client)

    def read(self, client: Client) -> None:
        try:
            data = client.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if client.seq is not None:
                log.info("store watcher: %s disconnected", client.name)
            self.drop(client)
            return
        self.received(client, data)

    def received(self, client: Client, data: bytes) -> None:
        for line in client.lines.feed(data):
            fields = line.split("\t")
            tag = fields[0]
            try:
                if tag == "hits":
                    oid, hits, nbytes, ts = fields[1], int(fields[2]), int(fields[3]), \
                        float(fields[4])
                    acc = self.hits.get(oid)
                    if acc is None:
                        self.hits[oid] = [hits, nbytes, ts]
                    else:
                        acc[0] += hits
                        acc[1] += nbytes
                        acc[2] = max(acc[2], ts)
                elif tag == "hello":
                    client.slot, seq = int(fields[1]), int(fields[2])
                    client.name = f"worker {client.slot}"
                    self.hello(client, seq)
                elif tag == "failed":
                    self.disk_failed(fields[1], fields[2])
                else:
                    raise ValueError(f"unknown line {tag!r}")
            except (ValueError, IndexError) as e:
                log.error("store watcher: bad line from %s: %r (%s)", client.name, line[:200], e)

    def send(self, client: Client, text: str) -> None:
        was_empty = not client.out
        client.out += text.encode()
        if was_empty:
            self.write(client)

    def write(self, client: Client) -> None:
        out = client.out
        try:
            while out:
                n = client.sock.send(memoryview(out)[:SEND_SIZE])
                del out[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.drop(client)
            return
        self.selector.modify(client.sock, selectors.EVENT_READ | (
            selectors.EVENT_WRITE if out else 0), client)

    def drop(self, client: Client) -> None:
        fd = client.sock.fileno()
        if fd >= 0 and self.clients.pop(fd, None) is not None:
            self.selector.unregister(client.sock)
        client.sock.close()

    # -- what the workers are told ---------------------------------------------

    def hello(self, client: Client, seq: int) -> None:
        self.send(client, "".join(feed.disk_line(p, s, r) for p, (s, r) in self.disks.items()))
        if seq < 0:
            self.whole_map(client)
        else:
            client.seq = seq
            self.follow([client])
        log.info("store watcher: %s connected at change %d", client.name, client.seq)

    def whole_map(self, client: Client) -> None:
        seq, objects = self.store.serving_map()
        parts = [f"B\t{seq}\n"]
        line = feed.object_line
        for oid, loc in objects.items():
            parts.append(line(oid, loc))
        parts.append(f"E\t{seq}\n")
        self.send(client, "".join(parts))
        client.seq = seq

    def follow(self, clients: list[Client] | None = None) -> None:
        """Send each worker the changes after its position, by groups at one position."""
        groups: dict[int, list[Client]] = {}
        for c in list(self.clients.values()) if clients is None else clients:
            if c.seq is not None:
                groups.setdefault(c.seq, []).append(c)
        for seq, group in groups.items():
            for _ in range(BATCHES_PER_ROUND):
                ids, new_seq, _complete = self.store.changes_since(seq, FEED_BATCH)
                if not ids:
                    break
                # The feed's positions are consecutive (AUTOINCREMENT, one writer at a
                # time): fewer rows than positions means pruned ones, a gap.
                if new_seq - seq != len(ids):
                    log.info("store watcher: change feed pruned past %d: whole map to %s",
                             seq, ", ".join(c.name for c in group))
                    for c in group:
                        self.send(c, "".join(feed.disk_line(p, s, r)
                                             for p, (s, r) in self.disks.items()))
                        self.whole_map(c)
                    break
                text = self.changes_text(ids) + f"S\t{new_seq}\n"
                for c in group:
                    self.send(c, text)
                    c.seq = new_seq
                seq = new_seq
                if len(ids) < FEED_BATCH:
                    break

    def changes_text(self, ids: list[str]) -> str:
        parts = []
        for oid, loc in self.store.locations(dict.fromkeys(ids)).items():
            if loc is None:
                parts.append(feed.removed_line(oid))
            elif feed.fits(loc.tier, loc.content_type, loc.disk):
                parts.append(feed.object_line(oid, loc))
            else:
                log.error("store watcher: object %s not served: a TAB or newline in its "
                          "disk path, tier or content type", oid)
                parts.append(feed.removed_line(oid))
        return "".join(parts)

    # -- disks -----------------------------------------------------------------

    def probe(self) -> None:
        """Probe every disk; tell the workers what changed."""
        self.store.reload_disks()
        health = self.store.probe_all()
        changed = []
        for path, h in health.items():
            # A hang's reason counts its seconds: the workers hear of the hang once.
            now = (h.state, h.reason)
            if h.hung and (self.disks.get(path, ("", ""))[1] or "").startswith("hung"):
                continue
            if self.disks.get(path) != now:
                if now[0] != "ok" or path in self.disks:
                    log.log(logging.WARNING if now[0] != "ok" else logging.INFO,
                            "disk %s: %s%s", path, h.state, f" ({h.reason})" if h.reason else "")
                changed.append(feed.disk_line(path, h.state, h.reason))
                self.disks[path] = now
        for path in set(self.disks) - set(health):
            del self.disks[path]
        if changed:
            text = "".join(changed)
            for c in list(self.clients.values()):
                if c.seq is not None:
                    self.send(c, text)

    def disk_failed(self, path: str, reason: str) -> None:
        disk = self.store.disks.get(path)
        if disk is None:
            log.error("store watcher: a worker reported unknown disk %r failed", path)
            return
        if not (disk.record is not None and disk.record.failed):
            log.error("disk %s failed while serving: %s", path, reason)
            self.store.mark_failed(disk, reason)
        self.probe()

    # -- hit counters ------------------------------------------------------------

    def fold_hits(self) -> None:
        if not self.hits:
            return
        rows = [(oid, h, b, ts) for oid, (h, b, ts) in self.hits.items()]
        self.hits = {}
        self.store.add_hits(rows)
