"""oca-fill simulate: trace reading, the replay's arithmetic, next-access times for Belady.

The replay tests plan with a stand-in forecaster and placement (value = decayed bytes,
greedy by value per byte), so the expected hits can be worked out by hand; one test runs
the real pipeline end to end on a small trace.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from bench.fill import compare
from fill import simulate as sim
from fill import trace as tr
from fill.errors import InputError
from fill.model import TIER_INDEX, Catalog, SiteForecast, SitePlan
from fill.trace import NEVER, next_access, read_trace
from oca.errors import UsageError


def catalog_of(ids: list[str], sizes: list[int], release: list[float] | None = None) -> Catalog:
    n = len(ids)
    assert ids == sorted(ids)
    return Catalog(ids=np.array(ids, dtype=object), size=np.array(sizes, dtype=np.int64),
                   xxh3=np.full(n, None, dtype=object), title=np.arange(n, dtype=np.int32),
                   titles=tuple(ids), kind=np.full(n, None, dtype=object),
                   release=np.array(release if release else [np.nan] * n, dtype=float))


def write_csv(path: Path, rows: list[tuple], header: str = "ts,id,size,bytes") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


class StandInParams:
    """What simulate reads from ForecastParams / PlacementParams."""

    half_life = 1e15  # no decay: weights are 1 to 15 digits
    recent_half_life = 1e15


def standin_forecast(demand, catalog, topology, now, params) -> dict[str, SiteForecast]:
    """Value of an object = its (decayed) bytes in the history."""
    fc = {}
    for i, site in enumerate(demand.sites):
        rows = demand.site_idx == i
        fc[site] = SiteForecast(site=site, obj=demand.obj_idx[rows], value=demand.bytes[rows],
                                peak_gbps=np.zeros(int(rows.sum())))
    return fc


def standin_place(site, catalog, fc, previous, params) -> SitePlan:
    """Greedy by value per byte under the one appliance's capacity."""
    (appliance,) = site.appliances
    value = np.zeros(len(catalog))
    value[fc.obj] = fc.value
    held = np.flatnonzero(sim.hindsight_holdings(catalog.size, value, appliance.tiers["hdd"]))
    return plan_of(site, held)


def plan_of(site, held: np.ndarray, tier: str = "hdd") -> SitePlan:
    (appliance,) = site.appliances
    return SitePlan(site=site.name, holdings={appliance.name: held.astype(np.int64)},
                    tiers={appliance.name: np.full(len(held), TIER_INDEX[tier], np.int8)},
                    added={}, deleted={}, expected_offload=0.0, churn_bytes=0)


def run(trace, capacity, replan, split=0.5) -> dict:
    return sim.simulate(trace, capacity, split, replan, forecast_params=StandInParams(),
                        placement_params=StandInParams(), forecast_fn=standin_forecast,
                        place_fn=standin_place)


# Objects a, b, c, d of 100, 100, 50, 200 bytes; capacity 150. History ts 0..5, the trace
# ends at 20, so split 0.5 falls at ts 10.
HISTORY = [(0, "a", 100, 100), (1, "a", 100, 100), (2, "a", 100, 100), (3, "b", 100, 100),
           (4, "c", 50, 50), (5, "c", 50, 50)]
REPLAY = [(10, "b", 100, 100), (11, "b", 100, 100), (12, "b", 100, 100), (13, "b", 100, 100),
          (14, "c", 50, 50), (16, "b", 100, 60), (17, "a", 100, 100), (18, "d", 200, 200),
          (20, "c", 50, 50)]


@pytest.fixture
def small_trace(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "t.csv", HISTORY + REPLAY)


def test_replay_hand_computed(small_trace: Path):
    # Plan at 10 (history a 300, b 100, c 100 bytes -> per byte a 3, c 2, b 1): {a, c}.
    #   [10, 15): b x4 miss (400 bytes), c hit (50).
    # Plan at 15 (a 300, b 500, c 150 -> b 5, a 3, c 3): b, then a does not fit: {b, c};
    #   b (100 bytes) is added.   [15, 20): b hit (60), a miss (100), d miss (200).
    # Plan at 20 (a 400, b 560, c 150, d 200): {b, c} again.   [20]: c hit (50).
    r = run(read_trace(small_trace), 150, "5s")
    assert r["split_ts"] == 10
    assert (r["history_requests"], r["replay_requests"], r["replay_bytes"]) == (6, 9, 860)
    assert r["plans"] == 3
    assert r["hit_bytes"] == 160 and r["hit_requests"] == 3
    assert r["byte_hit_ratio"] == pytest.approx(160 / 860)
    assert r["request_hit_ratio"] == pytest.approx(3 / 9)
    assert r["initial_fill_bytes"] == 150 and r["churn_bytes"] == 100
    # Planned once ({a, c} throughout): c@14, a@17, c@20.
    assert r["plan_once"]["byte_hit_ratio"] == pytest.approx(200 / 860)
    assert r["plan_once"]["request_hit_ratio"] == pytest.approx(3 / 9)
    # Hindsight: [10, 15) holds b and c (450); [15, 20) a (100: d does not fit beside it,
    # b is worth less per byte); [20] c (50).
    assert r["hindsight"]["byte_hit_ratio"] == pytest.approx(600 / 860)
    # Misses: b x4 and a (seen in the history) 500; d (never seen, no release date) 200.
    assert r["missed_bytes"] == {"seen": 500, "unseen_release_known": 0, "unseen": 200}
    assert [p["requests"] for p in r["periods"]] == [5, 3, 1]
    assert [p["held_bytes"] for p in r["periods"]] == [150, 150, 150]


def test_format_text(small_trace: Path):
    text = sim.format_text(run(read_trace(small_trace), 150, "5s"))
    assert "planned every 5 s (3 plans):   byte hit ratio 0.1860" in text
    assert "planned once:        byte hit ratio 0.2326" in text
    assert "missed bytes: seen 71.4%, unseen_release_known 0.0%, unseen 28.6%" in text


def test_bad_arguments_are_usage_errors(small_trace: Path):
    t = read_trace(small_trace)
    for kwargs, message in (({"capacity": "lots"}, "not a size"),
                            ({"capacity": 0}, "more than 0 bytes"),
                            ({"capacity": 150, "replan": "daily"}, "not a duration"),
                            ({"capacity": 150, "split": 1.0}, "between 0 and 1")):
        with pytest.raises(UsageError, match=message):
            sim.simulate(t, **kwargs, forecast_params=StandInParams(),
                         placement_params=StandInParams(), forecast_fn=standin_forecast,
                         place_fn=standin_place)


def test_plan_once_is_replan_zero(small_trace: Path):
    r = run(read_trace(small_trace), 150, 0)
    assert r["plans"] == 1 and r["churn_bytes"] == 0
    assert r["hit_bytes"] == 200
    assert r["byte_hit_ratio"] == r["plan_once"]["byte_hit_ratio"]


def test_release_known_misses_are_told_apart(tmp_path: Path):
    cat = catalog_of(["a", "b", "c", "d"], [100, 100, 50, 200], [0, 0, 0, 17.5])
    r = run(read_trace(write_csv(tmp_path / "t.csv", HISTORY + REPLAY), cat), 150, "5s")
    assert r["missed_bytes"] == {"seen": 500, "unseen_release_known": 200, "unseen": 0}


def test_over_capacity_plan_is_refused(small_trace: Path):
    def place_all(site, catalog, fc, previous, params):
        return plan_of(site, np.arange(4))

    def place_ssd(site, catalog, fc, previous, params):
        return plan_of(site, np.arange(1), "ssd")

    for place, message in ((place_all, "450 bytes on a 150-byte appliance"),
                           (place_ssd, "tiers other than hdd")):
        with pytest.raises(RuntimeError, match=message):
            sim.simulate(read_trace(small_trace), 150, 0.5, 0, forecast_params=StandInParams(),
                         placement_params=StandInParams(), forecast_fn=standin_forecast,
                         place_fn=place)


def test_previous_holdings(small_trace: Path):
    seen = []

    def place(site, catalog, fc, previous, params):
        seen.append(previous)
        return standin_place(site, catalog, fc, previous, params)

    sim.simulate(read_trace(small_trace), 150, 0.5, "5s", forecast_params=StandInParams(),
                 placement_params=StandInParams(), forecast_fn=standin_forecast,
                 place_fn=place)
    # The first plan starts empty; later ones get the holdings, by id, as manifests do.
    assert seen == [{sim.APPLIANCE: {}}, {sim.APPLIANCE: {"a": "hdd", "c": "hdd"}},
                    {sim.APPLIANCE: {"b": "hdd", "c": "hdd"}}]


def test_history_demand_decays_like_the_log_reader(small_trace: Path):
    t = read_trace(small_trace)
    d = sim.history_demand(t, 6, now=10.0, half_life=2.0, recent_half_life=1.0)
    assert d.sites == [sim.SITE] and d.lines == 6
    assert d.obj_idx.tolist() == [0, 1, 2]  # a, b, c
    assert d.requests.tolist() == pytest.approx([2**-5 + 2**-4.5 + 2**-4, 2**-3.5,
                                                 2**-3 + 2**-2.5])
    assert d.bytes.tolist() == pytest.approx([100 * (2**-5 + 2**-4.5 + 2**-4), 100 * 2**-3.5,
                                              50 * (2**-3 + 2**-2.5)])
    assert d.recent.tolist() == pytest.approx([2**-10 + 2**-9 + 2**-8, 2**-7, 2**-6 + 2**-5])
    assert d.last_ts.tolist() == [2, 3, 5]
    assert (d.start_ts, d.end_ts) == (0.0, 5.0)


def test_history_demand_counts_first_days_after_release(tmp_path: Path):
    day = 86400.0
    cat = catalog_of(["a", "b", "c"], [10, 10, 10], [0.0, 2 * day, np.nan])
    rows = [(t, o, 10) for t, o in [(0, "a"), (day - 1, "a"), (day, "a"), (2 * day, "b"),
                                    (2 * day + 5, "b"), (2 * day + 9, "c")]]
    t = read_trace(write_csv(tmp_path / "t.csv", rows, header="ts,id,size"), cat)
    d = sim.history_demand(t, len(t), now=3 * day, half_life=day, recent_half_life=day)
    # a: 0 and day - 1 are in its first day, day is not; b: both; c: no release date.
    assert d.first_day.tolist() == [2.0, 2.0, 0.0]


def test_split_by_time(small_trace: Path):
    t = read_trace(small_trace)
    assert sim.split_index(t, 0.5) == (6, 10.0)
    assert sim.split_index(t, 0.25) == (5, 5.0)  # the request at 5 is replayed
    assert sim.split_index(t, 0.2) == (4, 4.0)


def test_hindsight_holdings_greedy():
    size = np.array([100, 100, 50, 200])
    # per byte: 1, 4, 2, 0.5 -> b, c, then a does not fit in 180, d neither.
    held = sim.hindsight_holdings(size, np.array([100.0, 400, 100, 100]), 180)
    assert held.tolist() == [False, True, True, False]
    assert not sim.hindsight_holdings(size, np.zeros(4), 1000).any()


# ------------------------------------------------------------------------ next access


def test_next_access_exact():
    obj = np.array([5, 3, 5, 5, 3, 7])
    assert next_access(obj).tolist() == [2, 4, 3, NEVER, NEVER, NEVER]
    assert next_access(np.array([], dtype=np.int64)).tolist() == []


def test_next_access_matches_a_scan():
    rng = np.random.default_rng(3)
    obj = rng.integers(0, 50, 2000)
    want = []
    for i, o in enumerate(obj.tolist()):
        later = np.flatnonzero(obj[i + 1:] == o)
        want.append(i + 1 + int(later[0]) if len(later) else NEVER)
    assert next_access(obj).tolist() == want


def test_belady_with_next_access_beats_lru():
    """A B C A B C A B C through a cache of two unit objects. LRU never hits. Belady
    (next uses: A0->3, B1->4, C2->5, A3->6, B4->7, C5->8) evicts B at 2, hits A at 3,
    evicts A at 4, hits C at 5, evicts C at 6, hits B at 7. BeladySize (never admits an
    object without a next use) hits the same three."""
    obj = np.array([0, 1, 2] * 3)
    size = np.ones(9, dtype=np.int64)
    nxt = next_access(obj)
    assert np.flatnonzero(compare.lcs_hits("LRU", obj, size, 2)).tolist() == []
    assert np.flatnonzero(compare.lcs_hits("Belady", obj, size, 2, nxt)).tolist() == [3, 5, 7]
    assert np.flatnonzero(compare.lcs_hits("BeladySize", obj, size, 2, nxt)).tolist() == [3, 5, 7]
    with pytest.raises(ValueError, match="next-access"):
        compare.lcs_hits("Belady", obj, size, 2)


def test_belady_size_weighs_distance_by_size():
    """Cache of 3 bytes: a (1 byte), b (2), c (1); requests a b c c b a (next uses a0->5,
    b1->4, c2->3). At 2, c needs one byte: Belady evicts a (furthest), then hits c at 3 and
    b at 4. BeladySize evicts the largest size * distance: a 1 * 3, b 2 * 2 -> b, then hits
    c at 3 and a at 5. The distances are exact only when next_access_vtime counts from 1 as
    libCacheSim's clock does (0-based, a and b would tie at 2)."""
    obj = np.array([0, 1, 2, 2, 1, 0])
    size = np.array([1, 2, 1, 1, 2, 1])
    nxt = next_access(obj)
    assert np.flatnonzero(compare.lcs_hits("Belady", obj, size, 3, nxt)).tolist() == [3, 4]
    assert np.flatnonzero(compare.lcs_hits("BeladySize", obj, size, 3, nxt)).tolist() == [3, 5]


# ---------------------------------------------------------------------------- reading


@pytest.fixture(params=["polars", "csv module"])
def reader(request, monkeypatch):
    """Both CSV readers: polars (fast path) and the checked csv-module reader."""
    if request.param == "csv module":
        monkeypatch.setattr(tr, "_csv_columns_polars", lambda path, cols: None)
    return read_trace


def test_csv_read(tmp_path: Path, reader):
    p = write_csv(tmp_path / "t.csv", [(3.5, "b", 10, 4), (1, "a", 20, 20), (2, "b", 10, 10)])
    t = reader(p)
    assert t.catalog.ids.tolist() == ["a", "b"] and t.catalog.size.tolist() == [20, 10]
    assert t.ts.tolist() == [1.0, 2.0, 3.5]  # sorted by time
    assert t.obj.tolist() == [0, 1, 1]
    assert t.bytes.tolist() == [20, 10, 4]
    assert t.size.tolist() == [20, 10, 10]
    assert np.isnan(t.catalog.release).all()


def test_csv_bytes_default_to_size_and_extra_columns(tmp_path: Path, reader):
    p = write_csv(tmp_path / "t.csv", [("x", 1, "a", 20)], header="appliance,ts,id,size")
    t = reader(p)
    assert t.bytes.tolist() == [20]


def test_csv_gz(tmp_path: Path, reader):
    p = tmp_path / "t.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("ts,id,size\n1,a,5\n2,b,6\n")
    assert reader(p).obj.tolist() == [0, 1]


def test_csv_with_catalog(tmp_path: Path, reader):
    cat = catalog_of(["a", "b", "c"], [20, 10, 5], [0.0, 100.0, 200.0])
    p = write_csv(tmp_path / "t.csv", [(1, "c", 5), (2, "z", 7), (3, "a", 20)],
                  header="ts,id,size")
    t = reader(p, cat)
    # "z" is only in the trace: added (its own title, no release), numbered by sorted id.
    assert t.catalog.ids.tolist() == ["a", "b", "c", "z"]
    assert t.catalog.size.tolist() == [20, 10, 5, 7]
    assert t.catalog.release[:3].tolist() == [0.0, 100.0, 200.0]
    assert np.isnan(t.catalog.release[3])
    assert t.catalog.titles[t.catalog.title[3]] == "z"
    assert t.obj.tolist() == [2, 3, 0] and t.not_in_catalog == 1
    # Without a size column the catalog gives the sizes.
    p2 = write_csv(tmp_path / "t2.csv", [(1, "c"), (2, "a")], header="ts,id")
    t2 = reader(p2, cat)
    assert t2.catalog is cat and t2.size.tolist() == [5, 20]


@pytest.mark.parametrize("rows, header, message", [
    ([(1, "a", 5), ("x1", "a", 5)], "ts,id,size", "line 3: field ts: 'x1' is not a number"),
    ([(1, "a", 5), (2, "a", "5k")], "ts,id,size", "line 3: field size: '5k' is not an integer"),
    ([(1, "a", 5, 2), (2, "a", 5, 1.5)], "ts,id,size,bytes",
     "line 3: field bytes: '1.5' is not an integer"),
    ([(1, "a", 5), (2, "", 5)], "ts,id,size", "line 3: field id: empty"),
    ([(1, "a", 5), (2, "a")], "ts,id,size", "line 3: 2 fields, expected at least 3"),
    ([(1, "a", 5), (2, "b", 0)], "ts,id,size", "line 3: field size: 0 (must be > 0)"),
    ([(1, "a", 5), (2, "b", 6), (3, "a", 7)], "ts,id,size",
     "line 4: field size: 7 for 'a', which had size 5 on line 2"),
    ([(1, "a", 5, 6)], "ts,id,size,bytes", "line 2: field bytes: 6 (must be in 0..size 5)"),
    ([(1, "a", 5), ("inf", "a", 5)], "ts,id,size", "line 3: field ts: inf is not a time"),
    ([(1, "a")], "ts,id", "line 1: no column 'size'"),
    ([(1, 5)], "time,id,size", "line 1: no column 'ts'"),
])
def test_csv_errors_name_file_line_field(tmp_path: Path, reader, rows, header, message):
    p = write_csv(tmp_path / "bad.csv", rows, header=header)
    with pytest.raises(InputError) as e:
        reader(p)
    assert str(e.value).startswith(str(p))
    assert message in str(e.value)


def test_csv_errors_against_the_catalog(tmp_path: Path, reader):
    cat = catalog_of(["a", "b"], [20, 10])
    p = write_csv(tmp_path / "bad.csv", [(1, "a", 20), (2, "b", 11)], header="ts,id,size")
    with pytest.raises(InputError, match=r"bad.csv line 3: field size: 11 for 'b', but the "
                                         r"catalog says 10"):
        reader(p, cat)
    p = write_csv(tmp_path / "bad2.csv", [(1, "a"), (2, "q")], header="ts,id")
    with pytest.raises(InputError, match=r"bad2.csv line 3: field id: 'q' is not in the "
                                         r"catalog"):
        reader(p, cat)


def test_empty_and_missing_files(tmp_path: Path):
    with pytest.raises(InputError, match="no requests"):
        read_trace(write_csv(tmp_path / "e.csv", []))
    with pytest.raises(InputError, match="cannot read"):
        read_trace(tmp_path / "nope.csv")


def test_access_log(tmp_path: Path):
    """Demand as fill/logs.py counts it: 200/206 with bytes sent, 302/404/503 with bytes
    asked (the one range, else the object), 304 with none; others skipped."""
    cat = catalog_of(["a", "b"], [20, 10])
    lines = [
        {"ts": 5.0, "appliance": "x", "object": "b", "status": 206, "bytes": 4, "range": "0-3"},
        {"ts": 1.0, "appliance": "x", "object": "a", "status": 200, "bytes": 20, "range": None},
        {"ts": 2.0, "object": "a", "status": 304, "bytes": 0},
        {"ts": 3.0, "object": "zz", "status": 200, "bytes": 3},
        {"ts": 4.0, "object": "a", "status": 206, "bytes": 99},  # multipart framing
        {"ts": 6.0, "object": "a", "status": 302, "bytes": 0, "range": "bytes=5-9"},
        {"ts": 7.0, "object": "a", "status": 404, "bytes": 0, "range": "bytes=-4"},
        {"ts": 8.0, "object": "b", "status": 503, "bytes": 0, "range": "bytes=0-1,4-5"},
        {"ts": 9.0, "object": "b", "status": 302, "bytes": 0, "range": "bytes=6-"},
        {"ts": 9.5, "object": "b", "status": 416, "bytes": 0, "range": "bytes=60-"},
        {"ts": 9.7, "object": None, "status": 404, "bytes": 0},
        {"ts": True, "object": "a", "status": 200, "bytes": 1},
    ]
    p = tmp_path / "access.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines) + "not json\n{\"ts\": 1}\n")
    t = read_trace(p, cat)
    assert t.ts.tolist() == [1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert t.obj.tolist() == [0, 0, 0, 1, 0, 0, 1, 1]
    assert t.bytes.tolist() == [20, 0, 20, 4, 5, 4, 10, 4]
    assert t.skipped == {"malformed": 3, "status": 1, "no_object": 1, "unknown_object": 1}
    with pytest.raises(InputError, match="access log has no object sizes; give --catalog"):
        read_trace(p)


@pytest.fixture(params=["polars", "json module"])
def log_reader(request, monkeypatch):
    """Both access-log readers: polars (with its second look at scopes that may not have
    been strings) on every block, and the json module line by line. Blocks of 1 KiB, so
    a log spans many."""
    monkeypatch.setattr(tr, "_JSONL_BLOCK", 1024)
    if request.param == "json module":
        monkeypatch.setattr(tr, "_jsonl_polars", lambda data, schema: None)
    else:
        polars = tr._jsonl_polars

        def every_block(data, schema):
            frame = polars(data, schema)
            assert frame is not None, "polars rejected a block: the test misses its path"
            return frame

        monkeypatch.setattr(tr, "_jsonl_polars", every_block)
    return read_trace


def write_jsonl(path: Path, lines: list[dict | str]) -> Path:
    """*lines* as JSON lines (a str is written as it is: blank lines, CRLF); gzip for .gz."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_access_log_fill_lines_are_not_requests(tmp_path: Path, log_reader):
    """Lines of scope "fill" (copies between appliances, not views) are skipped and counted
    whatever their object and status: a log with them gives the Trace of the log without
    them. A scope absent, null or any other string is a viewer's request."""
    cat = catalog_of(["a", "b", "c"], [20, 10, 30])
    rng = np.random.default_rng(3)
    objects = ["a", "b", "c", "zz", None]
    statuses = [200, 206, 302, 304, 404, 416, 503]
    ranges = [None, "bytes=0-3", "bytes=-5", "bytes=4-"]
    viewer_scopes = [None, "viewer", "FILL", "fill ", "", "5", "true", "[x", "-"]

    def line(i: int) -> dict:
        return {"ts": float(rng.integers(0, 1000)), "appliance": f"a{i % 3}",
                "object": objects[rng.integers(len(objects))],
                "status": statuses[rng.integers(len(statuses))],
                "bytes": int(rng.integers(0, 40)), "range": ranges[rng.integers(len(ranges))]}

    viewer = []
    for i in range(400):
        x = line(i)
        if i % 4:  # a quarter without scope, as oca serve writes viewer lines
            x["scope"] = viewer_scopes[rng.integers(len(viewer_scopes))]
        viewer.append(x)
    fill = [{**line(i), "scope": "fill"} for i in range(150)]
    mixed: list[dict | str] = list(viewer)
    for x in fill:  # anywhere, in time and in the file
        mixed.insert(int(rng.integers(len(mixed) + 1)), x)
    mixed[7] = json.dumps(mixed[7]) + "\r"  # CRLF
    for blank in ["", "   ", "\t", "\r"]:
        mixed.insert(int(rng.integers(len(mixed) + 1)), blank)

    plain = log_reader(write_jsonl(tmp_path / "viewer.jsonl", viewer), cat)
    both = log_reader(write_jsonl(tmp_path / "both.jsonl.gz", mixed), cat)
    assert len(plain) > 150
    assert {"status", "no_object", "unknown_object"} <= plain.skipped.keys()
    for name in ("ts", "obj", "bytes"):
        assert getattr(both, name).tolist() == getattr(plain, name).tolist(), name
    assert both.catalog is plain.catalog is cat and both.not_in_catalog == 0
    assert both.skipped == {**plain.skipped, "fill": len(fill)}

    # The count reaches what simulate reports, and a log of fill traffic alone is no trace.
    r = run(both, 40, "0")
    assert r["skipped_lines"] == both.skipped
    assert f"'fill': {len(fill)}" in sim.format_text(r)
    with pytest.raises(InputError, match=f"no request .*'fill': {len(fill)}"):
        log_reader(write_jsonl(tmp_path / "fill.jsonl", fill), cat)


def test_access_log_scope_not_a_string_is_malformed(tmp_path: Path, log_reader):
    """A scope that is a number, true/false, a list or an object makes the line malformed
    (polars reads it as text: "5", "true", "[1]"); the same texts as JSON strings are
    viewers' requests. A fill line that is malformed otherwise counts as malformed."""
    cat = catalog_of(["a"], [20])
    not_strings = [5, -1.5, 1e5, 0, True, False, [1], [], ["fill"], {"a": 1}, {}]
    strings = ["5", "-1.5", "1e5", "0", "true", "false", "[1]", "[]", "{}", "", "viewer"]
    lines: list[dict | str] = []
    requests = []
    blanks = ["", "  ", "\t"]
    for i, (bad, good) in enumerate(zip(not_strings, strings, strict=True)):
        lines.append({"ts": 2.0 * i, "object": "a", "status": 200, "bytes": 1, "scope": bad})
        lines.append(blanks[i % 3])  # rows of polars are not lines of the file
        lines.append({"ts": 2.0 * i + 1, "object": "a", "status": 200, "bytes": 1,
                      "scope": good})
        requests.append(2.0 * i + 1)
    lines += [{"ts": 100.0, "object": "a", "status": 200, "bytes": 1, "scope": None},
              {"ts": 101.0, "object": "a", "status": 200, "bytes": 1, "scope": "fill"},
              {"ts": 102.0, "object": "a", "status": 200, "bytes": -1, "scope": "fill"},
              {"ts": 103.0, "object": "a", "status": 200, "bytes": 1}]
    t = log_reader(write_jsonl(tmp_path / "access.jsonl", lines), cat)
    assert t.ts.tolist() == requests + [100.0, 103.0]
    assert t.skipped == {"malformed": len(not_strings) + 1, "fill": 1}


# ------------------------------------------------------------------- the real pipeline


def test_real_planner_end_to_end(tmp_path: Path):
    """The real forecast and placement on a small trace: within capacity, figures sane."""
    rng = np.random.default_rng(1)
    n_obj, n = 40, 4000
    ids = [f"o{i:03d}" for i in range(n_obj)]
    sizes = rng.integers(100, 1000, n_obj)
    pop = 1.0 / np.arange(1, n_obj + 1)
    obj = rng.choice(n_obj, n, p=pop / pop.sum())
    ts = np.sort(rng.uniform(0, 4 * 86400, n))
    rows = [(f"{t:.3f}", ids[o], sizes[o], sizes[o]) for t, o in zip(ts, obj, strict=True)]
    trace = read_trace(write_csv(tmp_path / "t.csv", rows))
    capacity = int(sizes.sum() // 4)
    r = sim.simulate(trace, capacity, 0.5, "24h")
    assert r["plans"] == 2
    assert all(p["held_bytes"] <= capacity for p in r["periods"])
    assert 0.0 < r["byte_hit_ratio"] <= r["hindsight"]["byte_hit_ratio"] + 1e-9
    assert 0.0 <= r["request_hit_ratio"] <= 1.0


def test_history_demand_equals_the_log_reader(tmp_path: Path):
    """An access log read as a trace gives the Demand fill.logs.read_demand gives from it
    (statuses, asked bytes, decay, first days): the two must stay in step."""
    from fill.logs import read_demand

    day = 86400.0
    rng = np.random.default_rng(5)
    ids = [f"o{i:02d}" for i in range(12)]
    cat = catalog_of(ids, rng.integers(100, 1000, 12).tolist(),
                     [float(x) if x >= 0 else np.nan for x in rng.integers(-2, 3, 12) * day])
    n = 600
    ts = np.sort(rng.uniform(0, 4 * day, n)).round(3)
    obj = rng.integers(0, 12, n)
    status = rng.choice([200, 206, 302, 304, 404, 503, 416], n)
    # logs.py spans all valid lines, a trace only its requests: same ends here.
    status[0] = status[-1] = 200
    ranges = rng.choice([None, "bytes=10-49", "bytes=-30", "bytes=500-", "bytes=0-1,5-9"], n)
    sent = (cat.size[obj] * rng.uniform(0, 1, n)).astype(int)
    lines = [json.dumps({"ts": t, "appliance": sim.APPLIANCE, "object": ids[o],
                         "status": int(st), "bytes": int(b) if st in (200, 206) else 0,
                         "range": r})
             for t, o, st, b, r in zip(ts.tolist(), obj, status, sent, ranges, strict=True)]
    n_fill = 90  # fill traffic: no demand for either reader
    for t, o, st in zip(rng.uniform(-day, 5 * day, n_fill).round(3).tolist(),
                        rng.integers(0, 13, n_fill), rng.choice([200, 206, 416], n_fill),
                        strict=True):
        lines.insert(int(rng.integers(len(lines) + 1)), json.dumps(
            {"ts": t, "appliance": sim.APPLIANCE, "object": f"o{o:02d}", "status": int(st),
             "bytes": 7, "range": None, "scope": "fill"}))
    log = tmp_path / "access.jsonl"
    log.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    trace = read_trace(log, cat)
    assert trace.skipped == {"status": int((status == 416).sum()), "fill": n_fill}
    _, topology = sim._one_appliance(1000)
    now = 4.5 * day
    want = read_demand([log], cat, topology, now, day, day / 4)
    got = sim.history_demand(trace, len(trace), now, day, day / 4)
    mine = want.site_idx == want.sites.index(sim.SITE)
    assert got.obj_idx.tolist() == want.obj_idx[mine].tolist()
    for name in ("requests", "bytes", "recent", "last_ts"):
        assert getattr(got, name) == pytest.approx(getattr(want, name)[mine], rel=1e-12), name
    assert got.first_day.tolist() == want.first_day.tolist()
    assert (got.start_ts, got.end_ts) == (want.start_ts, want.end_ts)
    assert got.lines == want.lines - want.ignored_status - want.fill_lines
    assert want.fill_lines == n_fill




def test_oca_fill_simulate_command(tmp_path: Path, capsys):
    """`oca-fill simulate` runs the real planner and prints the figures; a bad trace is
    exit 1 with the file, line and field."""
    from fill.cli import main

    rows = [(t, o, s) for t, o, s in [(0, "a", 100), (1, "a", 100), (2, "b", 50),
                                      (10, "a", 100), (11, "b", 50), (20, "a", 100)]]
    trace = write_csv(tmp_path / "t.csv", rows, header="ts,id,size")
    assert main(["-q", "simulate", "--trace", str(trace), "--capacity", "120",
                 "--replan", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["replay_requests"], result["replay_bytes"]) == (3, 250)
    assert result["plans"] == 1 and result["capacity"] == 120
    bad = write_csv(tmp_path / "bad.csv", [(0, "a", 100), (1, "a", "x")], header="ts,id,size")
    assert main(["-q", "simulate", "--trace", str(bad), "--capacity", "1T"]) == 1
    assert f"{bad} line 3: field size: 'x' is not an integer" in capsys.readouterr().err
