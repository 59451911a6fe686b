"""What tonight's plan does, per site, per backbone node and per link: JSON and a table.

`summarize` returns plain dicts, lists, ints, floats and strings in topology order, so
``json.dumps`` of it is byte-identical for identical inputs; `format_text` renders it for
an operator's terminal. Fields are described in docs/fill-backbone.md.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from oca.units import format_size

from .backbone import Schedule
from .model import Catalog, SitePlan, Topology

__all__ = ["summarize", "format_text"]

_SOURCES = ("peer", "backbone", "origin")


def _count(objects: int, nbytes: int) -> dict:
    return {"objects": int(objects), "bytes": int(nbytes)}


def _plain(value):
    """numpy scalars to Python ones, so the summary is JSON as it is."""
    return value.item() if isinstance(value, np.generic) else value


class _Sizes:
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


def _deleted(plan: SitePlan | None, names: Iterable[str], sizes: _Sizes) -> dict:
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
    density: dict[int, float] = {}
    for name in names:
        objs = deferred.get(name)
        if not objs:
            continue
        prio = plan.priority.get(name)
        added = np.asarray(plan.added.get(name, ()), dtype=np.int64)
        if prio is None or len(prio) != len(added):
            return None
        at = np.searchsorted(added, objs)
        for o, d in zip(objs, np.asarray(prio, dtype=np.float64)[at].tolist(), strict=True):
            density[o] = max(density.get(o, 0.0), d)
    if not density:
        return 0.0
    objs = np.fromiter(density, dtype=np.int64, count=len(density))
    dens = np.fromiter(density.values(), dtype=np.float64, count=len(density))
    return float((dens * size[objs]).sum())


def summarize(site_plans: list[SitePlan], backbone_plans: list[SitePlan], schedule: Schedule,
              topology: Topology, catalog: Catalog, demand_info: dict) -> dict:
    """The plan's figures: per site, per backbone node, per link, and totals.

    *demand_info*: counts from reading the logs (lines, malformed, unknown_objects),
    passed through under ``demand``.
    """
    sizes = _Sizes(catalog)
    t = schedule.transfers
    n_bb = len(topology.backbone)
    # names of the transfer table: origin, backbone nodes, then appliances site by site
    group = np.zeros(len(t.names), dtype=np.int64)
    group[1:1 + n_bb] = np.arange(n_bb)
    at = 1 + n_bb
    for k, s in enumerate(topology.sites):
        group[at:at + len(s.appliances)] = n_bb + k
        at += len(s.appliances)
    kind = np.where(t.source == 0, 2, np.where(t.source <= n_bb, 1, 0))  # _SOURCES index
    filled = np.zeros((n_bb + len(topology.sites), 3), dtype=np.int64)
    np.add.at(filled, (group[t.dst], kind), t.size)
    filled_n = np.zeros((n_bb + len(topology.sites), 3), dtype=np.int64)
    np.add.at(filled_n, (group[t.dst], kind), 1)

    def node_figures(g: int, plan: SitePlan | None, names: list[str],
                     sources: tuple[str, ...] = _SOURCES) -> dict:
        added = [plan.added.get(a, ()) if plan else () for a in names]
        deferred = [schedule.deferred.get(a, []) for a in names]
        return {
            "added": _count(sum(len(a) for a in added), sum(sizes.of(a) for a in added)),
            "filled": _count(filled_n[g].sum(), filled[g].sum()),
            "filled_from": {src: int(filled[g, _SOURCES.index(src)]) for src in sources},
            "deferred": _count(sum(len(d) for d in deferred), sum(sizes.of(d) for d in deferred)),
            "deleted": _deleted(plan, names, sizes),
            "churn_bytes": int(plan.churn_bytes) if plan else 0,
        }

    bb_by = {p.site: p for p in backbone_plans}
    backbone = {}
    for g, b in enumerate(topology.backbone):
        backbone[b.name] = node_figures(g, bb_by.get(b.name), [b.name], ("origin",))

    site_by = {p.site: p for p in site_plans}
    sites = {}
    value_total = value_held = 0.0
    weighted = True
    for k, s in enumerate(topology.sites):
        plan = site_by.get(s.name)
        names = [a.name for a in s.appliances]
        offload = float(plan.expected_offload) if plan else 0.0
        stats = plan.stats if plan else {}
        has_value = "value_total" in stats and "value_held" in stats
        if plan is not None and has_value:
            value_total += float(stats["value_total"])
            value_held += float(stats["value_held"])
        elif plan is not None:
            weighted = False
        # What the site serves if tonight's deferrals stay unfilled: unknown without the
        # plan's value figures, unless nothing was deferred.
        tonight: float | None = offload
        if any(a in schedule.deferred for a in names):
            lost = _lost_value(plan, schedule.deferred, names, sizes.size) if has_value \
                else None
            if lost is None:
                tonight = None
            elif float(stats["value_total"]) > 0:
                tonight = max(0.0, float(stats["value_held"]) - lost) \
                    / float(stats["value_total"])
        sites[s.name] = {
            "upstream": s.upstream,
            "appliances": len(names),
            "expected_offload": round(offload, 6),
            "expected_offload_tonight": None if tonight is None else round(tonight, 6),
            **node_figures(n_bb + k, plan, names),
        }

    links = []
    for lk in topology.links:
        key = (lk.src, lk.dst)
        used, budget = schedule.link_bytes[key], schedule.link_budget[key]
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
            "origin_egress": schedule.origin_egress,
            "waves": schedule.waves,
        },
        "backbone": backbone,
        "sites": sites,
        "links": links,
    }


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
                          if k != "lines")
        lines.append(f"demand: {_num(dem.get('lines', 0))} log lines"
                     + (f" ({extra})" if extra else ""))
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
