"""``oca-fill plan``: from catalog, logs and topology to manifests and a summary.

Sites are independent units of work: each is placed by `placement.place_site` from
the catalog, its own forecast and its appliances' previous manifests. They run in a
local process pool by default (forked, so the catalog is shared copy-on-write, not
pickled), or on a Dask distributed cluster with ``--dask ADDRESS`` (the catalog is
scattered to the workers once). Both give byte-identical manifests: placement is a
pure function of its inputs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .backbone import schedule as schedule_transfers
from .catalog import load_catalog
from .forecast import ForecastParams, forecast, forecast_backbone
from .logs import read_demand
from .manifest import read_previous, write_manifests
from .model import ApplianceSpec, Catalog, Site, SiteForecast, SitePlan, Topology
from .placement import PlacementParams, place_site
from .summary import summarize
from .topology import load_topology

log = logging.getLogger("oca.fill")


@dataclass
class PlanRequest:
    """Everything `oca-fill plan` was asked."""

    catalog: Path
    logs: list[Path]
    topology: Path
    out: Path
    now: float
    previous: Path | None = None
    forecast: ForecastParams = field(default_factory=ForecastParams)
    placement: PlacementParams = field(default_factory=PlacementParams)
    dask: str | None = None
    processes: int | None = None


def backbone_sites(topology: Topology) -> list[Site]:
    """Each backbone node as a one-appliance Site, so place_site plans it too."""
    sites = []
    for node in topology.backbone:
        window = getattr(node, "fill_window", (0, 0))
        sites.append(Site(node.name, None, window, (
            ApplianceSpec(node.name, node.url, 1e9, dict(node.tiers)),)))
    return sites


def _previous_of(site: Site, previous: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {a.name: previous.get(a.name, {}) for a in site.appliances}


# The forked pool's view of the inputs (set before the pool starts; inherited, not pickled).
_SHARED: dict = {}


def _place_shared(i: int) -> SitePlan:
    site = _SHARED["sites"][i]
    return place_site(site, _SHARED["catalog"], _SHARED["forecasts"][site.name],
                      _previous_of(site, _SHARED["previous"]), _SHARED["params"])


def place_all(sites: list[Site], catalog: Catalog, forecasts: dict[str, SiteForecast],
              previous: dict[str, dict[str, str]], params: PlacementParams,
              dask: str | None = None, processes: int | None = None) -> list[SitePlan]:
    """Place every site, in order, locally (process pool) or on a Dask cluster."""
    if not sites:
        return []
    if dask:
        return _place_dask(dask, sites, catalog, forecasts, previous, params)
    processes = processes or os.cpu_count() or 1
    if processes <= 1 or len(sites) == 1:
        return [place_site(s, catalog, forecasts[s.name], _previous_of(s, previous), params)
                for s in sites]
    _SHARED.update(sites=sites, catalog=catalog, forecasts=forecasts, previous=previous,
                   params=params)
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(processes, len(sites)), mp_context=ctx) as ex:
            return list(ex.map(_place_shared, range(len(sites)), chunksize=1))
    finally:
        _SHARED.clear()


def _place_dask(address: str, sites, catalog, forecasts, previous, params) -> list[SitePlan]:
    from distributed import Client

    with Client(address) as client:
        cat = client.scatter(catalog, broadcast=True)
        futures = [client.submit(place_site, s, cat, forecasts[s.name],
                                 _previous_of(s, previous), params, pure=False)
                   for s in sites]
        return client.gather(futures)


def run_plan(req: PlanRequest) -> dict:
    """Plan, write the manifests under ``req.out``, return the summary."""
    t0 = time.monotonic()
    catalog = load_catalog(req.catalog)
    topology = load_topology(req.topology)
    log.info("catalog: %d objects; topology: %d sites, %d backbone nodes", len(catalog),
             len(topology.sites), len(topology.backbone))
    fp = req.forecast
    demand = read_demand(req.logs, catalog, topology, req.now, fp.half_life,
                         fp.recent_half_life)
    if demand.malformed:
        log.warning("access logs: %d of %d lines malformed, skipped", demand.malformed,
                    demand.lines)
    t_logs = time.monotonic()
    forecasts = forecast(demand, catalog, topology, req.now, fp)
    forecasts.update(forecast_backbone(forecasts, topology))
    previous = read_previous(req.previous) if req.previous else {}
    sites = list(topology.sites)
    site_plans = place_all(sites, catalog, forecasts, previous, req.placement, req.dask,
                           req.processes)
    bb_sites = backbone_sites(topology)
    bb_plans = place_all(bb_sites, catalog, forecasts, previous, req.placement, None, 1)
    t_place = time.monotonic()
    sched = schedule_transfers(site_plans, bb_plans, topology, catalog, previous)
    req.out.mkdir(parents=True, exist_ok=True)
    write_manifests(req.out, site_plans, bb_plans, sched, catalog, req.now)
    summary = summarize(site_plans, bb_plans, sched, topology, catalog, {
        "lines": demand.lines, "malformed": demand.malformed,
        "unknown_objects": demand.unknown_objects})
    log.info("planned in %.1f s (logs %.1f s, placement %.1f s)", time.monotonic() - t0,
             t_logs - t0, t_place - t_logs)
    return summary
