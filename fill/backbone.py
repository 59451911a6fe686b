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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .model import Catalog, SitePlan, Topology, Transfer

__all__ = ["Schedule", "TransferTable", "schedule", "route"]

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


class _Held:
    """What each node held before tonight, for the objects one site adds.

    `previous` (id -> tier per node) is the truth, but testing every added id against
    every peer's dict costs a Python lookup per pair. The node's plan says the same in
    numbers: held before = kept (holdings not added tonight) + deleted. Candidates come
    from the plan; each is then confirmed in `previous`. A node without a plan is
    looked up in `previous` directly.
    """

    def __init__(self, objs: np.ndarray, ids: list[str], previous: dict[str, dict[str, str]]):
        self.objs = objs  # ascending, unique
        self.ids = ids  # aligned
        self.previous = previous
        self._pos: dict[str, int] | None = None

    def _positions(self, ids) -> np.ndarray:
        if self._pos is None:
            self._pos = dict(zip(self.ids, range(len(self.ids)), strict=True))
        common = self._pos.keys() & set(ids)
        return np.fromiter((self._pos[i] for i in common), dtype=np.int64, count=len(common))

    def state(self, node: str, plan: SitePlan | None, added: np.ndarray | None = None
              ) -> np.ndarray:
        """int8 per object: 2 held and kept tonight, 1 held and deleted tonight, 0 not held.
        *added*: which objects the node adds tonight, when the caller knows already."""
        prev = self.previous.get(node)
        state = np.zeros(len(self.objs), dtype=np.int8)
        if not prev:
            return state
        if plan is None or node not in plan.holdings:
            state[self._positions(prev.keys())] = 1
            return state
        if added is None:
            added = _member(self.objs, plan.added.get(node, ()))
        state[_member(self.objs, plan.holdings[node]) & ~added] = 2
        deleted = plan.deleted.get(node)
        if deleted:
            cols = self._positions(deleted)
            state[cols] = np.maximum(state[cols], 1)
        cand = np.flatnonzero(state)
        ids = self.ids
        confirmed = np.fromiter((ids[c] in prev for c in cand.tolist()), dtype=bool,
                                count=len(cand))
        state[cand[~confirmed]] = 0
        return state


def schedule(site_plans: list[SitePlan], backbone_plans: list[SitePlan], topology: Topology,
             catalog: Catalog, previous: dict[str, dict[str, str]]) -> Schedule:
    """Sources, waves and link use of tonight's additions; what does not fit is deferred.

    *previous*: appliance or backbone node -> {id: tier} held before tonight. A backbone
    node's plan has ``site`` == the node's name and one appliance of that name.
    """
    origin = topology.origin
    names = [origin] + [b.name for b in topology.backbone]
    names += [a.name for s in topology.sites for a in s.appliances]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise InputError(f"topology: the name {name!r} is used by two nodes or appliances")
        index[name] = i
    n_objects = len(catalog)
    size_of = np.asarray(catalog.size, dtype=np.int64)
    routes = _Routes(topology)
    budget = _budgets(topology)
    room = budget.copy()
    bb_plans = _plans_by_name(backbone_plans, [b.name for b in topology.backbone], "backbone")
    plans = _plans_by_name(site_plans, [s.name for s in topology.sites], "site")

    done: list[tuple[np.ndarray, ...]] = []  # (obj, dst, source, wave) admitted
    left: list[tuple[np.ndarray, np.ndarray]] = []  # (obj, dst) deferred

    # Backbone nodes fill from the origin, all in wave 1.
    cols: list[list[np.ndarray]] = [[], [], [], []]
    for b in topology.backbone:
        obj, prio = _additions(bb_plans.get(b.name), b.name, n_objects)
        for col, part in zip(cols, (obj, np.full(len(obj), index[b.name]), prio,
                                    np.full(len(obj), routes.route_id(origin, b.name))),
                             strict=True):
            col.append(part)
    # Site routes are registered before the table is built.
    bb_names = {b.name for b in topology.backbone}
    site_routes = [(routes.route_id(s.upstream if s.upstream in bb_names else None, s.name),
                    routes.route_id(origin, s.name)) for s in topology.sites]
    table = routes.table()
    bb_obj, bb_dst, bb_prio, bb_route = (np.concatenate(c) if c else np.zeros(0, np.int64)
                                         for c in cols)
    order = _priority_order(bb_prio, bb_obj, bb_dst)
    bb_obj, bb_dst, bb_route = bb_obj[order], bb_dst[order], bb_route[order].astype(np.int64)
    taken = _admit(size_of[bb_obj], bb_route[:, None], table, room)
    ok = taken >= 0
    done.append((bb_obj[ok], bb_dst[ok], np.zeros(int(ok.sum()), np.int64),
                 np.ones(int(ok.sum()), np.int64)))
    left.append((bb_obj[~ok], bb_dst[~ok]))
    filled_tonight = {b.name: np.sort(bb_obj[ok & (bb_dst == index[b.name])])
                      for b in topology.backbone}

    # Sites: each addition is a peer copy from a previous holder, the site's first copy
    # (over the links), or a peer copy from the appliance that takes the first copy.
    first_parts: list[tuple[np.ndarray, ...]] = []  # obj, dst, prio, options, sources, waves
    follow_parts: list[tuple[np.ndarray, ...]] = []  # obj, dst, index of the first copy
    n_first = 0
    for s, (bb_route_id, origin_route_id) in zip(topology.sites, site_routes, strict=True):
        plan = plans.get(s.name)
        app_names = [a.name for a in s.appliances]
        if plan is not None:
            unknown = sorted(set(plan.added) - set(app_names))
            if unknown:
                raise ValueError(f"plan of site {s.name!r} adds to {unknown[0]!r}, "
                                 "which the topology does not place in that site")
        parts = [_additions(plan, a, n_objects) for a in app_names]
        obj = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        if not len(obj):
            continue
        prio = np.concatenate([p[1] for p in parts])
        local = np.repeat(np.arange(len(app_names)), [len(p[0]) for p in parts])
        base = index[app_names[0]]
        uniq = np.sort(obj)
        uniq = uniq[np.concatenate(([True], uniq[1:] != uniq[:-1]))]
        col = np.searchsorted(uniq, obj)
        held = _Held(uniq, catalog.ids[uniq].tolist(), previous)
        n = len(obj)

        # A peer that keeps the object is preferred to one deleting it tonight: the agent
        # of a deleting peer may have dropped it by the time the copy asks. Ties: topology
        # order of the peers.
        adds = np.zeros((len(app_names), len(uniq)), dtype=bool)
        adds[local, col] = True
        score = np.stack([held.state(a, plan, adds[h]) for h, a in enumerate(app_names)])
        score = score[:, col]
        score[local, np.arange(n)] = 0  # an appliance is not its own peer
        holder = score.argmax(axis=0)
        from_peer = score[holder, np.arange(n)] > 0
        done.append((obj[from_peer], base + local[from_peer], base + holder[from_peer],
                     np.ones(int(from_peer.sum()), np.int64)))

        rest = np.flatnonzero(~from_peer)
        rest = rest[np.lexsort((local[rest], col[rest]))]
        is_first = np.ones(len(rest), dtype=bool)
        is_first[1:] = col[rest[1:]] != col[rest[:-1]]
        firsts = rest[is_first]
        follow = rest[~is_first]
        follow_parts.append((obj[follow], base + local[follow],
                             n_first + np.cumsum(is_first)[~is_first] - 1))

        f_obj = obj[firsts]
        m = len(firsts)
        options = np.full((m, 2), -1, dtype=np.int64)
        sources = np.zeros((m, 2), dtype=np.int64)
        waves = np.ones((m, 2), dtype=np.int64)
        if bb_route_id >= 0:
            held_bb = held.state(s.upstream, bb_plans.get(s.upstream))[col[firsts]] > 0
            tonight = filled_tonight.get(s.upstream, np.zeros(0, np.int64))
            got = _member(f_obj, tonight)
            options[:, 0] = np.where(held_bb | got, bb_route_id, -1)
            sources[:, 0] = index[s.upstream]
            waves[:, 0] = np.where(held_bb, 1, 2)
        options[:, 1] = origin_route_id
        first_parts.append((f_obj, base + local[firsts], prio[firsts], options, sources, waves))
        n_first += m

    if first_parts:
        f_obj, f_dst, f_prio, f_opt, f_src, f_wave = (np.concatenate(c)
                                                      for c in zip(*first_parts, strict=True))
        order = _priority_order(f_prio, f_obj, f_dst)
        taken = np.empty(len(order), dtype=np.int8)
        taken[order] = _admit(size_of[f_obj[order]], f_opt[order], table, room)
        ok = taken >= 0
        rows = np.flatnonzero(ok)
        f_source = np.full(len(f_obj), -1, dtype=np.int64)
        f_at = np.zeros(len(f_obj), dtype=np.int64)
        f_source[rows] = f_src[rows, taken[rows]]
        f_at[rows] = f_wave[rows, taken[rows]]
        done.append((f_obj[ok], f_dst[ok], f_source[ok], f_at[ok]))
        left.append((f_obj[~ok], f_dst[~ok]))
        p_obj, p_dst, p_first = (np.concatenate(c) for c in zip(*follow_parts, strict=True))
        ok = f_source[p_first] >= 0
        done.append((p_obj[ok], p_dst[ok], f_dst[p_first[ok]], f_at[p_first[ok]] + 1))
        left.append((p_obj[~ok], p_dst[~ok]))

    obj, dst, source, wave = (np.concatenate(c) for c in zip(*done, strict=True))
    order = np.lexsort((obj, dst))
    transfers = TransferTable(tuple(names), obj[order], dst[order].astype(np.int32),
                              source[order].astype(np.int32), wave[order].astype(np.int32),
                              size_of[obj[order]])

    d_obj, d_dst = (np.concatenate(c) for c in zip(*left, strict=True))
    order = np.lexsort((d_obj, d_dst))
    d_obj, d_dst = d_obj[order], d_dst[order]
    cuts = np.flatnonzero(np.diff(d_dst)) + 1
    deferred = {names[int(d[0])]: o.tolist()
                for o, d in zip(np.split(d_obj, cuts), np.split(d_dst, cuts), strict=True)
                if len(d)}

    keys = [(lk.src, lk.dst) for lk in topology.links]
    used = (budget - room)[:-1].tolist()
    return Schedule(
        transfers=transfers,
        deferred=deferred,
        link_bytes=dict(zip(keys, used, strict=True)),
        link_budget=dict(zip(keys, budget[:-1].tolist(), strict=True)),
        origin_egress=int(transfers.size[transfers.source == 0].sum()),
        waves=int(transfers.wave.max()) if len(transfers) else 0,
    )
