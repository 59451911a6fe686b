"""The fill agent as a role of `oca serve` ([fill] set): it applies the manifest in the
window, in a process of its own, once per manifest, and `oca fill status` / `oca status`
show the result."""

from __future__ import annotations

import json
import time

from oca.digest import digest_bytes
from tests.fillagent.conftest import OBJECTS, manifest
from tests.http.conftest import start_server, wait_for


def hhmm(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def held(app) -> dict[str, tuple[str, str]]:
    with app.open() as store:
        return {r.id: (r.tier, r.xxh3) for r in store.objects()}


def test_the_role_applies_each_new_manifest_once_in_the_window(tmp_path, origin):
    mf = manifest(tmp_path / "test1.json", [("b.mp4", "flash", "origin", 0)],
                  sources={"origin": origin.base}, upstream=["origin"], appliance="test1",
                  generated=1795000000)
    now = time.time()
    fill = (f'[fill]\nmanifest_url = "{mf}"\nwindow = "{hhmm(now - 3600)}-{hhmm(now + 3600)}"\n'
            'poll_interval = "0.3s"\nparallel = 2\n')
    srv = start_server(tmp_path / "a1", extra=fill)
    try:
        assert wait_for(lambda: "b.mp4" in held(srv.app) or None, timeout=20)
        state = wait_for(lambda: (lambda s: s if s and s["state"] != "running" else None)(
            json.loads(srv.oca("fill", "status", "--json").stdout)), timeout=20)
        assert state["state"] == "done" and state["applied_generated"] == 1795000000
        assert state["summary"]["added"] == 1
        assert state["summary"]["bytes_by_source"] == {"origin": len(OBJECTS["b.mp4"])}
        assert held(srv.app) == {"b.mp4": ("flash", digest_bytes(OBJECTS["b.mp4"]))}
        # Its own process, not a worker.
        status = json.loads(srv.admin("GET", "/status")[1])
        assert len(status["fill"]) == 1 and not set(status["fill"]) & set(status["workers"])
        text = srv.oca("status").stdout
        assert "fill: done" in text and "added 1" in text
        metrics = srv.admin("GET", "/metrics")[1].decode()
        size = len(OBJECTS["b.mp4"])
        for line in ("oca_fill_running 0.0", f'oca_fill_bytes{{source="origin"}} {size}.0',
                     'oca_fill_objects{result="added"} 1.0',
                     'oca_fill_objects{result="failed"} 0.0'):
            assert f"\n{line}\n" in metrics, line
        assert json.loads(srv.oca("status", "--json").stdout)["fill"]["state"] == "done"
        # The same manifest is not applied again (several polls later).
        started = state["started"]
        time.sleep(1.5)
        assert json.loads(srv.oca("fill", "status", "--json").stdout)["started"] == started
        # A newer one is.
        manifest(tmp_path / "test1.json", [("b.mp4", "flash", "origin", 0),
                                           ("c.mp4", "ssd", "origin", 0)],
                 sources={"origin": origin.base}, upstream=["origin"], appliance="test1",
                 generated=1795086400)
        state = wait_for(lambda: (lambda s: s if s["applied_generated"] == 1795086400 else None)(
            json.loads(srv.oca("fill", "status", "--json").stdout)), timeout=20)
        assert (state["summary"]["added"], state["summary"]["kept"]) == (1, 1)
        assert set(held(srv.app)) == {"b.mp4", "c.mp4"}
    finally:
        srv.stop()


def test_outside_the_window_nothing_is_applied(tmp_path, origin):
    mf = manifest(tmp_path / "test1.json", [("b.mp4", "flash", "origin", 0)],
                  sources={"origin": origin.base}, upstream=["origin"], appliance="test1")
    later = time.time() + 6 * 3600
    fill = (f'[fill]\nmanifest_url = "{mf}"\nwindow = "{hhmm(later)}-{hhmm(later + 600)}"\n'
            'poll_interval = "0.3s"\n')
    srv = start_server(tmp_path / "a1", extra=fill)
    try:
        assert len(json.loads(srv.admin("GET", "/status")[1])["fill"]) == 1
        time.sleep(1.5)
        assert held(srv.app) == {}
        r = srv.oca("fill", "status", "--json")
        assert r.returncode == 0 and json.loads(r.stdout) is None
        assert "fill: none yet" in srv.oca("status").stdout
    finally:
        srv.stop()
