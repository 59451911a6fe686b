"""Synthetic request traces of a video CDN appliance, with the catalog a planner would know.

    .venv/bin/python bench/fill/tracegen.py --shape A --seed 1 --out DIR [--days 14] ...

Writes ``DIR/trace.csv`` (``ts,id,size,bytes``, one line per request, in time order),
``DIR/catalog.csv`` (``id,size,title,type,release``) and ``DIR/shape.json`` (every
parameter, so a trace can be made again). Deterministic from the shape and the seed.

The model (docs/fill-simulate.md has the long form):

* **Catalog.** ``titles`` titles released before the trace starts, each with ``encodes``
  encodes (one object each) of log-uniform size in [``min_size``, ``max_size``]; a title's
  views go to its encodes by fixed shares (a device mix, Dirichlet-drawn).
* **Popularity.** Title weights follow Zipf(``alpha``) over a random ranking, and drift
  day by day (a log-normal random walk of step ``drift``: slow trends up and down).
* **Releases.** ``releases_per_day`` new titles (Poisson) from ``release_lead_days`` before
  the trace to ``release_tail_days`` after it, released at ``release_hour`` UTC. A release
  peaks on day one at the weight of a title ranked log-uniformly in [1, ``release_rank``],
  then decays with half-life ``release_half_life_days`` towards ``release_floor`` of its
  peak. Release dates are in the catalog ahead of time, as a real catalog has them.
* **Departures.** ``leave_fraction`` of the catalog titles leave at a random midnight
  within the trace; they get no request after it. The catalog still lists them (the
  catalog contract has no column for an end date).
* **Daily cycle.** Views per hour follow ``1 + diurnal * cos(2 pi (h - peak_hour) / 24)``;
  ``views_per_day`` is the daily total.
* **Requests.** A view watches a fraction of the object (uniform in [``watch_min``, 1]) and
  fetches it in ``segments`` range requests of equal bytes, spaced over the watching time
  (the object's runtime is ``runtime`` seconds). ``bytes`` is what one request sends;
  ``size`` is the whole object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY = 86400.0
MB = 10**6

# 2026-01-05 00:00 UTC, a Monday: traces start at midnight, so a split at 0.5 of 14 days
# falls on a midnight too.
DEFAULT_START = 1767571200


@dataclass(frozen=True)
class TraceShape:
    """Every parameter of a generated trace (see the module docstring for the model)."""

    name: str = "A"
    titles: int = 2000
    encodes: tuple[int, int] = (3, 6)  # encodes per title, uniform in [lo, hi]
    min_size: int = 100 * MB
    max_size: int = 5000 * MB
    days: int = 14
    views_per_day: int = 100_000
    segments: int = 1  # range requests per view
    watch_min: float = 0.1  # a view watches a fraction uniform in [watch_min, 1]
    runtime: float = 5400.0  # seconds to watch a whole object
    alpha: float = 1.0  # Zipf exponent of title popularity
    drift: float = 0.1  # daily log-normal step of each catalog title's weight
    releases_per_day: float = 3.0
    release_rank: int = 100  # a release peaks like a title of rank log-uniform in [1, this]
    release_half_life_days: float = 2.0
    release_floor: float = 0.1  # share of its peak a release settles at
    release_hour: float = 8.0  # UTC hour of releases
    release_lead_days: int = 14  # releases this many days before the trace (decaying at start)
    release_tail_days: int = 3  # announced releases after the trace's end (no requests)
    leave_fraction: float = 0.05  # catalog titles that leave during the trace
    diurnal: float = 0.6  # amplitude of the daily cycle
    peak_hour: float = 21.0  # UTC hour of the most views
    start: int = DEFAULT_START
    seed: int = 1


# Differently shaped workloads: the planner is judged on traces it has never seen, so the
# benchmark runs several. B has a flatter popularity (alpha 0.8), many more releases with
# short spikes, more departures, stronger drift, a weaker daily cycle peaking at another
# hour, and more (and smaller) objects. C is A's views fetched as 4 range requests each:
# a cache that admits the whole object on the first range's miss hits the other three,
# which no nightly plan can (docs/fill-simulate.md, "Range requests").
_A = TraceShape()
SHAPES: dict[str, TraceShape] = {
    "A": _A,
    "B": TraceShape(name="B", titles=5000, encodes=(2, 4), min_size=100 * MB,
                    max_size=3000 * MB, views_per_day=150_000, alpha=0.8, drift=0.25,
                    releases_per_day=10.0, release_rank=300, release_half_life_days=0.75,
                    release_floor=0.05, release_hour=0.0, leave_fraction=0.15, diurnal=0.3,
                    peak_hour=13.0, seed=2),
    "C": dataclasses.replace(_A, name="C", segments=4),
}


@dataclass
class GeneratedTrace:
    """A trace in memory: per request (time order) and per object (id order)."""

    shape: TraceShape
    ts: np.ndarray  # float64 epoch seconds, non-decreasing
    obj: np.ndarray  # int64 object number
    bytes: np.ndarray  # int64 bytes of the request
    ids: list[str]  # object ids, sorted
    size: np.ndarray  # int64 object size
    title: np.ndarray  # int64 title number of each object
    release: np.ndarray  # int64 epoch seconds the object's title is released

    def write(self, out: Path) -> None:
        """trace.csv, catalog.csv and shape.json in *out* (created if needed)."""
        out.mkdir(parents=True, exist_ok=True)
        ids = np.asarray(self.ids, dtype=object)
        with open(out / "catalog.csv", "w", encoding="utf-8") as f:
            f.write("id,size,title,type,release\n")
            for i, oid in enumerate(self.ids):
                f.write(f"{oid},{self.size[i]},t{self.title[i]:05d},video,{self.release[i]}\n")
        with open(out / "trace.csv", "w", encoding="utf-8") as f:
            f.write("ts,id,size,bytes\n")
            step = 500_000
            for lo in range(0, len(self.ts), step):
                ts = self.ts[lo:lo + step]
                obj = self.obj[lo:lo + step]
                rows = zip(np.char.mod("%.3f", ts).tolist(), ids[obj].tolist(),
                           self.size[obj].tolist(), self.bytes[lo:lo + step].tolist(),
                           strict=True)
                f.write("".join(f"{t},{o},{s},{b}\n" for t, o, s, b in rows))
        shape = dataclasses.asdict(self.shape)
        shape["requests"] = len(self.ts)
        shape["objects"] = len(self.ids)
        shape["catalog_bytes"] = int(self.size.sum())
        (out / "shape.json").write_text(json.dumps(shape, indent=1) + "\n", encoding="utf-8")


def generate(shape: TraceShape) -> GeneratedTrace:
    """The trace and catalog of *shape*; the same shape gives the same arrays."""
    rng = np.random.default_rng(shape.seed)
    start, days = float(shape.start), shape.days
    end = start + days * DAY

    # Titles: the catalog at the start, then releases (some before the start, so the trace
    # opens with releases still decaying; some after the end: announced, never requested).
    n_old = shape.titles
    lo_day, hi_day = -shape.release_lead_days, days + shape.release_tail_days
    per_day = rng.poisson(shape.releases_per_day, hi_day - lo_day)
    rel_day = np.repeat(np.arange(lo_day, hi_day), per_day)
    n_new = len(rel_day)
    n_titles = n_old + n_new
    release = np.empty(n_titles, dtype=np.int64)
    # Old titles: released between ~3 years and ~1 month before the start.
    release[:n_old] = start - rng.uniform(30, 1100, n_old).astype(np.int64) * int(DAY)
    release[n_old:] = (start + rel_day * DAY + shape.release_hour * 3600).astype(np.int64)

    # Base weights: Zipf over a random ranking of the old titles; releases peak like a
    # title of log-uniform rank in [1, release_rank].
    rank = rng.permutation(n_old) + 1
    base = np.empty(n_titles)
    base[:n_old] = rank.astype(float) ** -shape.alpha
    new_rank = np.exp(rng.uniform(0, np.log(shape.release_rank), n_new))
    base[n_old:] = new_rank ** -shape.alpha

    # Departures: a share of the old titles leave at a midnight inside the trace.
    leave = np.full(n_titles, np.inf)
    leaving = rng.choice(n_old, int(round(shape.leave_fraction * n_old)), replace=False)
    leave[leaving] = start + rng.integers(1, days, len(leaving)) * DAY

    # Drift: one log-normal step per day for every title (releases drift too, on top of
    # their decay).
    walk = np.cumsum(rng.normal(0, shape.drift, (days + 1, n_titles)), axis=0)
    drift = np.exp(walk - walk[0])

    # Objects: encodes per title, log-uniform sizes, a device-mix share per encode.
    k = rng.integers(shape.encodes[0], shape.encodes[1] + 1, n_titles)
    obj_title = np.repeat(np.arange(n_titles), k)
    n_obj = len(obj_title)
    size = np.exp(rng.uniform(np.log(shape.min_size), np.log(shape.max_size), n_obj))
    size = size.astype(np.int64)
    share = rng.gamma(2.0, 1.0, n_obj)
    share /= np.bincount(obj_title, weights=share)[obj_title]
    first_obj = np.concatenate([[0], np.cumsum(k)[:-1]])
    cum = np.cumsum(share)
    share_key = obj_title + cum - np.repeat(cum[first_obj] - share[first_obj], k)
    ids = [f"t{t:05d}-e{j}" for t, n in enumerate(k.tolist()) for j in range(n)]
    # Ids sort as (title, encode) already: object number = position in the sorted ids.
    assert ids == sorted(ids)

    # Views: hour by hour, Poisson count around the daily cycle, titles by their weight at
    # the hour's middle, encodes by their shares, times uniform inside the hour.
    hours = days * 24
    h_mid = start + (np.arange(hours) + 0.5) * 3600
    cycle = 1 + shape.diurnal * np.cos(2 * np.pi * ((np.arange(hours) % 24) + 0.5
                                                    - shape.peak_hour) / 24)
    views_h = rng.poisson(shape.views_per_day / 24 * cycle)
    is_new = np.arange(n_titles) >= n_old
    hl = shape.release_half_life_days * DAY
    view_ts, view_obj = [], []
    for h in range(hours):
        t = h_mid[h]
        w = base * drift[int((t - start) // DAY)]
        age = t - release
        spike = shape.release_floor + (1 - shape.release_floor) * 0.5 ** (np.maximum(age, 0) / hl)
        w = np.where(is_new, w * spike, w)
        w = np.where((age < 0) | (t >= leave), 0.0, w)
        titles = rng.choice(n_titles, views_h[h], p=w / w.sum())
        # Encode: inverse CDF of the title's shares; title t's objects hold the
        # cumulative keys (t, t + 1], so one searchsorted finds the object.
        pick = np.searchsorted(share_key, titles + rng.random(views_h[h]), side="right")
        view_obj.append(np.clip(pick, first_obj[titles], first_obj[titles] + k[titles] - 1))
        view_ts.append(start + h * 3600 + rng.random(views_h[h]) * 3600)
    v_ts = np.concatenate(view_ts)
    v_obj = np.concatenate(view_obj)

    # Requests: segments per view, equal bytes, spaced over the watching time.
    n_views = len(v_ts)
    watched = rng.uniform(shape.watch_min, 1.0, n_views)
    seg = shape.segments
    r_ts = (v_ts[:, None] + np.arange(seg)[None, :] * (watched * shape.runtime / seg)[:, None])
    r_obj = np.repeat(v_obj, seg)
    r_bytes = np.maximum(1, (size[v_obj] * watched / seg).astype(np.int64))
    r_bytes = np.repeat(r_bytes, seg)
    r_ts = np.round(r_ts.ravel(), 3)
    keep = r_ts < end
    order = np.argsort(r_ts[keep], kind="stable")
    return GeneratedTrace(
        shape=shape, ts=r_ts[keep][order], obj=r_obj[keep][order],
        bytes=r_bytes[keep][order], ids=ids, size=size, title=obj_title,
        release=release[obj_title])


def _parse(argv: list[str] | None) -> tuple[TraceShape, Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="A")
    p.add_argument("--out", type=Path, required=True, help="folder for trace.csv, catalog.csv")
    for f in dataclasses.fields(TraceShape):
        if f.name in ("name", "encodes"):
            continue
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       type=int if f.type == "int" else float, metavar="N")
    args = p.parse_args(argv)
    shape = SHAPES[args.shape]
    over = {f.name: getattr(args, f.name) for f in dataclasses.fields(TraceShape)
            if getattr(args, f.name, None) is not None}
    return dataclasses.replace(shape, **over), args.out


def main(argv: list[str] | None = None) -> int:
    shape, out = _parse(argv)
    t0 = time.monotonic()
    g = generate(shape)
    g.write(out)
    print(f"shape {shape.name} seed {shape.seed}: {len(g.ts):,} requests, {len(g.ids):,} objects, "
          f"{g.size.sum() / 1e12:.2f} TB catalog -> {out} ({time.monotonic() - t0:.1f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
