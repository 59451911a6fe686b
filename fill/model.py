"""The planner's shared data model: what each stage hands to the next.

    catalog.py   CSV           -> Catalog      (objects, numbered by sorted id)
    topology.py  JSON          -> Topology     (origin, backbone, sites, appliances, links)
    logs.py      access logs   -> Demand       (decayed demand per site and object)
    forecast.py  Demand + Catalog + now -> SiteForecast per site (value of holding an object)
    placement.py SiteForecast + Topology + previous manifests -> SitePlan per site
    backbone.py  SitePlans + Topology -> sources, waves, link use, deferrals
    manifest.py  plans -> manifests/<appliance>.json (+ reading --previous)
    summary.py   everything -> summary (text or --json)

Objects are numbered by their position in the catalog sorted by id, and every
array indexed by object uses that number. Sites are independent units of work:
placement of one site needs only the catalog, the topology, that site's forecast
and its previous manifests, so sites run in a process pool or on Dask.

Determinism: same inputs and --now give byte-identical manifests. No dict or set
iteration order, no hash randomisation (xxhash, not hash()), no wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from oca.config import TIERS

__all__ = ["TIERS", "TIER_INDEX", "FLEET", "Catalog", "ApplianceSpec", "BackboneSpec", "Site",
           "Link", "Topology", "Demand", "SiteForecast", "SitePlan", "Transfer"]

FLEET = "*"
"""The pseudo-site of log lines whose appliance is missing or unknown: fleet-wide demand."""


@dataclass(frozen=True)
class Catalog:
    """Objects sorted by id. Index i is object number i everywhere in the planner."""

    ids: np.ndarray  # dtype object (str), sorted, unique
    size: np.ndarray  # int64 bytes
    xxh3: np.ndarray  # dtype object: 32 lowercase hex digits, or None when unknown
    title: np.ndarray  # int32 index into `titles`; every object has one (its id when none given)
    titles: tuple[str, ...]
    kind: np.ndarray  # dtype object: the `type` column, or None
    release: np.ndarray  # float64 epoch seconds when watchable; NaN when not given

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self) -> dict[str, int]:
        """id -> object number (build once per process; 1M entries ~100 MB)."""
        return {oid: i for i, oid in enumerate(self.ids.tolist())}


def window_seconds(fill_window: tuple[int, int]) -> int:
    """Seconds in a fill window (start, end) after midnight UTC: end < start wraps past
    midnight; start == end is the whole day."""
    start, end = fill_window
    return (end - start) % 86400 or 86400


@dataclass(frozen=True)
class ApplianceSpec:
    name: str
    url: str
    serve_gbps: float
    tiers: dict[str, int]  # tier -> bytes, only tiers it has, in TIERS order


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    url: str
    tiers: dict[str, int]
    # Extension of DESIGN.md's topology: the node's own fill window (links into it carry
    # fills only then); (0, 0) is the whole day, as when the JSON has none.
    fill_window: tuple[int, int] = (0, 0)

    @property
    def window_seconds(self) -> int:
        return window_seconds(self.fill_window)


@dataclass(frozen=True)
class Site:
    name: str
    upstream: str | None  # a backbone node name, or None: fills straight from the origin
    fill_window: tuple[int, int]  # (start, end) seconds after midnight UTC; end < start wraps
    appliances: tuple[ApplianceSpec, ...]

    @property
    def window_seconds(self) -> int:
        return window_seconds(self.fill_window)


@dataclass(frozen=True)
class Link:
    src: str  # node name: origin, a backbone node or a site
    dst: str
    gbps: float

    def budget(self, seconds: float) -> int:
        """Bytes the link carries in *seconds*."""
        return int(self.gbps * 1e9 / 8 * seconds)


@dataclass(frozen=True)
class Topology:
    origin: str
    origin_url: str
    backbone: tuple[BackboneSpec, ...]
    sites: tuple[Site, ...]
    links: tuple[Link, ...]

    def site_of(self) -> dict[str, str]:
        """appliance name -> site name."""
        return {a.name: s.name for s in self.sites for a in s.appliances}

    def link(self, src: str, dst: str) -> Link | None:
        for lk in self.links:
            if lk.src == src and lk.dst == dst:
                return lk
        return None


@dataclass
class Demand:
    """Decayed demand aggregated from access logs, one row per (site, object) seen.

    `sites[site_idx[r]]` is the row's site (FLEET for lines without a known appliance).
    Decay: a request at time ts weighs 0.5 ** ((now - ts) / half_life); `recent` uses a
    short half-life (trend), `requests` the configured one.
    """

    sites: list[str]
    site_idx: np.ndarray  # int32
    obj_idx: np.ndarray  # int64 object number
    requests: np.ndarray  # float64 decayed request count
    bytes: np.ndarray  # float64 decayed body bytes
    recent: np.ndarray  # float64 decayed request count, short half-life
    last_ts: np.ndarray  # float64 latest request
    lines: int = 0
    malformed: int = 0
    unknown_objects: int = 0  # lines naming an id not in the catalog
    # Added by logs.py (docs/fill-inputs.md): lines of a known object whose status is not
    # demand (400, 403, 416, 500, ...); the time span of the valid lines (NaN when none);
    # per object number, the fleet-wide requests (not decayed) in the first day after
    # the object's catalog `release` (logs.FIRST_DAY), the forecaster's evidence of how
    # big a release's first day gets. Empty when built without logs.py.
    ignored_status: int = 0
    start_ts: float = float("nan")
    end_ts: float = float("nan")
    first_day: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class SiteForecast:
    """What holding each object at one site is worth tomorrow."""

    site: str
    obj: np.ndarray  # int64 object numbers with any predicted demand, ascending
    value: np.ndarray  # float64 predicted bytes served per day at this site if held
    peak_gbps: np.ndarray  # float64 predicted peak-hour serving rate of the object


TIER_INDEX = {t: i for i, t in enumerate(TIERS)}
"""Tiers as small integers in arrays: 0 ssd, 1 flash, 2 hdd."""


@dataclass
class SitePlan:
    """One site's placement: for each appliance, the objects it holds and on which tier.

    Arrays, not dicts: a fleet of 1,000 appliances holds tens of millions of objects,
    which as Python dicts would not fit in memory (~100 bytes an entry).
    """

    site: str
    holdings: dict[str, np.ndarray]  # appliance -> int64 object numbers held, ascending
    tiers: dict[str, np.ndarray]  # appliance -> int8 TIER_INDEX, aligned with holdings
    added: dict[str, np.ndarray]  # appliance -> int64 object numbers new tonight, ascending
    deleted: dict[str, list[str]]  # appliance -> ids held before, not any more, sorted
    expected_offload: float  # share of the site's predicted bytes served from the site
    churn_bytes: int  # bytes of additions
    priority: dict[str, np.ndarray] = field(default_factory=dict)
    # appliance -> float64 value density of each `added` object (aligned): the order in
    # which backbone.py schedules transfers (highest first)
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Transfer:
    """One object copied to one node tonight."""

    obj: int
    dst: str  # appliance or backbone node
    source: str  # the node it is copied from: a peer, a backbone node or the origin
    wave: int  # 1, 2, ...: a source holds the object before its wave starts
    size: int
