"""Placement of one site: properties on generated fleets, and a scalar reference."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fill.placement as placement
from fill.model import TIERS, ApplianceSpec, Catalog, Site, SiteForecast, SitePlan
from fill.placement import PlacementParams, place_site, replicas

M64 = (1 << 64) - 1


# --- building inputs -------------------------------------------------------------------

def make_catalog(sizes, xxh3=None) -> Catalog:
    n = len(sizes)
    ids = np.array([f"obj{i:05d}" for i in range(n)], dtype=object)
    none = np.full(n, None, dtype=object)
    return Catalog(ids, np.asarray(sizes, dtype=np.int64),
                   none.copy() if xxh3 is None else np.array(xxh3, dtype=object),
                   np.arange(n, dtype=np.int32), tuple(ids.tolist()), none,
                   np.full(n, np.nan))


def make_site(tiers: list[dict[str, int]], serve=100.0, name="isp") -> Site:
    return Site(name, "bb1", (7200, 28800), tuple(
        ApplianceSpec(f"{name}-a{g}", f"http://a{g}", serve, t) for g, t in enumerate(tiers)))


def make_fc(obj, value, peak=None, site="isp") -> SiteForecast:
    obj = np.asarray(obj, dtype=np.int64)
    o = np.argsort(obj)
    value = np.asarray(value, dtype=np.float64)[o]
    peak = np.zeros(len(obj)) if peak is None else np.asarray(peak, dtype=np.float64)[o]
    return SiteForecast(site, obj[o], value, peak)


def as_previous(plan: SitePlan, catalog: Catalog) -> dict[str, dict[str, str]]:
    """What the manifests of *plan* say, as read_previous returns it."""
    return {a: dict(zip(catalog.ids[plan.holdings[a]].tolist(),
                        [TIERS[t] for t in plan.tiers[a].tolist()], strict=True))
            for a in plan.holdings}


@st.composite
def fleets(draw, max_objects=60, max_apps=5, prev=True):
    n = draw(st.integers(1, max_objects))
    sizes = draw(st.lists(st.one_of(st.integers(1, 100), st.just(0), st.just(10)),
                          min_size=n, max_size=n))
    g = draw(st.integers(1, max_apps))
    tiers = [{t: draw(st.integers(0, 400)) for t in TIERS if draw(st.booleans())}
             for _ in range(g)]
    serve = draw(st.sampled_from([0.0, 1.0, 10.0, 100.0]))
    cat = make_catalog(sizes)
    obj = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    # Few distinct values: ties in density are common.
    value = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 5.0, 10.0, 37.5, 1000.0]),
                          min_size=len(obj), max_size=len(obj)))
    peak = draw(st.lists(st.sampled_from([0.0, 1.0, 8.0, 30.0, 250.0]),
                         min_size=len(obj), max_size=len(obj)))
    site = make_site(tiers, serve)
    previous: dict[str, dict[str, str]] = {}
    if prev:
        for a in site.appliances:
            if draw(st.booleans()):
                held = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
                previous[a.name] = {f"obj{i:05d}": "hdd" for i in held}
                if draw(st.booleans()):
                    previous[a.name]["gone-from-catalog"] = "ssd"
    params = PlacementParams(
        churn_budget=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        churn_budget_bytes=draw(st.sampled_from([None, None, 0, 150])),
        fill_free_space=draw(st.booleans()),
        keep_margin=draw(st.sampled_from([1.0, 1.25, 2.0])),
        replica_headroom=draw(st.sampled_from([0.5, 0.7, 1.0])),
        max_replicas=draw(st.sampled_from([None, 1, 2])))
    return cat, site, make_fc(obj, value, peak), previous, params


# --- the scalar reference: docs/fill-placement.md, one object at a time -------------------

def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _rank(oid: str, names: list[str]) -> list[int]:
    h = xxhash.xxh3_64_intdigest(oid.encode())
    s = [_mix(h ^ xxhash.xxh3_64_intdigest(a.encode())) for a in names]
    return sorted(range(len(names)), key=lambda i: (-s[i], i))


def reference(site, cat, fc, previous, params):
    """appliance -> {object: (tier, added)}."""
    names = [a.name for a in site.appliances]
    free = [[a.tiers.get(t, 0) for t in TIERS] for a in site.appliances]
    ids = cat.ids.tolist()
    num = {s: i for i, s in enumerate(ids)}
    size = cat.size.tolist()
    fv = {o: (v if math.isfinite(v) and v > 0 else 0.0, p)
          for o, v, p in zip(fc.obj.tolist(), fc.value.tolist(), fc.peak_gbps.tolist(),
                             strict=True)}
    held: dict[int, set[int]] = {}
    prev_bytes = [0] * len(names)
    for g, a in enumerate(names):
        for oid in previous.get(a, {}):
            if oid in num and size[num[oid]] > 0:
                held.setdefault(num[oid], set()).add(g)
                prev_bytes[g] += size[num[oid]]
    cand = sorted({o for o, (v, _) in fv.items() if v > 0 and size[o] > 0} | set(held))
    serve = min(a.serve_gbps for a in site.appliances)
    top = min(params.max_replicas or len(names), len(names))

    def k_of(p):
        if serve <= 0 or top <= 1:
            return 1
        return min(max(math.ceil(p / (params.replica_headroom * serve)), 1), top)

    cap = [sum(f) for f in free]
    if params.churn_budget_bytes is not None:
        budget = [params.churn_budget_bytes * c // max(sum(cap), 1) for c in cap]
    else:
        budget = [math.floor(c * params.churn_budget) for c in cap]
    if params.fill_free_space:
        budget = [b + max(c - p, 0) for b, c, p in zip(budget, cap, prev_bytes, strict=True)]
    rows = []
    for o in cand:
        v, p = fv.get(o, (0.0, 0.0))
        d, k = v / size[o], k_of(p)
        ranked = _rank(ids[o], names)
        hs = held.get(o, set())
        kw = min(len(hs), k)
        if hs:
            rows.append((-(d * params.keep_margin), 0, o, [g for g in ranked if g in hs][:kw],
                         kw))
        if k > kw:
            rows.append((-d, 1, o, [g for g in ranked if g not in hs], k - kw))
    rows.sort(key=lambda r: r[:3])
    out: list[dict[int, tuple[int, bool]]] = [{} for _ in names]
    for _, kind, o, pref, want in rows:
        s, got = size[o], 0
        for g in pref:
            if got == want:
                break
            if kind and s > budget[g]:
                continue
            t = next((t for t in range(len(TIERS)) if s <= free[g][t]), None)
            if t is None:
                continue
            free[g][t] -= s
            if kind:
                budget[g] -= s
            out[g][o] = (t, bool(kind))
            got += 1
    return {a: out[g] for g, a in enumerate(names)}


def plan_as_dict(plan: SitePlan):
    out = {}
    for a, objs in plan.holdings.items():
        added = set(plan.added[a].tolist())
        out[a] = {o: (t, o in added) for o, t in zip(objs.tolist(), plan.tiers[a].tolist(),
                                                     strict=True)}
    return out


# Every test on the compiled loops and on their numpy twins (conftest.py).
pytestmark = pytest.mark.usefixtures("both_loops")


@pytest.fixture
def tiny_runs(monkeypatch):
    """Windows and runs of a few rows, so small fleets take every path of the pass."""
    monkeypatch.setattr(placement, "_WINDOW", 5)
    monkeypatch.setattr(placement, "_RUN_FIRST", 3)
    monkeypatch.setattr(placement, "_RUN_MIN", 1)


# --- properties ---------------------------------------------------------------------------

def check_invariants(plan, site, cat, fc, previous, params):
    names = [a.name for a in site.appliances]
    assert list(plan.holdings) == names
    assert list(plan.tiers) == names and list(plan.added) == names
    assert list(plan.deleted) == names and list(plan.priority) == names
    churn = 0
    for a in site.appliances:
        objs, tiers, added = plan.holdings[a.name], plan.tiers[a.name], plan.added[a.name]
        assert objs.dtype == np.int64 and tiers.dtype == np.int8 and added.dtype == np.int64
        assert (np.diff(objs) > 0).all() and (np.diff(added) > 0).all()
        assert np.isin(added, objs).all()
        assert (cat.size[objs] > 0).all()
        for t, tier in enumerate(TIERS):  # no tier over capacity (hence no appliance)
            assert cat.size[objs[tiers == t]].sum() <= a.tiers.get(tier, 0)
        before = previous.get(a.name, {})
        held_ids = set(cat.ids[objs].tolist())
        added_ids = set(cat.ids[added].tolist())
        deleted = plan.deleted[a.name]
        assert deleted == sorted(deleted)
        assert not added_ids & set(deleted)  # nothing both added and deleted
        assert set(deleted) == set(before) - held_ids
        assert added_ids == held_ids - set(before)
        assert len(plan.priority[a.name]) == len(added)
        churn += int(cat.size[added].sum())
    assert plan.churn_bytes == churn
    assert 0.0 <= plan.expected_offload <= 1.0 + 1e-12
    assert plan.stats["candidates"] >= plan.stats["objects"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_invariants_and_reference(fleet):
    cat, site, fc, previous, params = fleet
    plan = place_site(site, cat, fc, previous, params)
    check_invariants(plan, site, cat, fc, previous, params)
    assert plan_as_dict(plan) == reference(site, cat, fc, previous, params)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fleets(max_objects=120))
def test_reference_with_tiny_runs(tiny_runs, fleet):
    cat, site, fc, previous, params = fleet
    plan = place_site(site, cat, fc, previous, params)
    check_invariants(plan, site, cat, fc, previous, params)
    assert plan_as_dict(plan) == reference(site, cat, fc, previous, params)


def assert_same_plan(a: SitePlan, b: SitePlan):
    assert a.site == b.site and a.deleted == b.deleted
    assert a.churn_bytes == b.churn_bytes and a.expected_offload == b.expected_offload
    assert a.stats == b.stats
    for f in ("holdings", "tiers", "added", "priority"):
        x, y = getattr(a, f), getattr(b, f)
        assert list(x) == list(y)
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k])


@settings(max_examples=50, deadline=None)
@given(fleets())
def test_deterministic(fleet):
    cat, site, fc, previous, params = fleet
    a = place_site(site, cat, fc, previous, params)
    b = place_site(site, cat, fc, {k: dict(v) for k, v in previous.items()}, params)
    assert_same_plan(a, b)


@settings(max_examples=100, deadline=None)
@given(fleets(prev=False), st.data())
def test_rendezvous_consistency(fleet, data):
    """Ample room, no previous plan: taking one appliance out moves only its objects."""
    cat, site, fc, _, params = fleet
    roomy = [dict(ssd=10**6, hdd=10**9) for _ in range(len(site.appliances) + 1)]
    site = make_site(roomy, serve=site.appliances[0].serve_gbps)
    params = replace(params, max_replicas=1, fill_free_space=True)
    gone = data.draw(st.integers(0, len(site.appliances) - 1))
    smaller = replace(site, appliances=site.appliances[:gone] + site.appliances[gone + 1:])
    before = place_site(site, cat, fc, {}, params)
    after = place_site(smaller, cat, fc, {}, params)
    where_before = {o: a for a, objs in before.holdings.items() for o in objs.tolist()}
    where_after = {o: a for a, objs in after.holdings.items() for o in objs.tolist()}
    assert set(where_before) == set(where_after)
    for o, a in where_before.items():
        if a != site.appliances[gone].name:
            assert where_after[o] == a


@settings(max_examples=150, deadline=None)
@given(fleets(prev=False), st.floats(1.0, 1.25))
def test_stability(fleet, factor):
    cat, site, fc, _, params = fleet
    params = replace(params, fill_free_space=True)  # the first night fills completely
    first = place_site(site, cat, fc, {}, params)
    prev = as_previous(first, cat)
    again = place_site(site, cat, fc, prev, params)
    # Same forecast: nothing to add, nothing to delete, every object stays on its tier.
    assert all(len(v) == 0 for v in again.added.values())
    assert all(v == [] for v in again.deleted.values())
    assert again.churn_bytes == 0
    for a in first.holdings:
        assert np.array_equal(first.holdings[a], again.holdings[a])
        assert np.array_equal(first.tiers[a], again.tiers[a])
    # A perturbed forecast: churn within each appliance's budget.
    rng = np.random.default_rng(int(factor * 1e6))
    fc2 = replace(fc, value=fc.value * rng.uniform(1 / factor, factor, len(fc.value)))
    moved = place_site(site, cat, fc2, prev, params)
    for a in site.appliances:
        budget = moved.stats["appliances"][a.name]["churn_budget"]
        assert moved.stats["appliances"][a.name]["added_bytes"] <= budget


def test_churn_budget_caps_replacement():
    # Ten equal objects fill one appliance; tomorrow ten others are worth 10x as much.
    cat = make_catalog([10] * 20)
    site = make_site([{"hdd": 100}])
    old = place_site(site, cat, make_fc(range(10), [1.0] * 10), {}, PlacementParams())
    assert old.holdings["isp-a0"].tolist() == list(range(10))
    prev = as_previous(old, cat)
    fc = make_fc(range(20), [1.0] * 10 + [10.0] * 10)
    new = place_site(site, cat, fc, prev, PlacementParams(churn_budget=0.3))
    assert new.added["isp-a0"].tolist() == [10, 11, 12]
    assert new.deleted["isp-a0"] == ["obj00007", "obj00008", "obj00009"]
    assert new.churn_bytes == 30
    # An absolute budget for the site, the same way.
    new = place_site(site, cat, fc, prev, PlacementParams(churn_budget_bytes=20))
    assert new.churn_bytes == 20
    # Space freed by a title leaving the catalog fills on top of the budget.
    prev["isp-a0"]["retired"] = "hdd"
    del prev["isp-a0"]["obj00000"]
    cat_less = make_catalog([10] * 20)
    new = place_site(site, cat_less, fc, prev, PlacementParams(churn_budget=0.3))
    assert new.churn_bytes == 40
    assert "retired" in new.deleted["isp-a0"]
    strict = place_site(site, cat_less, fc, prev,
                        PlacementParams(churn_budget=0.3, fill_free_space=False))
    assert strict.churn_bytes == 30


@pytest.mark.parametrize(("ratio", "replaced"), [(1.2, False), (1.3, True)])
def test_keep_margin(ratio, replaced):
    cat = make_catalog([10, 10])
    site = make_site([{"ssd": 10}])
    prev = {"isp-a0": {"obj00000": "ssd"}}
    fc = make_fc([0, 1], [1.0, ratio])
    plan = place_site(site, cat, fc, prev, PlacementParams(churn_budget=1.0))
    assert plan.holdings["isp-a0"].tolist() == ([1] if replaced else [0])
    assert plan.deleted["isp-a0"] == (["obj00000"] if replaced else [])


def test_replication_follows_peak_load():
    cat = make_catalog([10] * 4)
    site = make_site([{"hdd": 1000}] * 5, serve=100.0)
    # 0.7 * 100 Gbps an appliance: 150 Gbps needs 3, 70 needs 1, 71 needs 2, 10^4 needs 5.
    fc = make_fc(range(4), [5.0, 4.0, 3.0, 2.0], [150.0, 70.0, 71.0, 1e4])
    plan = place_site(site, cat, fc, {}, PlacementParams())
    on = {o: sorted(a for a, objs in plan.holdings.items() if o in objs.tolist())
          for o in range(4)}
    assert [len(on[o]) for o in range(4)] == [3, 1, 2, 5]
    assert plan.stats["replicas"] == 11
    assert replicas(np.array([150.0]), site, PlacementParams(max_replicas=2)).tolist() == [2]
    # Replicas go to the object's first appliances in rendezvous order.
    names = [a.name for a in site.appliances]
    assert on[0] == sorted(names[i] for i in _rank("obj00000", names)[:3])


def test_weakest_appliance_sets_the_replica_count():
    site = make_site([{"hdd": 1}] * 3, serve=100.0)
    site = replace(site, appliances=site.appliances[:2] + (
        replace(site.appliances[2], serve_gbps=10.0),))
    assert replicas(np.array([0.0, 7.0, 7.1, 1e9]), site, PlacementParams()).tolist() == \
        [1, 1, 2, 3]


def test_hottest_bytes_on_the_fastest_tier():
    cat = make_catalog([10] * 8)
    site = make_site([{"ssd": 20, "flash": 30, "hdd": 25}])
    fc = make_fc(range(8), [8, 7, 6, 5, 4, 3, 2, 1])
    plan = place_site(site, cat, fc, {}, PlacementParams())
    got = dict(zip(plan.holdings["isp-a0"].tolist(), plan.tiers["isp-a0"].tolist(),
                   strict=True))
    assert got == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2}
    assert plan.stats["bytes"] == {"ssd": 20, "flash": 30, "hdd": 20}
    # An object too big for the room left on a faster tier goes to the next; a smaller,
    # colder one may still take that room.
    cat = make_catalog([15, 10, 5])
    site = make_site([{"ssd": 20, "hdd": 100}])
    plan = place_site(site, cat, make_fc(range(3), [30.0, 10.0, 1.0]), {}, PlacementParams())
    assert plan.tiers["isp-a0"].tolist() == [0, 2, 0]


@settings(max_examples=100, deadline=None)
@given(fleets(prev=False))
def test_equal_sizes_tiers_follow_density(fleet):
    cat, site, fc, _, params = fleet
    cat = make_catalog(np.where(cat.size > 0, 10, 0))
    plan = place_site(site, cat, fc, {}, params)
    dens = dict(zip(fc.obj.tolist(), fc.value.tolist(), strict=True))
    for a in site.appliances:
        d = np.array([dens[o] for o in plan.holdings[a.name].tolist()])
        t = plan.tiers[a.name]
        for tier in range(1, len(TIERS)):
            if (t == tier).any() and (t < tier).any():
                assert d[t < tier].min() >= d[t == tier].max()


def test_previous_objects_gone_from_catalog_or_empty_are_deleted():
    cat = make_catalog([10, 0, 10])
    site = make_site([{"hdd": 100}])
    prev = {"isp-a0": {"obj00000": "hdd", "obj00001": "hdd", "zz-retired": "ssd"}}
    plan = place_site(site, cat, make_fc([2], [1.0]), prev, PlacementParams())
    # obj00000 has no forecast but is held: kept at value 0 while there is room.
    assert plan.holdings["isp-a0"].tolist() == [0, 2]
    assert plan.added["isp-a0"].tolist() == [2]
    assert plan.deleted["isp-a0"] == ["obj00001", "zz-retired"]
    assert plan.expected_offload == 1.0


def test_surplus_replicas_are_dropped():
    cat = make_catalog([10])
    site = make_site([{"hdd": 100}] * 3)
    prev = {a.name: {"obj00000": "hdd"} for a in site.appliances}
    plan = place_site(site, cat, make_fc([0], [1.0]), prev, PlacementParams())
    names = [a.name for a in site.appliances]
    keep = names[_rank("obj00000", names)[0]]
    assert {a for a, o in plan.holdings.items() if len(o)} == {keep}
    assert sum(len(d) for d in plan.deleted.values()) == 2
    assert plan.churn_bytes == 0


def test_backbone_node_as_one_appliance_site():
    cat = make_catalog([10] * 5)
    node = Site("bb1", None, (0, 0), (ApplianceSpec("bb1", "http://bb1", 1e9,
                                                    {"ssd": 20, "hdd": 20}),))
    fc = make_fc(range(5), [5, 4, 3, 2, 1], [1e6] * 5, site="bb1")
    plan = place_site(node, cat, fc, {"bb1": {"obj00004": "hdd"}}, PlacementParams())
    assert plan.site == "bb1"
    assert plan.holdings["bb1"].tolist() == [0, 1, 2, 4]
    assert plan.tiers["bb1"].tolist() == [0, 0, 2, 2]
    assert plan.added["bb1"].tolist() == [0, 1, 2]
    # serve_gbps 0 (unknown) works the same: one copy of everything.
    zero = replace(node, appliances=(replace(node.appliances[0], serve_gbps=0.0),))
    assert place_site(zero, cat, fc, {}, PlacementParams()).stats["replicas"] == 4


def test_empty_inputs():
    cat = make_catalog([])
    plan = place_site(make_site([{"hdd": 10}]), cat, make_fc([], []), {}, PlacementParams())
    assert plan.holdings["isp-a0"].tolist() == [] and plan.expected_offload == 0.0
    cat = make_catalog([5])
    plan = place_site(make_site([]), cat, make_fc([0], [1.0]), {}, PlacementParams())
    assert plan.holdings == {} and plan.churn_bytes == 0
    plan = place_site(make_site([{}]), cat, make_fc([0], [1.0]), {}, PlacementParams())
    assert plan.holdings["isp-a0"].tolist() == [] and plan.expected_offload == 0.0


def test_bad_forecast_values_count_as_zero():
    cat = make_catalog([10, 10, 10])
    fc = make_fc([0, 1, 2], [np.nan, -5.0, np.inf], [np.nan, np.inf, -1.0])
    plan = place_site(make_site([{"hdd": 100}] * 2), cat, fc, {}, PlacementParams())
    assert plan.stats["candidates"] == 0


@pytest.mark.parametrize("bad", [dict(churn_budget=-0.1), dict(keep_margin=0.9),
                                 dict(replica_headroom=0.0), dict(max_replicas=0),
                                 dict(churn_budget_bytes=-1)])
def test_params_are_checked(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        place_site(make_site([{"hdd": 1}]), make_catalog([1]), make_fc([], []), {},
                   PlacementParams(**bad))


def test_forecast_must_match_the_catalog():
    with pytest.raises(ValueError, match="outside the catalog"):
        place_site(make_site([{"hdd": 1}]), make_catalog([1]), make_fc([3], [1.0]), {})
    fc = SiteForecast("isp", np.array([0]), np.array([1.0, 2.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="length"):
        place_site(make_site([{"hdd": 1}]), make_catalog([1]), fc, {})


def test_larger_site_matches_reference():
    """A few thousand objects over eight appliances with default windows and runs."""
    rng = np.random.default_rng(5)
    n = 3000
    cat = make_catalog(rng.integers(1, 1000, n))
    tiers = [{"ssd": int(rng.integers(0, 20000)), "flash": int(rng.integers(0, 50000)),
              "hdd": int(rng.integers(50000, 150000))} for _ in range(8)]
    site = make_site(tiers, serve=10.0)
    obj = rng.choice(n, 2500, replace=False)
    fc = make_fc(obj, rng.pareto(1.0, len(obj)), rng.exponential(5.0, len(obj)))
    first = place_site(site, cat, fc, {}, PlacementParams())
    assert plan_as_dict(first) == reference(site, cat, fc, {}, PlacementParams())
    prev = as_previous(first, cat)
    fc2 = replace(fc, value=fc.value * rng.uniform(0.5, 2.0, len(obj)))
    params = PlacementParams(churn_budget=0.05)
    second = place_site(site, cat, fc2, prev, params)
    check_invariants(second, site, cat, fc2, prev, params)
    assert plan_as_dict(second) == reference(site, cat, fc2, prev, params)
