"""`oca-fill simulate`: plan from the first part of a request trace, replay the rest.

One appliance of a given capacity (a one-appliance site, tier hdd = capacity, serving
bandwidth unbounded) is planned by the real pipeline -- demand from the history,
`fill.forecast.forecast`, `fill.placement.place_site` -- at the split time, then again
every `replan` of trace time with all history so far and the current holdings as the
previous manifest (so stability and the churn budget apply). A replayed request is a hit
when its object is held. Fills are instantaneous: link budgets and fill windows are not
modelled here (`oca-fill plan` reports them).

Figures: byte hit ratio (hit bytes / requested bytes), request hit ratio, churn, the
plan-once variant (the first plan kept for the whole replay), and two diagnostics for the
forecaster's and placement's authors: the *hindsight* plan of each period (the objects
that served the most bytes in that very period per byte of capacity, chosen greedily: what
a perfect forecast with unlimited churn would hold) and where the missed bytes went.
docs/fill-simulate.md has the definitions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from oca.errors import UsageError
from oca.units import format_size, parse_duration, parse_size

from .model import (
    TIER_INDEX,
    ApplianceSpec,
    Catalog,
    Demand,
    Link,
    Site,
    SiteForecast,
    SitePlan,
    Topology,
)
from .trace import Trace, read_trace

__all__ = ["SITE", "APPLIANCE", "simulate", "split_index", "history_demand", "hindsight_holdings",
           "format_text"]

log = logging.getLogger("oca.fill.simulate")

SITE = "sim"
APPLIANCE = "sim-1"
TIER = "hdd"

# Demand decay when fill.forecast's ForecastParams cannot be read (it normally is): the
# defaults `oca-fill plan` documents (--half-life 1d).
_HALF_LIFE = 86400.0
_RECENT_HALF_LIFE = 6 * 3600.0

ForecastFn = Callable[..., dict[str, SiteForecast]]
PlaceFn = Callable[..., SitePlan]


def split_index(trace: Trace, split: float) -> tuple[int, float]:
    """(index of the first replayed request, split time): the split is the fraction
    *split* of the trace's time span; requests at or after the split time are replayed."""
    if not 0.0 < split < 1.0:
        raise UsageError(f"split must be between 0 and 1, not {split}")
    t0, t1 = float(trace.ts[0]), float(trace.ts[-1])
    t_split = t0 + split * (t1 - t0)
    return int(np.searchsorted(trace.ts, t_split, side="left")), t_split


def history_demand(trace: Trace, end: int, now: float, half_life: float,
                   recent_half_life: float) -> Demand:
    """Demand of requests [0, end) of *trace*, by the rules `fill.logs.read_demand` applies
    to access logs (one site, `SITE`; every request is a 200/206 of its `bytes`): a request
    at ts weighs 0.5 ** ((now - ts) / half_life) in `requests` and `bytes`, with
    `recent_half_life` in `recent`; `first_day` counts (undecayed) the requests in the
    first `logs.FIRST_DAY` seconds after the object's catalog release."""
    from .logs import FIRST_DAY

    ts, obj, nbytes = trace.ts[:end], trace.obj[:end], trace.bytes[:end]
    cat = trace.catalog
    n = len(cat)
    age = np.maximum(now - ts, 0.0)
    w = np.exp2(-age / half_life)
    wr = np.exp2(-age / recent_half_life)
    count = np.bincount(obj, minlength=n)
    rows = np.flatnonzero(count)
    last = np.full(n, -np.inf)
    np.maximum.at(last, obj, ts)
    since = ts - cat.release[obj]  # NaN (no release) compares False
    first = (since >= 0) & (since < FIRST_DAY)
    return Demand(
        sites=[SITE], site_idx=np.zeros(len(rows), dtype=np.int32), obj_idx=rows.astype(np.int64),
        requests=np.bincount(obj, weights=w, minlength=n)[rows],
        bytes=np.bincount(obj, weights=w * nbytes, minlength=n)[rows],
        recent=np.bincount(obj, weights=wr, minlength=n)[rows],
        last_ts=last[rows], lines=int(end),
        start_ts=float(ts[0]) if end else float("nan"),
        end_ts=float(ts[-1]) if end else float("nan"),
        first_day=np.bincount(obj[first], minlength=n).astype(np.float64))


def hindsight_holdings(size: np.ndarray, served: np.ndarray, capacity: int) -> np.ndarray:
    """Boolean holdings that greedily maximise *served* bytes under *capacity*: objects by
    served bytes per byte of size, each taken when it still fits."""
    cand = np.flatnonzero(served > 0)
    # Ties by object number (stable sort), like the planner.
    order = cand[np.argsort(-(served[cand] / np.maximum(size[cand], 1)), kind="stable")]
    held = np.zeros(len(size), dtype=bool)
    take = np.cumsum(size[order]) <= capacity
    k = int(np.argmin(take)) if not take.all() else len(order)
    held[order[:k]] = True
    room = capacity - int(size[order[:k]].sum())
    for o in order[k:].tolist():
        if size[o] <= room:
            held[o] = True
            room -= int(size[o])
    return held


def _one_appliance(capacity: int) -> tuple[Site, Topology]:
    appliance = ApplianceSpec(name=APPLIANCE, url="http://127.0.0.1:0", serve_gbps=1e9,
                              tiers={TIER: capacity})
    site = Site(name=SITE, upstream=None, fill_window=(0, 0), appliances=(appliance,))
    topology = Topology(origin="origin", origin_url="http://127.0.0.1:0", backbone=(),
                        sites=(site,), links=(Link("origin", SITE, 1e9),))
    return site, topology


def _params(forecast_params, placement_params):
    if forecast_params is None:
        from .forecast import ForecastParams
        forecast_params = ForecastParams()
    if placement_params is None:
        from .placement import PlacementParams
        placement_params = PlacementParams()
    return forecast_params, placement_params


def simulate(trace: Trace | str | Path, capacity: int | str, split: float = 0.5,
             replan: float | str = "24h", catalog: Catalog | str | Path | None = None, *,
             forecast_params=None, placement_params=None,
             forecast_fn: ForecastFn | None = None, place_fn: PlaceFn | None = None) -> dict:
    """Plan one appliance of *capacity* bytes from the first *split* of *trace* (by time),
    replay the rest, re-planning every *replan* (0: plan once). Returns the figures.

    *trace* is a `Trace` or a path (CSV or access-log JSONL; *catalog* a `Catalog` or a
    catalog CSV path, needed for JSONL, optional for CSV: it gives the planner the
    `release` and `title` columns). *forecast_fn* and *place_fn* default to
    `fill.forecast.forecast` and `fill.placement.place_site` (same signatures).
    """
    t_start = time.monotonic()
    try:
        capacity = parse_size(capacity)
        replan = parse_duration(replan)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if capacity <= 0:
        raise UsageError("capacity must be more than 0 bytes")
    if not isinstance(trace, Trace):
        if catalog is not None and not isinstance(catalog, Catalog):
            from .catalog import load_catalog
            catalog = load_catalog(catalog)
        trace = read_trace(trace, catalog)
    elif catalog is not None:
        raise UsageError("a Trace carries its catalog: pass catalog= to read_trace instead")
    if forecast_fn is None:
        from .forecast import forecast as forecast_fn
    if place_fn is None:
        from .placement import place_site as place_fn
    fparams, pparams = _params(forecast_params, placement_params)
    half_life = float(getattr(fparams, "half_life", None) or _HALF_LIFE)
    recent_half_life = float(getattr(fparams, "recent_half_life", None) or _RECENT_HALF_LIFE)

    cat = trace.catalog
    size = cat.size
    n_obj = len(cat)
    first, t_split = split_index(trace, split)
    n = len(trace)
    if first >= n or first == 0:
        raise UsageError(f"{trace.path}: split {split} leaves no requests to "
                         f"{'replay' if first >= n else 'plan from'}")
    t_end = float(trace.ts[-1])
    if replan > 0:
        starts = t_split + replan * np.arange(int(np.ceil((t_end - t_split) / replan)) + 1)
        starts = starts[starts <= t_end]
    else:
        starts = np.array([t_split])
    bounds = np.searchsorted(trace.ts, starts, side="left").tolist() + [n]
    site, topology = _one_appliance(capacity)

    held = np.zeros(n_obj, dtype=bool)
    holdings: dict[str, str] = {}
    periods = []
    hit_b = hit_r = 0
    once_b = once_r = 0
    hind_b = hind_r = 0
    missed = {"seen": 0, "unseen_release_known": 0, "unseen": 0}
    plan_seconds = 0.0
    initial_fill = churn = 0
    seen = np.zeros(n_obj, dtype=bool)
    seen[trace.obj[:first]] = True
    has_release = np.isfinite(cat.release)
    held_once = None
    for k, now in enumerate(starts.tolist()):
        a, b = bounds[k], bounds[k + 1]
        t0 = time.monotonic()
        demand = history_demand(trace, a, now, half_life, recent_half_life)
        fc = forecast_fn(demand, cat, topology, now, fparams)[SITE]
        plan = place_fn(site, cat, fc, {APPLIANCE: holdings}, pparams)
        plan_seconds += time.monotonic() - t0
        mine = np.asarray(plan.holdings.get(APPLIANCE, np.zeros(0, np.int64)), dtype=np.int64)
        tiers = np.asarray(plan.tiers.get(APPLIANCE, np.zeros(0, np.int8)))
        if (tiers != TIER_INDEX[TIER]).any():
            raise RuntimeError(f"place_site put objects on tiers other than {TIER}, which "
                               f"the appliance does not have (plan {k} at {now:.0f})")
        new_held = np.zeros(n_obj, dtype=bool)
        new_held[mine] = True
        held_bytes = int(size[new_held].sum())
        if held_bytes > capacity:
            raise RuntimeError(f"place_site planned {held_bytes} bytes on a {capacity}-byte "
                               f"appliance (plan {k} at {now:.0f})")
        added = int(size[new_held & ~held].sum())
        if k == 0:
            initial_fill = added
            held_once = new_held
        else:
            churn += added
        held = new_held
        holdings = {cat.ids[o]: TIER for o in np.flatnonzero(held).tolist()}

        obj, nbytes = trace.obj[a:b], trace.bytes[a:b]
        hit = held[obj]
        pb, pr = int(nbytes[hit].sum()), int(hit.sum())
        hit_b += pb
        hit_r += pr
        once = held_once[obj]
        once_b += int(nbytes[once].sum())
        once_r += int(once.sum())
        served = np.bincount(obj, weights=nbytes, minlength=n_obj)
        hind = hindsight_holdings(size, served, capacity)[obj]
        hb = int(nbytes[hind].sum())
        hind_b += hb
        hind_r += int(hind.sum())
        miss = ~hit
        mseen = seen[obj]
        missed["seen"] += int(nbytes[miss & mseen].sum())
        missed["unseen_release_known"] += int(nbytes[miss & ~mseen & has_release[obj]].sum())
        missed["unseen"] += int(nbytes[miss & ~mseen & ~has_release[obj]].sum())
        seen[obj] = True
        total_b = int(nbytes.sum())
        periods.append({
            "start": now, "requests": b - a, "bytes": total_b,
            "byte_hit_ratio": _ratio(pb, total_b), "request_hit_ratio": _ratio(pr, b - a),
            "hindsight_byte_hit_ratio": _ratio(hb, total_b),
            "held_objects": int(held.sum()), "held_bytes": held_bytes, "added_bytes": added,
            "plan_seconds": round(time.monotonic() - t0, 3)})
        log.info("plan %d/%d at %s: %d objects, %s held, %s added; period byte hit ratio "
                 "%.3f (hindsight %.3f)", k + 1, len(starts),
                 time.strftime("%Y-%m-%d %H:%M", time.gmtime(now)), int(held.sum()),
                 format_size(held_bytes), format_size(added), _ratio(pb, total_b),
                 _ratio(hb, total_b))

    replay_b = int(trace.bytes[first:].sum())
    replay_r = n - first
    return {
        "trace": trace.path, "requests": n, "objects": n_obj, "catalog_bytes": int(size.sum()),
        "not_in_catalog": trace.not_in_catalog, "skipped_lines": dict(trace.skipped),
        "capacity": capacity, "split": split, "split_ts": t_split, "replan_seconds": replan,
        "history_requests": first, "replay_requests": replay_r, "replay_bytes": replay_b,
        "byte_hit_ratio": _ratio(hit_b, replay_b), "request_hit_ratio": _ratio(hit_r, replay_r),
        "hit_bytes": hit_b, "hit_requests": hit_r,
        "plans": len(starts), "initial_fill_bytes": initial_fill, "churn_bytes": churn,
        "plan_once": {"byte_hit_ratio": _ratio(once_b, replay_b),
                      "request_hit_ratio": _ratio(once_r, replay_r)},
        "hindsight": {"byte_hit_ratio": _ratio(hind_b, replay_b),
                      "request_hit_ratio": _ratio(hind_r, replay_r)},
        "missed_bytes": missed,
        "plan_seconds": round(plan_seconds, 3),
        "seconds": round(time.monotonic() - t_start, 3),
        "periods": periods,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def format_text(result: dict) -> str:
    """The figures of `simulate` as a few lines for a terminal."""
    r = result
    every = r["replan_seconds"]
    replan = (f"every {every / 3600:g} h" if every >= 3600 else f"every {every:g} s")
    replan = f"{replan} ({r['plans']} plans)" if every else "once"
    missed = r["missed_bytes"]
    total_missed = sum(missed.values()) or 1
    lines = [
        f"trace {r['trace']}: {r['requests']:,} requests, {r['objects']:,} objects, "
        f"catalog {format_size(r['catalog_bytes'])}",
        f"capacity {format_size(r['capacity'])} "
        f"({r['capacity'] / max(r['catalog_bytes'], 1):.1%} of the catalog); split at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r['split_ts']))} UTC: "
        f"{r['history_requests']:,} requests of history, {r['replay_requests']:,} replayed",
        f"planned {replan}:   byte hit ratio {r['byte_hit_ratio']:.4f}   "
        f"request hit ratio {r['request_hit_ratio']:.4f}",
        f"planned once:        byte hit ratio {r['plan_once']['byte_hit_ratio']:.4f}   "
        f"request hit ratio {r['plan_once']['request_hit_ratio']:.4f}",
        f"hindsight per period: byte hit ratio {r['hindsight']['byte_hit_ratio']:.4f}   "
        f"request hit ratio {r['hindsight']['request_hit_ratio']:.4f}",
        f"fill: initial {format_size(r['initial_fill_bytes'])}, churn over re-plans "
        f"{format_size(r['churn_bytes'])}",
        "missed bytes: " + ", ".join(f"{k} {v / total_missed:.1%}" for k, v in missed.items()),
        f"planning took {r['plan_seconds']:.1f} s of {r['seconds']:.1f} s",
    ]
    if r["not_in_catalog"]:
        lines.append(f"note: {r['not_in_catalog']} objects of the trace are not in the catalog "
                     f"(planned without release dates)")
    if r["skipped_lines"]:
        lines.append(f"note: access-log lines skipped: {r['skipped_lines']}")
    return "\n".join(lines) + "\n"
