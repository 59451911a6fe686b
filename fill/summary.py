"""What tonight's plan does, per site, per backbone node and per link: JSON and a table.

`summarize` returns plain dicts, lists, ints, floats and strings in topology order, so
``json.dumps`` of it is byte-identical for identical inputs; `format_text` renders it for
an operator's terminal. Fields are described in docs/fill-backbone.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from oca.units import format_size

from .backbone import Schedule
from .model import Catalog, Site, SitePlan, Topology

if TYPE_CHECKING:
    from .logs import LogDemand

__all__ = ["summarize", "format_text", "site_figures", "node_figures", "assemble", "Sizes",
           "demand_figures"]

_SOURCES = ("peer", "backbone", "origin")


def _count(objects: int, nbytes: int) -> dict:
    return {"objects": int(objects), "bytes": int(nbytes)}


def demand_figures(demand: LogDemand) -> dict:
    """The summary's ``demand`` (*demand_info*) from reading the logs: lines read,
    malformed, naming objects not in the catalog, and the fill traffic left out of demand
    (lines of ``scope`` ``"fill"`` and the body bytes they sent)."""
    return {"lines": demand.lines, "malformed": demand.malformed,
            "unknown_objects": demand.unknown_objects, "fill_lines": demand.fill_lines,
            "fill_bytes": demand.fill_bytes}


def _plain(value):
    """numpy scalars to Python ones, so the summary is JSON as it is."""
    return value.item() if isinstance(value, np.generic) else value


class Sizes:
    """Bytes of objects by number, and of ids (deleted lists name ids, not numbers)."""

    def __init__(self, catalog: Catalog):
        self.size = np.asarray(catalog.size, dtype=np.int64)
        self._catalog = catalog
        self._index: dict[str, int] | None = None

    def of(self, objs) -> int:
        objs = np.asarray(objs, dtype=np.int64)
        return int(self.size[objs].sum()) if len(objs) else 0

    def of_ids(self, ids: list[str]) -> tuple[int, int]:
        """(bytes, how many ids the catalog no longer has: their size is unknown)."""
        if not ids:
            return 0, 0
        if self._index is None:
            self._index = self._catalog.index_of()
        index = self._index
        num = np.fromiter((index.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        known = num >= 0
        return int(self.size[num[known]].sum()), int((~known).sum())


def _deleted(plan: SitePlan | None, names: Iterable[str], sizes: Sizes) -> dict:
    n = nbytes = unknown = 0
    for name in names:
        ids = list(plan.deleted.get(name, ())) if plan else []
        b, u = sizes.of_ids(ids)
        n, nbytes, unknown = n + len(ids), nbytes + b, unknown + u
    return {"objects": n, "bytes": nbytes, "not_in_catalog": unknown}


def _lost_value(plan: SitePlan, deferred: dict[str, list[int]], names: list[str],
                size: np.ndarray) -> float | None:
    """Predicted bytes a day the site does not serve tonight because of deferrals: a
    deferred object is on none of the site's appliances (a peer holding it would have
    been its source). Value = value density (the plan's priority) x size."""
    objs_parts, dens_parts = [], []
    for name in names:
        objs = deferred.get(name)
        if objs is None or not len(objs):
            continue
        prio = plan.priority.get(name)
        added = np.asarray(plan.added.get(name, ()), dtype=np.int64)
        if prio is None or len(prio) != len(added):
            return None
        objs = np.asarray(objs, dtype=np.int64)
        objs_parts.append(objs)
        dens_parts.append(np.asarray(prio, dtype=np.float64)[np.searchsorted(added, objs)])
    if not objs_parts:
        return 0.0
    best = np.zeros(len(size))  # per object, its highest density (NaN or below 0: none)
    np.fmax.at(best, np.concatenate(objs_parts), np.concatenate(dens_parts))
    return float((best * size).sum())


def _filled(source: np.ndarray, size: np.ndarray, n_bb: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, copies) by _SOURCES kind of transfers with these sources (names indices:
    0 the origin, 1..n_bb the backbone nodes, then appliances)."""
    source = np.asarray(source, dtype=np.int64)
    kind = np.where(source == 0, 2, np.where(source <= n_bb, 1, 0))
    nbytes = np.zeros(3, dtype=np.int64)
    np.add.at(nbytes, kind, np.asarray(size, dtype=np.int64))
    return nbytes, np.bincount(kind, minlength=3)


def node_figures(plan: SitePlan | None, names: list[str], source: np.ndarray,
                 size: np.ndarray, deferred: dict[str, list[int]], sizes: Sizes, n_bb: int,
                 kinds: tuple[str, ...] = _SOURCES) -> dict:
    """Figures of one site or backbone node: *names* its appliances (or itself); *source*
    and *size* of the transfers into them; *deferred*: node -> object numbers."""
    filled, filled_n = _filled(source, size, n_bb)
    added = [plan.added.get(a, ()) if plan else () for a in names]
    late = [deferred.get(a, []) for a in names]
    return {
        "added": _count(sum(len(a) for a in added), sum(sizes.of(a) for a in added)),
        "filled": _count(filled_n.sum(), filled.sum()),
        "filled_from": {src: int(filled[_SOURCES.index(src)]) for src in kinds},
        "deferred": _count(sum(len(d) for d in late), sum(sizes.of(d) for d in late)),
        "deleted": _deleted(plan, names, sizes),
        "churn_bytes": int(plan.churn_bytes) if plan else 0,
    }


def site_figures(site: Site, plan: SitePlan | None, source: np.ndarray, size: np.ndarray,
                 deferred: dict[str, list[int]], sizes: Sizes, n_bb: int
                 ) -> tuple[dict, tuple[bool, float, float] | None]:
    """One site's entry of the summary, and what the fleet's offload needs of it: None
    without a plan, else (the plan has value figures, value total, value held)."""
    names = [a.name for a in site.appliances]
    offload = float(plan.expected_offload) if plan else 0.0
    stats = plan.stats if plan else {}
    has_value = "value_total" in stats and "value_held" in stats
    weight = None
    if plan is not None:
        weight = (has_value, float(stats["value_total"]) if has_value else 0.0,
                  float(stats["value_held"]) if has_value else 0.0)
    # What the site serves if tonight's deferrals stay unfilled: unknown without the
    # plan's value figures, unless nothing was deferred.
    tonight: float | None = offload
    if any(a in deferred for a in names):
        lost = _lost_value(plan, deferred, names, sizes.size) if has_value else None
        if lost is None:
            tonight = None
        elif float(stats["value_total"]) > 0:
            tonight = max(0.0, float(stats["value_held"]) - lost) \
                / float(stats["value_total"])
    return {
        "upstream": site.upstream,
        "appliances": len(names),
        "expected_offload": round(offload, 6),
        "expected_offload_tonight": None if tonight is None else round(tonight, 6),
        **node_figures(plan, names, source, size, deferred, sizes, n_bb),
    }, weight


def assemble(topology: Topology, demand_info: dict, sites: dict[str, dict],
             weights: list[tuple[bool, float, float] | None], backbone: dict[str, dict],
             link_bytes: dict[tuple[str, str], int], link_budget: dict[tuple[str, str], int],
             origin_egress: int, waves: int) -> dict:
    """The summary from every site's and backbone node's figures (topology order)."""
    weighted = all(w[0] for w in weights if w is not None)
    value_total = sum(w[1] for w in weights if w is not None)
    value_held = sum(w[2] for w in weights if w is not None)
    links = []
    for lk in topology.links:
        key = (lk.src, lk.dst)
        used, budget = link_bytes[key], link_budget[key]
        links.append({"from": lk.src, "to": lk.dst, "gbps": lk.gbps, "bytes": used,
                      "budget": budget, "utilisation": round(used / budget, 6) if budget else 0.0})

    every = list(sites.values()) + list(backbone.values())
    offloads = [v["expected_offload"] for v in sites.values()]
    if weighted and value_total > 0:
        fleet_offload = value_held / value_total
    else:
        fleet_offload = sum(offloads) / len(offloads) if offloads else 0.0

    def total(field: str, keys: tuple[str, ...] = ("objects", "bytes")) -> dict:
        return {key: sum(v[field][key] for v in every) for key in keys}

    return {
        "demand": {str(k): _plain(v) for k, v in demand_info.items()},
        "totals": {
            "backbone_nodes": len(topology.backbone),
            "sites": len(topology.sites),
            "appliances": sum(len(s.appliances) for s in topology.sites),
            "expected_offload": round(fleet_offload, 6),
            "added": total("added"),
            "filled": total("filled"),
            "deferred": total("deferred"),
            "deleted": total("deleted", ("objects", "bytes", "not_in_catalog")),
            "churn_bytes": sum(v["churn_bytes"] for v in every),
            "origin_egress": int(origin_egress),
            "waves": int(waves),
        },
        "backbone": backbone,
        "sites": sites,
        "links": links,
    }


def summarize(site_plans: list[SitePlan], backbone_plans: list[SitePlan], schedule: Schedule,
              topology: Topology, catalog: Catalog, demand_info: dict) -> dict:
    """The plan's figures: per site, per backbone node, per link, and totals.

    *demand_info*: counts from reading the logs (`demand_figures`), passed through under
    ``demand``. (`plan.py` makes the same figures site by site in its workers:
    `site_figures`, `node_figures`, then `assemble`.)
    """
    sizes = Sizes(catalog)
    t = schedule.transfers
    n_bb = len(topology.backbone)
    # names of the transfer table: origin, backbone nodes, then appliances site by site
    group = np.zeros(len(t.names), dtype=np.int64)
    group[1:1 + n_bb] = np.arange(n_bb)
    at = 1 + n_bb
    for k, s in enumerate(topology.sites):
        group[at:at + len(s.appliances)] = n_bb + k
        at += len(s.appliances)
    g = group[t.dst]
    order = np.argsort(g, kind="stable")
    bounds = np.searchsorted(g[order], np.arange(n_bb + len(topology.sites) + 1)).tolist()

    def part(k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = order[bounds[k]:bounds[k + 1]]
        return t.source[rows], t.size[rows]

    bb_by = {p.site: p for p in backbone_plans}
    backbone = {b.name: node_figures(bb_by.get(b.name), [b.name], *part(k), schedule.deferred,
                                     sizes, n_bb, ("origin",))
                for k, b in enumerate(topology.backbone)}
    site_by = {p.site: p for p in site_plans}
    sites, weights = {}, []
    for k, s in enumerate(topology.sites):
        entry, weight = site_figures(s, site_by.get(s.name), *part(n_bb + k),
                                     schedule.deferred, sizes, n_bb)
        sites[s.name] = entry
        weights.append(weight)
    return assemble(topology, demand_info, sites, weights, backbone, schedule.link_bytes,
                    schedule.link_budget, schedule.origin_egress, schedule.waves)


_FILL_KEYS = ("fill_lines", "fill_bytes")  # demand_figures' fill traffic: a text of its own


def _num(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _n_size(d: dict) -> str:
    if not d["objects"]:
        return "0"
    return f"{d['objects']:,} {format_size(d['bytes'])}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell; the first left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:],
                                                                        strict=True)]
        out.append("  ".join(cells).rstrip())
    return out


def format_text(summary: dict) -> str:
    """A compact table for a terminal (sizes in powers of 1024)."""
    tot = summary["totals"]
    dem = summary["demand"]
    lines = [f"oca-fill plan: {tot['sites']} sites, {tot['appliances']} appliances, "
             f"{tot['backbone_nodes']} backbone nodes"]
    if dem:
        extra = ", ".join(f"{_num(v)} {k.replace('_', ' ')}" for k, v in dem.items()
                          if k not in ("lines", *_FILL_KEYS))
        text = f"demand: {_num(dem.get('lines', 0))} log lines" + (f" ({extra})" if extra else "")
        if "fill_lines" in dem:
            text += (f"; fill traffic, not demand: {_num(dem['fill_lines'])} lines, "
                     f"{format_size(dem.get('fill_bytes', 0))}")
        lines.append(text)
    lines.append(
        f"added {_n_size(tot['added'])}; filled {_n_size(tot['filled'])} in {tot['waves']} "
        f"waves; deferred {_n_size(tot['deferred'])}; deleted {_n_size(tot['deleted'])}")
    lines.append(f"origin egress {format_size(tot['origin_egress'])}; churn "
                 f"{format_size(tot['churn_bytes'])}; expected offload "
                 f"{_pct(tot['expected_offload'])}")

    header = ["node", "appl", "offload", "tonight", "added", "filled", "deferred", "deleted",
              "peer", "backbone", "origin"]
    rows = []
    for name, v in summary["backbone"].items():
        rows.append([name, "bb", "", "", _n_size(v["added"]), _n_size(v["filled"]),
                     _n_size(v["deferred"]), _n_size(v["deleted"]), "", "",
                     format_size(v["filled_from"]["origin"])])
    for name, v in summary["sites"].items():
        src = v["filled_from"]
        rows.append([name, str(v["appliances"]), _pct(v["expected_offload"]),
                     _pct(v["expected_offload_tonight"]), _n_size(v["added"]),
                     _n_size(v["filled"]), _n_size(v["deferred"]), _n_size(v["deleted"]),
                     format_size(src["peer"]), format_size(src["backbone"]),
                     format_size(src["origin"])])
    if rows:
        lines += ["", *_table(header, rows)]

    rows = [[f"{lk['from']} -> {lk['to']}", f"{lk['gbps']:g}", format_size(lk["bytes"]),
             format_size(lk["budget"]), _pct(lk["utilisation"])] for lk in summary["links"]]
    if rows:
        lines += ["", *_table(["link", "gbps", "bytes", "budget", "use"], rows)]
    return "\n".join(lines) + "\n"
