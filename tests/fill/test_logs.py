"""Access logs -> Demand: decay, sites, status rules, fill traffic, malformed lines, gzip,
blocks."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import math
import threading
import zlib

import numpy as np
import pytest

import fill.logs as logs
from fill.catalog import load_catalog
from fill.errors import InputError
from fill.logs import read_demand
from fill.model import FLEET
from fill.topology import load_topology

NOW = 1_700_000_000.0
HL = 86400.0
RHL = 10800.0
SIZES = {"a": 1000, "b": 2000, "c": 500, "d": 4000}
RELEASE_C = NOW - 10_000


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "catalog.csv"
    rows = "".join(f"{oid},{size},{int(RELEASE_C) if oid == 'c' else ''}\n"
                   for oid, size in SIZES.items())
    path.write_text("id,size,release\n" + rows)
    return load_catalog(path)


@pytest.fixture
def topology(tmp_path):
    doc = {"origin": {"name": "origin", "url": "http://o"},
           "sites": [{"name": "s1", "appliances": [_app("a1"), _app("a2")]},
                     {"name": "s2", "appliances": [_app("b1")]}],
           "links": [{"from": "origin", "to": "s1", "gbps": 1},
                     {"from": "origin", "to": "s2", "gbps": 1}]}
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(doc))
    return load_topology(path)


def _app(name):
    return {"name": name, "url": f"http://{name}", "serve_gbps": 10, "tiers": {"hdd": "1T"}}


def line(ts, obj, status=200, nbytes=100, appliance="a1", rng=None, scope=...) -> str:
    """An access-log line as oca serve writes it; appliance ... leaves the field out, and
    scope is left out unless given (as the server does for viewers)."""
    rec = {"ts": ts, "appliance": appliance, "method": "GET", "object": obj, "status": status,
           "bytes": nbytes, "range": rng, "client": "192.0.2.7", "dur_ms": 0.5, "tier": "ssd"}
    if appliance is ...:
        del rec["appliance"]
    if scope is not ...:
        rec["scope"] = scope
    return json.dumps(rec, separators=(",", ":"))


def write_log(tmp_path, lines, name="access.jsonl", gz=False):
    path = tmp_path / name
    data = "".join(x + "\n" for x in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read(paths, catalog, topology, **kw):
    return read_demand(paths if isinstance(paths, list) else [paths], catalog, topology, NOW,
                       HL, RHL, **kw)


def rows_of(demand, catalog) -> dict:
    """(site, object id) -> (requests, bytes, recent, last_ts)."""
    return {(demand.sites[s], catalog.ids[o]): (r, b, rc, t) for s, o, r, b, rc, t in zip(
        demand.site_idx.tolist(), demand.obj_idx.tolist(), demand.requests.tolist(),
        demand.bytes.tolist(), demand.recent.tolist(), demand.last_ts.tolist(), strict=True)}


def test_decay_weights_exact(tmp_path, catalog, topology):
    lines = [line(NOW, "a"), line(NOW - HL, "a", nbytes=200), line(NOW - 2 * HL, "a"),
             line(NOW - RHL, "b", status=206, nbytes=7), line(NOW + 500, "b", nbytes=1)]
    d = read(write_log(tmp_path, lines), catalog, topology)
    assert d.sites == ["s1", "s2", FLEET]
    rows = rows_of(d, catalog)
    assert set(rows) == {("s1", "a"), ("s1", "b")}
    r, b, rc, t = rows[("s1", "a")]
    assert r == 1 + 0.5 + 0.25
    assert b == 100 + 200 * 0.5 + 100 * 0.25
    assert rc == 1 + 2.0 ** -8 + 2.0 ** -16
    assert t == NOW
    r, b, rc, t = rows[("s1", "b")]  # a line after `now` (clock skew) weighs 1
    assert r == 2 ** -0.125 + 1 and rc == 0.5 + 1
    assert b == 7 * 2 ** -0.125 + 1 and t == NOW + 500
    assert d.lines == 5 and d.malformed == 0 and d.unknown_objects == 0
    assert d.start_ts == NOW - 2 * HL and d.end_ts == NOW + 500
    assert d.site_idx.dtype == np.int32 and d.obj_idx.dtype == np.int64


def test_rows_sorted_by_site_then_object(tmp_path, catalog, topology):
    lines = [line(NOW, "d", appliance="b1"), line(NOW, "b"), line(NOW, "a", appliance="zz"),
             line(NOW, "a", appliance="b1"), line(NOW, "c")]
    d = read(write_log(tmp_path, lines), catalog, topology)
    keys = list(zip(d.site_idx.tolist(), d.obj_idx.tolist(), strict=True))
    assert keys == sorted(keys) == [(0, 1), (0, 2), (1, 0), (1, 3), (2, 0)]


def test_appliances_map_to_sites_and_unknown_to_fleet(tmp_path, catalog, topology):
    lines = [line(NOW, "a", appliance="a1"), line(NOW, "a", appliance="a2"),
             line(NOW, "a", appliance="b1"), line(NOW, "a", appliance="nobody"),
             line(NOW, "a", appliance=None), line(NOW, "a", appliance=...)]
    rows = rows_of(read(write_log(tmp_path, lines), catalog, topology), catalog)
    assert {k: v[0] for k, v in rows.items()} == {("s1", "a"): 2, ("s2", "a"): 1,
                                                 (FLEET, "a"): 3}


def test_status_rules(tmp_path, catalog, topology):
    lines = [
        line(NOW, "a", 200, 1000),  # body bytes
        line(NOW, "a", 206, 10, rng="bytes=0-9"),
        line(NOW, "a", 304, 0),  # a request, no bytes
        line(NOW, "b", 404, 0),  # wanted here: the whole object
        line(NOW, "b", 302, 0, rng="bytes=0-99"),  # one range: its length
        line(NOW, "b", 503, 0, rng="bytes=1900-"),  # open range: to the end
        line(NOW, "c", 404, 0, rng="bytes=-300"),  # suffix
        line(NOW, "c", 404, 0, rng="bytes=0-99999"),  # clipped to the object
        line(NOW, "c", 404, 0, rng="bytes=0-1,5-9"),  # several: the object
        line(NOW, "c", 404, 0, rng="items=1-2"),  # not a byte range: the object
        line(NOW, "c", 404, 0, rng="bytes=400-100"),  # backwards: the object
        line(NOW, "d", 400, 0), line(NOW, "d", 403, 0), line(NOW, "d", 416, 0),
        line(NOW, "d", 500, 0), line(NOW, "d", 502, 0), line(NOW, "d", 301, 0),
        line(NOW, "d", 204, 0),  # none of these is demand
    ]
    d = read(write_log(tmp_path, lines), catalog, topology)
    rows = rows_of(d, catalog)
    assert rows[("s1", "a")][:2] == (3, 1010)
    assert rows[("s1", "b")][:2] == (3, 2000 + 100 + 100)
    assert rows[("s1", "c")][:2] == (5, 300 + 500 + 500 + 500 + 500)
    assert ("s1", "d") not in rows
    assert d.ignored_status == 7 and d.lines == len(lines) and d.malformed == 0


def test_unknown_and_null_objects(tmp_path, catalog, topology):
    lines = [line(NOW, "zzz"), line(NOW, None), line(NOW, "a"), line(NOW, "ZZZ", 404)]
    d = read(write_log(tmp_path, lines), catalog, topology)
    assert d.unknown_objects == 2 and d.malformed == 0 and d.lines == 4
    assert rows_of(d, catalog) == {("s1", "a"): (1.0, 100.0, 1.0, NOW)}


def test_malformed_lines_counted_once_and_rest_summed(tmp_path, catalog, topology, caplog):
    lines = [
        line(NOW, "a"),
        "{not json",
        "[1, 2]",
        '{"ts": "yesterday", "object": "a", "status": 200, "bytes": 1}',
        line(NOW, "a", nbytes=-5),
        "",  # blank: skipped, not counted
        '{"ts": 1, "object": 5, "status": 200, "bytes": 1}',
        '{"ts": 1, "object": "a", "bytes": 1}',
        '{"ts": NaN, "object": "a", "status": 200, "bytes": 1}',
        line(NOW - HL, "a", nbytes=50),
        '{"ts": 1, "object": "a", "status": 200.5, "bytes": 1}',
        line(NOW, "b", appliance="b1"),
    ]
    with caplog.at_level(logging.WARNING, logger="fill.logs"):
        d = read(write_log(tmp_path, lines), catalog, topology)
    assert d.malformed == 8 and d.lines == 11
    assert rows_of(d, catalog) == {("s1", "a"): (1.5, 125.0, 1 + 2.0 ** -8, NOW),
                                   ("s2", "b"): (1.0, 100.0, 1.0, NOW)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"8 of 11 access-log lines malformed, skipped (first: "
                        f"{tmp_path / 'access.jsonl'}:2: not JSON)"]


def test_malformed_found_by_the_fast_path_names_its_line(tmp_path, catalog, topology, caplog):
    # valid JSON throughout, so polars parses the block; the checks after find the line
    lines = [line(NOW, "a")] * 3 + ["", line(NOW, "a", nbytes=-1), line(NOW, "a")]
    with caplog.at_level(logging.WARNING, logger="fill.logs"):
        d = read(write_log(tmp_path, lines), catalog, topology)
    assert d.malformed == 1 and d.lines == 5
    assert rows_of(d, catalog)[("s1", "a")][0] == 4
    assert caplog.records[-1].getMessage() == (
        f"1 of 5 access-log lines malformed, skipped (first: {tmp_path / 'access.jsonl'}:5: "
        "bytes: missing, negative or not a whole number)")


DEMAND_FIELDS = ["sites", "site_idx", "obj_idx", "requests", "bytes", "recent", "last_ts",
                 "first_day", "malformed", "unknown_objects", "ignored_status", "start_ts",
                 "end_ts"]


def assert_same_demand(got, want):
    for f in DEMAND_FIELDS:
        assert np.array_equal(getattr(got, f), getattr(want, f)), f


def _viewer_and_fill_lines():
    """Viewer lines, and fill lines for the same objects (and others) from the same
    appliances, some before and after every viewer line (the span must not move)."""
    viewers = [line(NOW - 3600, "a"), line(NOW - HL, "b", 206, 7, rng="bytes=0-6"),
               line(NOW - 60, "a", 404, 0, appliance="b1"), line(NOW, "c", 304, 0),
               line(NOW - 2 * HL, "d", 416, 0), line(NOW, "zzz"),
               line(NOW - 10, "a", scope="viewer"), line(NOW - 20, "b", scope=None),
               line(NOW - 30, "c", scope="FILL"),  # another string: a viewer's
               line(RELEASE_C + 5, "c", appliance=...)]
    fills = [line(NOW - 5 * HL, "a", nbytes=1000, scope="fill"),
             line(NOW + 900, "b", 206, 2000, appliance="b1", scope="fill"),
             line(NOW - 3600, "a", 200, 1000, appliance="a2", scope="fill"),
             line(RELEASE_C + 5, "c", 200, 500, appliance=..., scope="fill"),
             line(NOW, "d", 404, 0, scope="fill"), line(NOW, "zzz", 200, 3, scope="fill"),
             line(NOW, None, 503, 0, scope="fill")]
    return viewers, fills


@pytest.mark.parametrize("path", ["polars", "pieces", "json"])
def test_fill_lines_are_not_demand_and_are_counted(tmp_path, catalog, topology, monkeypatch,
                                                   path):
    viewers, fills = _viewer_and_fill_lines()
    mixed = [x for pair in itertools.zip_longest(viewers, fills) for x in pair if x]
    if path != "polars":  # a line polars rejects: its block goes in pieces or line by line
        monkeypatch.setattr(logs, "_PIECE_LINES", 4 if path == "pieces" else 2048)
        viewers, mixed = viewers + ["{not json"], mixed + ["{not json"]
    without = read(write_log(tmp_path, viewers, "viewers.jsonl"), catalog, topology)
    with_fill = read(write_log(tmp_path, mixed, "mixed.jsonl"), catalog, topology)
    assert_same_demand(with_fill, without)
    assert without.fill_lines == without.fill_bytes == 0
    assert with_fill.fill_lines == len(fills) == 7
    assert with_fill.fill_bytes == 1000 + 2000 + 1000 + 500 + 0 + 3 + 0
    assert with_fill.lines == without.lines + len(fills)
    assert without.malformed == (path != "polars")
    rows = rows_of(without, catalog)  # the viewers' lines count as ever
    assert rows[("s1", "a")][0] == float(np.exp2(-3600 / HL)) + float(np.exp2(-10 / HL))
    assert (without.start_ts, without.end_ts) == (NOW - 2 * HL, NOW)


@pytest.mark.parametrize("path", ["polars", "pieces", "json"])
def test_a_scope_that_is_not_a_string_is_malformed(tmp_path, catalog, topology, monkeypatch,
                                                   caplog, path):
    # polars reads 5 as "5" and true as "true" into a String column: both readers must
    # still tell the number from the string
    not_strings = ["5", "true", "false", "-1", "1.5", '["fill"]', '{"fill": 1}']
    strings = ['"5"', '"true"', '""', '"[x"', '"{"', '"-"']  # viewers' lines
    lines = [line(NOW, "a")]
    lines += [line(NOW, "a")[:-1] + f',"scope":{v}}}' for v in not_strings]
    lines += [line(NOW, "a")[:-1] + f',"scope":{v}}}' for v in strings]
    lines += [line(NOW, "b", nbytes=9)[:-1] + ',"scope":"fi\\u006cl"}']  # "fill", escaped
    malformed = len(not_strings)
    if path != "polars":
        monkeypatch.setattr(logs, "_PIECE_LINES", 4 if path == "pieces" else 2048)
        lines.append("{not json")
        malformed += 1
    with caplog.at_level(logging.WARNING, logger="fill.logs"):
        d = read(write_log(tmp_path, lines), catalog, topology)
    assert d.malformed == malformed and d.lines == len(lines)
    assert (d.fill_lines, d.fill_bytes) == (1, 9)
    assert rows_of(d, catalog) == {("s1", "a"): (1.0 + len(strings), 100.0 * (1 + len(strings)),
                                                 1.0 + len(strings), NOW)}
    assert caplog.records[-1].getMessage() == (
        f"{malformed} of {len(lines)} access-log lines malformed, skipped (first: "
        f"{tmp_path / 'access.jsonl'}:2: scope: not a string)")


def test_fill_lines_leave_the_plans_unchanged(tmp_path, capsys):
    """`oca-fill plan` with and without the fill lines of the same objects: byte-identical
    manifests, and the same summary but for the lines read."""
    from fill.cli import main

    ids = [f"t{i:03d}-1080p.mp4" for i in range(40)]
    (tmp_path / "catalog.csv").write_text(
        "id,size\n" + "".join(f"{oid},{(i % 7 + 1) << 28}\n" for i, oid in enumerate(ids)))
    apps = [{"name": f"s{s}a{a}", "url": f"http://10.0.{s}.{a}", "serve_gbps": 10,
             "tiers": {"ssd": "2G", "hdd": "6G"}} for s in range(2) for a in range(2)]
    (tmp_path / "topology.json").write_text(json.dumps({
        "origin": {"name": "origin", "url": "http://10.9.0.1"},
        "sites": [{"name": f"site{s}", "fill_window": "02:00-08:00",
                   "appliances": apps[2 * s:2 * s + 2]} for s in range(2)],
        "links": [{"from": "origin", "to": f"site{s}", "gbps": 1} for s in range(2)]}))
    rng = np.random.default_rng(5)
    viewers, mixed = [], []
    for i in range(1500):
        obj = ids[min(int(rng.zipf(1.3)) - 1, len(ids) - 1)]
        app = apps[int(rng.integers(len(apps)))]["name"]
        ts = NOW - float(rng.random()) * 3 * HL
        viewers.append(line(ts, obj, 206, 1 << 20, app, "bytes=0-1048575"))
        mixed.append(viewers[-1])
        if i % 3 == 0:  # a peer copying the object from this appliance, most of it at night
            mixed.append(line(ts + 7200 * (i % 2), obj, 200, 1 << 28, app, scope="fill"))
        if i % 50 == 0:  # copies of objects nobody watched
            mixed.append(line(ts, ids[-1 - i % 5], 200, 1 << 28, app, scope="fill"))
    results = {}
    for name, lines in (("viewers", viewers), ("mixed", mixed)):
        out = tmp_path / name
        log = write_log(tmp_path, lines, f"{name}.jsonl.gz", gz=True)
        code = main(["-q", "plan", "--catalog", str(tmp_path / "catalog.csv"), "--topology",
                     str(tmp_path / "topology.json"), "--logs", str(log), "--out", str(out),
                     "--now", str(NOW), "--processes", "1", "--json"])
        assert code == 0
        results[name] = ({p.name: p.read_bytes() for p in sorted(out.glob("*.json"))},
                         json.loads(capsys.readouterr().out))
    (viewed, summary), (mixed_manifests, mixed_summary) = results["viewers"], results["mixed"]
    assert sorted(viewed) == [f"{a['name']}.json" for a in apps]
    assert any(json.loads(m)["objects"] for m in viewed.values())
    assert mixed_manifests == viewed
    assert summary.pop("demand")["lines"] == len(viewers)
    assert mixed_summary.pop("demand")["lines"] == len(mixed) > len(viewers)
    assert mixed_summary == summary


def _random_lines(n, seed=7):
    rng = np.random.default_rng(seed)
    ids = list(SIZES) + ["unknown-1", None]
    apps = ["a1", "a2", "b1", "zz", None, ...]
    statuses = [200, 206, 304, 404, 302, 503, 416, 500]
    ranges = [None, "bytes=0-99", "bytes=100-", "bytes=-50", "bytes=0-1,3-4"]
    scopes = [..., ..., "fill", ..., "viewer", None, ..., "fill", "5"]
    out = []
    for i in range(n):
        if i % 97 == 13:
            out.append('{"ts": 1, "object": "a", "status": 200, "bytes": -3}')
            continue
        if i % 131 == 5:
            out.append('{"truncated": ')
            continue
        if i % 173 == 9:
            out.append('{"ts": 1, "object": "a", "status": 200, "bytes": 1, "scope": 7}')
            continue
        ts = round(NOW - float(rng.random()) * 5 * HL + (300 if i % 50 == 0 else 0), 3)
        out.append(line(ts, ids[rng.integers(len(ids))], statuses[rng.integers(len(statuses))],
                        int(rng.integers(0, 3000)), apps[rng.integers(len(apps))],
                        ranges[rng.integers(len(ranges))], scopes[i % len(scopes)]))
    return out


def _reference(lines, catalog, topology):
    """The rules of docs/fill-inputs.md, line by line in plain Python."""
    site_of = topology.site_of()
    index = catalog.index_of()
    sums: dict = {}
    malformed = fill_lines = fill_bytes = 0
    first_day = np.zeros(len(catalog))
    for text in lines:
        try:
            rec = json.loads(text)
            ok = (isinstance(rec, dict) and isinstance(rec.get("ts"), int | float)
                  and isinstance(rec.get("status"), int) and isinstance(rec.get("bytes"), int)
                  and rec["bytes"] >= 0 and isinstance(rec.get("scope", ""), str | None))
        except ValueError:
            ok = False
        if not ok:
            malformed += 1
            continue
        if rec.get("scope") == "fill":
            fill_lines += 1
            fill_bytes += rec["bytes"]
            continue
        obj = index.get(rec.get("object"))
        status = rec["status"]
        if obj is None or status not in (200, 206, 302, 304, 404, 503):
            continue
        size = int(catalog.size[obj])
        nbytes = rec["bytes"] if status in (200, 206) else 0
        if status in (302, 404, 503):
            nbytes = size
            rng = rec.get("range")
            if rng and "," not in rng and rng.startswith("bytes="):
                first, _, last = rng[6:].partition("-")
                if first and last:
                    nbytes = min(int(last), size - 1) - int(first) + 1
                elif first:
                    nbytes = size - int(first)
                elif last:
                    nbytes = min(int(last), size)
        site = site_of.get(rec.get("appliance"), FLEET)
        age = max(NOW - rec["ts"], 0.0)
        w, wr = 0.5 ** (age / HL), 0.5 ** (age / RHL)
        r, b, rc, t = sums.get((site, catalog.ids[obj]), (0.0, 0.0, 0.0, -math.inf))
        sums[(site, catalog.ids[obj])] = (r + w, b + w * nbytes, rc + wr, max(t, rec["ts"]))
        if 0 <= rec["ts"] - catalog.release[obj] < logs.FIRST_DAY:
            first_day[obj] += 1
    return sums, malformed, first_day, (fill_lines, fill_bytes)


@pytest.mark.parametrize("inflate_piece", [1 << 20, 1000, 7])
def test_gzip_plain_and_block_cuts_give_identical_demand(tmp_path, catalog, topology,
                                                         monkeypatch, inflate_piece):
    monkeypatch.setattr(logs, "_INFLATE_PIECE", inflate_piece)
    lines = _random_lines(3000)
    plain = write_log(tmp_path, lines)
    gz = write_log(tmp_path, lines, "access.jsonl.gz", gz=True)
    data = plain.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1  # two gzip members, as `cat a.gz b.gz`
    multi = tmp_path / "rotated.log"  # told by its magic bytes, not its name
    multi.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))

    whole = read(plain, catalog, topology)
    monkeypatch.setattr(logs, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(logs, "_PEEK", 100)
    results = [read(p, catalog, topology) for p in (plain, gz, multi)]
    fields = ["site_idx", "obj_idx", "requests", "bytes", "recent", "last_ts", "first_day"]
    for d in results:
        for f in fields:
            assert np.array_equal(getattr(d, f), getattr(whole, f)), f
        for f in ["lines", "malformed", "unknown_objects", "ignored_status", "start_ts",
                  "end_ts", "fill_lines", "fill_bytes"]:
            assert getattr(d, f) == getattr(whole, f), f

    sums, malformed, first_day, fill = _reference(lines, catalog, topology)
    assert whole.malformed == malformed > 0 and whole.lines == len(lines)
    assert (whole.fill_lines, whole.fill_bytes) == fill and fill[0] > 0
    got = rows_of(whole, catalog)
    assert set(got) == set(sums)
    for key, want in sums.items():
        assert got[key] == pytest.approx(want, rel=1e-12), key
    assert np.array_equal(whole.first_day, first_day)


@pytest.mark.parametrize("raw_read,block", [(7, 50), (100, 4096), (1 << 22, 1 << 24)])
def test_inflate_members_padding_and_small_reads(tmp_path, monkeypatch, raw_read, block):
    monkeypatch.setattr(logs, "_RAW_READ", raw_read)
    monkeypatch.setattr(logs, "BLOCK_BYTES", block)
    data = b"".join(b'{"x":%d}\n' % i for i in range(3000))
    half = data.index(b"\n", len(data) // 2) + 1
    for blob in (gzip.compress(data), gzip.compress(data) + b"\0" * 1000,
                 gzip.compress(data[:half]) + gzip.compress(data[half:])):
        path = tmp_path / "x.gz"
        path.write_bytes(blob)
        with open(path, "rb") as f:
            pieces = list(logs._inflate(path, f))
        assert b"".join(p for p, _ in pieces) == data
        assert sum(n for _, n in pieces) == len(blob)


@pytest.mark.parametrize("inflate_piece", [1 << 20, 100, 1])
def test_gzip_blocks_are_whole_lines_in_order(tmp_path, monkeypatch, inflate_piece):
    monkeypatch.setattr(logs, "_INFLATE_PIECE", inflate_piece)
    monkeypatch.setattr(logs, "BLOCK_BYTES", 256)
    data = b"".join(b'{"x":%d}\n' % i for i in range(2000)) + b'{"long":"' + b"y" * 700
    data += b'"}\n{"x":0}\n{"last":"no newline"}'
    path = tmp_path / "x.gz"
    blob = gzip.compress(data)
    path.write_bytes(blob)
    with open(path, "rb") as f:
        blocks = list(logs._gzip_blocks(path, f))
    assert b"".join(b.data for b in blocks) == data
    assert all(b.data.endswith(b"\n") for b in blocks[:-1])
    assert 1 < len(blocks) < len(data) // 128  # ~BLOCK_BYTES each, not a line each
    assert [b.offset for b in blocks] == [sum(len(b.data) for b in blocks[:i])
                                          for i in range(len(blocks))]
    assert sum(b.consumed for b in blocks) == len(blob)


def test_several_files_and_progress(tmp_path, catalog, topology):
    a = write_log(tmp_path, [line(NOW, "a")] * 3, "a.jsonl")
    b = write_log(tmp_path, [line(NOW, "a", appliance="b1")] * 2, "b.jsonl.gz", gz=True)
    seen = []
    d = read([a, b], catalog, topology, on_bytes=seen.append)
    assert sum(seen) == a.stat().st_size + b.stat().st_size
    assert {k: v[0] for k, v in rows_of(d, catalog).items()} == {("s1", "a"): 3,
                                                                ("s2", "a"): 2}


def test_lines_longer_than_a_block_and_no_final_newline(tmp_path, catalog, topology,
                                                        monkeypatch):
    monkeypatch.setattr(logs, "BLOCK_BYTES", 64)
    monkeypatch.setattr(logs, "_PEEK", 16)
    lines = [line(NOW, "a"), line(NOW, "b", rng="bytes=0-1" + "0" * 300), line(NOW, "a")]
    path = tmp_path / "x.jsonl"
    path.write_text("\r\n".join(lines))  # CRLF, and the last line without one
    d = read(path, catalog, topology)
    assert {k: v[0] for k, v in rows_of(d, catalog).items()} == {("s1", "a"): 2,
                                                                ("s1", "b"): 1}
    assert d.malformed == 0 and d.lines == 3


def test_first_day_counts_requests_after_release(tmp_path, catalog, topology):
    lines = [line(RELEASE_C - 5, "c"), line(RELEASE_C, "c"), line(RELEASE_C + 86399, "c"),
             line(RELEASE_C + 86400, "c"), line(RELEASE_C + 10, "a"),
             line(RELEASE_C + 10, "c", status=416)]
    d = read(write_log(tmp_path, lines), catalog, topology)
    index = catalog.index_of()
    assert d.first_day[index["c"]] == 2 and d.first_day.sum() == 2
    assert len(d.first_day) == len(catalog)


def test_damaged_gzip_is_a_warning(tmp_path, catalog, topology, caplog):
    data = gzip.compress("".join(line(NOW, "a") + "\n" for _ in range(2000)).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[:len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="fill.logs"):
        d = read(path, catalog, topology)
    assert any("gzip stream ends early" in r.getMessage() for r in caplog.records)
    assert 0 < d.lines < 2000 and d.malformed <= 1


def test_corrupt_gzip_is_a_warning_and_what_inflated_counts(tmp_path, catalog, topology,
                                                            caplog, monkeypatch):
    monkeypatch.setattr(logs, "_RAW_READ", 1000)  # the output of the call that fails is lost
    data = bytearray(gzip.compress("".join(line(NOW - i, "a") + "\n"
                                           for i in range(20000)).encode()))
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="fill.logs"):
        d = read(path, catalog, topology)
    assert any("damaged gzip data" in r.getMessage() for r in caplog.records)
    z = zlib.decompressobj(wbits=31)  # the stdlib's inflate, 1000 bytes at a time
    inflated = []
    with pytest.raises(zlib.error):
        for i in range(0, len(data), 1000):
            inflated.append(z.decompress(bytes(data[i:i + 1000])))
    lines = b"".join(inflated).split(b"\n")
    assert d.lines == sum(1 for x in lines if x.strip(b" \t\r")) > 0


def _pipeline_threads():
    return [t for t in threading.enumerate() if t.name == "oca-fill-log-reader"]


def test_errors_in_any_stage_are_raised_and_stop_the_threads(tmp_path, catalog, topology,
                                                             monkeypatch):
    monkeypatch.setattr(logs, "BLOCK_BYTES", 512)
    path = write_log(tmp_path, [line(NOW, "a")] * 200)

    def failing_reader(files):
        yield from itertools.islice(blocks_of(files), 3)
        raise OSError("disk gone")

    blocks_of = logs._blocks_of
    with monkeypatch.context() as m:
        m.setattr(logs, "_blocks_of", failing_reader)
        with pytest.raises(OSError, match="disk gone"):
            read(path, catalog, topology)
    assert not _pipeline_threads()

    calls = []

    def failing_sum(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("sum failed")

    monkeypatch.setattr(logs._Sums, "add_block", failing_sum)
    with pytest.raises(RuntimeError, match="sum failed"):
        read(path, catalog, topology)
    assert not _pipeline_threads()


def test_no_logs_and_missing_file(tmp_path, catalog, topology):
    d = read([], catalog, topology)
    assert len(d.obj_idx) == 0 and d.lines == 0
    assert math.isnan(d.start_ts) and math.isnan(d.end_ts)
    missing = tmp_path / "gone.jsonl"
    with pytest.raises(InputError, match="gone.jsonl: access log not found"):
        read(missing, catalog, topology)
    with pytest.raises(ValueError):
        read_demand([], catalog, topology, NOW, 0, RHL)


def test_string_index_is_exact():
    import polars as pl

    keys = pl.Series([f"k{i}" for i in range(5000)])
    index = logs._StringIndex(keys)
    probe = pl.Series([f"k{i}" for i in range(-100, 5100)] + [None, ""])
    got = index.lookup(probe)
    want = [i if 0 <= i < 5000 else -1 for i in range(-100, 5100)] + [-1, -1]
    assert got.tolist() == want
    assert logs._StringIndex(pl.Series([], dtype=pl.String)).lookup(probe).max() == -1
