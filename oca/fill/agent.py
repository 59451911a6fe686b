"""The fill's run on one appliance: the diff of its manifest against the store, then the
moves, the adds wave by wave (N transfers at once, each falling back along the chain of
sources), and the deletions as late as possible.

Deletions wait until an add needs their room (``TierFullError`` from the store: one
pending deletion of that tier goes, largest first, and the add is tried again) or the
last wave is done, so the box serves what it holds for as long as it can.

Per object, the chain is its source, then the manifest's ``upstream`` (a site
appliance: its backbone appliance, then the origin). A source is tried again with
exponential backoff and jitter after a connection error, a timeout or a 5xx (and a
stream that broke off resumes from the bytes kept); a peer that does not hold the object
yet (404, in a wave after 0) is asked with HEAD and backoff until it does, for at most
*peer_wait* seconds; anything else (a digest mismatch, a bad response) moves on to the
next source at once and that source is not asked for that object again in this run.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..config import Config
from ..errors import (
    DigestMismatchError,
    ObjectExistsError,
    OcaError,
    StoreError,
    TierFullError,
)
from ..http.auth import Signer, load_key
from ..progress import Progress
from ..storage import Store
from ..storage.store import PartialIngestError
from ..units import format_size
from .manifest import FillObject, Manifest
from .source import Connections, CopyRefused, RateLimit, holds, open_copy

RETRIES = 3
"""Attempts more on one source after a retryable failure, before the next source."""
BACKOFF = 0.5
"""Seconds before the first retry; doubled each time (with jitter), at most 30 s."""
TOKEN_TTL = 6 * 3600
"""Seconds a fill request's token stays good."""
TICK = 1.0
"""Seconds between progress snapshots (the state file, /metrics)."""
JSON_PROGRESS_EVERY = 5.0
"""Seconds between JSON progress lines on stderr when it is not a terminal."""


@dataclass
class Diff:
    """What the store must do to hold the manifest."""

    adds: list[FillObject] = field(default_factory=list)
    replaces: set[str] = field(default_factory=set)  # adds over a different stored digest
    moves: list[tuple[FillObject, str]] = field(default_factory=list)  # (object, from tier)
    deletes: list[tuple[str, str, int]] = field(default_factory=list)  # (id, tier, size)
    keeps: int = 0

    def as_dict(self, manifest: Manifest) -> dict:
        by: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for o in self.adds:
            chain = [n for n in manifest.chain(o) if n != manifest.appliance]
            cell = by[chain[0] if chain else "(none)"][o.tier]
            cell[0] += 1
            cell[1] += o.size
        return {
            "adds": {s: {t: {"objects": n, "bytes": b} for t, (n, b) in tiers.items()}
                     for s, tiers in sorted(by.items())},
            "add_bytes": sum(o.size for o in self.adds),
            "moves": [{"id": o.id, "from": t, "to": o.tier} for o, t in self.moves],
            "move_bytes": sum(o.size for o, _ in self.moves),
            "deletes": [i for i, _, _ in self.deletes],
            "delete_bytes": sum(s for _, _, s in self.deletes),
            "keeps": self.keeps,
        }


def diff(manifest: Manifest, store: Store) -> Diff:
    """The adds, moves and deletes that make *store* hold *manifest*."""
    held = {rec.id: rec for rec in store.objects()}
    d = Diff()
    for o in manifest.objects:
        rec = held.get(o.id)
        if rec is None or (o.xxh3 is not None and rec.xxh3 != o.xxh3):
            d.adds.append(o)
            if rec is not None:
                d.replaces.add(o.id)
        elif rec.tier != o.tier:
            d.moves.append((o, rec.tier))
        else:
            d.keeps += 1
    for oid in manifest.delete:
        rec = held.get(oid)
        if rec is not None:
            d.deletes.append((oid, rec.tier, rec.size))
    return d


def check_capacity(manifest: Manifest, store: Store) -> None:
    """OcaError when the manifest's objects need more of a tier than the box has."""
    tiers = store.status(io=False)["tiers"]
    need: dict[str, int] = defaultdict(int)
    for o in manifest.objects:
        need[o.tier] += o.size
    for tier, n in sorted(need.items()):
        have = tiers[tier]["capacity"]
        if n > have:
            raise OcaError(f"manifest {manifest.where}: objects on tier {tier} take "
                           f"{format_size(n)}, the box has {format_size(have)} of it")


@dataclass
class Summary:
    added: int = 0
    moved: int = 0
    deleted: int = 0
    kept: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # id -> why
    refused: list[dict] = field(default_factory=list)  # copies refused: id, source, reason
    bytes_by_source: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    not_started: int = 0  # adds left when the window ended
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_started

    def as_dict(self) -> dict:
        return {"ok": self.ok, "added": self.added, "moved": self.moved,
                "deleted": self.deleted, "kept": self.kept, "failed": dict(self.failed),
                "not_started": self.not_started, "refused": list(self.refused),
                "bytes_by_source": dict(sorted(self.bytes_by_source.items())),
                "seconds": round(self.seconds, 3)}


class Agent:
    """One application of *manifest* to the store of *config*."""

    def __init__(self, config: Config, manifest: Manifest, *, parallel: int = 4,
                 rate: float = 0.0, peer_wait: float = 600.0, deadline: float | None = None,
                 progress: bool = True, timeout: float = 30.0, on_tick=None):
        self.config = config
        self.manifest = manifest
        self.parallel = parallel
        self.rate = RateLimit(rate)
        self.peer_wait = peer_wait
        self.deadline = deadline  # epoch seconds: no transfer starts after it
        self.progress_enabled = progress
        self.timeout = timeout
        self.summary = Summary()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._main_store: Store | None = None
        self._conns: list[Connections] = []
        self._pending_deletes: dict[str, list[tuple[str, int]]] = defaultdict(list)
        self._signer = (Signer(load_key(config.auth.fill_key_file), scope="fill")
                        if config.auth.fill_key_file else None)
        self._progress: Progress | None = None
        self.on_tick = on_tick  # called with snapshot() every TICK seconds of the run
        self.total_bytes = 0
        self.objects_total = 0
        self._ticking: threading.Event | None = None  # set: the run is over
        self._rate_bps = 0.0  # over the last tick
        self._shown: dict[str, int] = {}  # bytes of each object counted in the progress

    # -- per thread ---------------------------------------------------------------------

    def _store(self) -> Store:
        """The main thread's store (a transfer opens its own: SQLite connections stay in
        the thread that made them)."""
        if self._main_store is None:
            self._main_store = Store(self.config)
        return self._main_store

    def _connections(self) -> Connections:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = Connections(self.timeout)
            with self._lock:
                self._conns.append(conns)
        return conns

    # -- the run ------------------------------------------------------------------------

    def plan(self) -> Diff:
        """The diff, after the capacity check (nothing changed yet)."""
        store = self._store()
        check_capacity(self.manifest, store)
        return diff(self.manifest, store)

    def run(self) -> Summary:
        t0 = time.monotonic()
        s = self.summary
        try:
            d = self.plan()
            s.kept = d.keeps
            for oid, tier, size in sorted(d.deletes, key=lambda x: -x[2]):
                self._pending_deletes[tier].append((oid, size))
            total = self.total_bytes = sum(o.size for o in d.adds)
            self.objects_total = len(d.adds)
            ticker = threading.Thread(target=self._tick, daemon=True, name="oca-fill-tick")
            self._ticking = threading.Event()
            ticker.start()
            tty = sys.stderr.isatty()
            with Progress("fill", total=total, unit="B",
                          enabled=self.progress_enabled and tty) as self._progress:
                for obj, _ in d.moves:
                    self._move(obj)
                waves = sorted({o.wave for o in d.adds})
                for wave in waves:
                    todo = [o for o in d.adds if o.wave == wave]
                    if self.parallel > 1 and len(todo) > 1:
                        with ThreadPoolExecutor(self.parallel,
                                                thread_name_prefix="oca-fill") as pool:
                            list(pool.map(lambda o: self._add(o, o.id in d.replaces), todo))
                    else:
                        for o in todo:
                            self._add(o, o.id in d.replaces)
                for tier in list(self._pending_deletes):
                    while self._delete_one(self._store(), tier):
                        pass
        finally:
            if self._ticking is not None:
                self._ticking.set()
                ticker.join()
            for conns in self._conns:
                conns.close()
            if self._main_store is not None:
                self._main_store.close()
            s.seconds = time.monotonic() - t0
        return s

    def snapshot(self) -> dict:
        """The run so far: the summary's figures, bytes on disk of the adds and their
        total, objects, and the rate over the last tick (bits per second)."""
        with self._lock:
            out = self.summary.as_dict()
            out["bytes"] = sum(self._shown.values())
        out.update(total_bytes=self.total_bytes, objects_total=self.objects_total,
                   rate_bps=self._rate_bps)
        return out

    def _tick(self) -> None:
        # Every TICK: the rate, on_tick(snapshot); every JSON_PROGRESS_EVERY, when stderr
        # is not a terminal and progress is on, a JSON line there; one more at the end.
        json_lines = self.progress_enabled and not sys.stderr.isatty()
        last_bytes, last_t, last_line = 0, time.monotonic(), 0.0
        while True:
            done = self._ticking.wait(TICK)
            now = time.monotonic()
            with self._lock:
                moved = sum(self.summary.bytes_by_source.values())
            self._rate_bps = (moved - last_bytes) * 8 / max(now - last_t, 1e-6)
            last_bytes, last_t = moved, now
            snap = self.snapshot()
            if self.on_tick is not None:
                self.on_tick(snap)
            if json_lines and (done or now - last_line >= JSON_PROGRESS_EVERY):
                last_line = now
                left = snap["total_bytes"] - snap["bytes"]
                line = {"fill": self.manifest.appliance, "bytes": snap["bytes"],
                        "total_bytes": snap["total_bytes"], "objects": snap["added"],
                        "objects_total": snap["objects_total"], "failed": len(snap["failed"]),
                        "rate_bps": round(snap["rate_bps"]),
                        "eta_s": (round(left * 8 / snap["rate_bps"])
                                  if snap["rate_bps"] > 0 else None),
                        "bytes_by_source": snap["bytes_by_source"]}
                print(json.dumps(line, sort_keys=True), file=sys.stderr, flush=True)
            if done:
                return

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def _move(self, obj: FillObject) -> None:
        store = self._store()
        for _ in range(2):
            try:
                store.move(obj.id, obj.tier)
                with self._lock:
                    self.summary.moved += 1
                return
            except TierFullError as e:
                if not self._delete_one(store, obj.tier):
                    self._fail(obj, f"move to {obj.tier}: {e}")
                    return
            except StoreError as e:
                self._fail(obj, f"move to {obj.tier}: {e}")
                return
        self._fail(obj, f"move to {obj.tier}: no room after a deletion")

    def _delete_one(self, store: Store, tier: str) -> bool:
        """Delete one pending deletion of *tier* (the largest); False when none is left."""
        with self._lock:
            if not self._pending_deletes[tier]:
                return False
            oid, _ = self._pending_deletes[tier].pop(0)
        try:
            store.delete(oid)
            with self._lock:
                self.summary.deleted += 1
        except StoreError as e:
            with self._lock:
                self.summary.failed[oid] = f"delete: {e}"
        return True

    def _fail(self, obj: FillObject, why: str) -> None:
        with self._lock:
            self.summary.failed[obj.id] = why

    def _refused(self, obj: FillObject, source: str, reason: str) -> None:
        with self._lock:
            self.summary.refused.append({"id": obj.id, "source": source, "reason": reason})

    def _token(self, oid: str) -> str | None:
        if self._signer is None:
            return None
        return self._signer.token(oid, int(time.time()) + TOKEN_TTL)

    def _add(self, obj: FillObject, replace: bool) -> None:
        if self._past_deadline():
            with self._lock:
                self.summary.not_started += 1
            return
        m = self.manifest
        chain = [n for n in m.chain(obj) if n != m.appliance]
        if not chain:
            self._fail(obj, "no source: the manifest names this appliance and no upstream")
            return
        reasons = []
        with Store(self.config) as store:
            for name in chain:
                why = self._from(store, obj, name, replace)
                if why is None:
                    return
                if why == "tier full":
                    self._fail(obj, f"tier {obj.tier} is full")
                    return
                reasons.append(f"{name}: {why}")
        self._fail(obj, "; ".join(reasons))

    def _from(self, store: Store, obj: FillObject, name: str, replace: bool) -> str | None:
        """Copy *obj* from source *name*: None when it is stored, else why not."""
        base = self.manifest.sources[name]
        peer = name not in self.manifest.upstream
        conns = self._connections()
        retries = 0
        waited_since = None
        while True:
            start = 0
            if obj.xxh3 is not None:
                start = min(store.partial_size(obj.id, obj.xxh3), max(obj.size - 1, 0))
            try:
                copy = open_copy(conns, name, base, obj, start, self._token(obj.id), self.rate)
            except CopyRefused as e:
                if e.missing and peer and obj.wave > 0:
                    # A peer of this wave copies it tonight itself: wait for it.
                    now = time.monotonic()
                    waited_since = now if waited_since is None else waited_since
                    if now - waited_since < self.peer_wait and not self._past_deadline():
                        self._sleep(retries, limit=self.peer_wait - (now - waited_since))
                        retries = min(retries + 1, 6)
                        if self._holds(conns, name, base, obj):
                            retries = 0
                        continue
                if e.retry and retries < RETRIES:
                    self._sleep(retries)
                    retries += 1
                    continue
                self._refused(obj, name, e.reason)
                return e.reason
            try:
                self._ingest(store, obj, copy, name, replace)
                return None
            except DigestMismatchError:
                reason = f"sent bytes that do not match xxh3 {copy.xxh3}"
                self._refused(obj, name, reason)
                return reason
            except PartialIngestError as e:
                if retries < RETRIES:
                    self._sleep(retries)
                    retries += 1
                    continue
                reason = f"broke off after {e.got} of {obj.size} bytes"
                self._refused(obj, name, reason)
                return reason
            except TierFullError:
                if self._delete_one(store, obj.tier):
                    continue
                return "tier full"
            except ObjectExistsError:
                return None  # another run stored it meanwhile
            except StoreError as e:
                return f"store: {e}"
            finally:
                copy.close()

    def _holds(self, conns: Connections, name: str, base: str, obj: FillObject) -> bool:
        try:
            return holds(conns, name, base, obj, self._token(obj.id))
        except CopyRefused:
            return False

    def _ingest(self, store: Store, obj: FillObject, copy, name: str, replace: bool) -> None:
        # bytes_by_source: what came over the network from each source; the progress
        # bar: each object's bytes on disk once (a resumed prefix included, a retry not
        # counted twice).
        last = copy.start
        progress = self._progress

        def on_bytes(n: int) -> None:
            nonlocal last
            with self._lock:
                self.summary.bytes_by_source[name] += n - last
                seen = self._shown.get(obj.id, 0)
                if progress is not None and n > seen:
                    progress.update(n - seen)
                    self._shown[obj.id] = n
            last = n
        on_bytes(copy.start)
        store.put_stream(obj.id, copy, obj.size, obj.tier, xxh3=copy.xxh3, start=copy.start,
                         replace=replace, on_bytes=on_bytes)
        with self._lock:
            self.summary.added += 1

    def _sleep(self, retries: int, limit: float | None = None) -> None:
        delay = min(BACKOFF * (2 ** retries), 30.0) * random.uniform(0.5, 1.0)  # noqa: S311
        if limit is not None:
            delay = max(min(delay, limit), 0.0)
        time.sleep(delay)


def run_recorded(config: Config, manifest: Manifest, on_agent=None, **options) -> Summary:
    """Run an :class:`Agent` over *manifest* (*options*: its keyword arguments) and keep
    the fill's state file (``state``) up to date: running while it runs, then its
    summary. *on_agent(agent)* is called before the run (the role's SIGTERM watch)."""
    from . import state  # noqa: PLC0415 - a small module, only here

    before = state.read(config) or {}
    record = {"state": "running", "manifest": manifest.where,
              "generated": manifest.generated, "started": time.time(), "finished": None,
              "pid": os.getpid(), "summary": None, "progress": None,
              "applied_generated": before.get("applied_generated")}
    state.write(config, record)

    def tick(snapshot: dict) -> None:
        if record["state"] == "running":
            record["progress"] = snapshot
            state.write(config, record)
    agent = Agent(config, manifest, on_tick=tick, **options)
    if on_agent is not None:
        on_agent(agent)
    try:
        summary = agent.run()
    except BaseException as e:
        state.write(config, {**record, "state": "failed", "finished": time.time(),
                             "error": str(e) or type(e).__name__})
        raise
    record.update(state="done" if summary.ok else "failed", finished=time.time(),
                  summary=summary.as_dict(), progress=agent.snapshot())
    if summary.ok:
        record["applied_generated"] = max(manifest.generated,
                                          record["applied_generated"] or 0.0)
    state.write(config, record)
    return summary
