"""Fill manifests: the format, determinism, atomic writes, reading them back."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from fill import manifest
from fill.errors import InputError
from fill.manifest import manifest_bytes, read_previous, read_previous_numbers, write_manifests
from fill.model import TIERS, ApplianceSpec, BackboneSpec, Site, SitePlan, Topology
from fill.placement import PlacementParams, place_site
from fill.rendezvous import catalog_lookup

from .test_placement import fleets, make_catalog, make_fc, make_site

NOW = 1_795_000_000
ORIGIN_URL = "http://origin.example:9000"
BB1_URL = "http://bb1.example"


def topology_of(*sites: Site) -> Topology:
    """*sites* under the backbone node bb1 and the origin (no links: a manifest reads only
    the nodes' names, URLs and upstreams)."""
    return Topology("origin", ORIGIN_URL, (BackboneSpec("bb1", BB1_URL, {"hdd": 10_000}),),
                    sites, ())


# Every appliance the tests' plans name (make_site: isp-a0 ... at http://a0 ...), in the
# site isp whose upstream is bb1.
TOPOLOGY = topology_of(make_site([{"hdd": 1}] * 5))
URLS = {"origin": ORIGIN_URL, "bb1": BB1_URL, **{f"isp-a{g}": f"http://a{g}" for g in range(5)}}


# Every test on the compiled loops and on their numpy twins (conftest.py).
pytestmark = pytest.mark.usefixtures("both_loops")


class ScalarSchedule:
    """A schedule that only answers source_of: origin in wave 1 for even objects,
    the peer isp-a0 in wave 2 for odd ones; multiples of 5 are deferred."""

    def source_of(self, node: str, obj: int) -> tuple[str, int] | None:
        if obj % 5 == 0:
            return None
        return ("origin", 1) if obj % 2 == 0 else ("isp-a0", 2)


class AllFilled:
    """Every addition comes from the origin in wave 1."""

    def source_of(self, node: str, obj: int) -> tuple[str, int] | None:
        return ("origin", 1)


@dataclass
class _Table:
    names: tuple[str, ...]
    obj: np.ndarray
    source: np.ndarray
    wave: np.ndarray


class _Transfers:
    def __init__(self, plans: list[SitePlan]):
        self.plans = plans

    def to(self, node: str) -> _Table:
        names = ("origin", "bb1", "isp-a0")
        for p in self.plans:
            if node in p.added:
                a = p.added[node]
                a = a[a % 5 != 0]
                return _Table(names, a, np.where(a % 2 == 0, 0, 2).astype(np.int32),
                              np.where(a % 2 == 0, 1, 2).astype(np.int32))
        return _Table(names, np.zeros(0, np.int64), np.zeros(0, np.int32),
                      np.zeros(0, np.int32))


class TableSchedule:
    """The same answers through the arrays of backbone.Schedule.transfers."""

    def __init__(self, plans: list[SitePlan]):
        self.transfers = _Transfers(plans)


def two_plans():
    cat = make_catalog([100, 200, 300, 400, 500, 600, 700],
                       xxh3=[None, "0" * 32, "ab" * 16, None, "f" * 32, None, "12" * 16])
    site = make_site([{"ssd": 500, "hdd": 1000}, {"hdd": 900}])
    fc = make_fc([0, 1, 2, 3, 4, 5, 6], [7.0, 6, 5, 4, 3, 2, 1])
    prev = {"isp-a0": {"obj00000": "hdd", "old-title": "ssd"}, "isp-a1": {"obj00006": "hdd"}}
    plan = place_site(site, cat, fc, prev, PlacementParams())
    node = Site("bb1", None, (0, 0), (ApplianceSpec("bb1", "", 1e9, {"hdd": 10_000}),))
    bb = place_site(node, cat, make_fc(range(7), [1.0] * 7, site="bb1"), {}, PlacementParams())
    return cat, plan, bb


@pytest.mark.parametrize("kind", ["scalar", "table"])
def test_format(tmp_path, kind):
    cat, plan, bb = two_plans()
    sched = ScalarSchedule() if kind == "scalar" else TableSchedule([plan, bb])
    paths = write_manifests(tmp_path / "out", [plan], [bb], sched, cat, NOW, TOPOLOGY)
    assert [p.name for p in paths] == ["isp-a0.json", "isp-a1.json", "bb1.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)
    for p in paths:
        doc = json.loads(p.read_bytes())
        node = p.stem
        assert list(doc) == ["appliance", "delete", "generated", "objects", "sources",
                             "upstream"]
        assert doc["appliance"] == node and doc["generated"] == NOW
        assert doc["delete"] == plan.deleted.get(node, [])
        ids = [o["id"] for o in doc["objects"]]
        assert ids == sorted(ids)
        held = dict(zip(plan.holdings.get(node, bb.holdings.get(node)).tolist(),
                        plan.tiers.get(node, bb.tiers.get(node)).tolist(), strict=True))
        added = set(plan.added.get(node, bb.added.get(node)).tolist())
        expect = []
        for o, t in held.items():
            if o in added:
                if o % 5 == 0:
                    continue  # deferred: not in tonight's manifest
                src, wave = ("origin", 1) if o % 2 == 0 else ("isp-a0", 2)
            else:
                src, wave = node, 0
            expect.append({"id": cat.ids[o], "size": int(cat.size[o]), "source": src,
                           "tier": TIERS[t], "wave": wave, "xxh3": cat.xxh3[o]})
        assert doc["objects"] == expect
        # The fallback chain: a site appliance's backbone node, then the origin; a backbone
        # node's, the origin. The URLs of exactly the nodes the file names.
        assert doc["upstream"] == (["origin"] if node == "bb1" else ["bb1", "origin"])
        named = {o["source"] for o in expect} | set(doc["upstream"])
        assert doc["sources"] == {n: URLS[n] for n in sorted(named)}
        # Canonical: sorted keys, no spaces, one object per line.
        text = p.read_text()
        lines = text.splitlines()
        assert lines[0] == (f'{{"appliance":"{node}","delete":'
                            f'{json.dumps(doc["delete"], separators=(",", ":"))},'
                            f'"generated":{NOW},"objects":[')
        assert lines[-1] == "]," + json.dumps(
            {"sources": doc["sources"], "upstream": doc["upstream"]}, sort_keys=True,
            separators=(",", ":"))[1:]
        assert text.endswith("]}\n")
        for line, o in zip(lines[1:-1], doc["objects"], strict=True):
            assert line.rstrip(",") == json.dumps(o, sort_keys=True, separators=(",", ":"))
    a0 = json.loads(paths[0].read_bytes())
    assert a0["delete"] == ["old-title"]
    assert {"id": "obj00000", "size": 100, "source": "isp-a0", "tier": "ssd", "wave": 0,
            "xxh3": None} in a0["objects"]


def test_both_schedule_interfaces_give_the_same_bytes():
    cat, plan, bb = two_plans()
    for node in plan.holdings:
        assert manifest_bytes(node, plan, ScalarSchedule(), cat, NOW, TOPOLOGY) == \
            manifest_bytes(node, plan, TableSchedule([plan]), cat, NOW, TOPOLOGY)


def test_generated_and_odd_ids(tmp_path):
    ids = ["plain", 'quo"te', "caf\u00e9", "tab\tbed"]
    cat = make_catalog([1, 2, 3, 4])
    cat = type(cat)(np.array(sorted(ids), dtype=object), cat.size, cat.xxh3, cat.title,
                    tuple(sorted(ids)), cat.kind, cat.release)
    site = make_site([{"hdd": 100}])
    prev = {"isp-a0": {"gone\u2603": "hdd"}}
    plan = place_site(site, cat, make_fc(range(4), [1.0] * 4), prev, PlacementParams())
    (path,) = write_manifests(tmp_path, [plan], [], AllFilled(), cat, 1.5, TOPOLOGY)
    raw = path.read_bytes()
    assert raw.isascii()
    doc = json.loads(raw)
    assert doc["generated"] == 1.5
    assert [o["id"] for o in doc["objects"]] == sorted(ids)
    assert doc["delete"] == ["gone\u2603"]
    assert read_previous(tmp_path) == {"isp-a0": {o["id"]: "hdd" for o in doc["objects"]}}


def test_empty_manifest(tmp_path):
    cat = make_catalog([10])
    plan = place_site(make_site([{"hdd": 5}]), cat, make_fc([0], [1.0]), {}, PlacementParams())
    (path,) = write_manifests(tmp_path, [plan], [], ScalarSchedule(), cat, NOW, TOPOLOGY)
    # It names no source: its upstream alone.
    assert path.read_text() == (f'{{"appliance":"isp-a0","delete":[],"generated":{NOW},'
                                f'"objects":[\n],"sources":{{"bb1":"{BB1_URL}",'
                                f'"origin":"{ORIGIN_URL}"}},"upstream":["bb1","origin"]}}\n')
    assert read_previous(tmp_path) == {"isp-a0": {}}
    assert same(read_previous_numbers(tmp_path, ["isp-a0"], cat),
                {"isp-a0": ([], np.zeros(0, np.int64))})


def test_write_is_atomic_and_replaces(tmp_path):
    cat, plan, bb = two_plans()
    (tmp_path / "isp-a0.json").write_text("old")
    write_manifests(tmp_path, [plan], [bb], ScalarSchedule(), cat, NOW, TOPOLOGY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb1.json", "isp-a0.json",
                                                           "isp-a1.json"]
    assert json.loads((tmp_path / "isp-a0.json").read_bytes())["appliance"] == "isp-a0"


def test_unsafe_node_name(tmp_path):
    cat = make_catalog([1])
    plan = SitePlan("x", {"../evil": np.zeros(0, np.int64)}, {"../evil": np.zeros(0, np.int8)},
                    {}, {}, 0.0, 0)
    evil = topology_of(Site("x", None, (0, 0), (ApplianceSpec("../evil", "http://e", 1.0,
                                                              {"hdd": 1}),)))
    with pytest.raises(InputError, match="evil"):
        write_manifests(tmp_path, [plan], [], ScalarSchedule(), cat, NOW, evil)


def test_sources_and_upstream_exact_bytes(tmp_path):
    """Site appliances whose site has no backbone node: the upstream is the origin alone,
    and `sources` the URLs of the nodes each file names (itself for what it keeps, a peer,
    the origin); bb1, in the topology but named by neither file, is in neither."""
    cat = make_catalog([100, 200, 300], xxh3=[None, "ab" * 16, None])
    site = replace(make_site([{"ssd": 300, "hdd": 1000}, {"hdd": 1000}], name="far"),
                   upstream=None)
    plan = SitePlan("far", {"far-a0": np.array([0, 1, 2]), "far-a1": np.array([1])},
                    {"far-a0": np.array([2, 0, 2], np.int8), "far-a1": np.array([2], np.int8)},
                    {"far-a0": np.array([1, 2]), "far-a1": np.zeros(0, np.int64)},
                    {"far-a0": ["gone"], "far-a1": []}, 0.0, 500)

    class PeerAndOrigin:
        def source_of(self, node: str, obj: int) -> tuple[str, int]:
            return ("far-a1", 2) if obj == 1 else ("origin", 1)

    paths = write_manifests(tmp_path, [plan], [], PeerAndOrigin(), cat, NOW, topology_of(site))
    assert [p.read_bytes() for p in paths] == [(
        f'{{"appliance":"far-a0","delete":["gone"],"generated":{NOW},"objects":[\n'
        '{"id":"obj00000","size":100,"source":"far-a0","tier":"hdd","wave":0,"xxh3":null},\n'
        '{"id":"obj00001","size":200,"source":"far-a1","tier":"ssd","wave":2,'
        f'"xxh3":"{"ab" * 16}"}},\n'
        '{"id":"obj00002","size":300,"source":"origin","tier":"hdd","wave":1,"xxh3":null}\n'
        '],"sources":{"far-a0":"http://a0","far-a1":"http://a1",'
        f'"origin":"{ORIGIN_URL}"}},"upstream":["origin"]}}\n').encode(), (
        f'{{"appliance":"far-a1","delete":[],"generated":{NOW},"objects":[\n'
        '{"id":"obj00001","size":200,"source":"far-a1","tier":"hdd","wave":0,'
        f'"xxh3":"{"ab" * 16}"}}\n'
        f'],"sources":{{"far-a1":"http://a1","origin":"{ORIGIN_URL}"}},'
        '"upstream":["origin"]}\n').encode()]
    assert read_previous(tmp_path) == {"far-a0": {"obj00000": "hdd", "obj00001": "ssd",
                                                  "obj00002": "hdd"},
                                       "far-a1": {"obj00001": "hdd"}}


def test_a_source_outside_the_topology_is_an_error():
    cat, plan, _ = two_plans()

    class Elsewhere:
        def source_of(self, node: str, obj: int) -> tuple[str, int]:
            return ("elsewhere", 1)

    with pytest.raises(ValueError, match="isp-a0: source 'elsewhere' is not a node"):
        manifest_bytes("isp-a0", plan, Elsewhere(), cat, NOW, TOPOLOGY)
    with pytest.raises(ValueError, match="isp-a0: not an appliance or a backbone node"):
        manifest_bytes("isp-a0", plan, AllFilled(), cat, NOW, topology_of())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fleets())
def test_deterministic_bytes_and_round_trip(tmp_path_factory, fleet):
    cat, site, fc, previous, params = fleet
    out = [tmp_path_factory.mktemp("m") for _ in range(2)]
    for d in out:
        plan = place_site(site, cat, fc, previous, params)
        write_manifests(d, [plan], [], ScalarSchedule(), cat, NOW, TOPOLOGY)
    files = sorted(p.name for p in out[0].iterdir())
    assert files == sorted(p.name for p in out[1].iterdir())
    for name in files:
        assert (out[0] / name).read_bytes() == (out[1] / name).read_bytes()
    # What the manifests say is what the next night's planning starts from.
    back = read_previous(out[0])
    for a in site.appliances:
        written = {cat.ids[o]: TIERS[t] for o, t in zip(plan.holdings[a.name].tolist(),
                                                         plan.tiers[a.name].tolist(),
                                                         strict=True)
                   if o not in set(plan.added[a.name].tolist()) or o % 5 != 0}
        assert back[a.name] == written


def test_plan_from_manifests_is_stable(tmp_path):
    rng = np.random.default_rng(3)
    cat = make_catalog(rng.integers(1, 100, 400))
    site = make_site([{"ssd": 500, "flash": 1000, "hdd": 3000}] * 4, serve=1.0)
    fc = make_fc(range(400), rng.pareto(1.0, 400), rng.exponential(1.0, 400))
    first = place_site(site, cat, fc, {}, PlacementParams())
    write_manifests(tmp_path, [first], [], AllFilled(), cat, NOW, TOPOLOGY)
    again = place_site(site, cat, fc, read_previous(tmp_path), PlacementParams())
    assert again.churn_bytes == 0
    assert all(d == [] for d in again.deleted.values())


# --- reading --------------------------------------------------------------------------------

def _write(tmp_path, name: str, text: str):
    (tmp_path / name).write_text(text)


def test_read_previous_skips_objects_without_tier_and_temp_files(tmp_path):
    _write(tmp_path, "a1.json", json.dumps({"appliance": "a1", "generated": 1, "delete": [],
                                            "objects": [{"id": "x", "tier": "ssd"},
                                                        {"id": "y", "tier": None},
                                                        {"id": "z"}]}))
    _write(tmp_path, ".a2.json.tmp", "garbage")
    _write(tmp_path, ".a3.json", "garbage")
    _write(tmp_path, "notes.txt", "garbage")
    assert read_previous(tmp_path) == {"a1": {"x": "ssd"}}


@pytest.mark.parametrize(("text", "message"), [
    ('{"appliance": "a1", "objects": [', r"a1\.json: line 1 column \d+: invalid JSON"),
    ("[]", r"a1\.json: not a manifest"),
    ('{"objects": []}', r"a1\.json: appliance: expected a string"),
    ('{"appliance": "a2", "objects": []}', r"a1\.json: appliance: 'a2' does not match"),
    ('{"appliance": "a1"}', r"a1\.json: objects: expected a list"),
    ('{"appliance": "a1", "objects": [{"id": "x", "tier": "ssd"}, 3]}',
     r"a1\.json: objects\[1\]: expected an object"),
    ('{"appliance": "a1", "objects": [{"id": 5, "tier": "ssd"}]}',
     r"a1\.json: objects\[0\]\.id: expected a string"),
    ('{"appliance": "a1", "objects": [{"tier": "ssd"}]}',
     r"a1\.json: objects\[0\]\.id: expected a string, got nothing"),
    ('{"appliance": "a1", "objects": [{"id": "x", "tier": "ram"}]}',
     r"a1\.json: objects\[0\]\.tier: unknown tier 'ram'"),
    ('{"appliance": "a1", "objects": [{"id": "x", "tier": ["ssd"]}]}',
     r"a1\.json: objects\[0\]\.tier: unknown tier"),
    (b"\xff\xfe".decode("latin-1"), r"a1\.json"),
])
def test_read_previous_errors_name_file_and_field(tmp_path, text, message):
    _write(tmp_path, "a1.json", text)
    with pytest.raises(InputError, match=message):
        read_previous(tmp_path)


def test_read_previous_needs_a_directory(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        read_previous(tmp_path / "missing")


def test_read_previous_of_some_nodes(tmp_path):
    cat, plan, bb = two_plans()
    write_manifests(tmp_path, [plan], [bb], AllFilled(), cat, NOW, TOPOLOGY)
    everything = read_previous(tmp_path)
    assert list(everything) == ["bb1", "isp-a0", "isp-a1"]
    some = read_previous(tmp_path, ["isp-a1", "new-box", "isp-a0"])
    assert list(some) == ["isp-a1", "isp-a0"]
    assert some == {k: everything[k] for k in some}


def general(folder, nodes, cat):
    """read_previous_numbers by its definition: the JSON reader, then catalog_lookup."""
    held = read_previous(folder, nodes)
    return {n: (list(h), catalog_lookup(cat, list(h))) for n, h in held.items()}


def same(got, want) -> bool:
    return list(got) == list(want) and all(
        got[n][0] == want[n][0] and np.array_equal(got[n][1], want[n][1]) for n in want)


def test_read_previous_numbers_of_written_manifests(tmp_path):
    cat, plan, bb = two_plans()
    write_manifests(tmp_path, [plan], [bb], AllFilled(), cat, NOW, TOPOLOGY)
    nodes = ["isp-a1", "new-box", "bb1", "isp-a0"]
    got = read_previous_numbers(tmp_path, nodes, cat)
    assert list(got) == ["isp-a1", "bb1", "isp-a0"] and len(got["bb1"][0]) == 7
    assert same(got, general(tmp_path, nodes, cat))
    # A catalog that lost some of the ids: those number -1.
    fewer = make_catalog([100, 200, 300], xxh3=[None] * 3)
    assert same(read_previous_numbers(tmp_path, nodes, fewer), general(tmp_path, nodes, fewer))


def old_form(data: bytes) -> bytes:
    """*data* as older plans wrote it: no `sources`, no `upstream`."""
    rest, _, tail = data[:-1].rpartition(b"\n")
    assert tail.startswith(b'],"sources":{')
    return rest + b"\n]}\n"


def test_fast_reader_takes_manifests_with_and_without_sources(tmp_path):
    """Last night's manifests, written with `sources` and `upstream` or before them, are
    read without a JSON object per entry (`_read_canonical` takes them) and give the JSON
    reader's answer, the same for both forms."""
    cat, plan, bb = two_plans()
    empty = place_site(make_site([{"hdd": 5}], name="new"), cat, make_fc([0], [0.0], site="new"),
                       {}, PlacementParams())
    topo = topology_of(make_site([{"hdd": 1}] * 2), make_site([{"hdd": 5}], name="new"))
    new, old = tmp_path / "new", tmp_path / "old"
    paths = write_manifests(new, [plan, empty], [bb], TableSchedule([plan, bb]), cat, NOW, topo)
    old.mkdir()
    for path in paths:
        (old / path.name).write_bytes(old_form(path.read_bytes()))
    nodes = ["isp-a0", "isp-a1", "new-a0", "bb1"]
    assert json.loads((new / "new-a0.json").read_bytes())["objects"] == []
    for folder in (new, old):
        for node in nodes:
            assert manifest._read_canonical(folder / f"{node}.json", cat) is not None, node
        assert same(read_previous_numbers(folder, nodes, cat), general(folder, nodes, cat))
    assert same(read_previous_numbers(old, nodes, cat), read_previous_numbers(new, nodes, cat))
    assert read_previous(old) == read_previous(new)
    assert b'"sources"' not in (old / "bb1.json").read_bytes()


_LINES = ('{"appliance":"isp-a0","delete":[],"generated":1,"objects":[\n'
          '{"id":"obj00001","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null},\n'
          '{"id":"obj00002","size":300,"source":"isp-a0","tier":"ssd","wave":0,"xxh3":null}\n')


@pytest.mark.parametrize(("tail", "fast"), [
    ("]}\n", True),
    ('],"sources":{"bb1":"http://b","isp-a0":"http://a0","origin":"http://o"},'
     '"upstream":["bb1","origin"]}\n', True),
    ('],"sources":{},"upstream":[],"zzz":[1,2]}\n', True),  # keys of a later plan
    # the JSON reader's: the keys after `objects` over two lines, no newline at the end,
    # `objects` given again (the last one counts, for both readers), not JSON
    ('],"sources":{"bb1":"http://b"},\n"upstream":["bb1","origin"]}\n', False),
    ('],"sources":{"bb1":"http://b"},"upstream":["bb1","origin"]}', False),
    ('],"objects":[{"id":"obj00003","tier":"flash"}]}\n', False),
    ('],"sources":{"bb1":"http://b"},"upstream":["bb1","origin"]}}\n', None),
])
def test_keys_after_the_objects(tmp_path, tail, fast):
    """What follows the object lines: the fast reader takes the last line when it closes
    the manifest on its own (`]}` of older plans, or `],` and the later keys); anything
    else is the JSON reader's, and the answer is the same."""
    cat, _, _ = two_plans()
    _write(tmp_path, "isp-a0.json", _LINES + tail)
    if fast is None:
        with pytest.raises(InputError, match=r"isp-a0\.json: line 4 column \d+: invalid JSON"):
            read_previous_numbers(tmp_path, ["isp-a0"], cat)
        return
    got = manifest._read_canonical(tmp_path / "isp-a0.json", cat)
    assert (got is not None) == fast
    assert same(read_previous_numbers(tmp_path, ["isp-a0"], cat),
                general(tmp_path, ["isp-a0"], cat))


@pytest.mark.parametrize("objects", [
    '{"id":"obj00001","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null},\n'
    '{"id":"obj00002","size":300,"source":"isp-a0","tier":null,"wave":0,"xxh3":null}\n',
    '{"id":"obj00001","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null},\n'
    '{"id":"obj00001","size":200,"source":"bb1","tier":"ssd","wave":1,"xxh3":null}\n',
    '{"id":"obj\\u0030001","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null}\n',
    '{"size":200,"id":"obj00003","source":"bb1","tier":"hdd","wave":1,"xxh3":null}\n',
    '{"id":"obj00003","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null},\n'
    '{"id":"gone","size":1,"source":"bb1","tier":"flash","wave":1,"xxh3":null}\n',
    # canonical, ids descending: the compiled scanner leaves it to the regex reader
    '{"id":"obj00004","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null},\n'
    '{"id":"obj00002","size":200,"source":"bb1","tier":"ssd","wave":1,"xxh3":null}\n',
    # canonical: digests, an escaped source, a first id not in the catalog, the last one
    # after every catalog id
    '{"id":"a-gone","size":1,"source":"b\\"b","tier":"flash","wave":2,'
    '"xxh3":"0123456789abcdef0123456789abcdef"},\n'
    '{"id":"obj00001","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null},\n'
    '{"id":"obj00006","size":700,"source":"isp-a0","tier":"ssd","wave":0,"xxh3":null},\n'
    '{"id":"zzz","size":1,"source":"bb1","tier":"hdd","wave":1,"xxh3":null}\n',
    # a digest that is not 32 hex digits: the JSON reader takes it
    '{"id":"obj00001","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":"12"}\n',
])
def test_read_previous_numbers_of_other_forms_is_the_json_readers(tmp_path, objects):
    """Lines the fast reader does not take (a tier null, a repeated id, an escape, keys in
    another order) go through the JSON reader: the same answer either way."""
    cat, _, _ = two_plans()
    _write(tmp_path, "isp-a0.json",
           '{"appliance":"isp-a0","delete":[],"generated":1,"objects":[\n' + objects + "]}\n")
    assert same(read_previous_numbers(tmp_path, ["isp-a0"], cat),
                general(tmp_path, ["isp-a0"], cat))


def test_read_previous_numbers_errors_are_the_json_readers(tmp_path):
    cat, _, _ = two_plans()
    _write(tmp_path, "a1.json", '{"appliance":"a1","delete":[],"generated":1,"objects":[\n'
                                '{"id":5,"size":1,"source":"bb1","tier":"hdd","wave":1,'
                                '"xxh3":null}\n]}\n')
    with pytest.raises(InputError, match=r"a1\.json: objects\[0\]\.id: expected a string"):
        read_previous_numbers(tmp_path, ["a1"], cat)
    with pytest.raises(InputError, match="not a directory"):
        read_previous_numbers(tmp_path / "missing", ["a1"], cat)
    line = '{"id":"obj00001","size":200,"source":"bb1","tier":"hdd","wave":1,"xxh3":null}\n'
    _write(tmp_path, "a1.json", '{"appliance":"a1","delete":[],"generated":1,"objects":[\n'
                                + line + line.replace("00001", "00002") + "]}\n")
    with pytest.raises(InputError, match=r"a1\.json: line 3 column 1: invalid JSON"):
        read_previous_numbers(tmp_path, ["a1"], cat)  # no comma between the lines
    (tmp_path / "a1.json").write_bytes(  # canonical but for an id that is not UTF-8
        b'{"appliance":"a1","delete":[],"generated":1,"objects":[\n'
        + line.replace("obj00001", "obj0000\xff").encode("latin-1") + b"]}\n")
    with pytest.raises(InputError, match=r"a1\.json: not a manifest"):
        read_previous_numbers(tmp_path, ["a1"], cat)
