"""fill/backbone.py: sources, waves, link budgets and deferrals of tonight's fill.

A hand-built fleet pins exact sources, waves, link bytes and deferrals. Generated fleets
(1-3 backbone nodes, 1-5 sites of 1-4 appliances, random links, budgets, holdings and
plans) check the rules as properties and against a plain per-transfer loop that states
the documented algorithm directly (docs/fill-backbone.md).
"""

from __future__ import annotations

import itertools
import json
import random
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fill import backbone
from fill.backbone import Schedule, route, schedule
from fill.errors import InputError
from fill.model import (
    TIER_INDEX,
    ApplianceSpec,
    BackboneSpec,
    Catalog,
    Link,
    Site,
    SitePlan,
    Topology,
    Transfer,
)
from fill.summary import summarize

DAY = 86400
MB = 1_000_000


def catalog_of(sizes: list[int]) -> Catalog:
    n = len(sizes)
    ids = [f"o{i}" for i in range(n)]  # sorted while n <= 10
    if n > 10:
        ids = [f"o{i:03d}" for i in range(n)]
    return Catalog(ids=np.array(ids, dtype=object), size=np.array(sizes, dtype=np.int64),
                   xxh3=np.full(n, None, dtype=object), title=np.arange(n, dtype=np.int32),
                   titles=tuple(ids), kind=np.full(n, None, dtype=object),
                   release=np.full(n, np.nan))


def window_of(nodes, node: str) -> int:
    """The fill window in seconds of *node* among *nodes* (sites and backbone nodes)."""
    for s in nodes:
        if s.name == node:
            return s.window_seconds
    return DAY


def link(src: str, dst: str, nbytes: int, seconds: int) -> Link:
    """A link carrying about *nbytes* in *seconds* (the budget is Link.budget's)."""
    return Link(src, dst, nbytes * 8 / 1e9 / seconds)


def plan_of(site: str, catalog: Catalog, previous: dict[str, dict[str, str]],
            apps: dict[str, tuple[list[int], list[int]]],
            priority: dict[str, list[float]] | None = None) -> SitePlan:
    """A plan consistent with *previous*: appliance -> (kept, added) object numbers;
    everything else held before is deleted."""
    holdings, tiers, added, deleted = {}, {}, {}, {}
    for name, (kept, add) in apps.items():
        held = np.array(sorted(set(kept) | set(add)), dtype=np.int64)
        holdings[name] = held
        tiers[name] = np.full(len(held), TIER_INDEX["hdd"], dtype=np.int8)
        added[name] = np.array(sorted(add), dtype=np.int64)
        kept_ids = {catalog.ids[k] for k in kept}
        deleted[name] = sorted(i for i in previous.get(name, {}) if i not in kept_ids)
    prio = {k: np.array(v, dtype=np.float64) for k, v in (priority or {}).items()}
    churn = int(sum(catalog.size[a].sum() for a in added.values()))
    return SitePlan(site, holdings, tiers, added, deleted, 0.5, churn, prio)


# Every test on the compiled loops and on their numpy twins (conftest.py).
pytestmark = pytest.mark.usefixtures("both_loops")


def run(fleet, blocks=None) -> Schedule:
    """schedule(*fleet), optionally with tiny admission blocks (min, start, max), which
    also make the merge of the sites' first copies go by tiny bands (rows: start,
    sampled every min-th row)."""
    if blocks is None:
        return schedule(*fleet)
    lo, start, hi = blocks
    with mock.patch.multiple(backbone, _BLOCK_MIN=lo, _BLOCK_START=start, _BLOCK_MAX=hi,
                             _BAND_ROWS=start, _SAMPLE=lo):
        return schedule(*fleet)


# --- the hand-built fleet -----------------------------------------------------------------
#
#   origin -25-> bb1 -100-> A (a1 a2 a3)      sizes (MB): o0 10  o1 10  o2 20
#              bb1 -15-> B (b1)                            o3 5   o4 8   o5 12
#              bb1 -5--> E (e1)   origin -50-> E
#   origin -1000-> bb2 -100-> C (c1)   origin -10-> C
#   D (d1 d2): no upstream and no link
#
# Budgets in MB per night. Before tonight: bb1 holds o0, bb2 o4, a1 o3, d1 o1.

SIZES = [10 * MB, 10 * MB, 20 * MB, 5 * MB, 8 * MB, 12 * MB]
WIN = (2 * 3600, 8 * 3600)  # 02:00-08:00
SIX_H = 6 * 3600


def hand_fleet():
    cat = catalog_of(SIZES)
    app = lambda n: ApplianceSpec(n, f"http://{n}", 10, {"hdd": 1 << 40})  # noqa: E731
    sites = (
        Site("A", "bb1", WIN, (app("a1"), app("a2"), app("a3"))),
        Site("B", "bb1", WIN, (app("b1"),)),
        Site("C", "bb2", (22 * 3600, 4 * 3600), (app("c1"),)),
        Site("D", None, WIN, (app("d1"), app("d2"))),
        Site("E", "bb1", WIN, (app("e1"),)),
    )
    links = (
        link("origin", "bb1", 25 * MB, DAY),
        link("origin", "bb2", 1000 * MB, DAY),
        link("bb1", "A", 100 * MB, SIX_H),
        link("bb1", "B", 15 * MB, SIX_H),
        link("bb2", "C", 100 * MB, SIX_H),
        link("origin", "C", 10 * MB, SIX_H),
        link("bb1", "E", 5 * MB, SIX_H),
        link("origin", "E", 50 * MB, SIX_H),
    )
    topo = Topology("origin", "http://origin", (BackboneSpec("bb1", "", {}),
                                                  BackboneSpec("bb2", "", {})), sites, links)
    previous = {"bb1": {"o0": "hdd"}, "bb2": {"o4": "hdd"}, "a1": {"o3": "ssd"},
                "d1": {"o1": "hdd", "gone": "hdd"}}
    bb_plans = [plan_of("bb1", cat, previous, {"bb1": ([0], [1, 2])})]
    site_plans = [
        plan_of("A", cat, previous, {"a1": ([3], [0, 1]), "a2": ([], [0, 3]),
                                     "a3": ([], [1, 2])}),
        plan_of("B", cat, previous, {"b1": ([], [4, 5])}, {"b1": [1.0, 2.0]}),
        plan_of("C", cat, previous, {"c1": ([], [3, 4, 5])}),
        plan_of("D", cat, previous, {"d1": ([1], [0]), "d2": ([], [0, 1])}),
        plan_of("E", cat, previous, {"e1": ([], [0])}),
    ]
    return site_plans, bb_plans, topo, cat, previous


def test_hand_built_fleet():
    site_plans, bb_plans, topo, cat, previous = hand_fleet()
    s = schedule(site_plans, bb_plans, topo, cat, previous)
    assert sorted(s.transfers, key=lambda t: (t.dst, t.obj)) == [
        Transfer(0, "a1", "bb1", 1, 10 * MB),  # bb1 held o0
        Transfer(1, "a1", "bb1", 2, 10 * MB),  # bb1 got o1 in wave 1
        Transfer(0, "a2", "a1", 2, 10 * MB),  # peer of the site's first copy
        Transfer(3, "a2", "a1", 1, 5 * MB),  # a1 held o3: a peer, not the backbone
        Transfer(1, "a3", "a1", 3, 10 * MB),  # a1 got o1 in wave 2
        Transfer(5, "b1", "origin", 1, 12 * MB),  # priority: o5 before o4
        Transfer(1, "bb1", "origin", 1, 10 * MB),
        Transfer(3, "c1", "origin", 1, 5 * MB),  # direct link: 1 hop, not via bb2
        Transfer(4, "c1", "bb2", 1, 8 * MB),
        Transfer(1, "d2", "d1", 1, 10 * MB),  # LAN: needs no link
        Transfer(0, "e1", "origin", 1, 10 * MB),  # bb1 -> E too small: the origin's route
    ]
    assert s.deferred == {
        "bb1": [2],  # origin -> bb1 has 15 MB left after o1
        "a3": [2],  # bb1 lacks o2 tonight; origin -> bb1 -> A is full
        "b1": [4],  # origin -> bb1 has 3 MB left after o1 and o5
        "c1": [5],  # origin -> C has 5 MB left; the route is fixed (no detour via bb2)
        "d1": [0],  # D has no route from anywhere
        "d2": [0],  # the site's first copy is deferred: no peer has it
    }
    budget = {(lk.src, lk.dst): lk.budget(window_of(topo.sites + topo.backbone, lk.dst))
              for lk in topo.links}
    assert s.link_budget == budget
    assert abs(budget[("origin", "bb1")] - 25 * MB) <= 1
    assert s.link_bytes == {
        ("origin", "bb1"): 22 * MB, ("origin", "bb2"): 0, ("bb1", "A"): 20 * MB,
        ("bb1", "B"): 12 * MB, ("bb2", "C"): 8 * MB, ("origin", "C"): 5 * MB,
        ("bb1", "E"): 0, ("origin", "E"): 10 * MB}
    assert s.origin_egress == 37 * MB
    assert s.waves == 3
    assert s.source_of("a3", 1) == ("a1", 3)
    assert s.source_of("a3", 2) is None  # deferred
    assert s.source_of("a3", 0) is None  # not added
    assert s.source_of("nobody", 0) is None
    assert [t.obj for t in s.transfers.to("c1")] == [3, 4]
    assert len(s.transfers.to("d1")) == 0


def test_backbone_window_sets_its_links_budget():
    site_plans, bb_plans, topo, cat, previous = hand_fleet()
    bb1 = BackboneSpec("bb1", "", {}, fill_window=(0, 6 * 3600))
    topo = Topology(topo.origin, topo.origin_url, (bb1, topo.backbone[1]), topo.sites,
                    topo.links)
    s = schedule(site_plans, bb_plans, topo, cat, previous)
    assert s.link_budget[("origin", "bb1")] == topo.links[0].budget(6 * 3600)
    assert s.link_budget[("origin", "bb2")] == topo.links[1].budget(DAY)


def test_routes_shortest_then_by_name():
    topo = Topology("origin", "", (), (), (
        Link("origin", "y", 1), Link("origin", "x", 1), Link("y", "s", 1), Link("x", "s", 1),
        Link("x", "z", 1), Link("z", "t", 1), Link("s", "t", 1), Link("origin", "t2", 1),
        Link("t2", "t", 1)))
    assert route(topo, "origin", "s") == [("origin", "x"), ("x", "s")]
    assert route(topo, "origin", "t") == [("origin", "t2"), ("t2", "t")]
    assert route(topo, "x", "t") == [("x", "s"), ("s", "t")]
    assert route(topo, "s", "origin") is None  # links are directed
    assert route(topo, "x", "x") == []


def test_links_are_directed_and_unique():
    site_plans, bb_plans, topo, cat, previous = hand_fleet()
    dup = Topology(topo.origin, topo.origin_url, topo.backbone, topo.sites,
                   topo.links + (Link("bb1", "A", 1),))
    with pytest.raises(InputError, match=r"links\[8\] repeats links\[2\] \(from 'bb1' to 'A'\)"):
        schedule(site_plans, bb_plans, dup, cat, previous)


def test_plan_for_unknown_site_or_appliance():
    site_plans, bb_plans, topo, cat, previous = hand_fleet()
    stray = plan_of("Z", cat, previous, {"z1": ([], [0])})
    with pytest.raises(ValueError, match="'Z', which the topology lacks"):
        schedule(site_plans + [stray], bb_plans, topo, cat, previous)
    wrong = plan_of("B", cat, previous, {"a1": ([], [0])})
    with pytest.raises(ValueError, match="adds to 'a1'"):
        schedule([wrong], bb_plans, topo, cat, previous)


def test_nothing_to_do():
    _, _, topo, cat, _ = hand_fleet()
    s = schedule([], [], topo, cat, {})
    assert len(s.transfers) == 0 and s.deferred == {} and s.waves == 0
    assert s.origin_egress == 0 and set(s.link_bytes.values()) == {0}
    assert s.source_of("a1", 0) is None


def test_peer_keeping_the_object_is_preferred_to_one_deleting_it():
    cat = catalog_of([10])
    apps = tuple(ApplianceSpec(n, "", 10, {}) for n in ("p1", "p2", "p3"))
    topo = Topology("origin", "", (), (Site("S", None, WIN, apps),), ())
    previous = {"p1": {"o0": "hdd"}, "p2": {"o0": "hdd"}}
    plan = plan_of("S", cat, previous, {"p1": ([], []), "p2": ([0], []), "p3": ([], [0])})
    s = schedule([plan], [], topo, cat, previous)
    assert list(s.transfers) == [Transfer(0, "p3", "p2", 1, 10)]
    plan = plan_of("S", cat, previous, {"p1": ([0], []), "p2": ([0], []), "p3": ([], [0])})
    assert list(schedule([plan], [], topo, cat, previous).transfers) == [
        Transfer(0, "p3", "p1", 1, 10)]


def test_first_copy_falls_back_to_the_origin_when_the_backbone_route_fills():
    cat = catalog_of([10, 10, 10])
    topo = Topology("origin", "", (BackboneSpec("bb", "", {}),),
                    (Site("S", "bb", WIN, (ApplianceSpec("s1", "", 10, {}),)),),
                    (link("origin", "bb", 1000, DAY), link("bb", "S", 15, SIX_H),
                     link("origin", "S", 100, SIX_H)))
    previous = {"bb": {"o0": "hdd", "o1": "hdd", "o2": "hdd"}}
    plan = plan_of("S", cat, previous, {"s1": ([], [0, 1, 2])}, {"s1": [3.0, 2.0, 1.0]})
    for blocks in (None, (1, 1, 1), (1, 2, 4)):
        s = run(([plan], [], topo, cat, previous), blocks)
        assert list(s.transfers) == [Transfer(0, "s1", "bb", 1, 10),
                                     Transfer(1, "s1", "origin", 1, 10),
                                     Transfer(2, "s1", "origin", 1, 10)]
        assert s.link_bytes == {("origin", "bb"): 0, ("bb", "S"): 10, ("origin", "S"): 20}


@pytest.mark.parametrize(("prio", "winner"), [(None, "a1"), ([1.0, 2.0], "b1")])
def test_ties_on_a_shared_link_go_by_priority_then_object_then_node(prio, winner):
    cat = catalog_of([15])
    topo = Topology("origin", "", (), (
        Site("S1", None, WIN, (ApplianceSpec("a1", "", 10, {}),)),
        Site("S2", None, WIN, (ApplianceSpec("b1", "", 10, {}),))),
        (link("origin", "x", 20, DAY), link("x", "S1", 100, SIX_H), link("x", "S2", 100, SIX_H)))
    plans = [plan_of("S1", cat, {}, {"a1": ([], [0])}, prio and {"a1": prio[:1]}),
             plan_of("S2", cat, {}, {"b1": ([], [0])}, prio and {"b1": prio[1:]})]
    s = schedule(plans, [], topo, cat, {})
    assert [t.dst for t in s.transfers] == [winner]
    assert s.deferred == {"b1" if winner == "a1" else "a1": [0]}


def test_previous_is_the_truth_about_holdings():
    """A plan claiming a peer keeps an object it never held does not make it a source."""
    cat = catalog_of([10])
    apps = tuple(ApplianceSpec(n, "", 10, {}) for n in ("p1", "p2"))
    topo = Topology("origin", "", (), (Site("S", None, WIN, apps),),
                    (link("origin", "S", 100, SIX_H),))
    plan = plan_of("S", cat, {}, {"p1": ([0], []), "p2": ([], [0])})
    s = schedule([plan], [], topo, cat, {})
    assert list(s.transfers) == [Transfer(0, "p2", "origin", 1, 10)]


# --- the rules as a plain loop --------------------------------------------------------------

def reference(site_plans, bb_plans, topo, cat, previous):
    """(dst, obj) -> (source, wave), deferred {(dst, obj)}, link bytes: one transfer at a time."""
    size, ids = cat.size.tolist(), cat.ids.tolist()
    bbs = [b.name for b in topo.backbone]
    names = ["origin"] + bbs + [a.name for s in topo.sites for a in s.appliances]
    rank = {n: i for i, n in enumerate(names)}
    budget = {(lk.src, lk.dst): lk.budget(window_of(topo.sites + topo.backbone, lk.dst))
              for lk in topo.links}
    room = dict(budget)
    nodes = sorted({n for lk in topo.links for n in (lk.src, lk.dst)} | {"origin"})

    paths: dict = {}

    def path(src, dst):
        if (src, dst) not in paths:
            paths[(src, dst)] = shortest(src, dst)
        return paths[(src, dst)]

    def shortest(src, dst):
        best = None
        for k in range(len(nodes)):
            for mid in itertools.permutations([n for n in nodes if n not in (src, dst)], k):
                hops = list(zip((src, *mid), (*mid, dst), strict=True))
                if all(h in budget for h in hops) and (best is None or (src, *mid) < best[0]):
                    best = ((src, *mid), hops)
            if best:
                return best[1]
        return None

    def fits(hops, n):
        return all(room[h] >= n for h in hops)

    def charge(hops, n):
        for h in hops:
            room[h] -= n

    def held(node, o):
        return ids[o] in previous.get(node, {})

    def additions(plan, name):
        if plan is None or name not in plan.added:
            return []
        prio = plan.priority.get(name, np.zeros(len(plan.added[name])))
        return list(zip(plan.added[name].tolist(), np.asarray(prio).tolist(), strict=True))

    out, deferred = {}, set()
    bb_plan = {p.site: p for p in bb_plans}
    for _, o, _, node in sorted((-p, o, rank[b], b) for b in bbs
                                for o, p in additions(bb_plan.get(b), b)):
        hops = path("origin", node)
        if hops is not None and fits(hops, size[o]):
            charge(hops, size[o])
            out[(node, o)] = ("origin", 1)
        else:
            deferred.add((node, o))

    site_plan = {p.site: p for p in site_plans}
    firsts, follows = [], []
    for site in topo.sites:
        plan = site_plan.get(site.name)
        apps = [a.name for a in site.appliances]
        adds = {a: dict(additions(plan, a)) for a in apps}
        for o in sorted({o for a in apps for o in adds[a]}):
            needing = []
            for a in apps:
                if o not in adds[a]:
                    continue
                peers = [h for h in apps if h != a and held(h, o)]
                if peers:
                    keep = [h for h in peers if o in plan.holdings.get(h, ())]
                    out[(a, o)] = ((keep or peers)[0], 1)
                else:
                    needing.append(a)
            if needing:
                first = needing[0]
                firsts.append((-adds[first][o], o, rank[first], site, first))
                follows += [(a, first, o) for a in needing[1:]]
    for _, o, _, site, a in sorted(firsts, key=lambda f: f[:3]):
        options = []
        if site.upstream in bbs:
            if held(site.upstream, o):
                options.append((site.upstream, 1))
            elif (site.upstream, o) in out:
                options.append((site.upstream, out[(site.upstream, o)][1] + 1))
        options.append(("origin", 1))
        for src, wave in options:
            hops = path(src, site.name)
            if hops is not None and fits(hops, size[o]):
                charge(hops, size[o])
                out[(a, o)] = (src, wave)
                break
        else:
            deferred.add((a, o))
    for a, first, o in follows:
        if (first, o) in out:
            out[(a, o)] = (first, out[(first, o)][1] + 1)
        else:
            deferred.add((a, o))
    used = {k: budget[k] - room[k] for k in budget}
    return out, deferred, used


def test_reference_agrees_on_the_hand_built_fleet():
    args = hand_fleet()
    s = schedule(*args)
    out, deferred, used = reference(*args)
    assert {(t.dst, t.obj): (t.source, t.wave) for t in s.transfers} == out
    assert {(n, o) for n, objs in s.deferred.items() for o in objs} == deferred
    assert s.link_bytes == used


# --- generated fleets -----------------------------------------------------------------------

@st.composite
def fleets(draw):
    n_obj = draw(st.integers(1, 12))
    cat = catalog_of(draw(st.lists(st.integers(1, 60), min_size=n_obj, max_size=n_obj)))
    bb_specs = [BackboneSpec(f"bb{i}", "", {}, (draw(st.sampled_from([0, 3600])), 0))
                for i in range(draw(st.integers(1, 3)))]
    bbs = [b.name for b in bb_specs]
    sites = []
    for k in range(draw(st.integers(1, 5))):
        apps = tuple(ApplianceSpec(f"s{k}a{j}", "", 10, {})
                     for j in range(draw(st.integers(1, 4))))
        window = (draw(st.integers(0, 23)) * 3600, draw(st.integers(0, 23)) * 3600)
        sites.append(Site(f"s{k}", draw(st.sampled_from(bbs + [None])), window, apps))
    nodes = ["origin"] + bbs + [s.name for s in sites]
    likely = [("origin", b) for b in bbs] + [(s.upstream, s.name) for s in sites if s.upstream]
    pairs = [p for p in likely if draw(st.integers(0, 9)) < 8]
    pairs += [("origin", s.name) for s in sites if draw(st.booleans())]
    pairs += draw(st.lists(st.sampled_from([(a, b) for a in nodes for b in nodes if a != b]),
                           max_size=6))
    links = tuple(link(a, b, draw(st.integers(0, 150)), window_of(sites + bb_specs, b))
                  for a, b in dict.fromkeys(pairs))
    topo = Topology("origin", "", tuple(bb_specs), tuple(sites), links)

    objs = st.lists(st.integers(0, n_obj - 1), unique=True, max_size=n_obj)
    previous = {}
    for name in bbs + [a.name for s in sites for a in s.appliances]:
        held = draw(objs)
        if held or draw(st.booleans()):
            previous[name] = {cat.ids[o]: "hdd" for o in held}
            if draw(st.integers(0, 4)) == 0:
                previous[name]["zz-gone"] = "hdd"  # no longer in the catalog

    def plan(site, apps):
        spec = {}
        prio = {} if draw(st.booleans()) else None
        for name in apps:
            before = sorted(cat.ids.tolist().index(i) for i in previous.get(name, {})
                            if i != "zz-gone")
            kept = [o for o in before if draw(st.booleans())]
            add = [o for o in draw(objs) if o not in before]
            spec[name] = (kept, add)
            if prio is not None:
                prio[name] = [draw(st.sampled_from([0.5, 1.0, 2.0])) for _ in add]
        return plan_of(site, cat, previous, spec, prio)

    bb_plans = [plan(b, [b]) for b in bbs if draw(st.integers(0, 4))]
    site_plans = [plan(s.name, [a.name for a in s.appliances]) for s in sites
                  if draw(st.integers(0, 4))]
    return site_plans, bb_plans, topo, cat, previous


BLOCKS = st.sampled_from([None, (1, 1, 1), (1, 2, 4), (2, 3, 8)])


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(fleets(), BLOCKS)
def test_generated_fleets_follow_the_rules(fleet, blocks):
    site_plans, bb_plans, topo, cat, previous = fleet
    s = run(fleet, blocks)
    size = cat.size.tolist()
    site_of = {a.name: site for site in topo.sites for a in site.appliances}
    bbs = {b.name for b in topo.backbone}

    # Every addition exactly once: scheduled or deferred.
    wanted = [(name, o) for p in site_plans + bb_plans for name, objs in p.added.items()
              for o in objs.tolist()]
    got = [(t.dst, t.obj) for t in s.transfers]
    late = [(name, o) for name, objs in s.deferred.items() for o in objs]
    assert sorted(got + late) == sorted(wanted)
    assert len(set(got + late)) == len(wanted)
    assert all(objs == sorted(objs) and objs for objs in s.deferred.values())

    def held(node, o):
        return cat.ids[o] in previous.get(node, {})

    wave_of = {(t.dst, t.obj): t.wave for t in s.transfers}
    link_copies: dict[tuple[str, int], int] = {}
    for t in s.transfers:
        assert t.size == size[t.obj]
        # The source holds the object before the transfer's wave.
        if t.source == "origin" or held(t.source, t.obj):
            assert t.wave == 1
        else:
            assert wave_of[(t.source, t.obj)] == t.wave - 1
        if t.dst in bbs:
            assert t.source == "origin"
            continue
        site = site_of[t.dst]
        peers_held = [a.name for a in site.appliances if a.name != t.dst and held(a.name, t.obj)]
        if site_of.get(t.source) is site:  # a peer copy (LAN)
            assert t.source != t.dst
            if peers_held:
                assert t.source in peers_held
        else:  # over the links: only when no peer held it, once per site and object
            assert not peers_held
            assert t.source in ("origin", site.upstream)
            key = (site.name, t.obj)
            link_copies[key] = link_copies.get(key, 0) + 1
            assert link_copies[key] == 1

    # Links: bytes are what the routes charge, never over the budget.
    charged = {(lk.src, lk.dst): 0 for lk in topo.links}
    for t in s.transfers:
        if t.source == "origin" or t.source in bbs:
            dst_node = t.dst if t.dst in bbs else site_of[t.dst].name
            for hop in route(topo, t.source, dst_node):
                charged[hop] += t.size
    assert s.link_bytes == charged
    for lk in topo.links:
        key = (lk.src, lk.dst)
        assert s.link_budget[key] == lk.budget(window_of(topo.sites + topo.backbone, lk.dst))
        assert 0 <= s.link_bytes[key] <= s.link_budget[key]
    assert s.origin_egress == sum(t.size for t in s.transfers if t.source == "origin")
    assert s.waves == max((t.wave for t in s.transfers), default=0)

    # A deferred first copy had no source with room on its whole route.
    room = {k: s.link_budget[k] - s.link_bytes[k] for k in s.link_budget}
    for name, objs in s.deferred.items():
        for o in objs:
            if name in bbs:
                options = ["origin"]
            else:
                site = site_of[name]
                if any(held(a.name, o) for a in site.appliances if a.name != name):
                    pytest.fail(f"{name} deferred {o} though a peer held it")
                options = ["origin"]
                if site.upstream and (held(site.upstream, o) or (site.upstream, o) in wave_of):
                    options.append(site.upstream)
            for src in options:
                hops = route(topo, src, name if name in bbs else site_of[name].name)
                assert hops is None or any(room[h] < size[o] for h in hops)


@SETTINGS
@given(fleets(), BLOCKS)
def test_generated_fleets_match_the_plain_loop(fleet, blocks):
    s = run(fleet, blocks)
    out, deferred, used = reference(*fleet)
    assert {(t.dst, t.obj): (t.source, t.wave) for t in s.transfers} == out
    assert {(n, o) for n, objs in s.deferred.items() for o in objs} == deferred
    assert s.link_bytes == used


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), BLOCKS, st.randoms(use_true_random=False))
def test_deterministic(fleet, blocks, rnd: random.Random):
    site_plans, bb_plans, topo, cat, previous = fleet
    first = run(fleet, blocks)
    shuffled = list(site_plans)
    rnd.shuffle(shuffled)
    again = run((shuffled, list(reversed(bb_plans)), topo, cat, dict(reversed(previous.items()))))
    assert first == again
    info = {"lines": 10, "malformed": 1, "unknown_objects": 2}
    one = json.dumps(summarize(site_plans, bb_plans, first, topo, cat, info)).encode()
    two = json.dumps(summarize(shuffled, bb_plans, again, topo, cat, info)).encode()
    assert one == two


def test_schedule_equality_sees_differences():
    args = hand_fleet()
    a, b = schedule(*args), schedule(*args)
    assert a == b
    b.deferred["a3"] = []
    assert a != b


@SETTINGS
@given(fleets(), BLOCKS)
def test_groups_admit_alone_as_they_do_together(fleet, blocks):
    """plan.py admits Fleet.groups() on separate workers: each group alone must give the
    choices and the link use of the whole fleet's admission."""
    site_plans, bb_plans, topo, cat, previous = fleet

    def steps():
        f = backbone.Fleet(topo, cat)
        plans = {p.site: p for p in site_plans}
        bb = f.fill_backbone(bb_plans)
        held = backbone.held_before(cat, previous)
        return f, [f.site_transfers(k, plans.get(s.name), held, bb).firsts
                   for k, s in enumerate(topo.sites)]

    whole, firsts = steps()
    parts, again = steps()
    with mock.patch.multiple(backbone, _BAND_ROWS=(blocks or (1, 2048))[1],
                             _SAMPLE=(blocks or (64,))[0]):
        want = whole.admit(firsts)
        groups = parts.groups()
        assert sorted(k for g in groups for k in g) == list(range(len(topo.sites)))
        for g in groups:
            for k, t in zip(g, parts.admit([again[k] for k in g]), strict=True):
                assert np.array_equal(t, want[k])
    assert np.array_equal(parts.room[:-1], whole.room[:-1])
    links = [set(parts.group_links(g).tolist()) for g in groups]
    for a, b in itertools.combinations(links, 2):
        assert not a & b
