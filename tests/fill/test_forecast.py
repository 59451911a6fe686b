"""The forecaster: rates, site shrinkage, trend, titles, releases, hints, value and peak."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fill.catalog import load_catalog
from fill.errors import InputError
from fill.forecast import Forecaster, ForecastParams, forecast, forecast_backbone, load_hints
from fill.logs import read_demand
from fill.model import FLEET, ApplianceSpec, BackboneSpec, Catalog, Demand, Link, Site, Topology

DAY = 86400.0
NOW = 1_700_000_000.0
START = NOW - 7 * DAY  # the logs span a week and end at NOW
HL = DAY
G = 1 << 30


def make_catalog(objects) -> Catalog:
    """objects: (id, size, title or None, type or None, release or None), any order."""
    objects = sorted(objects)
    ids = [o[0] for o in objects]
    titles_of = [o[2] or o[0] for o in objects]
    titles = tuple(sorted(set(titles_of)))
    return Catalog(
        ids=np.array(ids, dtype=object),
        size=np.array([o[1] for o in objects], dtype=np.int64),
        xxh3=np.full(len(ids), None, dtype=object),
        title=np.array([titles.index(t) for t in titles_of], dtype=np.int32),
        titles=titles,
        kind=np.array([o[3] for o in objects], dtype=object),
        release=np.array([math.nan if o[4] is None else o[4] for o in objects]))


def make_topology(sites, upstream="bb1", capacity=1000 * G, gbps=10.0) -> Topology:
    return Topology(
        origin="origin", origin_url="http://o",
        backbone=(BackboneSpec("bb1", "http://bb1", {"hdd": 100 * capacity}),
                  BackboneSpec("bb2", "http://bb2", {"hdd": capacity})),
        sites=tuple(Site(name, upstream if name != "direct" else None, (0, 0),
                         (ApplianceSpec(f"{name}-a", "http://a", gbps, {"hdd": capacity}),))
                    for name in sites),
        links=(Link("origin", "bb1", 10.0),))


def make_demand(catalog, sites, rows, first_day=None, start=START, end=NOW) -> Demand:
    """rows: (site name or FLEET, object id, requests, bytes, recent)."""
    names = list(sites) + [FLEET]
    index = catalog.index_of()
    rows = sorted(rows, key=lambda r: (names.index(r[0]), index[r[1]]))
    return Demand(
        sites=names,
        site_idx=np.array([names.index(r[0]) for r in rows], dtype=np.int32),
        obj_idx=np.array([index[r[1]] for r in rows], dtype=np.int64),
        requests=np.array([r[2] for r in rows], dtype=float),
        bytes=np.array([r[3] for r in rows], dtype=float),
        recent=np.array([r[4] for r in rows], dtype=float),
        last_ts=np.full(len(rows), end),
        lines=len(rows), start_ts=start, end_ts=end,
        first_day=np.zeros(len(catalog)) if first_day is None else first_day)


def window(half_life, start=START, end=NOW):
    return half_life / math.log(2) * (2 ** (-(NOW - end) / half_life)
                                      - 2 ** (-(NOW - start) / half_life))


W = window(HL)
WR = window(ForecastParams().recent_half_life)


def steady(requests):
    """The recent count of an object requested at a steady rate: trend exactly 1."""
    return requests * WR / W


def values(fc, catalog) -> dict[str, float]:
    return dict(zip(catalog.ids[fc.obj].tolist(), fc.value.tolist(), strict=True))


def test_value_and_peak_of_a_steady_object():
    cat = make_catalog([("a", 4 * G, None, None, None), ("b", 2 * G, None, None, None)])
    topo = make_topology(["s1"])
    d = make_demand(cat, ["s1"], [("s1", "a", 70.0, 70.0 * 4 * G, steady(70.0)),
                                  ("s1", "b", 10.0, 10.0 * 2 * G, steady(10.0))])
    fc = forecast(d, cat, topo, NOW, ForecastParams())["s1"]
    assert fc.site == "s1" and fc.obj.tolist() == [0, 1] and fc.obj.dtype == np.int64
    # whole-object requests: bytes per request = size; trend 1; rate = count / window
    want = [70.0 / W * DAY * 4 * G, 10.0 / W * DAY * 2 * G]
    assert fc.value.tolist() == pytest.approx(want, rel=1e-12)
    assert fc.peak_gbps.tolist() == pytest.approx(
        [v * 8 / DAY * 2.5 / 1e9 for v in want], rel=1e-12)


def test_bytes_per_request_from_the_logs():
    cat = make_catalog([("a", 1000, None, None, None), ("b", 1000, None, None, None),
                        ("new", 3000, None, None, NOW + 3600)])
    topo = make_topology(["s1"])
    # a: 99 requests of 100 bytes each; b: 1 whole-object request
    d = make_demand(cat, ["s1"], [("s1", "a", 99.0, 9900.0, steady(99.0)),
                                  ("s1", "b", 1.0, 1000.0, steady(1.0))])
    fc = forecast(d, cat, topo, NOW, ForecastParams())["s1"]
    v = values(fc, cat)
    fraction = (9900 + 1000) / (100 * 1000)  # of an object that one request reads
    assert v["a"] == pytest.approx(99 / W * DAY * (9900 + fraction * 1000) / 100, rel=1e-12)
    # no history: the fleet's fraction of its size
    assert v["new"] / 3000 == pytest.approx(fraction * v["new"] / (3000 * fraction))
    per_request = v["new"] / 3000 / fraction
    assert per_request > 0


def test_trend_lifts_a_rising_object_over_a_flat_one():
    cat = make_catalog([(x, G, None, None, None) for x in ("flat", "rising", "fading")])
    topo = make_topology(["s1"])
    total = 200.0  # equal long-term decayed totals
    d = make_demand(cat, ["s1"], [("s1", "flat", total, total * G, steady(total)),
                                  ("s1", "rising", total, total * G, 3 * steady(total)),
                                  ("s1", "fading", total, total * G, steady(total) / 3)])
    v = values(forecast(d, cat, topo, NOW, ForecastParams())["s1"], cat)
    assert v["rising"] > 1.5 * v["flat"] > 2.25 * v["fading"]
    p = ForecastParams(trend_max=1.2, trend_min=0.9)
    v2 = values(forecast(d, cat, topo, NOW, p)["s1"], cat)
    base = total / W * DAY * G  # the rate without trend
    assert v2["rising"] == pytest.approx(1.2 * base, rel=1e-12)  # clipped
    assert v2["fading"] == pytest.approx(0.9 * base, rel=1e-12)


def test_trend_is_relative_to_the_site():
    # planning at night: every object's recent count is low; none is "fading" for that
    cat = make_catalog([("a", G, None, None, None), ("b", G, None, None, None)])
    topo = make_topology(["s1"])
    d = make_demand(cat, ["s1"], [("s1", "a", 100.0, 100.0 * G, steady(100.0) / 4),
                                  ("s1", "b", 10.0, 10.0 * G, steady(10.0) / 4)])
    v = values(forecast(d, cat, topo, NOW, ForecastParams())["s1"], cat)
    assert v["a"] == pytest.approx(100 / W * DAY * G, rel=0.02)
    assert v["b"] == pytest.approx(10 / W * DAY * G, rel=0.1)


def test_rate_of_a_new_title_uses_its_exposure():
    # released 6 h before the logs end: its count is spread over 6 h, not the week
    cat = make_catalog([("old", G, None, None, None),
                        ("young", G, None, None, NOW - 6 * 3600)])
    topo = make_topology(["s1"])
    exposure = window(HL, start=NOW - 6 * 3600)
    d = make_demand(cat, ["s1"], [
        ("s1", "old", 100.0, 100.0 * G, steady(100.0)),
        ("s1", "young", 20.0, 20.0 * G,
         20.0 * window(ForecastParams().recent_half_life, NOW - 6 * 3600) / exposure)])
    v = values(forecast(d, cat, topo, NOW, ForecastParams())["s1"], cat)
    assert v["young"] == pytest.approx(20 / exposure * DAY * G, rel=1e-9)
    assert v["young"] > v["old"]


def _release_scenario(first_days, lookahead_new=DAY / 2, later=3 * DAY):
    objects = [("old", G, None, None, None)]
    first_day = []
    for i, n in enumerate(first_days):  # past releases, first day seen in the logs
        objects.append((f"past{i}", G, None, None, START + DAY * (1 + i * 0.5)))
        first_day.append(n)
    objects += [("new", 2 * G, None, None, NOW + lookahead_new),
                ("later", G, None, None, NOW + later),
                ("forgotten", G, None, None, START - 30 * DAY)]
    cat = make_catalog(objects)
    fd = np.zeros(len(cat))
    index = cat.index_of()
    for i, n in enumerate(first_days):
        fd[index[f"past{i}"]] = n
    rows = [("s1", "old", 50.0, 50.0 * G, steady(50.0))]
    rows += [("s1", f"past{i}", 5.0, 5.0 * G, steady(5.0)) for i in range(len(first_days))]
    return cat, make_demand(cat, ["s1"], rows, first_day=fd)


def test_new_release_gets_a_prior_before_its_first_view():
    cat, d = _release_scenario([10, 20, 30, 40, 50])
    topo = make_topology(["s1"])
    v = values(forecast(d, cat, topo, NOW, ForecastParams())["s1"], cat)
    prior = float(np.quantile([10, 20, 30, 40, 50], 0.9))  # 46 requests in its first day
    assert v["new"] == pytest.approx(prior * 2 * G, rel=1e-12)  # whole-object requests
    assert "later" not in v  # released after the lookahead: 0
    assert "forgotten" not in v  # watchable all along and never watched
    wider = ForecastParams(release_lookahead=4 * DAY)
    assert values(forecast(d, cat, topo, NOW, wider)["s1"], cat)["later"] > 0


def test_release_prior_without_past_releases_uses_title_rates():
    cat, d = _release_scenario([10, 20])  # fewer than release_min_samples
    topo = make_topology(["s1"])
    v = values(forecast(d, cat, topo, NOW, ForecastParams())["s1"], cat)
    # the titles with history, each over the time it was out
    rates = np.array([50.0 / W, 5.0 / window(HL, START + DAY), 5.0 / window(HL, START + 1.5 * DAY)])
    rates *= DAY
    assert v["new"] == pytest.approx(np.quantile(rates, 0.9) * 2 * G, rel=1e-12)


def test_release_prior_with_no_logs_at_all():
    cat = make_catalog([("new", G, None, None, NOW + 3600), ("x", G, None, None, None)])
    topo = make_topology(["s1", "s2"], gbps=10)
    d = make_demand(cat, ["s1", "s2"], [], start=math.nan, end=math.nan)
    fcs = forecast(d, cat, topo, NOW, ForecastParams(release_default=40.0))
    for name in ("s1", "s2"):  # split by capacity: half each
        assert values(fcs[name], cat) == {"new": pytest.approx(20.0 * G)}


def test_not_yet_released_objects_are_worth_nothing_even_with_history():
    cat = make_catalog([("a", G, None, None, None), ("b", G, None, None, NOW + 5 * DAY)])
    topo = make_topology(["s1"])
    d = make_demand(cat, ["s1"], [("s1", "a", 5.0, 5.0 * G, steady(5.0)),
                                  ("s1", "b", 5.0, 5.0 * G, steady(5.0))])
    assert set(values(forecast(d, cat, topo, NOW, ForecastParams())["s1"], cat)) == {"a"}


def test_unseen_encode_takes_its_titles_rate():
    cat = make_catalog([("t1-a", G, "t1", None, None), ("t1-b", G, "t1", None, None),
                        ("t1-c", 3 * G, "t1", None, None), ("u", G, None, None, None)])
    topo = make_topology(["s1"])
    d = make_demand(cat, ["s1"], [("s1", "t1-a", 30.0, 30.0 * G, steady(30.0)),
                                  ("s1", "t1-b", 10.0, 10.0 * G, steady(10.0)),
                                  ("s1", "u", 10.0, 10.0 * G, steady(10.0))])
    fc = forecast(d, cat, topo, NOW, ForecastParams())["s1"]
    v = values(fc, cat)
    rate_a, rate_b = 30 / W * DAY, 10 / W * DAY
    # no type: an even share (1 of 3 encodes) of the title's rate, as bytes of its size
    assert v["t1-c"] == pytest.approx((rate_a + rate_b) / 3 * 3 * G, rel=1e-9)


def test_encode_share_is_learned_by_type():
    objects, rows = [], []
    for t in range(4):
        objects += [(f"t{t}-hd", G, f"t{t}", "hd", None), (f"t{t}-sd", G, f"t{t}", "sd", None)]
        hd = 0.0 if t == 3 else 30.0 + t  # t3-hd is new
        if hd:
            rows.append(("s1", f"t{t}-hd", hd, hd * G, steady(hd)))
        rows.append(("s1", f"t{t}-sd", 10.0, 10.0 * G, steady(10.0)))
    cat = make_catalog(objects)
    topo = make_topology(["s1"])
    d = make_demand(cat, ["s1"], rows)
    v = values(forecast(d, cat, topo, NOW, ForecastParams())["s1"], cat)
    # across titles t0..t3 (t3 counts too: its hd had nothing), hd gets this share
    hd_share = (30 + 31 + 32) / ((30 + 31 + 32) + 4 * 10 + 0)
    assert v["t3-hd"] == pytest.approx(10 / W * DAY * hd_share * G, rel=1e-9)


def test_sites_borrow_from_the_fleet():
    cat = make_catalog([(x, G, None, None, None) for x in ("hit", "local", "z")])
    topo = make_topology(["big", "small"])
    rows = [("big", "hit", 1000.0, 1000.0 * G, steady(1000.0)),
            ("big", "local", 10.0, 10.0 * G, steady(10.0)),
            ("small", "local", 3.0, 3.0 * G, steady(3.0)),
            ("small", "z", 1.0, 1.0 * G, steady(1.0))]
    d = make_demand(cat, ["big", "small"], rows)
    shared = forecast(d, cat, topo, NOW, ForecastParams(site_prior_strength=1000.0))
    alone = forecast(d, cat, topo, NOW, ForecastParams(site_prior_strength=1e-6))
    small, small_alone = values(shared["small"], cat), values(alone["small"], cat)
    # a fleet hit never seen at the small site: most of its share when sites are alike,
    # next to nothing when each site goes its own way
    share = 4 / 1014
    assert small["hit"] == pytest.approx(share * 1000 / W * DAY * G, rel=0.01)
    assert small_alone.get("hit", 0.0) < 1e-3 * small["hit"]
    assert small_alone["local"] == pytest.approx(3 / W * DAY * G, rel=1e-3)
    exact = ForecastParams(site_prior_strength=5.0, trend_pseudo=1e15)  # trend 1
    got = values(forecast(d, cat, topo, NOW, exact)["small"], cat)["local"]
    mu = share * 13
    assert got == pytest.approx((3 + 5) * mu / (mu + 5) / W * DAY * G, rel=1e-6)


def test_strength_is_estimated_from_how_alike_sites_are():
    rng = np.random.default_rng(3)
    n_obj, n_sites = 300, 6
    objects = [(f"o{i:03d}", G, None, None, None) for i in range(n_obj)]
    cat = make_catalog(objects)
    sites = [f"s{j}" for j in range(n_sites)]
    topo = make_topology(sites)
    popularity = 1.0 / np.arange(1, n_obj + 1)

    def demand(regional):
        rows = []
        for j, site in enumerate(sites):
            p = popularity if not regional else np.roll(popularity, 50 * j)
            counts = rng.poisson(3000 * p / p.sum() * 20)
            rows += [(site, f"o{i:03d}", float(c), float(c) * G, steady(float(c)))
                     for i, c in enumerate(counts) if c]
        return make_demand(cat, sites, rows)

    alike = Forecaster(demand(False), cat, topo, NOW, ForecastParams())
    apart = Forecaster(demand(True), cat, topo, NOW, ForecastParams())
    assert alike.k > 50 and apart.k < 5


def test_fleet_wide_lines_are_spread_by_site_share():
    cat = make_catalog([("a", G, None, None, None), ("b", G, None, None, None)])
    topo = make_topology(["s1", "s2"])
    rows = [("s1", "a", 30.0, 30.0 * G, steady(30.0)), ("s2", "a", 10.0, 10.0 * G, steady(10)),
            (FLEET, "b", 100.0, 100.0 * G, steady(100.0))]
    d = make_demand(cat, ["s1", "s2"], rows)
    fcs = forecast(d, cat, topo, NOW, ForecastParams())
    b1, b2 = values(fcs["s1"], cat)["b"], values(fcs["s2"], cat)["b"]
    assert b1 == pytest.approx(3 * b2, rel=1e-9)
    assert b1 + b2 == pytest.approx(100 / W * DAY * G, rel=1e-9)


def test_site_without_lines_gets_its_capacity_share():
    cat = make_catalog([("a", G, None, None, None)])
    topo = make_topology(["s1", "s2", "new"], gbps=10)
    d = make_demand(cat, ["s1", "s2", "new"], [("s1", "a", 30.0, 30.0 * G, steady(30.0)),
                                              ("s2", "a", 30.0, 30.0 * G, steady(30.0))])
    fcs = forecast(d, cat, topo, NOW, ForecastParams(site_prior_strength=1e9))
    assert list(fcs) == ["s1", "s2", "new"]
    total = 60 / W * DAY * G
    assert values(fcs["new"], cat)["a"] == pytest.approx(total / 3, rel=1e-6)


def test_hints_override(tmp_path):
    cat = make_catalog([("a", G, "ta", None, None), ("b1", G, "tb", None, None),
                        ("b2", G, "tb", None, None), ("c", G, None, None, NOW + 9 * DAY)])
    topo = make_topology(["s1", "s2"])
    d = make_demand(cat, ["s1", "s2"], [("s1", "a", 50.0, 50.0 * G, steady(50.0)),
                                        ("s2", "a", 50.0, 50.0 * G, steady(50.0))])
    hints = tmp_path / "hints.csv"
    hints.write_text("id_or_title,expected_requests_per_day,note\n"
                     "a,0,pulled\ntb,40,premiere\nb2,10,\nc,6,\nnot-here,5,\n")
    fcs = forecast(d, cat, topo, NOW, ForecastParams(hints=hints))
    for name in ("s1", "s2"):
        v = values(fcs[name], cat)
        assert "a" not in v  # 0 requests a day: out
        assert v["b1"] == pytest.approx(0.5 * 40 / 2 * G)  # the title split over 2 encodes
        assert v["b2"] == pytest.approx(0.5 * 10 * G)  # its own hint wins over its title's
        assert v["c"] == pytest.approx(0.5 * 6 * G)  # even before its release


def test_load_hints_and_its_errors(tmp_path):
    path = tmp_path / "hints.csv"
    path.write_text("id_or_title,expected_requests_per_day\nx,1.5\n\n y ,2e3\n")
    assert load_hints(path) == {"x": 1.5, "y": 2000.0}

    def error(text):
        path.write_text(text)
        with pytest.raises(InputError) as info:
            load_hints(path)
        return str(info.value).removeprefix(f"{path}: ")

    assert error("id,expected_requests_per_day\n") == (
        "line 1: no 'id_or_title' column (the header needs "
        "id_or_title,expected_requests_per_day)")
    assert error("id_or_title,expected_requests_per_day\na,1\nb,lots\n") == (
        "line 3: expected_requests_per_day: 'lots' is not a number of requests per day "
        "(0 or more)")
    assert error("id_or_title,expected_requests_per_day\na,-1\n").startswith(
        "line 2: expected_requests_per_day: '-1' is not")
    assert error("id_or_title,expected_requests_per_day\na,nan\n").startswith("line 2:")
    assert error("id_or_title,expected_requests_per_day\n,3\n") == "line 2: id_or_title: empty"
    assert error("id_or_title,expected_requests_per_day\na,1\n\na,2\n") == (
        "line 4: id_or_title: 'a' appears twice (first on line 2)")
    assert error("") == ("line 1: empty; expected a header "
                         "id_or_title,expected_requests_per_day")
    with pytest.raises(InputError, match="nope.csv: hints file not found"):
        load_hints(tmp_path / "nope.csv")


def test_backbone_sums_the_sites_it_serves():
    cat = make_catalog([(x, G, None, None, None) for x in "abc"])
    topo = make_topology(["s1", "s2", "direct"])
    rows = [("s1", "a", 10.0, 10.0 * G, steady(10.0)), ("s2", "b", 10.0, 10.0 * G, steady(10)),
            ("direct", "c", 10.0, 10.0 * G, steady(10.0))]
    d = make_demand(cat, ["s1", "s2", "direct"], rows)
    fcs = forecast(d, cat, topo, NOW, ForecastParams())
    bb = forecast_backbone(fcs, topo)
    assert list(bb) == ["bb1", "bb2"]
    assert bb["bb2"].obj.size == 0 and bb["bb2"].site == "bb2"
    want = np.zeros(3)
    want_peak = np.zeros(3)
    for name in ("s1", "s2"):  # "direct" fills from the origin: no backbone node
        want[fcs[name].obj] += fcs[name].value
        want_peak[fcs[name].obj] += fcs[name].peak_gbps
    keep = np.flatnonzero(want)
    assert bb["bb1"].obj.tolist() == keep.tolist() and bb["bb1"].site == "bb1"
    assert bb["bb1"].value.tolist() == pytest.approx(want[keep].tolist())
    assert bb["bb1"].peak_gbps.tolist() == pytest.approx(want_peak[keep].tolist())


def test_forecaster_one_site_at_a_time_gives_the_same():
    cat = make_catalog([(x, G, None, None, None) for x in "abcd"])
    topo = make_topology(["s1", "s2", "direct"])
    rows = [("s1", "a", 10.0, 10.0 * G, steady(10.0)), ("s2", "b", 10.0, 10.0 * G, steady(10)),
            ("direct", "c", 10.0, 10.0 * G, steady(10.0)), (FLEET, "d", 3.0, 3 * G, 1.0)]
    d = make_demand(cat, ["s1", "s2", "direct"], rows)
    fcs = forecast(d, cat, topo, NOW, ForecastParams())
    f = Forecaster(d, cat, topo, NOW, ForecastParams())
    for name in ("direct", "s1", "s2"):  # any order
        one = f.site(name)
        assert one.site == name and np.array_equal(one.obj, fcs[name].obj)
        assert np.array_equal(one.value, fcs[name].value)
        assert np.array_equal(one.peak_gbps, fcs[name].peak_gbps)
    bb, want = f.backbone(), forecast_backbone(fcs, topo)
    assert list(bb) == list(want)
    for name in want:
        assert np.array_equal(bb[name].obj, want[name].obj)
        assert np.array_equal(bb[name].value, want[name].value)
        assert np.array_equal(bb[name].peak_gbps, want[name].peak_gbps)


def test_capacity_cut_keeps_the_densest_objects():
    n = 200
    cat = make_catalog([(f"o{i:03d}", G, None, None, None) for i in range(n)])
    topo = make_topology(["s1"], capacity=10 * G)
    rows = [("s1", f"o{i:03d}", float(i + 1), float(i + 1) * G, steady(float(i + 1)))
            for i in range(n)]
    d = make_demand(cat, ["s1"], rows)
    cut = forecast(d, cat, topo, NOW, ForecastParams(keep_capacity_factor=2.0))["s1"]
    kept = set(cat.ids[cut.obj].tolist())
    assert 20 <= len(kept) <= 25  # twice the 10 objects that fit, and a histogram bin
    assert kept == {f"o{i:03d}" for i in range(n - len(kept), n)}
    full = forecast(d, cat, topo, NOW, ForecastParams(keep_capacity_factor=None))["s1"]
    assert full.obj.size == n


def test_params_are_checked():
    with pytest.raises(ValueError, match="half_life"):
        ForecastParams(half_life=0)
    p = ForecastParams()
    p.trend_max = 0.1  # the CLI sets fields after construction
    cat = make_catalog([("a", G, None, None, None)])
    with pytest.raises(ValueError, match="trend_max"):
        forecast(make_demand(cat, ["s1"], []), cat, make_topology(["s1"]), NOW, p)


def test_end_to_end_from_logs(tmp_path):
    """A title released yesterday and climbing outranks an old title it ties with over
    the week, and next week's release is placed before anyone asked for it."""
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(
        "id,size,title,type,release\n"
        + "".join(f"old-hd{k or ''},{G},old{k},hd,{int(START - 90 * DAY)}\n" for k in range(10))
        + f"hit-hd,{G},hit,hd,{int(NOW - DAY)}\n"
        f"soon-hd,{G},soon,hd,{int(NOW + DAY / 2)}\n"
        f"far-hd,{G},far,hd,{int(NOW + 30 * DAY)}\n")
    cat = load_catalog(catalog)
    topo_path = tmp_path / "topology.json"
    topo_path.write_text(json.dumps({
        "origin": {"name": "origin", "url": "http://o"},
        "sites": [{"name": "s1", "appliances": [
            {"name": "a1", "url": "http://a1", "serve_gbps": 10, "tiers": {"hdd": "10T"}}]}],
        "links": [{"from": "origin", "to": "s1", "gbps": 10}]}))
    from fill.topology import load_topology

    topo = load_topology(topo_path)
    lines = []
    for i in range(700):  # old: 100 a day all week, like 9 more titles
        for k in range(10):
            lines.append({"ts": START + i * DAY / 100, "object": f"old-hd{k or ''}"})
    for i in range(100):  # hit: the same decayed weight in one day, rising
        lines.append({"ts": NOW - DAY + DAY * math.sqrt((i + 0.5) / 100), "object": "hit-hd"})
    path = tmp_path / "access.jsonl"
    path.write_text("".join(json.dumps({**x, "appliance": "a1", "status": 200, "bytes": G,
                                        "range": None}) + "\n" for x in lines))
    p = ForecastParams()
    d = read_demand([path], cat, topo, NOW, p.half_life, p.recent_half_life)
    v = values(forecast(d, cat, topo, NOW, p)["s1"], cat)
    assert v["old-hd"] == pytest.approx(100 * G, rel=0.1)
    assert v["hit-hd"] > 1.3 * v["old-hd"]
    flat = values(forecast(d, cat, topo, NOW, ForecastParams(trend_min=1, trend_max=1))["s1"],
                  cat)
    assert v["hit-hd"] / v["old-hd"] > 1.1 * flat["hit-hd"] / flat["old-hd"] > 1.1
    assert v["soon-hd"] > 0 and "far-hd" not in v


def test_empty_inputs():
    topo = make_topology(["s1", "s2"])
    empty = make_catalog([])
    fcs = forecast(make_demand(empty, ["s1", "s2"], [], start=math.nan, end=math.nan), empty,
                   topo, NOW, ForecastParams())
    assert list(fcs) == ["s1", "s2"] and all(fc.obj.size == 0 for fc in fcs.values())
    cat = make_catalog([("a", G, None, None, None)])  # no history, no release: no value
    fcs = forecast(make_demand(cat, ["s1", "s2"], []), cat, topo, NOW, ForecastParams())
    assert all(fc.obj.size == 0 for fc in fcs.values())
    assert all(fc.obj.size == 0 for fc in forecast_backbone(fcs, topo).values())
