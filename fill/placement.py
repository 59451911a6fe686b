"""Placement of one site: which appliance holds which object, on which tier.

Objects are ranked by value density (predicted bytes served per byte stored) and placed
greedily, best first, each on the first appliances of its rendezvous order (see
rendezvous.py) that have room, on the fastest tier with room. Objects the site held last
night rank with their density times `keep_margin` and stay where they are, so a held
object gives way only to one worth `keep_margin` times more per byte; a nightly churn
budget caps the bytes filled anew. The full algorithm, with its exact tie-breaking, is
in docs/fill-placement.md; `place_site` is a pure function of its inputs.

The greedy pass is sequential by definition (each object sees the space the ones before it
left). It runs vectorized: a run of objects is placed as if every appliance and tier it
picks still had room at the start of the run; a cumulative sum per tier finds the first
object for which that was not true, everything before it is committed, that one object is
placed by the scalar rule, and the next run starts after it. Runs break only where a tier
or a churn budget is nearly full: a 500k-object site of 10 appliances takes ~200 runs,
~0.2 s (tests/fill/test_placement.py checks the result against a scalar implementation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import loops
from .model import TIERS, Catalog, Site, SiteForecast, SitePlan
from .rendezvous import appliance_hashes, catalog_hashes, catalog_lookup, order, scores

__all__ = ["PlacementParams", "place_site", "replicas"]

_T = len(TIERS)



@dataclass
class PlacementParams:
    """Knobs of the placement (defaults are the production ones)."""

    churn_budget: float = 0.1
    """Share of an appliance's capacity that may be filled anew per night by objects that
    replace held ones (space that was empty is filled on top of it, see `fill_free_space`)."""
    churn_budget_bytes: int | None = None
    """Absolute budget for the whole site in bytes, instead of `churn_budget`; split over
    the appliances in proportion to their capacity."""
    fill_free_space: bool = True
    """Space not taken by last night's (still listed) objects is filled on top of the
    budget: a new or emptied appliance fills completely in one night, as far as the
    backbone allows. False: every added byte counts against the budget."""
    keep_margin: float = 1.25
    """A held object keeps its place against an object of up to this many times its value
    density (hysteresis: moving costs backbone bytes)."""
    replica_headroom: float = 0.7
    """An appliance is planned to serve at most this share of its `serve_gbps`."""
    max_replicas: int | None = None
    """Most appliances one object is placed on; None: all of the site's."""

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        if not (self.churn_budget >= 0 and math.isfinite(self.churn_budget)):
            raise ValueError(f"churn_budget must be >= 0, not {self.churn_budget}")
        if self.churn_budget_bytes is not None and self.churn_budget_bytes < 0:
            raise ValueError(f"churn_budget_bytes must be >= 0, not {self.churn_budget_bytes}")
        if not (self.keep_margin >= 1 and math.isfinite(self.keep_margin)):
            raise ValueError(f"keep_margin must be >= 1, not {self.keep_margin}")
        if not self.replica_headroom > 0:
            raise ValueError(f"replica_headroom must be > 0, not {self.replica_headroom}")
        if self.max_replicas is not None and self.max_replicas < 1:
            raise ValueError(f"max_replicas must be >= 1, not {self.max_replicas}")


def replicas(peak_gbps: np.ndarray, site: Site, params: PlacementParams) -> np.ndarray:
    """Appliances each object should be on: ceil(peak / (headroom * serve_gbps)), clipped
    to [1, max_replicas or the site's appliance count]. serve_gbps is the site's smallest
    (a replica may land on any appliance, so plan for the weakest); when that is not a
    positive, finite number, one copy. Non-finite or negative peaks count as 0."""
    a_count = len(site.appliances)
    top = min(params.max_replicas or a_count, a_count)
    serve = min((a.serve_gbps for a in site.appliances), default=0.0)
    peak = np.nan_to_num(np.asarray(peak_gbps, dtype=np.float64), nan=0.0, posinf=0.0)
    peak = np.maximum(peak, 0.0)
    if not (serve > 0 and math.isfinite(serve)) or top <= 1:
        return np.ones(len(peak), dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        k = np.ceil(peak / (params.replica_headroom * serve))
    return np.clip(k, 1, top).astype(np.int64)


def place_site(site: Site, catalog: Catalog, fc: SiteForecast,
               previous: dict[str, dict[str, str]],
               params: PlacementParams | None = None,
               previous_numbers: dict[str, np.ndarray] | None = None) -> SitePlan:
    """Place one site (or one backbone node given as a one-appliance Site).

    *previous*: appliance -> what it held (an {id: tier} dict from read_previous, or just
    its ids). *previous_numbers*: appliance -> `catalog_lookup(catalog, previous[appliance])`
    when the caller has them already (plan.py reads them with read_previous_numbers);
    else they are looked up here.

    *previous*: appliance -> {id: tier} of last night's manifests (appliances missing or
    empty held nothing). Ids no longer in the catalog, or of size 0, are deleted.
    """
    params = params or PlacementParams()
    params.validate()
    names = [a.name for a in site.appliances]
    g_count = len(names)
    cap = np.array([[max(int(a.tiers.get(t, 0)), 0) for t in TIERS] for a in site.appliances],
                   dtype=np.int64).reshape(g_count, _T)
    sizes_all = np.asarray(catalog.size, dtype=np.int64)
    n_cat = len(sizes_all)

    # Last night, per appliance: object numbers (-1: no longer in the catalog).
    prev_ids = [list(previous.get(a, {})) for a in names]
    known = previous_numbers or {}
    prev_num = [known[a] if a in known else catalog_lookup(catalog, ids)
                for a, ids in zip(names, prev_ids, strict=True)]

    # Candidates: objects with predicted value, and everything held (even of value 0).
    f_obj = np.asarray(fc.obj, dtype=np.int64)
    f_val = np.asarray(fc.value, dtype=np.float64)
    f_peak = np.asarray(fc.peak_gbps, dtype=np.float64)
    if not (len(f_obj) == len(f_val) == len(f_peak)):
        raise ValueError(f"forecast of {fc.site}: obj, value and peak_gbps differ in length")
    if len(f_obj) and (f_obj.min() < 0 or f_obj.max() >= n_cat):
        raise ValueError(f"forecast of {fc.site}: object number outside the catalog")
    f_val = np.maximum(np.nan_to_num(f_val, nan=0.0, posinf=0.0), 0.0)
    f_peak = np.maximum(np.nan_to_num(f_peak, nan=0.0, posinf=0.0), 0.0)
    value_all = np.zeros(n_cat)
    peak_all = np.zeros(n_cat)
    value_all[f_obj] = f_val
    peak_all[f_obj] = f_peak
    is_cand = value_all > 0
    for p in prev_num:
        is_cand[p[p >= 0]] = True
    is_cand &= sizes_all > 0
    cand = np.flatnonzero(is_cand)
    n = len(cand)
    pos_of = np.full(n_cat, -1, dtype=np.int64)
    pos_of[cand] = np.arange(n)
    size = sizes_all[cand]
    value = value_all[cand]
    density = value / size
    want = replicas(peak_all[cand], site, params)

    # held[i, g]: candidate i was on appliance g last night.
    held = np.zeros((n, g_count), dtype=bool)
    prev_bytes = np.zeros(g_count, dtype=np.int64)
    for g, p in enumerate(prev_num):
        i = pos_of[p[p >= 0]]
        i = i[i >= 0]
        held[i, g] = True
        prev_bytes[g] = size[i].sum()
    budget = _budgets(cap.sum(axis=1), prev_bytes, params)

    # Rows: one "keep" row per held object (its holders, up to `want` of them, at
    # density * keep_margin, not charged to the budget) and one "new" row per object
    # that wants more appliances than it keeps (the others, at its density, charged).
    n_held = held.sum(axis=1)
    keep_want = np.minimum(n_held, want)
    k_idx = np.flatnonzero(n_held > 0)
    new_want = want - keep_want
    n_idx = np.flatnonzero(new_want > 0)
    rows = _Rows(
        cand=np.concatenate([k_idx, n_idx]),
        want=np.concatenate([keep_want[k_idx], new_want[n_idx]]),
        charged=np.concatenate([np.zeros(len(k_idx), bool), np.ones(len(n_idx), bool)]),
        eff=np.concatenate([density[k_idx] * params.keep_margin, density[n_idx]]),
        size=np.concatenate([size[k_idx], size[n_idx]]),
    )
    r_row, r_app, r_tier = greedy_pass(rows, held, catalog_hashes(catalog)[cand],
                                       appliance_hashes(names), cap.copy(), budget.copy())
    return _site_plan(site, names, cand, pos_of, size, value, density, want, rows,
                      r_row, r_app, r_tier, prev_ids, prev_num, cap, budget)


def _budgets(app_cap: np.ndarray, prev_bytes: np.ndarray, params: PlacementParams) -> np.ndarray:
    """Bytes each appliance may fill anew tonight (capped at its capacity: a budget that
    large never binds)."""
    total = int(app_cap.sum())
    if params.churn_budget_bytes is not None:
        share = (app_cap.astype(object) * int(params.churn_budget_bytes)) // max(total, 1)
        budget = np.array([min(b, c) for b, c in zip(share.tolist(), app_cap.tolist(),
                                                      strict=True)], dtype=np.int64)
    else:
        budget = np.floor(np.minimum(app_cap * params.churn_budget, app_cap)).astype(np.int64)
    if params.fill_free_space:
        budget += np.maximum(app_cap - prev_bytes, 0)
    return np.minimum(budget, app_cap).reshape(len(app_cap))


def greedy_pass(rows: _Rows, held: np.ndarray, obj_h: np.ndarray, app_h: np.ndarray,
                free: np.ndarray, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, appliance, tier) of every placement of the greedy pass; *free* and *budget*
    are updated. The compiled loop (fill/_greedy.pyx) when built, else `_Greedy`."""
    if loops.compiled is None:
        return _Greedy(rows, held, obj_h, app_h, free, budget).run()
    order = _by_eff(np.arange(len(rows)), rows.eff)
    # The rows' columns gathered in pass order here (numpy overlaps the cache misses of a
    # gather; a loop reading them in random order waits on each one: 5x slower).
    cand = rows.cand[order]
    any_held = bool(held.any())
    i, g, t = loops.compiled.run(
        np.ascontiguousarray(rows.want[order], dtype=np.int64),
        np.ascontiguousarray(rows.charged[order], dtype=np.uint8),
        np.ascontiguousarray(rows.size[order], dtype=np.int64),
        np.ascontiguousarray(held[cand] if any_held else held[:0], dtype=np.uint8), any_held,
        np.ascontiguousarray(obj_h[cand], dtype=np.uint64),
        np.ascontiguousarray(app_h, dtype=np.uint64), free, budget)
    return order[i], g, t


class _Rows:
    """Placement requests in columns: candidate index, appliances wanted, charged to the
    churn budget (a "new" row) or not (a "keep" row), effective density (the sort key),
    size."""

    def __init__(self, cand, want, charged, eff, size):
        self.cand = cand.astype(np.int64)
        self.want = want.astype(np.int64)
        self.charged = charged
        self.eff = eff
        self.size = size

    def __len__(self) -> int:
        return len(self.cand)


_WINDOW = 8192  # rows whose scores are computed at once
_RUN_FIRST = 4096  # rows of the first run in a window; doubles while no row is refused
_RUN_MIN = 64


class _Greedy:
    """The greedy pass. Rows are taken by (eff desc, row index asc); each goes to the first
    `want` appliances of its preference list on which it fits on some tier (and, if
    charged, within that appliance's budget), on the first tier in TIERS order where it
    fits. Preference lists: a keep row tries the appliances that held it (the first `want`
    of them in rendezvous order); a new row tries the others in rendezvous order.
    """

    def __init__(self, rows: _Rows, held: np.ndarray, obj_h: np.ndarray, app_h: np.ndarray,
                 free: np.ndarray, budget: np.ndarray):
        self.rows, self.held, self.obj_h, self.app_h = rows, held, obj_h, app_h
        self.free, self.budget = free, budget  # (G, T) and (G,), updated in place
        self.g_count = free.shape[0]
        self.any_held = bool(held.any())
        self.out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Place every row; returns (row, appliance, tier) of each placement."""
        rows = self.rows
        pending = np.arange(len(rows))
        while len(pending):
            pending = pending[self._could_fit(pending)]
            if not len(pending):
                break
            # Next chunk in order: enough rows to fill what is free twice, ties included.
            need = 2 * int(self.free.sum()) + 1
            avg = float(rows.size[pending].mean() * max(rows.want[pending].mean(), 1.0))
            take = max(4 * _WINDOW, int(need / max(avg, 1.0)))
            if take >= len(pending):
                chunk, pending = pending, pending[:0]
            else:
                key = -rows.eff[pending]
                first = key <= np.partition(key, take)[take]
                chunk, pending = pending[first], pending[~first]
            chunk = _by_eff(chunk, rows.eff)
            for w in range(0, len(chunk), _WINDOW):
                self._window(chunk[w:w + _WINDOW])
        if not self.out:
            e = np.zeros(0, np.int64)
            return e, e, e
        r, g, t = zip(*self.out, strict=True)
        return np.concatenate(r), np.concatenate(g), np.concatenate(t)

    def _could_fit(self, r: np.ndarray) -> np.ndarray:
        """Rows small enough to fit somewhere (room only shrinks: the others never will)."""
        if not self.g_count:
            return np.zeros(len(r), dtype=bool)
        gmax = self.free.max(axis=1)
        keep_lim, new_lim = gmax.max(), np.minimum(gmax, self.budget).max()
        return self.rows.size[r] <= np.where(self.rows.charged[r], new_lim, keep_lim)

    def _window(self, win: np.ndarray) -> None:
        win = win[self._could_fit(win)]
        if not len(win):
            return
        w = _Window(self, win)
        pos, run = 0, _RUN_FIRST
        while pos < len(win):
            end = min(pos + run, len(win))
            stop = self._run(w, pos, end)
            if stop is None:
                pos, run = end, run * 2
                continue
            w.rank(np.array([stop]))
            g, t = _place_one(int(w.size[stop]), w.pref[stop], int(w.want[stop]),
                              bool(w.charged[stop]), self.free, self.budget)
            self.out.append((np.full(len(g), win[stop], dtype=np.int64), g, t))
            pos, run = stop + 1, max(_RUN_MIN, 2 * (stop - pos))

    def _run(self, w: _Window, pos: int, end: int) -> int | None:
        """Place rows pos..end-1 of the window as if every choice still had the room it had
        at the start; commit up to the first row where that was wrong and return it (None:
        all committed)."""
        free, budget = self.free, self.budget
        sl = slice(pos, end)
        sz, want, charged = w.size[sl], w.want[sl], w.charged[sl]
        gmax = free.max(axis=1)
        # Fast path: a row wanting one appliance whose first choice has room goes there.
        g0 = w.first(pos, end)
        gc = np.maximum(g0, 0)
        fast = (g0 >= 0) & (want == 1) & (sz <= gmax[gc]) & (~charged | (sz <= budget[gc]))
        ri = np.flatnonzero(fast)
        g = g0[ri]
        slow = np.flatnonzero(~fast)
        if len(slow):
            w.rank(pos + slow)
            pref = w.pref[pos + slow]
            valid = pref >= 0
            pc = np.where(valid, pref, 0)
            ssz = sz[slow]
            ok = valid & (ssz[:, None] <= gmax[pc])
            sch = charged[slow]
            if sch.any():
                ok &= ~sch[:, None] | (ssz[:, None] <= budget[pc])
            sel = ok & (np.cumsum(ok, axis=1) <= want[slow][:, None])
            si, sj = np.nonzero(sel)
            ri = np.concatenate([ri, slow[si]])
            g = np.concatenate([g, pc[si, sj]])
            o = np.argsort(ri, kind="stable")  # merges two sorted runs
            ri, g = ri[o], g[o]
        s = sz[ri]
        tier = np.argmax(s[:, None] <= free[g], axis=1)
        b = g * _T + tier
        # Running bytes per tier (and per budget) in row order; over the room it had at
        # the start means the row did not fit after all.
        bad = _over(b, s, free.ravel())
        ch = charged[ri]
        if ch.any():
            bad[ch] |= _over(g[ch], s[ch], budget)
        stop = None
        if bad.any():
            stop = int(ri[np.argmax(bad)])
            keep = ri < stop
            ri, g, tier, s, b, ch = ri[keep], g[keep], tier[keep], s[keep], b[keep], ch[keep]
            stop += pos
        np.subtract.at(free.ravel(), b, s)
        np.subtract.at(budget, g[ch], s[ch])
        self.out.append((w.rows[pos + ri], g.astype(np.int64), tier.astype(np.int64)))
        return stop


class _Window:
    """Rows of one window with their preference lists, computed lazily: a new row wanting
    one appliance needs only its best-scored appliance until that one is full."""

    def __init__(self, gr: _Greedy, win: np.ndarray):
        rows = gr.rows
        self.rows = win
        self.size, self.want, self.charged = rows.size[win], rows.want[win], rows.charged[win]
        n, g_count = len(win), gr.g_count
        c = rows.cand[win]
        new = self.charged
        if gr.any_held:
            h = self.held = gr.held[c]
            n_held = h.sum(axis=1)
            # A keep row keeping all its holders may try them in any order.
            self.pref = np.where(h, np.arange(g_count), -1)
            self.ranked = ~new & (n_held <= self.want)
            scored = ~self.ranked
        else:
            self.held = None
            self.pref = np.full((n, g_count), -1, dtype=np.int64)
            self.ranked = np.zeros(n, dtype=bool)
            scored = new
        self.top = np.full(n, -1, dtype=np.int64)
        if scored.all():
            self.score = scores(gr.obj_h[c], gr.app_h)
        else:
            self.score = np.zeros((n, g_count), dtype=np.uint64)
            self.score[scored] = scores(gr.obj_h[c[scored]], gr.app_h)
        # Best-scored appliance of a new row; the first max is the lowest position.
        self.top[new] = np.argmax(self.score[new], axis=1)
        if gr.any_held:
            # Keep rows choosing among holders, new rows avoiding them: rank now.
            self.rank(np.flatnonzero(scored & (n_held > 0)))

    def rank(self, i: np.ndarray) -> None:
        """Compute the full preference lists of rows i."""
        i = i[~self.ranked[i]]
        if not len(i):
            return
        o = order(self.score[i])
        if self.held is None:
            self.pref[i] = o
        else:
            hh = np.take_along_axis(self.held[i], o, axis=1)
            pick = np.where(self.charged[i][:, None], ~hh,
                            hh & (np.cumsum(hh, axis=1) <= self.want[i][:, None]))
            self.pref[i] = np.where(pick, o, -1)
        self.ranked[i] = True

    def first(self, pos: int, end: int) -> np.ndarray:
        """Each row's first choice (-1: none)."""
        sl = slice(pos, end)
        out = self.top[sl].copy()
        r = np.flatnonzero(self.ranked[sl])
        if len(r):
            p = self.pref[pos + r]
            out[r] = p[np.arange(len(r)), np.argmax(p >= 0, axis=1)]
        return out


def _by_eff(idx: np.ndarray, eff: np.ndarray) -> np.ndarray:
    """idx (ascending) ordered by eff descending, ties by idx ascending."""
    key = -eff[idx]
    if loops.compiled is not None:
        return idx[loops.compiled.argsort(np.ascontiguousarray(key, dtype=np.float64))]
    o = np.argsort(key)  # introsort (SIMD): ~2x a stable sort; ties are fixed below
    k = key[o]
    same = k[1:] == k[:-1]
    if same.any():
        tied = np.zeros(len(o), dtype=bool)
        tied[1:] |= same
        tied[:-1] |= same
        run = np.cumsum(np.r_[True, ~same])
        at = np.flatnonzero(tied)
        o[at] = o[at][np.lexsort((o[at], run[at]))]
    return idx[o]


def _over(bins: np.ndarray, s: np.ndarray, room: np.ndarray) -> np.ndarray:
    """For items in order: does the running total of their bin (itself included) exceed
    room[bin]?"""
    if not len(bins):
        return np.zeros(0, dtype=bool)
    # A stable sort of 16-bit integers is a radix sort.
    o = np.argsort(bins.astype(np.int16 if room.size < 32768 else np.int64), kind="stable")
    bs = bins[o]
    so = s[o]
    cs = np.cumsum(so)
    first = np.empty(len(bs), dtype=bool)
    first[0] = True
    np.not_equal(bs[1:], bs[:-1], out=first[1:])
    start = np.maximum.accumulate(np.where(first, np.arange(len(bs)), 0))
    out = np.empty(len(bins), dtype=bool)
    out[o] = cs - (cs - so)[start] > room[bs]
    return out


def _place_one(s: int, pref: np.ndarray, want: int, charged: bool, free, budget):
    """The scalar rule for one row."""
    gs, ts = [], []
    for g in pref.tolist():
        if len(gs) == want:
            break
        if g < 0 or (charged and s > budget[g]):
            continue
        for t in range(_T):
            if s <= free[g, t]:
                free[g, t] -= s
                if charged:
                    budget[g] -= s
                gs.append(g)
                ts.append(t)
                break
    return np.array(gs, dtype=np.int64), np.array(ts, dtype=np.int64)


def _site_plan(site, names, cand, pos_of, size, value, density, want, rows,
               r_row, r_app, r_tier, prev_ids, prev_num, cap, budget) -> SitePlan:
    n = len(cand)
    r_cand = rows.cand[r_row]
    tier_of = np.full((len(names), n), -1, dtype=np.int8)
    tier_of[r_app, r_cand] = r_tier
    new_of = np.zeros((len(names), n), dtype=bool)
    new_of[r_app, r_cand] = rows.charged[r_row]
    holdings, tiers, added, deleted, priority, per_app = {}, {}, {}, {}, {}, {}
    churn = 0
    for g, name in enumerate(names):
        idx = np.flatnonzero(tier_of[g] >= 0)
        t = tier_of[g, idx]
        new = new_of[g, idx]
        holdings[name] = cand[idx]
        tiers[name] = t
        added[name] = cand[idx[new]]
        priority[name] = density[idx[new]]
        # Deleted: last night's ids not kept here (gone from the catalog, size 0, surplus
        # replicas, or outbid).
        p = prev_num[g]
        i = np.where(p >= 0, pos_of[np.maximum(p, 0)], -1)
        gone = i < 0
        gone[~gone] = tier_of[g, i[~gone]] < 0
        ids = prev_ids[g]
        deleted[name] = sorted(ids[k] for k in np.flatnonzero(gone).tolist())
        add_bytes = int(size[idx[new]].sum())
        churn += add_bytes
        # Float sums of integers are exact below 2**53 bytes (8 PiB).
        tier_bytes = np.bincount(t, weights=size[idx], minlength=_T).round().astype(np.int64)
        per_app[name] = {
            "objects": len(idx),
            "bytes": dict(zip(TIERS, tier_bytes.tolist(), strict=True)),
            "capacity": dict(zip(TIERS, cap[g].tolist(), strict=True)),
            "added": int(new.sum()),
            "added_bytes": add_bytes,
            "deleted": len(deleted[name]),
            "churn_budget": int(budget[g]),
        }
    placed = np.bincount(r_cand, minlength=n)
    held_now = placed > 0
    total_value = float(value.sum())
    held_value = float(value[held_now].sum())
    stats = {
        "candidates": n,
        "objects": int(held_now.sum()),
        "replicas": len(r_cand),
        "under_replicated": int((placed[held_now] < want[held_now]).sum()),
        "value_total": total_value,
        "value_held": held_value,
        "bytes": {tn: sum(a["bytes"][tn] for a in per_app.values()) for tn in TIERS},
        "capacity": dict(zip(TIERS, cap.sum(axis=0).tolist(), strict=True)),
        "churn_budget": int(budget.sum()),
        "appliances": per_app,
    }
    return SitePlan(site=site.name, holdings=holdings, tiers=tiers, added=added,
                    deleted=deleted,
                    expected_offload=held_value / total_value if total_value > 0 else 0.0,
                    churn_bytes=churn, priority=priority, stats=stats)
