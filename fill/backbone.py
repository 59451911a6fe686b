"""Where each added object is copied from tonight, in which wave, and what the links carry.

Placement says what every appliance and backbone node holds after tonight; this module
decides how the additions get there without asking a link for more than it carries in
its fill window (docs/fill-backbone.md):

* **Sources.** A backbone node fills from the origin. A site's first copy of an object
  comes from the site's upstream backbone node when that node holds it already or
  receives it tonight, else from the origin. Every other copy in the site comes from a
  peer: one that held the object before tonight, else the appliance that took the
  site's first copy.
* **Routes.** Shortest path by hops over the directed links, from the source node to the
  destination's node (a site's appliances sit behind the site's node); ties go to the
  path whose node names, read from the source, sort first. A peer copy stays on the
  site's LAN and charges no link.
* **Waves.** A transfer's wave is one more than the wave in which its source got the
  object (0 for what it held before tonight): a source always holds the object before
  the transfer's wave starts.
* **Budgets.** A link carries at most ``gbps * 1e9 / 8 * window`` bytes a night, the
  window being its destination's fill window. Transfers are admitted greedily, highest
  value density first (object number, then node, on ties); one that finds a link of its
  route full tries its next source, else it is deferred. Nothing is over-committed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from . import loops
from .errors import InputError
from .model import Catalog, SitePlan, Topology, Transfer
from .rendezvous import catalog_lookup

__all__ = ["Schedule", "TransferTable", "Fleet", "BackboneFill", "FirstCopies", "SiteTransfers",
           "SiteResult", "schedule", "route", "held_before", "held_numbers", "deferred_by_node"]

DAY = 86400

# Room of the padding link that fills unused hops of a route: never the bottleneck.
# 2**61 bytes stays far above any night's total, so charging it cannot overflow int64.
_UNLIMITED = 1 << 61

# Admission works on blocks of transfers; a block shrinks after a transfer that fits
# alone but not after those before it, and grows again after blocks that fit whole.
_BLOCK_MIN, _BLOCK_START, _BLOCK_MAX = 64, 4096, 1 << 16


@dataclass(frozen=True, eq=False)
class TransferTable:
    """Tonight's transfers as arrays, sorted by (dst, obj).

    ``dst`` and ``source`` index ``names``: the origin first, then the backbone nodes,
    then every site's appliances, all in topology order. Iterating yields `Transfer`s.
    """

    names: tuple[str, ...]
    obj: np.ndarray  # int64 object number
    dst: np.ndarray  # int32 into names: the appliance or backbone node filled
    source: np.ndarray  # int32 into names: the node it copies from
    wave: np.ndarray  # int32, 1, 2, ...
    size: np.ndarray  # int64 bytes

    def __len__(self) -> int:
        return len(self.obj)

    def __iter__(self) -> Iterator[Transfer]:
        names = self.names
        for o, d, s, w, n in zip(self.obj.tolist(), self.dst.tolist(), self.source.tolist(),
                                 self.wave.tolist(), self.size.tolist(), strict=True):
            yield Transfer(o, names[d], names[s], w, n)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransferTable):
            return NotImplemented
        return self.names == other.names and all(
            np.array_equal(getattr(self, f), getattr(other, f))
            for f in ("obj", "dst", "source", "wave", "size"))

    __hash__ = None  # type: ignore[assignment]

    def to(self, node: str) -> TransferTable:
        """The transfers into one appliance or backbone node, by object number."""
        try:
            k = self.names.index(node)
        except ValueError:
            k = -1
        lo, hi = np.searchsorted(self.dst, [k, k + 1])
        return TransferTable(self.names, self.obj[lo:hi], self.dst[lo:hi],
                             self.source[lo:hi], self.wave[lo:hi], self.size[lo:hi])


@dataclass(eq=False)
class Schedule:
    """Tonight's fill: transfers with sources and waves, deferrals, link use."""

    transfers: TransferTable
    deferred: dict[str, list[int]]  # node -> object numbers not filled tonight (nodes with any)
    link_bytes: dict[tuple[str, str], int]  # (from, to) -> bytes charged, every link
    link_budget: dict[tuple[str, str], int]  # (from, to) -> bytes the link carries tonight
    origin_egress: int  # bytes leaving the origin
    waves: int  # the last wave (0: nothing to copy)

    def source_of(self, node: str, obj: int) -> tuple[str, int] | None:
        """(source, wave) of the copy of *obj* into *node*; None when deferred or not added."""
        t = self.transfers
        if not len(t):
            return None
        try:
            k = t.names.index(node)
        except ValueError:
            return None
        lo, hi = np.searchsorted(t.dst, [k, k + 1])
        i = lo + int(np.searchsorted(t.obj[lo:hi], obj))
        if i < hi and t.obj[i] == obj:
            return t.names[t.source[i]], int(t.wave[i])
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.transfers == other.transfers and self.deferred == other.deferred
                and list(self.link_bytes.items()) == list(other.link_bytes.items())
                and list(self.link_budget.items()) == list(other.link_budget.items())
                and self.origin_egress == other.origin_egress and self.waves == other.waves)

    __hash__ = None  # type: ignore[assignment]


class _Routes:
    """Shortest routes over the directed links; each route a row of link indices."""

    def __init__(self, topology: Topology):
        self.link_of: dict[tuple[str, str], int] = {}
        for i, lk in enumerate(topology.links):
            key = (lk.src, lk.dst)
            if key in self.link_of:
                raise InputError(f"topology: links[{i}] repeats links[{self.link_of[key]}] "
                                 f"(from {lk.src!r} to {lk.dst!r}); give each pair one link")
            self.link_of[key] = i
        self.pad = len(topology.links)
        self._next: dict[str, list[str]] = {}
        for src, dst in self.link_of:
            self._next.setdefault(src, []).append(dst)
        for nxt in self._next.values():
            nxt.sort()
        self._parents: dict[str, dict[str, str | None]] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._rows: list[list[int]] = []

    def path(self, src: str, dst: str) -> list[int] | None:
        """Link indices from *src* to *dst*, or None when no route."""
        parent = self._parents.get(src)
        if parent is None:
            # BFS visiting next hops in name order: each node keeps the first parent found,
            # which makes the kept path the shortest whose names sort first from the source.
            parent = {src: None}
            queue = deque([src])
            while queue:
                u = queue.popleft()
                for v in self._next.get(u, ()):
                    if v not in parent:
                        parent[v] = u
                        queue.append(v)
            self._parents[src] = parent
        if dst not in parent:
            return None
        hops = []
        v = dst
        while (u := parent[v]) is not None:
            hops.append(self.link_of[(u, v)])
            v = u
        return hops[::-1]

    def route_id(self, src: str | None, dst: str) -> int:
        """A row of `table()` for the route, -1 when there is none."""
        if src is None:
            return -1
        key = (src, dst)
        if key not in self._ids:
            hops = self.path(src, dst)
            self._ids[key] = -1 if hops is None else len(self._rows)
            if hops is not None:
                self._rows.append(hops)
        return self._ids[key]

    def table(self) -> np.ndarray:
        """int64 [routes + 1, hops]: link indices padded with the padding link; the last
        row (what route -1 indexes) is all padding."""
        width = max((len(r) for r in self._rows), default=0) or 1
        table = np.full((len(self._rows) + 1, width), self.pad, dtype=np.int64)
        for i, hops in enumerate(self._rows):
            table[i, :len(hops)] = hops
        return table


def route(topology: Topology, src: str, dst: str) -> list[tuple[str, str]] | None:
    """The links (from, to) a copy from node *src* to node *dst* charges; None: no route."""
    hops = _Routes(topology).path(src, dst)
    if hops is None:
        return None
    return [(topology.links[i].src, topology.links[i].dst) for i in hops]


def _budgets(topology: Topology) -> np.ndarray:
    """Bytes each link carries tonight (plus the padding link): its destination's window."""
    window = {b.name: b.window_seconds for b in topology.backbone}
    window.update((s.name, s.window_seconds) for s in topology.sites)
    budget = [lk.budget(window.get(lk.dst, DAY)) for lk in topology.links]
    return np.array(budget + [_UNLIMITED], dtype=np.int64)


def _additions(plan: SitePlan | None, appliance: str, n_objects: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(object numbers ascending and unique, priority aligned) added to one appliance."""
    if plan is None or appliance not in plan.added:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    obj = np.asarray(plan.added[appliance], dtype=np.int64).reshape(-1)
    prio = plan.priority.get(appliance)
    if prio is None:
        prio = np.zeros(len(obj))
    else:
        prio = np.asarray(prio, dtype=np.float64).reshape(-1)
        if len(prio) != len(obj):
            raise ValueError(f"plan of {plan.site!r}: priority[{appliance!r}] has {len(prio)} "
                             f"values for {len(obj)} added objects")
        prio = np.where(np.isnan(prio), -np.inf, prio)
    if len(obj) and (obj.min() < 0 or obj.max() >= n_objects):
        raise ValueError(f"plan of {plan.site!r}: {appliance!r} adds an object number outside "
                         f"the catalog (0..{n_objects - 1})")
    if (obj[1:] <= obj[:-1]).any():  # plans give them ascending and unique; else make it so
        obj, first = np.unique(obj, return_index=True)
        prio = prio[first]
    return obj, prio


def _plans_by_name(plans: list[SitePlan], known: list[str], what: str) -> dict[str, SitePlan]:
    by_name: dict[str, SitePlan] = {}
    names = set(known)
    for plan in plans:
        if plan.site not in names:
            raise ValueError(f"a {what} plan names {plan.site!r}, which the topology lacks")
        if plan.site in by_name:
            raise ValueError(f"two {what} plans for {plan.site!r}")
        by_name[plan.site] = plan
    return by_name


def _priority_order(prio: np.ndarray, obj: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Highest value density first; then object number, then destination: total order."""
    return np.lexsort((dst, obj, -prio))


def _charge_prefix(links: np.ndarray, size: np.ndarray, room: np.ndarray, pad: int) -> int:
    """Charge the longest prefix of transfers that fits on every link; return its length.

    *links* [m, hops] are each transfer's route, *size* [m] its bytes, in admission order.
    """
    m, hops = links.shape
    flat = links.reshape(-1)
    fsize = np.repeat(size, hops)
    fpos = np.repeat(np.arange(m), hops)
    real = flat != pad
    flat, fsize, fpos = flat[real], fsize[real], fpos[real]
    if not len(flat):
        return m
    by_link = np.argsort(flat, kind="stable")
    flat, fsize, fpos = flat[by_link], fsize[by_link], fpos[by_link]
    total = np.cumsum(fsize)
    starts = np.ones(len(flat), dtype=bool)
    starts[1:] = flat[1:] != flat[:-1]
    before = (total - fsize)[starts]
    running = total - before[np.cumsum(starts) - 1]
    over = running > room[flat]
    j = int(fpos[over].min()) if over.any() else m
    take = fpos < j
    np.subtract.at(room, flat[take], fsize[take])
    return j


def _admit(size: np.ndarray, options: np.ndarray, table: np.ndarray, room: np.ndarray
           ) -> np.ndarray:
    """Greedy admission in the given order; return the option taken (-1: deferred).
    The compiled loop (fill/_greedy.pyx `admit`) when built, else `_admit_numpy`."""
    if loops.compiled is None:
        return _admit_numpy(size, options, table, room)
    return loops.compiled.admit(np.ascontiguousarray(size, dtype=np.int64),
                          np.ascontiguousarray(options, dtype=np.int64),
                          np.ascontiguousarray(table, dtype=np.int64), room)


def _admit_numpy(size: np.ndarray, options: np.ndarray, table: np.ndarray, room: np.ndarray
                 ) -> np.ndarray:
    """`_admit`'s twin in numpy.

    Transfer i takes the first of ``options[i]`` (route ids, -1 for none) whose links all
    still have ``size[i]`` bytes of room, and charges them; ``room`` is updated in place.
    Equivalent to a loop over the transfers, done by blocks: room only shrinks, so an
    option that lacks room at the start of a block lacks it for the whole block, and
    among the rest the longest prefix that fits together is taken at once.
    """
    n, k = options.shape
    taken = np.full(n, -1, dtype=np.int8)
    pad = len(room) - 1
    pos, block = 0, _BLOCK_START
    while pos < n:
        end = min(n, pos + block)
        opt = options[pos:end]
        s = size[pos:end]
        links = table[opt]  # [b, k, hops]; option -1 reads the all-padding row
        fits = (opt >= 0) & (room[links] >= s[:, None, None]).all(axis=2)
        rows = np.flatnonzero(fits.any(axis=1))
        first = fits[rows].argmax(axis=1)
        j = _charge_prefix(links[rows, first], s[rows], room, pad)
        taken[pos + rows[:j]] = first[:j]
        if j == len(rows):
            pos, block = end, min(block * 2, _BLOCK_MAX)
            continue
        # rows[j] fit alone but not after the prefix: try its later options on the room left.
        i = pos + int(rows[j])
        for o in range(int(first[j]) + 1, k):
            hops = table[options[i, o]]
            if options[i, o] >= 0 and (room[hops] >= size[i]).all():
                np.subtract.at(room, hops, size[i])
                taken[i] = o
                break
        pos, block = i + 1, max(block // 2, _BLOCK_MIN)
    return taken


def _member(objs: np.ndarray, held) -> np.ndarray:
    """Which of *objs* are in *held* (object numbers, ascending as the plans give them)."""
    held = np.asarray(held, dtype=np.int64).reshape(-1)
    if not len(held) or not len(objs):
        return np.zeros(len(objs), dtype=bool)
    if (held[1:] < held[:-1]).any():
        held = np.sort(held)
    at = np.minimum(np.searchsorted(held, objs), len(held) - 1)
    return held[at] == objs


def held_before(catalog: Catalog, previous: dict[str, dict[str, str]],
                nodes: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """node -> ascending object numbers it held before tonight, from the previous manifests
    (*nodes*: only these). Ids the catalog no longer has are left out: nothing copies them."""
    return held_numbers({node: catalog_lookup(catalog, previous[node])
                         for node in (previous if nodes is None else nodes) if previous.get(node)})


def held_numbers(numbers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`held_before` from node -> `catalog_lookup` of its previous ids (-1: not in the
    catalog), for a caller that looked them up already."""
    return {node: _distinct(num[num >= 0]) for node, num in numbers.items() if len(num)}


def _distinct(x: np.ndarray) -> np.ndarray:
    x = np.sort(x)
    return x[np.concatenate(([True], x[1:] != x[:-1]))] if x.size else x


@dataclass(frozen=True, eq=False)
class BackboneFill:
    """The backbone nodes' additions, admitted on the origin's routes before any site."""

    obj: np.ndarray  # int64: admitted (from the origin, wave 1)
    dst: np.ndarray  # int64 names index
    left_obj: np.ndarray  # deferred
    left_dst: np.ndarray
    filled: dict[str, np.ndarray]  # node -> ascending object numbers it receives tonight


@dataclass(frozen=True, eq=False)
class FirstCopies:
    """One site's first copies (the site's only copy of an object over the links), in
    admission order: highest priority, then object number, then destination."""

    obj: np.ndarray  # int32 (the fleet's first copies are many: ~17 bytes each here)
    dst: np.ndarray  # int32 names index
    key: np.ndarray  # float64: -priority (NaN priority: +inf), ascending
    via: np.ndarray  # int8: upstream option: 0 none, 1 held before (wave 1), 2 filled tonight (2)
    bb_route: int  # route id upstream -> site, -1 none
    origin_route: int  # route id origin -> site, -1 none
    upstream: int  # names index of the upstream node (-1 none)

    def __len__(self) -> int:
        return len(self.obj)


@dataclass(frozen=True, eq=False)
class SiteTransfers:
    """One site's additions sorted out before the links are shared: peer copies (wave 1),
    first copies (to admit), and follow copies (from the appliance taking the first)."""

    site: str
    peer: tuple[np.ndarray, np.ndarray, np.ndarray]  # obj, dst, source (names indices)
    firsts: FirstCopies
    follow: tuple[np.ndarray, np.ndarray, np.ndarray]  # obj, dst, index into firsts


@dataclass(frozen=True, eq=False)
class SiteResult:
    """One site's transfers and deferrals after admission."""

    obj: np.ndarray  # int64
    dst: np.ndarray  # int64 names index
    source: np.ndarray  # int64 names index
    wave: np.ndarray  # int64
    left_obj: np.ndarray
    left_dst: np.ndarray

    def table(self, names: tuple[str, ...], size_of: np.ndarray) -> TransferTable:
        """This site's transfers as a TransferTable over the fleet's *names*."""
        order = _by_dst_obj(self.dst, self.obj, len(size_of))
        obj = self.obj[order]
        return TransferTable(names, obj, self.dst[order].astype(np.int32),
                             self.source[order].astype(np.int32),
                             self.wave[order].astype(np.int32), size_of[obj])

    def deferred(self, names: tuple[str, ...], lists: bool = True) -> dict[str, list[int]]:
        return deferred_by_node(names, self.left_obj, self.left_dst, lists)


def deferred_by_node(names, obj: np.ndarray, dst: np.ndarray, lists: bool = True
                     ) -> dict[str, list[int]]:
    """node -> ascending object numbers (lists, or int64 arrays with lists=False), nodes in
    *names* order (*dst* indexes *names*)."""
    order = _by_dst_obj(dst, obj, int(obj.max()) + 1 if len(obj) else 1)
    obj, dst = obj[order], dst[order]
    cuts = np.flatnonzero(np.diff(dst)) + 1
    return {names[int(d[0])]: o.tolist() if lists else o
            for o, d in zip(np.split(obj, cuts), np.split(dst, cuts), strict=True) if len(d)}


def _by_dst_obj(dst: np.ndarray, obj: np.ndarray, n_objects: int) -> np.ndarray:
    """The order by (dst, obj) of distinct pairs: one int64 key sorts faster than lexsort."""
    return np.argsort(np.asarray(dst, np.int64) * n_objects + obj)


_EMPTY = np.zeros(0, np.int64)


class Fleet:
    """The fleet-wide side of the schedule: names, routes and the links' room tonight.

    `schedule` is, in order: `fill_backbone`, `site_transfers` for every site (each needs
    only its own plan, what its nodes and upstream held, and the backbone fill: a worker
    can do it), `admit` of all sites' first copies together (the links are shared), then
    `resolve` per site. `plan.py` runs the per-site steps in its workers, so no process
    ever holds the whole fleet's transfers (~90M at 100 x 10 appliances).
    """

    def __init__(self, topology: Topology, catalog: Catalog):
        origin = topology.origin
        names = [origin] + [b.name for b in topology.backbone]
        names += [a.name for s in topology.sites for a in s.appliances]
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in index:
                raise InputError(f"topology: the name {name!r} is used by two nodes or "
                                 "appliances")
            index[name] = i
        self.topology = topology
        self.names = tuple(names)
        self.index = index
        self.size = np.asarray(catalog.size, dtype=np.int64)
        routes = _Routes(topology)
        self.links = [(lk.src, lk.dst) for lk in topology.links]
        self.budget = _budgets(topology)
        self.room = self.budget.copy()
        self.bb_routes = [routes.route_id(origin, b.name) for b in topology.backbone]
        bb_names = {b.name for b in topology.backbone}
        self.site_routes = [
            (routes.route_id(s.upstream if s.upstream in bb_names else None, s.name),
             routes.route_id(origin, s.name)) for s in topology.sites]
        self.site_bases = []
        at = 1 + len(topology.backbone)
        for s in topology.sites:
            self.site_bases.append(at)
            at += len(s.appliances)
        self.table = routes.table()

    # -- 1. backbone nodes -----------------------------------------------------------------

    def fill_backbone(self, backbone_plans: list[SitePlan]) -> BackboneFill:
        """Admit the backbone nodes' additions (from the origin, wave 1); charges the links."""
        topology = self.topology
        bb_plans = _plans_by_name(backbone_plans, [b.name for b in topology.backbone],
                                  "backbone")
        cols: list[list[np.ndarray]] = [[], [], [], []]
        for b, route_id in zip(topology.backbone, self.bb_routes, strict=True):
            obj, prio = _additions(bb_plans.get(b.name), b.name, len(self.size))
            for col, part in zip(cols, (obj, np.full(len(obj), self.index[b.name]), prio,
                                        np.full(len(obj), route_id)), strict=True):
                col.append(part)
        obj, dst, prio, route_ids = (np.concatenate(c).astype(np.float64 if i == 2 else np.int64)
                                     if c else _EMPTY for i, c in enumerate(cols))
        order = _priority_order(prio, obj, dst)
        obj, dst, route_ids = obj[order], dst[order], route_ids[order]
        ok = _admit(self.size[obj], route_ids[:, None], self.table, self.room) >= 0
        filled = {b.name: np.sort(obj[ok & (dst == self.index[b.name])])
                  for b in topology.backbone}
        return BackboneFill(obj[ok], dst[ok], obj[~ok], dst[~ok], filled)

    # -- 2. one site -----------------------------------------------------------------------

    def site_transfers(self, k: int, plan: SitePlan | None, held: dict[str, np.ndarray],
                       bb: BackboneFill) -> SiteTransfers:
        """Sort out site number *k*'s additions. *held*: node -> ascending object numbers
        held before tonight (`held_before`), for the site's appliances and its upstream."""
        s = self.topology.sites[k]
        bb_route_id, origin_route_id = self.site_routes[k]
        base = self.site_bases[k]
        app_names = [a.name for a in s.appliances]
        empty = (_EMPTY, _EMPTY, _EMPTY)
        upstream = self.index[s.upstream] if bb_route_id >= 0 else -1
        nothing = SiteTransfers(s.name, empty, FirstCopies(
            _EMPTY, _EMPTY, np.zeros(0), np.zeros(0, np.int8), bb_route_id, origin_route_id,
            upstream), empty)
        if plan is None:
            return nothing
        unknown = sorted(set(plan.added) - set(app_names))
        if unknown:
            raise ValueError(f"plan of site {s.name!r} adds to {unknown[0]!r}, "
                             "which the topology does not place in that site")
        parts = [_additions(plan, a, len(self.size)) for a in app_names]
        obj = np.concatenate([p[0] for p in parts]) if parts else _EMPTY
        if not len(obj):
            return nothing
        prio = np.concatenate([p[1] for p in parts])
        local = np.repeat(np.arange(len(app_names)), [len(p[0]) for p in parts])
        present = np.zeros(len(self.size), dtype=bool)  # sort-free distinct objects
        present[obj] = True
        uniq = np.flatnonzero(present)
        col = (np.cumsum(present) - 1)[obj]
        n = len(obj)

        # A peer that held the object is a source; one that keeps it tonight is preferred
        # to one deleting it (its agent may have dropped it by the time the copy asks).
        # Ties: topology order of the peers.
        from_peer = np.zeros(n, dtype=bool)
        holder = np.zeros(n, dtype=np.int64)
        if any(len(held.get(a, _EMPTY)) for a in app_names):  # else: a new site, no peers
            score = np.zeros((len(app_names), len(uniq)), dtype=np.int8)
            for h, a in enumerate(app_names):
                was = _member(uniq, held.get(a, _EMPTY))
                if was.any():
                    keeps = _member(uniq, plan.holdings.get(a, _EMPTY))
                    score[h] = np.where(was, np.where(keeps, 2, 1), 0)
            score = score[:, col]
            score[local, np.arange(n)] = 0  # an appliance is not its own peer
            holder = score.argmax(axis=0)
            from_peer = score[holder, np.arange(n)] > 0
        peer = (obj[from_peer], base + local[from_peer], base + holder[from_peer])

        # Per object, the first appliance (topology order) among those not copying from
        # a peer takes the first copy; rows come appliance by appliance, so no sort.
        rest = np.flatnonzero(~from_peer)
        first_local = np.full(len(uniq), len(app_names), dtype=np.int64)
        np.minimum.at(first_local, col[rest], local[rest])
        is_first = local[rest] == first_local[col[rest]]
        first_row = np.zeros(len(uniq), dtype=np.int64)
        first_row[col[rest[is_first]]] = rest[is_first]
        has_first = first_local < len(app_names)
        firsts = first_row[has_first]  # by object
        follow = rest[~is_first]
        f_obj = obj[firsts]
        f_dst = base + local[firsts]
        key = -prio[firsts]
        via = np.zeros(len(firsts), dtype=np.int8)
        if bb_route_id >= 0:
            via[_member(f_obj, bb.filled.get(s.upstream, _EMPTY))] = 2
            via[_member(f_obj, held.get(s.upstream, _EMPTY))] = 1
        # (key, obj, dst) order: the first copies come by object, one per object
        order = np.argsort(key, kind="stable") if loops.compiled is None else \
            loops.compiled.argsort(np.ascontiguousarray(key, dtype=np.float64))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        follow_first = rank[(np.cumsum(has_first) - 1)[col[follow]]]
        return SiteTransfers(
            s.name, peer,
            FirstCopies(f_obj[order].astype(np.int32), f_dst[order].astype(np.int32),
                        key[order], via[order], bb_route_id, origin_route_id, upstream),
            (obj[follow], base + local[follow], follow_first))

    # -- 3. all sites' first copies together -------------------------------------------------

    def groups(self) -> list[list[int]]:
        """The sites (numbers) whose first copies can meet on a link, grouped: sites of
        different groups share no link of their routes, so each group's admission is
        independent of the others' (a worker each). Groups in the order of their first
        site, sites in topology order."""
        n = len(self.site_routes)
        parent = list(range(n))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner: dict[int, int] = {}
        pad = len(self.room) - 1
        for k, routes in enumerate(self.site_routes):
            for r in routes:
                if r < 0:
                    continue
                for link in self.table[r].tolist():
                    if link == pad:
                        continue
                    if link in owner:
                        a, b = root(owner[link]), root(k)
                        parent[max(a, b)] = min(a, b)
                    else:
                        owner[link] = k
        out: dict[int, list[int]] = {}
        for k in range(n):
            out.setdefault(root(k), []).append(k)
        return list(out.values())

    def group_links(self, group: list[int]) -> np.ndarray:
        """The links (indices) the routes of a group's sites use."""
        rows = [self.table[r] for k in group for r in self.site_routes[k] if r >= 0]
        links = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
        return links[links != len(self.room) - 1]

    def admit(self, firsts: list[FirstCopies]) -> list[np.ndarray]:
        """Admit every site's first copies in one order (highest priority, then object,
        then destination), charging the links; per site, the option taken for each first
        copy (0 upstream, 1 origin, -1 deferred), aligned with it.

        *firsts* may be those of one of `groups()` only (any sites sharing no link with
        the rest): the result for them is the same. The sites' lists are each in that
        order already, so they are merged band by band of priority (~_BAND_ROWS rows at
        a time) instead of sorted as one array: memory stays at one band beyond the lists
        themselves. The compiled twin (fill/_greedy.pyx `admit_sites`) merges them through
        a heap instead: the same order, row for row."""
        if loops.compiled is not None:  # compiled: the lists merged through a heap, row by row
            out = [np.full(len(f), -1, dtype=np.int8) for f in firsts]
            loops.compiled.admit_sites(firsts, out, self.size, self.table, self.room)
            return out
        offsets = np.concatenate(([0], np.cumsum([len(f) for f in firsts], dtype=np.int64)))
        taken = np.full(int(offsets[-1]), -1, dtype=np.int8)
        if taken.size:
            keys = [f.key for f in firsts]
            sample = np.sort(np.concatenate([k[::_SAMPLE] for k in keys]))
            edges = _distinct(sample[::max(1, _BAND_ROWS // _SAMPLE)][1:])
            cuts = [np.concatenate(([0], np.searchsorted(k, edges), [len(k)])) for k in keys]
            for b in range(len(edges) + 1):
                parts = [self._viable(f, off, int(c[b]), int(c[b + 1]))
                         for f, off, c in zip(firsts, offsets[:-1].tolist(), cuts, strict=True)
                         if c[b + 1] > c[b]]
                parts = [p for p in parts if len(p[1])]
                if not parts:
                    continue
                key = np.concatenate([f.key[rows] for f, rows, _ in parts])
                obj = np.concatenate([f.obj[rows] for f, rows, _ in parts])
                dst = np.concatenate([f.dst[rows] for f, rows, _ in parts])
                pos = np.concatenate([off + rows for _, rows, off in parts])
                opt = np.empty((len(obj), 2), dtype=np.int64)
                opt[:, 0] = np.concatenate([np.where(f.via[rows] > 0, f.bb_route, -1)
                                            for f, rows, _ in parts])
                opt[:, 1] = np.concatenate([np.full(len(rows), f.origin_route)
                                            for f, rows, _ in parts])
                order = _merge_order(key, obj, dst)
                taken[pos[order]] = _admit(self.size[obj[order]], opt[order], self.table,
                                           self.room)
        return [taken[offsets[i]:offsets[i + 1]] for i in range(len(firsts))]

    def _viable(self, f: FirstCopies, offset: int, lo: int, hi: int
                ) -> tuple[FirstCopies, np.ndarray, int]:
        """Rows lo..hi of *f* that some option still has room for: the others are deferred
        already (room only shrinks), so they skip the admission. Once a site's links are
        full that is most of its rows, checked here at the cost of one comparison each."""
        size = self.size[f.obj[lo:hi]]
        ok = np.zeros(hi - lo, dtype=bool)
        if f.origin_route >= 0:
            ok |= size <= self.room[self.table[f.origin_route]].min()
        if f.bb_route >= 0:
            ok |= (size <= self.room[self.table[f.bb_route]].min()) & (f.via[lo:hi] > 0)
        return f, lo + np.flatnonzero(ok), offset

    # -- 4. one site again -------------------------------------------------------------------

    @staticmethod
    def resolve(st: SiteTransfers, taken: np.ndarray) -> SiteResult:
        """Sources and waves of a site's transfers once its first copies are admitted."""
        f = st.firsts
        ok = taken >= 0
        source = np.where(taken == 0, f.upstream, 0)
        wave = np.where(taken == 0, f.via, 1).astype(np.int64)
        p_obj, p_dst, p_src = st.peer
        w_obj, w_dst, w_first = st.follow
        w_ok = ok[w_first]
        return SiteResult(
            obj=np.concatenate([p_obj, f.obj[ok], w_obj[w_ok]]),
            dst=np.concatenate([p_dst, f.dst[ok], w_dst[w_ok]]),
            source=np.concatenate([p_src, source[ok], f.dst[w_first[w_ok]]]),
            wave=np.concatenate([np.ones(len(p_obj), np.int64), wave[ok],
                                 wave[w_first[w_ok]] + 1]),
            left_obj=np.concatenate([f.obj[~ok], w_obj[~w_ok]]),
            left_dst=np.concatenate([f.dst[~ok], w_dst[~w_ok]]))

    def link_use(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """(bytes charged, budget) per link, topology order."""
        used = (self.budget - self.room)[:-1].tolist()
        return (dict(zip(self.links, used, strict=True)),
                dict(zip(self.links, self.budget[:-1].tolist(), strict=True)))

    def schedule(self, bb: BackboneFill, results: list[SiteResult]) -> Schedule:
        """The whole fleet's Schedule from the backbone fill and every site's result."""
        n = len(bb.obj)
        parts = [(bb.obj, bb.dst, np.zeros(n, np.int64), np.ones(n, np.int64))]
        parts += [(r.obj, r.dst, r.source, r.wave) for r in results]
        obj, dst, source, wave = (np.concatenate(c) for c in zip(*parts, strict=True))
        whole = SiteResult(obj, dst, source, wave,
                           np.concatenate([bb.left_obj] + [r.left_obj for r in results]),
                           np.concatenate([bb.left_dst] + [r.left_dst for r in results]))
        transfers = whole.table(self.names, self.size)
        link_bytes, link_budget = self.link_use()
        return Schedule(
            transfers=transfers,
            deferred=whole.deferred(self.names),
            link_bytes=link_bytes,
            link_budget=link_budget,
            origin_egress=int(transfers.size[transfers.source == 0].sum()),
            waves=int(transfers.wave.max()) if len(transfers) else 0,
        )


# Admission merges the sites' first copies by bands of about this many rows, cut at
# priorities read from every _SAMPLE-th row of each site's list.
_BAND_ROWS, _SAMPLE = 1 << 21, 64


def _merge_order(key: np.ndarray, obj: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The order (key, obj, dst) of rows that come as runs each sorted that way (one per
    site). A stable sort on the key alone merges the runs (timsort finds them); rows with
    equal keys are then put in (obj, dst) order among themselves."""
    order = np.argsort(key, kind="stable")
    ks = key[order]
    tie = ks[1:] == ks[:-1]
    if tie.any():
        in_tie = np.zeros(len(ks), dtype=bool)
        in_tie[1:] |= tie
        in_tie[:-1] |= tie
        at = np.flatnonzero(in_tie)
        rows = order[at]
        order[at] = rows[np.lexsort((dst[rows], obj[rows], key[rows]))]
    return order


def schedule(site_plans: list[SitePlan], backbone_plans: list[SitePlan], topology: Topology,
             catalog: Catalog, previous: dict[str, dict[str, str]]) -> Schedule:
    """Sources, waves and link use of tonight's additions; what does not fit is deferred.

    *previous*: appliance or backbone node -> {id: tier} held before tonight. A backbone
    node's plan has ``site`` == the node's name and one appliance of that name. The steps
    of `Fleet`, one after the other in one process.
    """
    fleet = Fleet(topology, catalog)
    plans = _plans_by_name(site_plans, [s.name for s in topology.sites], "site")
    bb = fleet.fill_backbone(backbone_plans)
    held = held_before(catalog, previous)
    sites = [fleet.site_transfers(k, plans.get(s.name), held, bb)
             for k, s in enumerate(topology.sites)]
    taken = fleet.admit([st.firsts for st in sites])
    return fleet.schedule(bb, [Fleet.resolve(st, t) for st, t in zip(sites, taken, strict=True)])
