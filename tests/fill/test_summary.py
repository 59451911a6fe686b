"""fill/summary.py: the plan's figures as JSON-able dicts and as a table."""

from __future__ import annotations

import json

from fill.backbone import schedule
from fill.logs import read_demand
from fill.model import Topology
from fill.summary import demand_figures, format_text, summarize
from oca.units import format_size
from tests.fill.test_backbone import DAY, MB, hand_fleet

DEMAND = {"lines": 1234567, "malformed": 3, "unknown_objects": 2}


def hand_summary(**stats):
    site_plans, bb_plans, topo, cat, previous = hand_fleet()
    if stats:
        next(p for p in site_plans if p.site == "B").stats.update(stats)
    s = schedule(site_plans, bb_plans, topo, cat, previous)
    return summarize(site_plans, bb_plans, s, topo, cat, DEMAND)


def test_figures_of_the_hand_built_fleet():
    sm = hand_summary()
    assert json.loads(json.dumps(sm)) == sm  # plain JSON types only
    assert sm["demand"] == DEMAND
    assert sm["totals"] == {
        "backbone_nodes": 2, "sites": 5, "appliances": 8, "expected_offload": 0.5,
        "added": {"objects": 17, "bytes": 180 * MB},
        "filled": {"objects": 11, "bytes": 100 * MB},
        "deferred": {"objects": 6, "bytes": 80 * MB},
        "deleted": {"objects": 1, "bytes": 0, "not_in_catalog": 1},
        "churn_bytes": 180 * MB, "origin_egress": 37 * MB, "waves": 3}
    assert list(sm["sites"]) == ["A", "B", "C", "D", "E"]
    assert sm["sites"]["A"] == {
        "upstream": "bb1", "appliances": 3, "expected_offload": 0.5,
        "expected_offload_tonight": None,  # deferrals, and the plan gives no value figures
        "added": {"objects": 6, "bytes": 65 * MB},
        "filled": {"objects": 5, "bytes": 45 * MB},
        "filled_from": {"peer": 25 * MB, "backbone": 20 * MB, "origin": 0},
        "deferred": {"objects": 1, "bytes": 20 * MB},
        "deleted": {"objects": 0, "bytes": 0, "not_in_catalog": 0},
        "churn_bytes": 65 * MB}
    assert sm["sites"]["E"]["expected_offload_tonight"] == 0.5  # nothing deferred
    assert sm["sites"]["D"]["deleted"] == {"objects": 1, "bytes": 0, "not_in_catalog": 1}
    assert sm["backbone"]["bb1"] == {
        "added": {"objects": 2, "bytes": 30 * MB},
        "filled": {"objects": 1, "bytes": 10 * MB},
        "filled_from": {"origin": 10 * MB},
        "deferred": {"objects": 1, "bytes": 20 * MB},
        "deleted": {"objects": 0, "bytes": 0, "not_in_catalog": 0},
        "churn_bytes": 30 * MB}
    assert sm["backbone"]["bb2"]["added"] == {"objects": 0, "bytes": 0}
    links = {(lk["from"], lk["to"]): lk for lk in sm["links"]}
    assert list(links)[:2] == [("origin", "bb1"), ("origin", "bb2")]
    ob1 = links[("origin", "bb1")]
    assert ob1["bytes"] == 22 * MB
    assert ob1["utilisation"] == round(22 * MB / ob1["budget"], 6)
    assert links[("bb1", "E")]["utilisation"] == 0.0


def test_offload_tonight_counts_the_value_of_deferred_objects():
    # B plans value 50 of 100 MB/day held; o4 (8 MB, density 1.0) is deferred: 42 of 100.
    sm = hand_summary(value_total=100.0 * MB, value_held=50.0 * MB)
    assert sm["sites"]["B"]["expected_offload_tonight"] == 0.42
    # Only B gives value figures, so the fleet figure is a plain mean over the sites.
    assert sm["totals"]["expected_offload"] == 0.5


def test_fleet_offload_is_weighted_by_value_when_every_plan_gives_it():
    site_plans, bb_plans, topo, cat, previous = hand_fleet()
    for k, p in enumerate(site_plans):
        p.stats.update(value_total=10.0 * (k + 1), value_held=float(k + 1))
    s = schedule(site_plans, bb_plans, topo, cat, previous)
    sm = summarize(site_plans, bb_plans, s, topo, cat, {})
    assert sm["totals"]["expected_offload"] == 0.1


def test_text_table():
    text = format_text(hand_summary())
    lines = text.splitlines()
    assert lines[0] == "oca-fill plan: 5 sites, 8 appliances, 2 backbone nodes"
    assert lines[1] == "demand: 1,234,567 log lines (3 malformed, 2 unknown objects)"
    assert lines[2] == (f"added 17 {format_size(180 * MB)}; filled 11 {format_size(100 * MB)} "
                        f"in 3 waves; deferred 6 {format_size(80 * MB)}; deleted 1 0")
    assert lines[3] == (f"origin egress {format_size(37 * MB)}; churn "
                        f"{format_size(180 * MB)}; expected offload 50.0%")
    header = next(ln for ln in lines if ln.startswith("node"))
    assert header.split() == ["node", "appl", "offload", "tonight", "added", "filled",
                              "deferred", "deleted", "peer", "backbone", "origin"]
    row_a = next(ln for ln in lines if ln.startswith("A "))
    assert row_a.split() == ["A", "3", "50.0%", "-", "6", format_size(65 * MB), "5",
                             format_size(45 * MB), "1", format_size(20 * MB), "0",
                             format_size(25 * MB), format_size(20 * MB), "0"]
    link_row = next(ln for ln in lines if ln.startswith("origin -> bb1"))
    assert format_size(22 * MB) in link_row.split()
    assert text.endswith("\n") and "\n\n\n" not in text
    # Columns line up: the last column is right-aligned, so a table's rows are equally long.
    at = lines.index(header)
    table = lines[at:lines.index("", at)]
    assert len(table) == 1 + 2 + 5 and len({len(ln) for ln in table}) == 1


def test_empty_fleet():
    _, _, _, cat, _ = hand_fleet()
    topo = Topology("origin", "", (), (), ())
    s = schedule([], [], topo, cat, {})
    sm = summarize([], [], s, topo, cat, {})
    assert sm["totals"]["added"] == {"objects": 0, "bytes": 0}
    assert sm["sites"] == {} and sm["links"] == []
    text = format_text(sm)
    assert text.splitlines()[0] == "oca-fill plan: 0 sites, 0 appliances, 0 backbone nodes"


def test_fill_traffic_in_the_logs_is_counted_in_the_demand_figures(tmp_path):
    site_plans, bb_plans, topo, cat, previous = hand_fleet()
    now = 1_800_000_000.0

    def line(obj, appliance, nbytes, **more):
        return json.dumps({"ts": now - 60, "appliance": appliance, "object": obj,
                           "status": 200, "bytes": nbytes, "range": None, **more})

    log = tmp_path / "access.jsonl"
    log.write_text("\n".join([
        line("o0", "a1", 10 * MB), line("o1", "b1", MB, scope="viewer"),
        line("o0", "a1", 10 * MB, scope="fill"),  # a2 copying o0 from a1
        line("o4", "b1", 3 * MB, scope="fill", status=206),
        line("o4", "c1", 2 * MB, scope="fill"),
        line("o9", "c1", MB),  # not in the catalog
        line("o4", "b1", MB, scope=7),  # malformed: not counted as fill
    ]) + "\n")
    d = read_demand([log], cat, topo, now, DAY, DAY / 8)
    s = schedule(site_plans, bb_plans, topo, cat, previous)
    sm = summarize(site_plans, bb_plans, s, topo, cat, demand_figures(d))
    assert json.loads(json.dumps(sm)) == sm
    assert sm["demand"] == {"lines": 7, "malformed": 1, "unknown_objects": 1, "fill_lines": 3,
                            "fill_bytes": 15 * MB}
    assert format_text(sm).splitlines()[1] == (
        "demand: 7 log lines (1 malformed, 1 unknown objects); fill traffic, not demand: "
        f"3 lines, {format_size(15 * MB)}")
