"""`oca-fill plan` end to end: real files in, manifests out; local pool and Dask agree."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import distributed
import numpy as np
import pytest

from fill.plan import PlanRequest, run_plan

OCA_FILL = Path(sys.executable).parent / "oca-fill"
NOW = 1_795_000_000


def make_inputs(root: Path, objects: int = 400, sites: int = 3, appliances: int = 3,
                lines: int = 6000, seed: int = 3) -> dict:
    """A small fleet: catalog CSV, topology JSON, two access logs (one gzipped)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"t{i // 4:04d}-{('2160p', '1080p', '720p', '480p')[i % 4]}.mp4"
           for i in range(objects)]
    sizes = rng.integers(100 << 20, 2 << 30, objects)
    rows = ["id,size,title,release"] + [
        f"{oid},{size},title{i // 4},{NOW - 86400 * 10}"
        for i, (oid, size) in enumerate(zip(ids, sizes, strict=True))]
    (root / "catalog.csv").write_text("\n".join(rows) + "\n")
    topo = {"origin": {"name": "origin", "url": "http://127.0.0.1:9000"},
            "backbone": [{"name": "bb1", "url": "http://127.0.0.1:9001",
                          "tiers": {"ssd": "200G", "hdd": "2T"}}],
            "sites": [], "links": [{"from": "origin", "to": "bb1", "gbps": 100}]}
    names = []
    for s in range(sites):
        apps = []
        for a in range(appliances):
            names.append(f"s{s}a{a}")
            apps.append({"name": names[-1], "url": f"http://127.0.0.1:{9100 + len(names)}",
                         "serve_gbps": 10, "tiers": {"ssd": "20G", "flash": "40G",
                                                     "hdd": "100G"}})
        topo["sites"].append({"name": f"site{s}", "upstream": "bb1",
                              "fill_window": "02:00-08:00", "appliances": apps})
        topo["links"].append({"from": "bb1", "to": f"site{s}", "gbps": 10})
    (root / "topology.json").write_text(json.dumps(topo))
    p = 1.0 / np.arange(1, objects + 1)
    p /= p.sum()
    logs = []
    for k in range(2):
        out = []
        for _ in range(lines // 2):
            oid = ids[rng.choice(objects, p=p)]
            out.append(json.dumps({
                "ts": NOW - float(rng.random() * 86400 * 2), "appliance": str(rng.choice(names)),
                "method": "GET", "object": oid, "status": 206,
                "bytes": int(rng.integers(1 << 20, 4 << 20)), "range": "bytes=0-2097151",
                "client": "192.0.2.1", "dur_ms": 1.0, "tier": "hdd"}))
        out.append("this line is not JSON")
        data = ("\n".join(out) + "\n").encode()
        path = root / (f"access-{k}.jsonl" + (".gz" if k else ""))
        path.write_bytes(gzip.compress(data) if k else data)
        logs.append(path)
    return {"catalog": root / "catalog.csv", "topology": root / "topology.json", "logs": logs}


def plan_cli(inputs: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(OCA_FILL), "-q", "plan", "--catalog", str(inputs["catalog"]), "--topology",
         str(inputs["topology"]), "--out", str(out), "--now", str(NOW), "--logs",
         *map(str, inputs["logs"]), *extra], capture_output=True, text=True, timeout=300)


def manifests(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.json"))}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return make_inputs(tmp_path_factory.mktemp("fleet"))


def test_plan_writes_one_manifest_per_node_in_the_contract_format(inputs, tmp_path):
    r = plan_cli(inputs, tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["demand"]["malformed"] == 2
    got = manifests(tmp_path / "out")
    nodes = {f"s{s}a{a}.json" for s in range(3) for a in range(3)} | {"bb1.json"}
    assert set(got) == nodes
    catalog = {line.split(",")[0]: int(line.split(",")[1]) for line in
               inputs["catalog"].read_text().splitlines()[1:]}
    for name, data in got.items():
        m = json.loads(data)
        assert m["appliance"] == name[:-5]
        assert m["generated"] == NOW
        assert isinstance(m["delete"], list)
        held = 0
        for o in m["objects"]:
            assert set(o) >= {"id", "size", "xxh3", "tier", "source", "wave"}
            assert o["size"] == catalog[o["id"]]
            assert o["tier"] in ("ssd", "flash", "hdd")
            held += o["size"]
        if name != "bb1.json":
            assert held <= (20 + 40 + 100) << 30  # never over the appliance's capacity


def test_same_inputs_give_byte_identical_manifests_and_no_churn(inputs, tmp_path):
    assert plan_cli(inputs, tmp_path / "a").returncode == 0
    assert plan_cli(inputs, tmp_path / "b", "--processes", "1").returncode == 0
    first = manifests(tmp_path / "a")
    assert first == manifests(tmp_path / "b")
    # Re-planning on top of last night's manifests with the same demand changes nothing.
    r = plan_cli(inputs, tmp_path / "c", "--previous", str(tmp_path / "a"), "--json")
    assert r.returncode == 0, r.stderr
    totals = json.loads(r.stdout)["totals"]
    assert totals["added"]["objects"] == 0 and totals["deleted"]["objects"] == 0


def test_manifests_carry_the_urls_of_their_sources_and_their_upstream(tmp_path):
    """Each manifest gives the URL of every node it names (its sources and its upstream,
    from the topology) and its upstream: a site appliance's site's backbone node then the
    origin, or the origin alone when the site has none; a backbone node's, the origin."""
    inputs = make_inputs(tmp_path / "in", objects=300, sites=2, appliances=2)
    topo = json.loads(inputs["topology"].read_text())
    topo["sites"][1]["upstream"] = None  # fills from the origin, over bb1's links
    for s in topo["sites"]:
        for a in s["appliances"]:
            a["serve_gbps"] = 1e-6  # hot objects on both appliances: peer copies
    inputs["topology"].write_text(json.dumps(topo))
    urls = {topo["origin"]["name"]: topo["origin"]["url"]}
    urls.update((b["name"], b["url"]) for b in topo["backbone"])
    urls.update((a["name"], a["url"]) for s in topo["sites"] for a in s["appliances"])
    upstream = {"bb1": ["origin"], "s0a0": ["bb1", "origin"], "s0a1": ["bb1", "origin"],
                "s1a0": ["origin"], "s1a1": ["origin"]}
    # The first night twice (the same bytes), and a second night on top of it: what a
    # node keeps has itself as source.
    assert plan_cli(inputs, tmp_path / "a").returncode == 0
    assert plan_cli(inputs, tmp_path / "b", "--processes", "1").returncode == 0
    assert manifests(tmp_path / "b") == manifests(tmp_path / "a")
    assert plan_cli(inputs, tmp_path / "c", "--previous", str(tmp_path / "a")).returncode == 0
    named = set()
    for night in ("a", "c"):
        got = manifests(tmp_path / night)
        assert set(got) == {f"{n}.json" for n in upstream}
        for data in got.values():
            m = json.loads(data)
            node = m["appliance"]
            assert m["upstream"] == upstream[node]
            sources = {o["source"] for o in m["objects"]}
            assert m["sources"] == {n: urls[n] for n in sorted(sources | set(m["upstream"]))}
            # Canonical: the last line, keys sorted.
            assert data.endswith(b"\n]," + json.dumps(
                {"sources": m["sources"], "upstream": m["upstream"]}, sort_keys=True,
                separators=(",", ":")).encode()[1:] + b"\n")
            named |= {(node, s) for s in sources}
    # The plans named peers, the backbone node, the origin and the nodes themselves; the
    # site without a backbone node never bb1.
    assert {("s0a1", "s0a0"), ("s1a1", "s1a0"), ("s0a0", "bb1"), ("s1a0", "origin"),
            ("bb1", "origin"), ("s0a0", "s0a0"), ("bb1", "bb1")} <= named
    assert not {(n, "bb1") for n in ("s1a0", "s1a1")} & named


def test_previous_reads_manifests_with_and_without_sources(inputs, tmp_path):
    """--previous takes last night's manifests whether they carry `sources` and
    `upstream` or were written before them (a folder of both): the same plan."""
    assert plan_cli(inputs, tmp_path / "night1").returncode == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, (name, data) in enumerate(manifests(tmp_path / "night1").items()):
        if k % 2 == 0 or name == "bb1.json":
            rest, _, tail = data[:-1].rpartition(b"\n")
            assert tail.startswith(b'],"sources":{')
            data = rest + b"\n]}\n"  # as older plans wrote it
        (mixed / name).write_bytes(data)
    old = [n for n, d in manifests(mixed).items() if d.endswith(b"\n]}\n")]
    assert "bb1.json" in old and 1 < len(old) < len(manifests(mixed))
    results = []
    for previous in ("night1", "mixed"):
        r = plan_cli(inputs, tmp_path / f"after-{previous}", "--previous",
                     str(tmp_path / previous), "--json")
        assert r.returncode == 0, r.stderr
        results.append(json.loads(r.stdout)["totals"])
    assert results[0] == results[1]
    assert results[1]["added"]["objects"] == 0 and results[1]["deleted"]["objects"] == 0
    assert manifests(tmp_path / "after-mixed") == manifests(tmp_path / "after-night1")


def test_dask_cluster_gives_the_same_manifests(inputs, tmp_path):
    common = dict(catalog=inputs["catalog"], logs=inputs["logs"],
                  topology=inputs["topology"], now=NOW)
    run_plan(PlanRequest(out=tmp_path / "local", processes=2, **common))
    # The next night on top of the first (previous manifests read by the client).
    night2 = dict(common, now=NOW + 86400, previous=tmp_path / "local")
    want2 = run_plan(PlanRequest(out=tmp_path / "local2", processes=2, **night2))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        run_plan(PlanRequest(out=tmp_path / "dask", dask=cluster.scheduler_address, **common))
        got2 = run_plan(PlanRequest(out=tmp_path / "dask2", dask=cluster.scheduler_address,
                                    **night2))
    local, dask = manifests(tmp_path / "local"), manifests(tmp_path / "dask")
    assert local and local == dask
    assert manifests(tmp_path / "local2") == manifests(tmp_path / "dask2")
    assert json.dumps(got2) == json.dumps(want2)


def test_bad_inputs_exit_1_naming_the_file(inputs, tmp_path):
    bad = tmp_path / "catalog.csv"
    bad.write_text("id,size\nok.mp4,100\nbad.mp4,lots\n")
    r = plan_cli({**inputs, "catalog": bad}, tmp_path / "out")
    assert r.returncode == 1
    assert r.stderr.startswith("oca-fill: error: ") and str(bad) in r.stderr
    assert "line 3" in r.stderr and "size" in r.stderr
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(tmp_path):
    r = subprocess.run([str(OCA_FILL), "plan", "--catalog", "x"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("oca-fill: error: ")


def test_simulate_cli_reports_hit_ratios(tmp_path):
    rng = np.random.default_rng(5)
    rows = ["ts,id,size"]
    sizes = {f"o{i:03d}": int(rng.integers(1 << 20, 8 << 20)) for i in range(100)}
    p = 1.0 / np.arange(1, 101)
    p /= p.sum()
    for k in range(4000):
        oid = f"o{rng.choice(100, p=p):03d}"
        rows.append(f"{NOW + k * 60},{oid},{sizes[oid]}")
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
    r = subprocess.run([str(OCA_FILL), "-q", "simulate", "--trace", str(tmp_path / "trace.csv"),
                        "--capacity", "100M", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    text = json.dumps(result)
    assert "byte_hit_ratio" in text and "request_hit_ratio" in text
    r = subprocess.run([str(OCA_FILL), "simulate", "--trace", str(tmp_path / "nope.csv"),
                        "--capacity", "100M"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "nope.csv" in r.stderr


def composed(inputs: dict, out: Path, now: float, previous: Path | None) -> dict:
    """The plan made with the stages' one-process interfaces, one after the other."""
    from fill.backbone import schedule
    from fill.catalog import load_catalog
    from fill.forecast import ForecastParams, forecast, forecast_backbone
    from fill.logs import read_demand
    from fill.manifest import read_previous, write_manifests
    from fill.placement import PlacementParams, place_site
    from fill.plan import backbone_sites
    from fill.summary import demand_figures, summarize
    from fill.topology import load_topology

    catalog, topo = load_catalog(inputs["catalog"]), load_topology(inputs["topology"])
    fp = ForecastParams()
    demand = read_demand(inputs["logs"], catalog, topo, now, fp.half_life,
                         fp.recent_half_life)
    fcs = forecast(demand, catalog, topo, now, fp)
    fcs.update(forecast_backbone(fcs, topo))
    prev = read_previous(previous) if previous else {}

    def place(site):
        return place_site(site, catalog, fcs[site.name],
                          {a.name: prev.get(a.name, {}) for a in site.appliances},
                          PlacementParams())

    site_plans = [place(s) for s in topo.sites]
    bb_plans = [place(s) for s in backbone_sites(topo)]
    sched = schedule(site_plans, bb_plans, topo, catalog, prev)
    write_manifests(out, site_plans, bb_plans, sched, catalog, now, topo)
    return summarize(site_plans, bb_plans, sched, topo, catalog, demand_figures(demand))


def test_workers_give_what_the_stages_give_one_after_the_other(tmp_path):
    """plan.py splits placement, scheduling, manifests and summary over workers, with one
    fleet-wide admission merged band by band; on a fleet whose links defer much (both
    upstream and origin sources, a second night on top of the first) it must give the
    bytes the plain composition gives."""
    inputs = make_inputs(tmp_path / "in", objects=600, sites=4, appliances=3, seed=11)
    topo = json.loads(inputs["topology"].read_text())
    for lk in topo["links"]:
        lk["gbps"] = 0.5 if lk["from"] == "origin" else 0.02  # 1 TB a day; 54 GB a night
    topo["links"].append({"from": "origin", "to": "site3", "gbps": 0.01})
    topo["sites"][2]["upstream"] = None
    # A second backbone node: its site shares no link with the others (a second group of
    # the admission, on another worker).
    topo["backbone"].append({"name": "bb2", "url": "http://127.0.0.1:9002",
                             "tiers": {"ssd": "100G", "hdd": "1T"}})
    topo["links"] += [{"from": "origin", "to": "bb2", "gbps": 0.3},
                      {"from": "bb2", "to": "site1", "gbps": 0.02}]
    topo["links"] = [lk for lk in topo["links"] if (lk["from"], lk["to"]) != ("bb1", "site1")]
    topo["sites"][1]["upstream"] = "bb2"
    inputs["topology"].write_text(json.dumps(topo))
    previous = None
    for night in range(2):
        now = NOW + night * 86400
        want = composed(inputs, tmp_path / f"want{night}", now, previous)
        from unittest import mock

        from fill import backbone
        with mock.patch.multiple(backbone, _BAND_ROWS=64, _SAMPLE=4):
            got = run_plan(PlanRequest(catalog=inputs["catalog"], logs=inputs["logs"],
                                       topology=inputs["topology"], now=now,
                                       out=tmp_path / f"got{night}", previous=previous,
                                       processes=2))
        assert json.dumps(got) == json.dumps(want)
        assert manifests(tmp_path / f"got{night}") == manifests(tmp_path / f"want{night}")
        assert want["totals"]["deferred"]["objects"] > 0
        sources = {o["source"] for data in manifests(tmp_path / f"got{night}").values()
                   for o in json.loads(data)["objects"]}
        assert {"origin", "bb1", "bb2"} <= sources
        previous = tmp_path / f"got{night}"


def test_bad_previous_manifest_in_a_worker_exits_1_and_leaves_no_spool(inputs, tmp_path):
    """A site's previous manifest is read in a worker: its error still names the file and
    field, exits 1, and the plan's working files are gone."""
    assert plan_cli(inputs, tmp_path / "night1").returncode == 0
    bad = tmp_path / "night1" / "s1a2.json"
    bad.write_text('{"appliance": "s1a2", "objects": [{"id": "x", "tier": "ram"}]}')
    out = tmp_path / "night2"
    r = plan_cli(inputs, out, "--previous", str(tmp_path / "night1"))
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"oca-fill: error: {bad}: objects[0].tier: unknown tier 'ram' "
        "(expected one of ssd, flash, hdd)")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _killed(k: int) -> None:
    """A site's first step that the OOM killer, say, ends."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_is_one_line_and_exit_1(inputs, tmp_path, monkeypatch):
    """A worker that dies ends the plan with a one-line error (exit 1: a WorkerError is
    an OcaError), and the plan's working files are gone."""
    from fill import plan
    from fill.errors import WorkerError

    monkeypatch.setattr(plan, "_local_first", _killed)
    with pytest.raises(WorkerError, match="a worker process died"):
        run_plan(PlanRequest(catalog=inputs["catalog"], logs=inputs["logs"],
                             topology=inputs["topology"], now=NOW, out=tmp_path / "out",
                             processes=2))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
