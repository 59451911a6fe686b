"""The store watcher of ``oca serve`` end to end: a hung disk, a killed watcher, a burst
of index changes, the hit counters — with the real server in a subprocess, on both
implementations of the connection loop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time

import pytest

from oca.config import load_config
from oca.digest import new_hasher
from oca.storage.index import Index, ObjectRecord
from tests.conftest import OCA_BIN, make_file
from tests.hangfs import hangfs
from tests.http.conftest import FASTPATHS, start_server, wait_for
from tests.mounts import needs_root

__all__ = ["hangfs"]  # the fixture, imported for pytest
pytestmark = needs_root  # the FUSE mount; CI runs as root


def fetch(srv, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def health(srv) -> dict:
    _, _, body = srv.request("GET", "/health")
    return json.loads(body)


def watcher_pids(srv) -> list[int]:
    _, body = srv.admin("GET", "/status")
    return json.loads(body)["watcher"]


@pytest.mark.parametrize("fastpath", FASTPATHS)
def test_hung_disk_is_failed_and_the_others_are_served(hangfs, tmp_path, fastpath):
    ssd = make_file(tmp_path / "a", 300_000, seed=1).read_bytes()
    hdd = make_file(tmp_path / "h", 200_000, seed=2).read_bytes()
    srv = start_server(tmp_path / "app", fastpath, workers=2,
                       layout={"ssd": ["64M"], "hdd": ["64M"]},
                       disk_paths={"hdd": [hangfs.path]},
                       store_extra='disk_probe_timeout = "1s"',
                       objects={"a.mp4": (ssd, "ssd"), "h.mp4": (hdd, "hdd")})
    try:
        assert fetch(srv, "/o/h.mp4") == (200, hdd)
        hdd_path = str(hangfs.path)
        hangfs.hang()
        # While the disk hangs, every request for an object on another disk is answered
        # (a client timeout of 3 s: a worker waiting on the mount would never answer).
        failed_seen = None
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            assert fetch(srv, "/o/a.mp4", timeout=3) == (200, ssd)
            st = health(srv)
            if failed_seen is None and st["disks"].get(hdd_path) == "failed":
                failed_seen = time.monotonic()
        assert failed_seen is not None, "the hung disk was never reported failed"
        # Its objects answer as on a failed disk, without touching it.
        status, _ = fetch(srv, "/o/h.mp4", timeout=3)
        assert status == 404
        # oca status answers too, naming the disk hung.
        run = subprocess.run([str(OCA_BIN), "-c", str(srv.app.config_path), "status", "--json"],
                             capture_output=True, text=True, timeout=30)
        disks = {d["path"]: d for d in json.loads(run.stdout)["disks"]}
        assert disks[hdd_path]["state"] == "failed"
        assert "hung" in disks[hdd_path]["reason"]
        assert disks[str(srv.app.disks["ssd"][0])]["state"] == "ok"
        log = (srv.app.root / "serve.log").read_text()
        assert f"disk {hdd_path}: failed (hung" in log
        assert log.count(f"disk {hdd_path}: failed") == 1  # once, not every probe
        # The disk answers again: back in service, its object served.
        hangfs.release()
        wait_for(lambda: health(srv)["disks"].get(hdd_path) == "ok", timeout=15)
        assert fetch(srv, "/o/h.mp4") == (200, hdd)
    finally:
        hangfs.release()
        srv.stop()


@pytest.mark.parametrize("fastpath", FASTPATHS)
def test_killed_watcher_is_restarted_and_workers_catch_up(tmp_path, fastpath):
    data = make_file(tmp_path / "a", 50_000, seed=3).read_bytes()
    srv = start_server(tmp_path / "app", fastpath, workers=2, objects={"a.mp4": (data, "ssd")})
    try:
        [victim] = watcher_pids(srv)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: watcher_pids(srv) not in ([], [victim]), timeout=10)
        new = make_file(tmp_path / "n", 70_000, seed=4).read_bytes()
        srv.put("new.mp4", new)
        # Both workers (connections land on either) follow the new watcher.
        wait_for(lambda: all(fetch(srv, "/o/new.mp4") == (200, new) for _ in range(8)),
                 timeout=10)
        assert fetch(srv, "/o/a.mp4") == (200, data)
        srv.oca("rm", "a.mp4")
        wait_for(lambda: all(fetch(srv, "/o/a.mp4")[0] == 404 for _ in range(8)), timeout=10)
        log = (srv.app.root / "serve.log").read_text()
        assert f"watcher 0 (pid {victim}) exited with signal 9; restarting" in log
        assert "store watcher back; following from change" in log
    finally:
        srv.stop()


@pytest.mark.parametrize("fastpath", FASTPATHS)
def test_a_burst_of_100000_index_changes_while_serving(tmp_path, fastpath):
    data = make_file(tmp_path / "a", 20_000, seed=5).read_bytes()
    srv = start_server(tmp_path / "app", fastpath, workers=2, objects={"a.mp4": (data, "ssd")})
    try:
        cfg = load_config(srv.app.config_path)
        disk = str(cfg.store.disks[0].path)
        digest = new_hasher().hexdigest()
        burst = subprocess.Popen(
            [str(OCA_BIN.parent / "python"), "-c", _BURST, str(cfg.store.index), disk, digest])
        answers = 0
        while burst.poll() is None:
            assert fetch(srv, "/o/a.mp4") == (200, data)
            answers += 1
        assert burst.returncode == 0
        # Every worker has all of them (each /health answers from one worker).
        wait_for(lambda: all(health(srv)["objects"] == 100_001 for _ in range(8)), timeout=60)
        assert fetch(srv, "/o/a.mp4") == (200, data)
        assert answers > 0
        log = (srv.app.root / "serve.log").read_text()
        assert "serving map reloaded" not in log and "whole map" not in log
    finally:
        srv.stop()


_BURST = """
import sys, time
from oca.storage.index import Index, ObjectRecord
index = Index(sys.argv[1])
for batch in range(10):
    with index.write():
        for i in range(batch * 10_000, (batch + 1) * 10_000):
            index.put(ObjectRecord(f"burst-{i}", 0, sys.argv[3], sys.argv[2], "ssd",
                                   "video/mp4", time.time()))
index.close()
"""
_ = (Index, ObjectRecord)  # what _BURST uses, imported here so a rename fails at collection


@pytest.mark.parametrize("fastpath", FASTPATHS)
def test_hit_counters_reach_the_index(tmp_path, fastpath):
    data = make_file(tmp_path / "a", 10_000, seed=6).read_bytes()
    srv = start_server(tmp_path / "app", fastpath, workers=2,
                       objects={"a.mp4": (data, "ssd"), "b.mp4": (data[:100], "ssd")})
    try:
        for _ in range(7):
            assert fetch(srv, "/o/a.mp4") == (200, data)
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        c.request("GET", "/o/a.mp4", headers={"Range": "bytes=0-99"})
        r = c.getresponse()
        assert (r.status, r.read()) == (206, data[:100])
        c.close()
        for _ in range(3):
            assert fetch(srv, "/o/b.mp4") == (200, data[:100])
    finally:
        assert srv.stop() == 0  # the workers report, the watcher folds, at the latest on stop
    stat = json.loads(srv.oca("stat", "--json", "a.mp4").stdout)
    assert (stat["hits"], stat["bytes_served"]) == (8, 7 * 10_000 + 100)
    stat = json.loads(srv.oca("stat", "--json", "b.mp4").stdout)
    assert (stat["hits"], stat["bytes_served"]) == (3, 300)


def test_a_worker_behind_a_pruned_feed_gets_the_whole_map(tmp_path):
    data = make_file(tmp_path / "a", 30_000, seed=7).read_bytes()
    srv = start_server(tmp_path / "app", workers=2, objects={"a.mp4": (data, "ssd")})
    try:
        [watcher] = watcher_pids(srv)
        os.kill(watcher, signal.SIGSTOP)  # it misses what follows, holding the workers' feed
        try:
            new = make_file(tmp_path / "n", 40_000, seed=8).read_bytes()
            srv.put("new.mp4", new)
            srv.oca("rm", "a.mp4")
            index = Index(str(load_config(srv.app.config_path).store.index))
            try:
                index.prune_changes(keep=1)  # the feed no longer reaches the workers' position
            finally:
                index.close()
        finally:
            os.kill(watcher, signal.SIGCONT)
        wait_for(lambda: all(fetch(srv, "/o/new.mp4") == (200, new) for _ in range(8)),
                 timeout=10)
        wait_for(lambda: all(fetch(srv, "/o/a.mp4")[0] == 404 for _ in range(8)), timeout=10)
        log = (srv.app.root / "serve.log").read_text()
        assert "change feed pruned past" in log
        # Each worker read a whole map twice: at start, and when the feed fell short.
        assert log.count("serving map of 1 objects at change") == 4
    finally:
        srv.stop()
