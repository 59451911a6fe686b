"""``oca-fill plan``: from catalog, logs and topology to manifests and a summary.

The fleet is planned site by site, and no process ever holds the whole fleet's plan
(at 100 sites x 10 appliances that is ~90M held objects and as many transfers):

1. parent: the logs are folded into demand, the Forecaster's fleet-wide part is built,
   the backbone nodes are planned (their forecast sums their sites'; each node placed on
   a worker) and their fills admitted on the origin's links (`Fleet.fill_backbone`);
2. per site (workers): the site's forecast, its previous manifests, its placement and
   the sorting out of its additions (`Fleet.site_transfers`); each worker keeps its site
   (a spool file, or a Dask future) and hands back only the site's first copies;
3. parent: every site's first copies are admitted together (the links are shared,
   `Fleet.admit`; groups of sites that share no link each on a worker);
4. per site (workers): sources and waves (`Fleet.resolve`), the site's manifests and its
   figures for the summary.

Workers are a local process pool by default (forked, so the catalog and the forecaster
are shared copy-on-write, not pickled), or a Dask distributed cluster with ``--dask
ADDRESS``. Both give byte-identical manifests: every step is a pure function of its
inputs, and the admission, the one step that sees all sites, is decided here (by
independent groups). Workers never use polars: its thread pool does not survive a fork.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from oca.progress import Progress

from .backbone import (
    BackboneFill,
    FirstCopies,
    Fleet,
    SiteTransfers,
    TransferTable,
    deferred_by_node,
    held_numbers,
)
from .catalog import load_catalog
from .errors import WorkerError
from .forecast import Forecaster, ForecastParams
from .logs import read_demand
from .manifest import manifest_bytes, read_previous_numbers, write_manifest
from .model import ApplianceSpec, Catalog, Site, SiteForecast, SitePlan, Topology
from .placement import PlacementParams, place_site
from .summary import Sizes, assemble, demand_figures, node_figures, site_figures
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
    progress: bool = False  # bars on a terminal (log lines otherwise) for the long steps


def backbone_sites(topology: Topology) -> list[Site]:
    """Each backbone node as a one-appliance Site, so place_site plans it too."""
    sites = []
    for node in topology.backbone:
        sites.append(Site(node.name, None, node.fill_window, (
            ApplianceSpec(node.name, node.url, 1e9, dict(node.tiers)),)))
    return sites


@dataclass(frozen=True, eq=False)
class _Fixed:
    """What every site's work reads and nobody changes (shared by fork, or scattered)."""

    catalog: Catalog
    fleet: Fleet
    bb: BackboneFill
    bb_held: dict[str, np.ndarray]
    params: PlacementParams
    now: float


@dataclass(frozen=True)
class _SiteFigures:
    """What a site's last step hands back for the summary."""

    entry: dict
    weight: tuple[bool, float, float] | None
    origin_egress: int
    waves: int


def _first_step(fx: _Fixed, k: int, fc: SiteForecast,
                previous: dict[str, tuple[list[str], np.ndarray]]
                ) -> tuple[SitePlan, SiteTransfers]:
    """Place site number *k* and sort out its additions. *previous*: appliance -> (its
    previous ids, their object numbers), from `read_previous_numbers`."""
    site = fx.fleet.topology.sites[k]
    numbers = {a: num for a, (_, num) in previous.items()}
    plan = place_site(site, fx.catalog, fc, {a: ids for a, (ids, _) in previous.items()},
                      fx.params, numbers)
    held = held_numbers(numbers)
    if site.upstream in fx.bb_held:
        held[site.upstream] = fx.bb_held[site.upstream]
    return plan, fx.fleet.site_transfers(k, plan, held, fx.bb)


def _last_step(fx: _Fixed, k: int, plan: SitePlan, st: SiteTransfers, taken: np.ndarray,
               emit: Callable[[str, bytes], None]) -> _SiteFigures:
    """Sources and waves of site number *k*; its manifests go to *emit*."""
    fleet = fx.fleet
    result = Fleet.resolve(st, taken)
    table = result.table(fleet.names, fleet.size)
    deferred = result.deferred(fleet.names, lists=False)
    view = _Transfers(table)
    site = fleet.topology.sites[k]
    for a in site.appliances:
        if a.name in plan.holdings:
            emit(a.name, manifest_bytes(a.name, plan, view, fx.catalog, fx.now,
                                        fleet.topology))
    entry, weight = site_figures(site, plan, table.source, table.size, deferred,
                                 Sizes(fx.catalog), len(fleet.topology.backbone))
    return _SiteFigures(entry, weight, int(table.size[table.source == 0].sum()),
                        int(table.wave.max()) if len(table) else 0)


@dataclass(frozen=True)
class _Transfers:
    """A schedule as manifest_bytes reads it: only `transfers`."""

    transfers: TransferTable


# -- local workers: a forked pool; the fixed inputs are inherited, not pickled ------------

_SHARED: dict = {}


def _local_first(k: int) -> FirstCopies:
    fx: _Fixed = _SHARED["fixed"]
    site = fx.fleet.topology.sites[k]
    previous = _SHARED["previous"]
    prev = read_previous_numbers(previous, [a.name for a in site.appliances], fx.catalog) \
        if previous else {}
    plan, st = _first_step(fx, k, _SHARED["model"].site(site.name), prev)
    # The spool holds what the parent does not: the first copies come back to the last
    # step through the parent (inherited), object numbers as int32. Less to write: at
    # 100 sites the spool is ~1.5 GB instead of ~4, and it is disk bandwidth.
    with open(_spool(k), "wb") as f:
        pickle.dump((_narrow(plan), replace(st, firsts=None)), f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    return st.firsts


def _local_last(k: int, taken: np.ndarray) -> _SiteFigures:
    fx: _Fixed = _SHARED["fixed"]
    path = _spool(k)
    with open(path, "rb") as f:
        plan, st = pickle.load(f)
    path.unlink()
    plan, st = _widen(plan), replace(st, firsts=_SHARED["firsts"][k])
    out = _SHARED["out"]
    return _last_step(fx, k, plan, st, taken, lambda name, data: write_manifest(out, name, data))


def _local_admit(g: int) -> tuple[list[np.ndarray], np.ndarray]:
    fleet, firsts, groups = _SHARED["admit"]
    taken = fleet.admit([firsts[k] for k in groups[g]])
    return taken, fleet.room[fleet.group_links(groups[g])]


def _admit_local(fleet: Fleet, firsts: list[FirstCopies], processes: int) -> list[np.ndarray]:
    """`fleet.admit(firsts)`, its independent groups of sites (`Fleet.groups`) on a pool,
    the largest first; each worker hands back its group's choices and links' room."""
    groups = fleet.groups()
    if processes <= 1 or len(groups) <= 1:
        return fleet.admit(firsts)
    rows = [sum(len(firsts[k]) for k in group) for group in groups]
    order = sorted(range(len(groups)), key=lambda g: (-rows[g], g))
    taken: list[np.ndarray] = [np.zeros(0, np.int8)] * len(firsts)
    _SHARED["admit"] = (fleet, firsts, groups)
    try:
        with _pool(processes, len(groups)) as ex:
            for g, (got, room) in zip(order, ex.map(_local_admit, order), strict=True):
                for k, t in zip(groups[g], got, strict=True):
                    taken[k] = t
                fleet.room[fleet.group_links(groups[g])] = room
    finally:
        _SHARED.pop("admit", None)
    return taken


def _narrow(plan: SitePlan) -> SitePlan:
    return replace(plan, holdings={a: h.astype(np.int32) for a, h in plan.holdings.items()},
                   added={a: h.astype(np.int32) for a, h in plan.added.items()})


def _widen(plan: SitePlan) -> SitePlan:
    return replace(plan, holdings={a: h.astype(np.int64) for a, h in plan.holdings.items()},
                   added={a: h.astype(np.int64) for a, h in plan.added.items()})


def _backbone_one(i: int) -> tuple[SitePlan, np.ndarray | None]:
    sites, forecasts, catalog, previous, params = _SHARED["backbone"]
    name = sites[i].name
    prev = read_previous_numbers(previous, [name], catalog) if previous else {}
    plan = place_site(sites[i], catalog, forecasts[name],
                      {name: prev[name][0]} if name in prev else {}, params,
                      {n: num for n, (_, num) in prev.items()})
    return plan, held_numbers({n: num for n, (_, num) in prev.items()}).get(name)


def _place_backbone(sites: list[Site], forecasts: dict[str, SiteForecast], catalog: Catalog,
                    previous: Path | None, params: PlacementParams, processes: int
                    ) -> tuple[list[SitePlan], dict[str, np.ndarray]]:
    """Each backbone node's plan (its previous manifest read and placed on the pool: a
    node holds ~1M objects), and what it held before tonight."""
    _SHARED["backbone"] = (sites, forecasts, catalog, previous, params)
    try:
        if processes <= 1 or len(sites) <= 1:
            got = [_backbone_one(i) for i in range(len(sites))]
        else:
            with _pool(processes, len(sites)) as ex:
                got = list(ex.map(_backbone_one, range(len(sites))))
    finally:
        _SHARED.pop("backbone", None)
    held = {s.name: h for s, (_, h) in zip(sites, got, strict=True) if h is not None}
    return [plan for plan, _ in got], held


def _spool(k: int) -> Path:
    return _SHARED["spool"] / f"{k}.pickle"


@contextmanager
def _pool(processes: int, n: int) -> Iterator[ProcessPoolExecutor]:
    """A forked pool of min(processes, n) workers; a worker's death is a WorkerError."""
    try:
        with ProcessPoolExecutor(max_workers=min(processes, n),
                                 mp_context=multiprocessing.get_context("fork")) as ex:
            yield ex
    except BrokenProcessPool:
        raise WorkerError("a worker process died (killed by a signal or out of memory: "
                          "see the kernel log; --processes 1 needs less memory)") from None


def _run_local(fx: _Fixed, model: Forecaster, previous: Path | None, out: Path,
               processes: int, progress: bool) -> Iterator:
    """Steps 2-4 on a local pool: yields the first copies (a list), then receives the
    admission (a list of taken arrays) and yields the figures."""
    spool = Path(tempfile.mkdtemp(prefix=".spool-", dir=out))
    n = len(fx.fleet.topology.sites)
    _SHARED.update(fixed=fx, model=model, previous=previous, spool=spool, out=out)
    try:
        with Progress("sites placed", total=n, unit="site", enabled=progress) as bar:
            if processes <= 1 or n <= 1:
                firsts = list(bar.each(map(_local_first, range(n))))
            else:
                with _pool(processes, n) as ex:
                    firsts = list(bar.each(ex.map(_local_first, range(n))))
        _SHARED.pop("model")  # the forecaster is not needed any more: free it
        del model
        taken = yield firsts
        _SHARED["firsts"] = firsts  # for the last step's workers (forked: inherited)
        del firsts
        with Progress("manifests", total=n, unit="site", enabled=progress) as bar:
            if processes <= 1 or n <= 1:
                figures = list(bar.each(map(_local_last, range(n), taken)))
            else:
                with _pool(processes, n) as ex:
                    figures = list(bar.each(ex.map(_local_last, range(n), taken)))
        yield figures
    finally:
        _SHARED.clear()
        shutil.rmtree(spool, ignore_errors=True)


# -- Dask: each site's plan stays on the cluster as a future between the steps -----------

def _dask_first(fx: _Fixed, k: int, fc: SiteForecast, previous: dict[str, dict[str, str]]):
    return _first_step(fx, k, fc, previous)


def _dask_firsts_of(work) -> FirstCopies:
    return work[1].firsts


def _dask_last(fx: _Fixed, k: int, work, taken: np.ndarray):
    plan, st = work
    manifests: list[tuple[str, bytes]] = []
    figures = _last_step(fx, k, plan, st, taken, lambda name, data: manifests.append(
        (name, data)))
    return manifests, figures


def _run_dask(address: str, fx: _Fixed, model: Forecaster, previous: Path | None,
              out: Path) -> Iterator:
    """Steps 2-4 on a Dask cluster (same protocol as _run_local). Forecasts and previous
    manifests are read here and sent with each site; the manifests come back here to be
    written, one site at a time."""
    from distributed import Client

    sites = fx.fleet.topology.sites
    with Client(address) as client:
        fixed = client.scatter(fx, broadcast=True)
        work = []
        for k, site in enumerate(sites):
            prev = read_previous_numbers(previous, [a.name for a in site.appliances],
                                         fx.catalog) if previous else {}
            work.append(client.submit(_dask_first, fixed, k, model.site(site.name), prev,
                                      pure=False))
        del model
        firsts = client.gather([client.submit(_dask_firsts_of, w, pure=False) for w in work])
        taken = yield firsts
        _SHARED["firsts"] = firsts  # for the last step's workers (forked: inherited)
        del firsts
        last = [client.submit(_dask_last, fixed, k, w, t, pure=False)
                for k, (w, t) in enumerate(zip(work, taken, strict=True))]
        del work
        figures = []
        for future in last:  # in order, one site's manifests in memory at a time
            manifests, fig = future.result()
            future.release()
            for name, data in manifests:
                write_manifest(out, name, data)
            figures.append(fig)
        yield figures


def run_plan(req: PlanRequest) -> dict:
    """Plan, write the manifests under ``req.out``, return the summary."""
    t0 = time.monotonic()
    catalog = load_catalog(req.catalog)
    topology = load_topology(req.topology)
    fleet = Fleet(topology, catalog)  # checks the names before the long part
    log.info("catalog: %d objects; topology: %d sites, %d backbone nodes", len(catalog),
             len(topology.sites), len(topology.backbone))
    fp = req.forecast
    log_bytes = sum(_file_size(p) for p in req.logs)
    with Progress("access logs", total=log_bytes, unit="B", enabled=req.progress) as bar:
        demand = read_demand(req.logs, catalog, topology, req.now, fp.half_life,
                             fp.recent_half_life, on_bytes=bar.update)
    demand_info = demand_figures(demand)
    t_logs = time.monotonic()
    model = Forecaster(demand, catalog, topology, req.now, fp)
    del demand

    # 1. Backbone nodes, before any site (sites copy from them): their forecasts here,
    # their placement on the pool, their fills (the origin's links) here.
    processes = req.processes or os.cpu_count() or 1
    bb_sites = backbone_sites(topology)
    bb_fc = model.backbone() if bb_sites else {}
    bb_plans, bb_held = _place_backbone(bb_sites, bb_fc, catalog, req.previous,
                                        req.placement, processes)
    del bb_fc
    bb = fleet.fill_backbone(bb_plans)
    fx = _Fixed(catalog, fleet, bb, bb_held, req.placement, req.now)
    t_bb = time.monotonic()

    # 2-4. Sites.
    req.out.mkdir(parents=True, exist_ok=True)
    if req.dask:
        steps = _run_dask(req.dask, fx, model, req.previous, req.out)
    else:
        steps = _run_local(fx, model, req.previous, req.out, processes, req.progress)
    del model
    try:
        firsts = next(steps)
        t_place = time.monotonic()
        taken = fleet.admit(firsts) if req.dask else _admit_local(fleet, firsts, processes)
        del firsts
        t_admit = time.monotonic()
        # The backbone nodes' manifests and figures, before the sites' last step: the
        # catalog's manifest fields are then made once here, and the workers inherit them.
        backbone = _backbone_out(fx, bb_plans, req.out)
        figures = steps.send(taken)
    finally:
        steps.close()

    link_bytes, link_budget = fleet.link_use()
    summary = assemble(
        topology, demand_info, {s.name: f.entry for s, f in zip(topology.sites, figures,
                                                                 strict=True)},
        [f.weight for f in figures], backbone, link_bytes, link_budget,
        int(fleet.size[bb.obj].sum()) + sum(f.origin_egress for f in figures),
        max([f.waves for f in figures] + [1 if len(bb.obj) else 0]))
    log.info("planned in %.1f s: logs %.1f s, forecast and backbone %.1f s, sites' "
             "placement %.1f s, admission %.1f s, sites' manifests %.1f s",
             time.monotonic() - t0, t_logs - t0, t_bb - t_logs, t_place - t_bb,
             t_admit - t_place, time.monotonic() - t_admit)
    return summary


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # read_demand names the file that cannot be read


def _backbone_out(fx: _Fixed, bb_plans: list[SitePlan], out: Path) -> dict[str, dict]:
    """Write the backbone nodes' manifests; their figures for the summary."""
    fleet, bb = fx.fleet, fx.bb
    order = np.lexsort((bb.obj, bb.dst))
    obj = bb.obj[order]
    table = TransferTable(fleet.names, obj, bb.dst[order].astype(np.int32),
                          np.zeros(len(obj), np.int32), np.ones(len(obj), np.int32),
                          fleet.size[obj])
    view = _Transfers(table)
    deferred = deferred_by_node(fleet.names, bb.left_obj, bb.left_dst)
    sizes = Sizes(fx.catalog)
    n_bb = len(fleet.topology.backbone)
    figures = {}
    for plan in bb_plans:
        write_manifest(out, plan.site, manifest_bytes(plan.site, plan, view, fx.catalog,
                                                      fx.now, fleet.topology))
        part = table.to(plan.site)
        figures[plan.site] = node_figures(plan, [plan.site], part.source, part.size,
                                          deferred, sizes, n_bb, ("origin",))
    return figures
