"""The topology JSON: the DESIGN.md example loads; each bad value is named by JSON path."""

from __future__ import annotations

import copy
import json

import pytest

from fill.errors import InputError
from fill.topology import load_topology, parse_fill_window

T = 1 << 40
EXAMPLE = {
    "origin": {"name": "origin", "url": "http://127.0.0.1:9000"},
    "backbone": [{"name": "bb1", "url": "http://...", "tiers": {"ssd": "2T", "hdd": "200T"}}],
    "sites": [
        {"name": "isp-a", "upstream": "bb1", "fill_window": "02:00-08:00",
         "appliances": [{"name": "a1", "url": "http://...", "serve_gbps": 100,
                         "tiers": {"ssd": "1T", "flash": "4T", "hdd": "100T"}}]},
        {"name": "isp-b", "upstream": "bb1", "fill_window": "22:00-06:00",
         "appliances": [{"name": "b1", "url": "https://b1", "serve_gbps": 40.5,
                         "tiers": {"hdd": 1048576}},
                        {"name": "b2", "url": "https://b2", "serve_gbps": 40,
                         "tiers": {"flash": "1.5T"}}]},
    ],
    "links": [{"from": "origin", "to": "bb1", "gbps": 100},
              {"from": "bb1", "to": "isp-a", "gbps": 40},
              {"from": "bb1", "to": "isp-b", "gbps": 10}],
}


def write(tmp_path, doc, name="topology.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def error_of(tmp_path, doc) -> str:
    path = write(tmp_path, doc)
    with pytest.raises(InputError) as info:
        load_topology(path)
    message = str(info.value)
    prefix = f"{path}: "
    assert message.startswith(prefix)
    return message[len(prefix):]


def changed(edit):
    doc = copy.deepcopy(EXAMPLE)
    edit(doc)
    return doc


def test_design_example(tmp_path):
    topo = load_topology(write(tmp_path, EXAMPLE))
    assert topo.origin == "origin" and topo.origin_url == "http://127.0.0.1:9000"
    (bb,) = topo.backbone
    assert bb.name == "bb1" and bb.tiers == {"ssd": 2 * T, "hdd": 200 * T}
    assert bb.fill_window == (0, 0) and bb.window_seconds == 86400
    a, b = topo.sites
    assert a.name == "isp-a" and a.upstream == "bb1"
    assert a.fill_window == (7200, 28800) and a.window_seconds == 6 * 3600
    assert b.fill_window == (79200, 21600) and b.window_seconds == 8 * 3600
    (a1,) = a.appliances
    assert a1.name == "a1" and a1.serve_gbps == 100.0 and isinstance(a1.serve_gbps, float)
    assert list(a1.tiers.items()) == [("ssd", T), ("flash", 4 * T), ("hdd", 100 * T)]
    assert b.appliances[0].tiers == {"hdd": 1048576}
    assert b.appliances[1].tiers == {"flash": int(1.5 * T)}
    assert [(lk.src, lk.dst, lk.gbps) for lk in topo.links] == [
        ("origin", "bb1", 100.0), ("bb1", "isp-a", 40.0), ("bb1", "isp-b", 10.0)]
    assert topo.site_of() == {"a1": "isp-a", "b1": "isp-b", "b2": "isp-b"}


def test_optional_parts_and_extra_keys(tmp_path):
    doc = {
        "origin": {"name": "o", "url": "http://o", "ansible_host": "10.0.0.1"},
        "sites": [{"name": "s", "region": "eu", "upstream": None,
                   "appliances": [{"name": "a", "url": "http://a", "serve_gbps": 1,
                                   "tiers": {"hdd": "1G"}, "rack": 7}]}],
        "links": [{"from": "o", "to": "s", "gbps": 1, "vlan": 12}],
        "ansible": {"anything": ["goes"]},
    }
    topo = load_topology(write(tmp_path, doc))
    assert topo.backbone == ()
    (site,) = topo.sites
    assert site.upstream is None and site.fill_window == (0, 0)
    assert site.window_seconds == 86400


def test_backbone_fill_window(tmp_path):
    doc = changed(lambda d: d["backbone"][0].update(fill_window="23:30-01:00"))
    (bb,) = load_topology(write(tmp_path, doc)).backbone
    assert bb.fill_window == (84600, 3600) and bb.window_seconds == 5400
    assert "backbone[0].fill_window: '7-9' is not a fill window" in error_of(
        tmp_path, changed(lambda d: d["backbone"][0].update(fill_window="7-9")))


@pytest.mark.parametrize("text,window", [
    ("02:00-08:00", (7200, 28800)), ("22:00-06:00", (79200, 21600)),
    ("00:00-24:00", (0, 0)), ("05:00-05:00", (18000, 18000)), ("23:59-00:01", (86340, 60)),
])
def test_parse_fill_window(text, window):
    assert parse_fill_window(text) == window


@pytest.mark.parametrize("text", ["2:00-08:00", "24:00-01:00", "01:60-02:00", "01:00-24:30",
                                  "01:00 - 02:00", "", "01:00-02:00x"])
def test_parse_fill_window_rejects(text):
    with pytest.raises(ValueError):
        parse_fill_window(text)


def test_bad_tier_size(tmp_path):
    doc = changed(lambda d: d["sites"][1]["appliances"][0]["tiers"].update(ssd="x"))
    assert error_of(tmp_path, doc) == (
        "sites[1].appliances[0].tiers.ssd: 'x' is not a size (bytes, or K/M/G/T as powers "
        "of 1024, e.g. 500G)")


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["sites"][0]["appliances"][0]["tiers"].update(nvme="1T"),
     "sites[0].appliances[0].tiers.nvme: unknown tier 'nvme' (expected one of ssd, flash, hdd)"),
    (lambda d: d["sites"][0]["appliances"][0]["tiers"].update(hdd="0"),
     "sites[0].appliances[0].tiers.hdd: must be greater than zero, not '0'"),
    (lambda d: d["sites"][0]["appliances"][0].update(tiers={}),
     "sites[0].appliances[0].tiers: needs at least one tier (ssd, flash, hdd)"),
    (lambda d: d["sites"][0]["appliances"][0].update(serve_gbps=0),
     "sites[0].appliances[0].serve_gbps: must be a number greater than zero, not 0"),
    (lambda d: d["sites"][0]["appliances"][0].update(serve_gbps="100"),
     "sites[0].appliances[0].serve_gbps: must be a number, not the string '100'"),
    (lambda d: d["sites"][0]["appliances"][0].update(serve_gbps=True),
     "sites[0].appliances[0].serve_gbps: must be a number, not true"),
    (lambda d: d["sites"][0]["appliances"][0].pop("url"),
     "sites[0].appliances[0].url: missing (required)"),
    (lambda d: d["sites"][0]["appliances"][0].update(url="ftp://x"),
     "sites[0].appliances[0].url: 'ftp://x' is not an http:// or https:// URL"),
    (lambda d: d["sites"][0].update(fill_window="2-8"),
     "sites[0].fill_window: '2-8' is not a fill window (expected HH:MM-HH:MM, e.g. "
     "02:00-08:00)"),
    (lambda d: d["sites"][0].update(fill_window="25:00-01:00"),
     "sites[0].fill_window: '25:00-01:00' is not a fill window (hours 00-23, minutes 00-59; "
     "24:00 only as an end)"),
    (lambda d: d["sites"][1].update(upstream="bb9"),
     "sites[1].upstream: 'bb9' is not a backbone node (backbone: bb1)"),
    (lambda d: d["sites"][1].update(appliances=[]),
     "sites[1].appliances: needs at least one appliance"),
    (lambda d: d["sites"][1].update(appliances={}),
     "sites[1].appliances: must be a list, not an object"),
    (lambda d: d.update(sites=[]), "sites: needs at least one site"),
    (lambda d: d.pop("sites"), "sites: missing (required)"),
    (lambda d: d.pop("origin"), "origin: missing (required)"),
    (lambda d: d["origin"].update(name="bad name"),
     "origin.name: 'bad name' is not a valid name (A-Z a-z 0-9 . _ -, starting with a letter "
     "or digit, at most 63 characters)"),
    (lambda d: d["sites"][1]["appliances"][1].update(name="a1"),
     "sites[1].appliances[1].name: 'a1' is already the name of sites[0].appliances[0]"),
    (lambda d: d["sites"][0].update(name="bb1"),
     "sites[0].name: 'bb1' is already the name of backbone[0]"),
    (lambda d: d["backbone"][0].update(name="origin"),
     "backbone[0].name: 'origin' is already the name of origin"),
    (lambda d: d["links"].append({"from": "bb1", "to": "isp-c", "gbps": 1}),
     "links[3].to: 'isp-c' is not a node of the origin, backbone nodes and sites"),
    (lambda d: d["links"].append({"from": "a1", "to": "isp-a", "gbps": 1}),
     "links[3].from: 'a1' is an appliance; links join the origin, backbone nodes and sites"),
    (lambda d: d["links"].append({"from": "bb1", "to": "bb1", "gbps": 1}),
     "links[3].to: a link from 'bb1' to itself"),
    (lambda d: d["links"].append({"from": "bb1", "to": "isp-a", "gbps": 2}),
     "links[3]: a second link from 'bb1' to 'isp-a' (also links[1])"),
    (lambda d: d["links"][0].update(gbps=-1),
     "links[0].gbps: must be a number greater than zero, not -1"),
    (lambda d: d["links"].pop(0),
     "backbone[0]: no route from the origin 'origin' to 'bb1' over links"),
    (lambda d: d["links"].pop(2),
     "sites[1]: no route from the origin 'origin' to 'isp-b' over links"),
    (lambda d: d["links"].__setitem__(2, {"from": "origin", "to": "isp-b", "gbps": 1}),
     "sites[1].upstream: no route from 'bb1' to 'isp-b' over links"),
])
def test_errors_name_the_json_path(tmp_path, edit, message):
    assert error_of(tmp_path, changed(edit)) == message


def test_not_json_or_not_an_object(tmp_path):
    assert error_of(tmp_path, '{"origin": {\n  "name": "o",\n}') == (
        "line 3: not valid JSON: Expecting property name enclosed in double quotes (column 1)")
    assert error_of(tmp_path, "[]") == "(top level): must be an object, not a list"
    missing = tmp_path / "nope.json"
    with pytest.raises(InputError, match="nope.json: topology file not found"):
        load_topology(missing)
