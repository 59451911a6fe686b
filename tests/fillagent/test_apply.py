"""`oca fill apply` against real `oca serve` sources: what the store holds afterwards
(ids, tiers, digests, bytes), what the sources were asked (their access logs), the
summary, and that a bad manifest changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oca.digest import digest_bytes
from oca.http.auth import Signer, load_key
from tests.conftest import OCA_BIN
from tests.fillagent.conftest import OBJECTS, manifest, target
from tests.http.conftest import start_server, wait_for
from tests.mounts import mounts

__all__ = ["mounts"]  # the fixture, imported for pytest


def held(app) -> dict[str, tuple[str, str]]:
    with app.open() as store:
        return {r.id: (r.tier, r.xxh3) for r in store.objects()}


def content(app, oid: str) -> bytes:
    with app.open() as store:
        return Path(store.path_of(store.get(oid))).read_bytes()


def leftovers(app) -> list[str]:
    """Files in the disks' tmp folders (temp and partial files)."""
    return sorted(str(p) for disks in app.disks.values() for d in disks
                  for p in (Path(d) / "tmp").glob("*") if p.is_file())


def put(app, oid: str, tier: str) -> None:
    src = app.root / f"src-{oid}"
    src.write_bytes(OBJECTS[oid])
    r = app.oca("put", oid, str(src), "--tier", tier)
    assert r.returncode == 0, r.stderr


def want(*items: tuple[str, str]) -> dict[str, tuple[str, str]]:
    return {oid: (tier, digest_bytes(OBJECTS[oid])) for oid, tier in items}


@pytest.fixture
def a1(tmp_path, origin, backbone):
    """Target a1 holding k.mp4 (ssd, kept), m.mp4 (hdd, to move to ssd), d.mp4 (to go),
    and tonight's manifest: a.mp4 and b.mp4 from bb1 (wave 1), c.mp4 from the origin."""
    app = target(tmp_path / "a1")
    put(app, "k.mp4", "ssd")
    put(app, "m.mp4", "hdd")
    put(app, "d.mp4", "flash")
    mf = manifest(tmp_path / "a1.json",
                  [("a.mp4", "ssd", "bb1", 1), ("b.mp4", "flash", "bb1", 1),
                   ("c.mp4", "hdd", "origin", 0), ("k.mp4", "ssd", "a1", 0),
                   ("m.mp4", "ssd", "a1", 0)],
                  delete=["d.mp4"],
                  sources={"a1": "http://127.0.0.1:9", "bb1": backbone.base,
                           "origin": origin.base},
                  upstream=["bb1", "origin"])
    return app, mf


def test_apply_fetches_moves_deletes_and_sums_up(a1, origin, backbone):
    app, mf = a1
    r = app.oca("fill", "apply", str(mf), "--parallel", "2", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["ok"], s["added"], s["moved"], s["deleted"], s["kept"], s["failed"]) == \
        (True, 3, 1, 1, 1, {})
    assert s["bytes_by_source"] == {"bb1": len(OBJECTS["a.mp4"]) + len(OBJECTS["b.mp4"]),
                                    "origin": len(OBJECTS["c.mp4"])}
    assert held(app) == want(("a.mp4", "ssd"), ("b.mp4", "flash"), ("c.mp4", "hdd"),
                             ("k.mp4", "ssd"), ("m.mp4", "ssd"))
    for oid in ("a.mp4", "b.mp4", "c.mp4", "m.mp4"):
        assert content(app, oid) == OBJECTS[oid], oid
    assert leftovers(app) == []
    # Each source was asked for its objects once, whole.
    asked_bb = wait_for(lambda: sorted(x["object"] for x in backbone.log_lines()
                                       if x["object"] in ("a.mp4", "b.mp4")) or None)
    assert asked_bb == ["a.mp4", "b.mp4"]
    asked_origin = wait_for(lambda: [(x["object"], x["status"], x["bytes"])
                                     for x in origin.log_lines() if x["object"] == "c.mp4"]
                            or None)
    assert asked_origin == [("c.mp4", 200, len(OBJECTS["c.mp4"]))]
    # Applied again: nothing to do.
    r = app.oca("fill", "apply", str(mf), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["added"], s["moved"], s["deleted"], s["kept"]) == (0, 0, 0, 5)


def test_dry_run_prints_the_diff_and_changes_nothing(a1):
    app, mf = a1
    before = held(app)
    r = app.oca("fill", "apply", str(mf), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    size = {k: len(v) for k, v in OBJECTS.items()}
    assert plan["adds"] == {
        "bb1": {"ssd": {"objects": 1, "bytes": size["a.mp4"]},
                "flash": {"objects": 1, "bytes": size["b.mp4"]}},
        "origin": {"hdd": {"objects": 1, "bytes": size["c.mp4"]}}}
    assert plan["moves"] == [{"id": "m.mp4", "from": "hdd", "to": "ssd"}]
    assert (plan["deletes"], plan["delete_bytes"], plan["keeps"]) == \
        (["d.mp4"], size["d.mp4"], 1)
    r = app.oca("fill", "apply", str(mf), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "move m.mp4 hdd -> ssd" in r.stdout and "delete d.mp4" in r.stdout
    assert "dry run: nothing changed" in r.stdout
    assert held(app) == before


def test_a_stale_or_missing_copy_falls_back_upstream(tmp_path, origin, backbone):
    """bb1 holds other bytes under c.mp4 (its ETag says so) and no k.mp4: both come from
    the origin, and the refusals are reported with the source's name."""
    app = target(tmp_path / "a1")
    mf = manifest(tmp_path / "a1.json", [("c.mp4", "ssd", "bb1", 0), ("k.mp4", "flash", "bb1", 0)],
                  sources={"bb1": backbone.base, "origin": origin.base},
                  upstream=["bb1", "origin"])
    r = app.oca("fill", "apply", str(mf), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["bytes_by_source"] == {"origin": len(OBJECTS["c.mp4"]) + len(OBJECTS["k.mp4"])}
    refused = {(x["id"], x["source"]): x["reason"] for x in s["refused"]}
    assert set(refused) == {("c.mp4", "bb1"), ("k.mp4", "bb1")}
    assert "another version" in refused[("c.mp4", "bb1")]
    assert "404" in refused[("k.mp4", "bb1")]
    assert held(app) == want(("c.mp4", "ssd"), ("k.mp4", "flash"))


def test_a_corrupt_byte_at_a_source_is_caught_and_taken_elsewhere(tmp_path, origin):
    """A source whose file went bad (its ETag still the good digest): the copy fails the
    digest check, is never committed, and the object comes from the next source."""
    bad = start_server(tmp_path / "bad", objects={"b.mp4": (OBJECTS["b.mp4"], "ssd")})
    try:
        with bad.app.open() as store:
            path = store.path_of(store.get("b.mp4"))
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes([OBJECTS["b.mp4"][12345] ^ 0xFF]), 12345)
        finally:
            os.close(fd)
        app = target(tmp_path / "a1")
        mf = manifest(tmp_path / "a1.json", [("b.mp4", "hdd", "peer", 0)],
                      sources={"peer": bad.base, "origin": origin.base}, upstream=["origin"])
        r = app.oca("fill", "apply", str(mf), "--json")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert [(x["id"], x["source"]) for x in s["refused"]] == [("b.mp4", "peer")]
        assert "do not match" in s["refused"][0]["reason"]
        assert s["bytes_by_source"] == {"peer": len(OBJECTS["b.mp4"]),
                                        "origin": len(OBJECTS["b.mp4"])}
        assert held(app) == want(("b.mp4", "hdd"))
        assert content(app, "b.mp4") == OBJECTS["b.mp4"]
        assert leftovers(app) == []
    finally:
        bad.stop()


def test_an_object_without_any_digest_is_refused_and_never_committed(tmp_path):
    """No xxh3 in the manifest and a source whose ETag is not a digest (a plain web
    server): refused, reported, exit 1, nothing stored."""
    docroot = tmp_path / "www"
    (docroot / "o").mkdir(parents=True)
    (docroot / "o" / "c.mp4").write_bytes(OBJECTS["c.mp4"])
    port_file = tmp_path / "port"
    web = subprocess.Popen(
        [sys.executable, "-c",
         "import http.server, functools, sys\n"
         "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n"
         "s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n"
         "open(sys.argv[2], 'w').write(str(s.server_port))\n"
         "s.serve_forever()\n", str(docroot), str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip() or None)
        app = target(tmp_path / "a1")
        mf = manifest(tmp_path / "a1.json", [("c.mp4", "ssd", "web", 0, None)],
                      sources={"web": f"http://127.0.0.1:{port}"}, upstream=[])
        r = app.oca("fill", "apply", str(mf), "--json")
        assert r.returncode == 1, r.stderr
        s = json.loads(r.stdout)
        assert list(s["failed"]) == ["c.mp4"] and "no digest" in s["failed"]["c.mp4"]
        assert held(app) == {}
        assert leftovers(app) == []
    finally:
        web.kill()
        web.wait()


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: "{not json", "not JSON"),
    (lambda d: {**d, "appliance": "a2"}, "appliance"),
    (lambda d: {**d, "objects": [{**d["objects"][0], "id": "../etc/passwd"}]}, "objects[0].id"),
    (lambda d: {**d, "objects": [{**d["objects"][0], "size": -1}]}, "objects[0].size"),
    (lambda d: {**d, "objects": [{**d["objects"][0], "size": 1 << 60}]}, "objects[0].size"),
    (lambda d: {**d, "objects": [{**d["objects"][0], "tier": "tape"}]}, "objects[0].tier"),
    (lambda d: {**d, "objects": [{**d["objects"][0], "source": "bb9"}]}, "objects[0].source"),
    (lambda d: {**d, "objects": [{**d["objects"][0], "xxh3": "ABC"}]}, "objects[0].xxh3"),
    (lambda d: {**d, "upstream": ["bb9"]}, "upstream[0]"),
    (lambda d: {**d, "delete": ["k.mp4", "a b"]}, "delete[1]"),
])
def test_a_bad_manifest_is_a_usage_error_naming_the_field(tmp_path, change, field):
    app = target(tmp_path / "a1")
    put(app, "k.mp4", "ssd")
    mf = manifest(tmp_path / "a1.json", [("a.mp4", "ssd", "bb1", 0)],
                  sources={"bb1": "http://127.0.0.1:9"}, upstream=["bb1"])
    doc = change(json.loads(mf.read_text()))
    mf.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    before = held(app)
    r = app.oca("fill", "apply", str(mf))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("oca: error: manifest ") and field in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert held(app) == before


def test_more_than_the_box_holds_is_refused_before_any_change(tmp_path):
    app = target(tmp_path / "a1", layout={"ssd": ["4M"], "flash": ["64M"], "hdd": ["64M"]})
    put(app, "k.mp4", "ssd")
    mf = manifest(tmp_path / "a1.json", [("a.mp4", "ssd", "bb1", 0), ("b.mp4", "ssd", "bb1", 0)],
                  delete=["k.mp4"], sources={"bb1": "http://127.0.0.1:9"}, upstream=["bb1"])
    r = app.oca("fill", "apply", str(mf))
    assert r.returncode == 1
    assert "tier ssd" in r.stderr and "the box has 4M" in r.stderr
    assert held(app) == want(("k.mp4", "ssd"))


def test_deletions_wait_until_an_add_needs_their_room(tmp_path, origin):
    """ssd holds k.mp4 and m.mp4 (1.2 MiB of 4 MiB); a.mp4 (3 MiB) needs room: k.mp4 and
    m.mp4 are listed for deletion and go only then (the largest first)."""
    app = target(tmp_path / "a1", layout={"ssd": ["4M"], "flash": ["64M"], "hdd": ["64M"]})
    put(app, "k.mp4", "ssd")
    put(app, "m.mp4", "ssd")
    mf = manifest(tmp_path / "a1.json", [("a.mp4", "ssd", "origin", 0)],
                  delete=["k.mp4", "m.mp4"], sources={"origin": origin.base},
                  upstream=["origin"])
    r = app.oca("fill", "apply", str(mf), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["added"], s["deleted"]) == (1, 2)
    assert held(app) == want(("a.mp4", "ssd"))


def test_rate_is_respected(tmp_path, origin):
    """--rate 16M (bits per second): a.mp4's 3 MiB take its time at that rate, within
    10% (the summary's seconds: from the plan to the last commit)."""
    app = target(tmp_path / "a1")
    mf = manifest(tmp_path / "a1.json", [("a.mp4", "hdd", "origin", 0)],
                  sources={"origin": origin.base}, upstream=["origin"])
    r = app.oca("fill", "apply", str(mf), "--rate", "16M", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    rate = s["bytes_by_source"]["origin"] * 8 / s["seconds"]
    assert 0.9 * 16e6 <= rate <= 1.1 * 16e6, rate
    # Not a terminal: progress as JSON lines on stderr, the last one at the end.
    lines = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    size = len(OBJECTS["a.mp4"])
    assert lines and {k: lines[-1][k] for k in ("fill", "bytes", "total_bytes", "objects",
                                               "objects_total", "bytes_by_source")} == \
        {"fill": "a1", "bytes": size, "total_bytes": size, "objects": 1, "objects_total": 1,
         "bytes_by_source": {"origin": size}}


def test_a_fill_killed_mid_object_resumes_with_range(tmp_path, origin):
    """kill -9 while a.mp4 is coming in (slowly: --rate): the fsynced prefix is kept; the
    next run asks the source for the rest only (Range + If-Range) and commits the whole,
    verified object, with no temp file left."""
    app = target(tmp_path / "a1")
    mf = manifest(tmp_path / "a1.json", [("a.mp4", "hdd", "origin", 0)],
                  sources={"origin": origin.base}, upstream=["origin"])
    digest = digest_bytes(OBJECTS["a.mp4"])
    proc = subprocess.Popen([str(OCA_BIN), "-c", str(app.config_path), "fill", "apply",
                             str(mf), "--rate", "8M", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def partial() -> int | None:
            with app.open() as store:
                return store.partial_size("a.mp4", digest) or None
        # put_stream fsyncs what it got only when the stream fails; until then the
        # partial file grows on disk: wait for 1 MiB of it, then kill.
        wait_for(lambda: any(p.stat().st_size >= 1 << 20 for d in app.disks["hdd"]
                             for p in (Path(d) / "tmp").glob("a.mp4.*")), timeout=20)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    got = partial()
    assert got and 0 < got < len(OBJECTS["a.mp4"])
    state = json.loads(app.oca("fill", "status", "--json").stdout)
    assert state["state"] == "interrupted"
    assert "fill: interrupted" in app.oca("fill", "status").stdout
    assert held(app) == {}
    r = app.oca("fill", "apply", str(mf), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["added"] == 1
    assert s["bytes_by_source"] == {"origin": len(OBJECTS["a.mp4"]) - got}
    assert content(app, "a.mp4") == OBJECTS["a.mp4"]
    assert leftovers(app) == []
    ranges = wait_for(lambda: [x["range"] for x in origin.log_lines()
                               if x["object"] == "a.mp4" and x["status"] == 206] or None)
    assert f"bytes={got}-" in ranges


def test_fill_requests_carry_a_fill_token_and_are_logged_as_such(tmp_path):
    """A source with viewer auth on and [auth] fill_key_file: the agent's requests carry
    fill-scope tokens, are served, and their log lines say "scope": "fill"; a viewer's
    token is not good as a fill token, nor the other way round."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "url.key").write_text("v" * 64 + "\n")
    (keys / "fill.key").write_text("f" * 64 + "\n")
    auth = f'[auth]\nkey_file = "{keys / "url.key"}"\nfill_key_file = "{keys / "fill.key"}"\n'
    src = start_server(tmp_path / "src", extra=auth,
                       objects={"b.mp4": (OBJECTS["b.mp4"], "ssd")})
    try:
        app = target(tmp_path / "a1", extra=f'[auth]\nfill_key_file = "{keys / "fill.key"}"')
        mf = manifest(tmp_path / "a1.json", [("b.mp4", "flash", "src", 0)],
                      sources={"src": src.base}, upstream=[])
        r = app.oca("fill", "apply", str(mf), "--json")
        assert r.returncode == 0, r.stderr
        assert held(app) == want(("b.mp4", "flash"))
        lines = wait_for(lambda: [x for x in src.log_lines() if x["object"] == "b.mp4"] or None)
        assert [(x["status"], x.get("scope")) for x in lines] == [(200, "fill")]
        # Scopes do not mix.
        expires = int(time.time()) + 600
        fill_token = Signer(load_key(keys / "fill.key"), scope="fill").token("b.mp4", expires)
        viewer_token = Signer(load_key(keys / "url.key")).token("b.mp4", expires)
        wrong = Signer(load_key(keys / "url.key"), scope="fill").token("b.mp4", expires)
        assert src.request("GET", f"/o/b.mp4?t={viewer_token}")[0] == 200
        assert src.request("GET", f"/o/b.mp4?t={fill_token}")[0] == 200
        assert src.request("GET", f"/o/b.mp4?t={wrong}")[0] == 403
        assert src.request("GET", "/o/b.mp4")[0] == 403
        scopes = wait_for(lambda: (lambda s: s if len(s) == 5 else None)(
            [(x["status"], x.get("scope")) for x in src.log_lines() if x["object"] == "b.mp4"]))
        assert scopes == [(200, "fill"), (200, None), (200, "fill"), (403, None), (403, None)]
    finally:
        src.stop()


@pytest.mark.parametrize(("peer_gets_it", "wait"), [(True, "30s"), (False, "1s")])
def test_a_peer_of_a_later_wave_is_waited_for_then_passed_over(tmp_path, origin,
                                                              peer_gets_it, wait):
    """b.mp4 comes from a peer in wave 1: the peer does not hold it yet (404). The agent
    asks it with HEAD and backoff: once the peer has it, from the peer; if it has not
    within --peer-wait, from the origin."""
    peer = start_server(tmp_path / "peer", name="a2")
    try:
        app = target(tmp_path / "a1")
        mf = manifest(tmp_path / "a1.json", [("b.mp4", "ssd", "a2", 1)],
                      sources={"a2": peer.base, "origin": origin.base}, upstream=["origin"])
        proc = subprocess.Popen([str(OCA_BIN), "-c", str(app.config_path), "fill", "apply",
                                 str(mf), "--json", "--peer-wait", wait],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if peer_gets_it:
            # The peer's own fill brings it in meanwhile: once the agent has asked.
            wait_for(lambda: any(x["object"] == "b.mp4" for x in peer.log_lines()),
                     timeout=10)
            peer.put("b.mp4", OBJECTS["b.mp4"])
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        s = json.loads(out)
        source = "a2" if peer_gets_it else "origin"
        assert s["bytes_by_source"] == {source: len(OBJECTS["b.mp4"])}
        assert held(app) == want(("b.mp4", "ssd"))
        if not peer_gets_it:
            assert [(x["source"], "404" in x["reason"]) for x in s["refused"]] == \
                [("a2", True)]
    finally:
        peer.stop()


def test_a_source_killed_mid_transfer_is_replaced_by_the_next(tmp_path, origin):
    """The source dies while big.mp4 comes in (slowly: --rate): the agent tries it again,
    then goes on with the origin from the bytes it has (Range), and commits the object
    whole and verified."""
    src = start_server(tmp_path / "src", name="bb2",
                       objects={"big.mp4": (OBJECTS["big.mp4"], "ssd")})
    try:
        app = target(tmp_path / "a1")
        mf = manifest(tmp_path / "a1.json", [("big.mp4", "hdd", "bb2", 0)],
                      sources={"bb2": src.base, "origin": origin.base},
                      upstream=["bb2", "origin"])
        proc = subprocess.Popen([str(OCA_BIN), "-c", str(app.config_path), "fill", "apply",
                                 str(mf), "--json", "--rate", "48M"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: any(p.stat().st_size >= 1 << 20 for d in app.disks["hdd"]
                             for p in (Path(d) / "tmp").glob("big.mp4.*")), timeout=20)
        pids = src.worker_pids() + [src.proc.pid]
        for pid in pids:  # the whole server at once, workers first: no graceful close
            os.kill(pid, signal.SIGKILL)
        src.proc.wait()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        s = json.loads(out)
        got = s["bytes_by_source"]
        assert set(got) == {"bb2", "origin"} and got["bb2"] + got["origin"] == \
            len(OBJECTS["big.mp4"])
        assert held(app) == want(("big.mp4", "hdd"))
        assert content(app, "big.mp4") == OBJECTS["big.mp4"]
        assert leftovers(app) == []
        ranges = wait_for(lambda: [x["range"] for x in origin.log_lines()
                                   if x["object"] == "big.mp4" and x["status"] == 206] or None)
        assert f"bytes={got['bb2']}-" in ranges
    finally:
        src.stop()


@pytest.mark.root
def test_a_disk_that_fills_up_mid_fill_fails_its_add_and_the_others_go_on(tmp_path, origin,
                                                                         mounts):
    """Something else fills the ssd (a 24 MiB tmpfs) while b.mp4 is being written to it:
    b.mp4 is reported failed with nothing of it left behind; a.mp4 (before) stays, c.mp4
    on hdd (after) is stored all the same. Exit 1."""
    ssd = mounts.tmpfs("ssd", size="24M")  # the store keeps 16 MiB free (MIN_FREE)
    app = target(tmp_path / "a1", layout={"ssd": [None], "flash": ["64M"], "hdd": ["64M"]},
                 disk_paths={"ssd": [ssd.path]})
    mf = manifest(tmp_path / "a1.json", [("a.mp4", "ssd", "origin", 0),
                                         ("b.mp4", "ssd", "origin", 1),
                                         ("c.mp4", "hdd", "origin", 2)],
                  sources={"origin": origin.base}, upstream=["origin"])
    proc = subprocess.Popen([str(OCA_BIN), "-c", str(app.config_path), "fill", "apply",
                             str(mf), "--json", "--rate", "8M"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or any(
            p.stat().st_size >= 256 << 10 for p in (Path(ssd.path) / "tmp").glob("b.mp4.*")),
            timeout=30)
        ssd.fill(leave=0)
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    s = json.loads(out)
    assert list(s["failed"]) == ["b.mp4"] and s["added"] == 2, s["failed"]
    assert "No space left on device" in s["failed"]["b.mp4"]
    assert held(app) == want(("a.mp4", "ssd"), ("c.mp4", "hdd"))
    assert leftovers(app) == []


LIAR = r'''
import http.server, sys

DATA = open(sys.argv[2], "rb").read()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        kind = self.path.split("/")[2].split("?")[0]
        if kind == "more.mp4":      # more bytes than the manifest's size
            body = DATA + b"x"
            self.send_response(200)
        elif kind == "fewer.mp4":   # says the size, sends less and closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(DATA[:1000])
            self.close_connection = True
            return
        elif kind == "loop.mp4":    # a redirect to itself
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        elif kind == "range.mp4" and self.headers.get("Range"):  # a 206 of the wrong bytes
            body = DATA[:100]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-99/{len(DATA)}")
        else:
            body = DATA
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_port))
s.serve_forever()
'''


def test_a_source_that_lies_is_refused_and_the_next_one_asked(tmp_path, origin):
    """More bytes than the size, fewer (the connection closes; then a 200 to the Range for
    the rest), a redirect loop, a 206 of other bytes than asked: each copy refused with
    its reason, the object taken from the origin, verified."""
    data = OBJECTS["c.mp4"]
    (tmp_path / "data").write_bytes(data)
    port_file = tmp_path / "port"
    liar = subprocess.Popen([sys.executable, "-c", LIAR, str(port_file), str(tmp_path / "data")])
    try:
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip() or None)
        app = target(tmp_path / "a1")
        # The origin serves c.mp4's bytes under each of these ids.
        lies = ("more.mp4", "fewer.mp4", "loop.mp4", "range.mp4")
        for oid in lies:
            origin.put(oid, data, "hdd")
        wait_for(lambda: all(origin.request("HEAD", f"/o/{oid}")[0] == 200 for oid in lies))
        doc = {"appliance": "a1", "generated": 1, "delete": [], "upstream": ["origin"],
               "sources": {"liar": f"http://127.0.0.1:{port}", "origin": origin.base},
               "objects": [{"id": oid, "size": len(data), "xxh3": digest_bytes(data),
                            "tier": "hdd", "source": "liar", "wave": 0}
                           for oid in ("more.mp4", "fewer.mp4", "loop.mp4")]}
        (tmp_path / "a1.json").write_text(json.dumps(doc))
        # range.mp4: a partial prefix is on disk, so the liar is asked for a range.
        with app.open() as store:
            with pytest.raises(Exception):  # noqa: B017, PT011 - the stream breaks off
                store.put_stream("range.mp4", _Breaking(data, 4096), len(data), "hdd",
                                 xxh3=digest_bytes(data))
            assert store.partial_size("range.mp4", digest_bytes(data)) == 4096
        doc["objects"].append({**doc["objects"][0], "id": "range.mp4"})
        (tmp_path / "a1.json").write_text(json.dumps(doc))
        r = app.oca("fill", "apply", str(tmp_path / "a1.json"), "--json", "--parallel", "1")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        reasons = {x["id"]: x["reason"] for x in s["refused"] if x["source"] == "liar"}
        assert "Content-Length" in reasons["more.mp4"]
        # fewer.mp4 broke off after 1,000 bytes (kept); asked again for the rest, the liar
        # ignored Range; the origin gave the rest.
        assert "a 200 to a Range request" in reasons["fewer.mp4"]
        assert wait_for(lambda: [x["range"] for x in origin.log_lines()
                                 if x["object"] == "fewer.mp4" and x["status"] == 206]
                        or None) == ["bytes=1000-"]
        assert "redirect" in reasons["loop.mp4"]
        assert "Content-Range" in reasons["range.mp4"]
        assert held(app) == {oid: ("hdd", digest_bytes(data))
                             for oid in ("more.mp4", "fewer.mp4", "loop.mp4", "range.mp4")}
        assert leftovers(app) == []
    finally:
        liar.kill()
        liar.wait()


class _Breaking:
    """A stream of *data* that fails after *n* bytes (a dropped connection)."""

    def __init__(self, data: bytes, n: int):
        self.data, self.n, self.pos = data, n, 0

    def readinto(self, buf) -> int:
        if self.pos >= self.n:
            raise ConnectionResetError("dropped")
        k = min(len(buf), self.n - self.pos)
        buf[:k] = self.data[self.pos:self.pos + k]
        self.pos += k
        return k


def test_the_manifest_can_come_over_http(tmp_path, origin):
    """MANIFEST may be an http URL (the planner's server); one that is not there is an
    operational error (exit 1) naming it."""
    (tmp_path / "www").mkdir()
    mf = manifest(tmp_path / "www" / "a1.json", [("b.mp4", "flash", "origin", 0)],
                  sources={"origin": origin.base}, upstream=["origin"])
    port_file = tmp_path / "port"
    web = subprocess.Popen(
        [sys.executable, "-c",
         "import http.server, functools, sys\n"
         "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n"
         "h.func.log_message = lambda *a: None\n"
         "s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n"
         "open(sys.argv[2], 'w').write(str(s.server_port))\n"
         "s.serve_forever()\n", str(mf.parent), str(port_file)])
    try:
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip() or None)
        app = target(tmp_path / "a1")
        r = app.oca("fill", "apply", f"http://127.0.0.1:{port}/a1.json", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["added"] == 1
        assert held(app) == want(("b.mp4", "flash"))
        r = app.oca("fill", "apply", f"http://127.0.0.1:{port}/a9.json")
        assert r.returncode == 1
        assert r.stderr.strip() == (f"oca: error: manifest http://127.0.0.1:{port}/a9.json: "
                                    "HTTP 404 File not found")
    finally:
        web.kill()
        web.wait()
