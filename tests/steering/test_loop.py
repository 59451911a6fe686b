"""`oca steer run` inside the app namespace of a real network: the preferred path is
chosen and routed; a path going hard down is left within a few intervals; an operator's
force and release; `oca steer status --json`; kill -9 leaves the routes, a restart keeps
the mode; SIGTERM removes ours; bad names are usage errors before any route."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.conftest import OCA_BIN, write_config
from tests.http.conftest import wait_for
from tests.steering.netns import ORIGIN, PREFIX, Network

pytestmark = pytest.mark.root

STEERING = f"""
[steering]
interval = "0.2s"
hold_down = "2s"
consecutive = 2
# The responder's own jitter is a few ms: only a delay made on purpose is a slower path.
margin_rtt_ms = 50
prefixes = ["{PREFIX}"]
table = 100
preference = ["netflix-backbone", "isp-backbone", "backbone-oca"]
"""
PATHS = {"isp-backbone": 1, "netflix-backbone": 2, "backbone-oca": 3}


def config(tmp_path, extra_path: str = "") -> str:
    """The app's oca.toml (a store folder, and the three paths) as a path string."""
    text = STEERING + "".join(
        f'\n[[steering.path]]\nmode = "{mode}"\ngateway = "10.{k}.0.1"\ndevice = "up{k}"\n'
        f'source = "10.{k}.0.2"\nprobe = "http://{ORIGIN}/health"\n'
        for mode, k in PATHS.items()) + extra_path
    (tmp_path / "d").mkdir(exist_ok=True)
    return str(write_config(tmp_path, [(tmp_path / "d", "hdd", None)], extra=text))


@pytest.fixture
def net(tmp_path):
    (tmp_path / "net").mkdir()
    n = Network(tmp_path / "net")
    yield n
    n.close()


def oca(net: Network, cfg: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", net.app, str(OCA_BIN), "-c", cfg, *args],
                          capture_output=True, text=True, timeout=30, **kw)


def start(net: Network, cfg: str) -> subprocess.Popen:
    log = open(net.root / "steer.log", "ab")  # noqa: SIM115 - closed once handed over
    try:
        return subprocess.Popen(["ip", "netns", "exec", net.app, str(OCA_BIN), "-c", cfg,
                                 "steer", "run"], stdout=log, stderr=log)
    finally:
        log.close()


def status(net: Network, cfg: str) -> dict | None:
    r = oca(net, cfg, "steer", "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def table(net: Network) -> str:
    r = subprocess.run(["ip", "-n", net.app, "route", "show", "table", "100"],
                       capture_output=True, text=True)
    return r.stdout.strip()


def mode_is(net, cfg, mode):
    return lambda: (lambda s: s if s and s["mode"] == mode else None)(status(net, cfg))


def test_the_loop_chooses_fails_over_obeys_an_operator_and_cleans_up(net, tmp_path):
    cfg = config(tmp_path)
    proc = start(net, cfg)
    try:
        st = wait_for(mode_is(net, cfg, "netflix-backbone"), timeout=10)
        assert set(st["paths"]) == set(PATHS) and all(p["up"] for p in st["paths"].values())
        assert table(net) == f"{PREFIX} via 10.2.0.1 dev up2 proto 199"
        # The preferred path goes hard down: left within 3 lost rounds and a round.
        net.link(2, up=False)
        t0 = time.monotonic()
        st = wait_for(lambda: (lambda s: s if s["mode"] != "netflix-backbone" else None)(
            status(net, cfg)), timeout=10)
        assert time.monotonic() - t0 < 3.0
        assert st["mode"] == "isp-backbone" and "netflix-backbone is down" in st["reason"]
        assert table(net) == f"{PREFIX} via 10.1.0.1 dev up1 proto 199"
        assert not st["paths"]["netflix-backbone"]["up"]
        # An operator's override, then its release.
        r = oca(net, cfg, "steer", "force", "backbone-oca", "--for", "10m")
        assert r.returncode == 0, r.stderr
        st = wait_for(mode_is(net, cfg, "backbone-oca"), timeout=5)
        assert st["forced"]["mode"] == "backbone-oca" and st["reason"].startswith("forced")
        assert table(net) == f"{PREFIX} via 10.3.0.1 dev up3 proto 199"
        assert "forced by an operator to backbone-oca" in oca(net, cfg, "steer", "status").stdout
        assert oca(net, cfg, "steer", "release").returncode == 0
        wait_for(mode_is(net, cfg, "isp-backbone"), timeout=10)
        # kill -9: the routes stay; a restart keeps the mode.
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        assert table(net) == f"{PREFIX} via 10.1.0.1 dev up1 proto 199"
        proc = start(net, cfg)
        time.sleep(1.0)
        assert status(net, cfg)["mode"] == "isp-backbone"
        assert table(net) == f"{PREFIX} via 10.1.0.1 dev up1 proto 199"
        # All paths down: isp-direct, no route of ours.
        net.link(1, up=False)
        net.link(3, up=False)
        st = wait_for(mode_is(net, cfg, "isp-direct"), timeout=10)
        assert "no upstream path is up" in st["reason"]
        assert table(net) == ""
        net.link(3, up=True)
        wait_for(mode_is(net, cfg, "backbone-oca"), timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    # A clean stop removes ours.
    assert table(net) == ""
    rules = subprocess.run(["ip", "-n", net.app, "rule", "show"], capture_output=True,
                           text=True).stdout
    assert "lookup 100" not in rules


def test_a_slow_path_is_left_after_n_rounds_and_the_hold_down_once(net, tmp_path):
    """The origin answers path 2 (netflix-backbone, the preferred) 100 ms late: after the
    margin held for `consecutive` rounds and the hold-down, one voluntary switch to the
    next preferred path, and no switch back while it stays slow."""
    cfg = config(tmp_path)
    proc = start(net, cfg)
    try:
        wait_for(mode_is(net, cfg, "netflix-backbone"), timeout=10)
        net.delay("10.2.0.0/24", 0.1)
        st = wait_for(mode_is(net, cfg, "isp-backbone"), timeout=15)
        assert "better than netflix-backbone by the margin" in st["reason"]
        assert st["paths"]["netflix-backbone"]["rtt_ms"] >= 100
        time.sleep(3.0)  # longer than the hold-down: still no switch back
        st = status(net, cfg)
        assert (st["mode"], st["switches"]) == ("isp-backbone", 2)
        assert table(net) == f"{PREFIX} via 10.1.0.1 dev up1 proto 199"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_a_blackholed_path_is_left_as_a_hard_failure(net, tmp_path):
    """Path 2's router drops what goes to the origin (a blackhole route): its link stays
    up, its probes go unanswered, and the loop leaves it at once."""
    cfg = config(tmp_path)
    proc = start(net, cfg)
    try:
        wait_for(mode_is(net, cfg, "netflix-backbone"), timeout=10)
        subprocess.run(["ip", "-n", net.routers[1], "route", "replace", "blackhole", PREFIX],
                       check=True)
        st = wait_for(mode_is(net, cfg, "isp-backbone"), timeout=10)
        assert "netflix-backbone is down" in st["reason"]
        assert st["switches_by"] == {"hard": 2}
        assert table(net) == f"{PREFIX} via 10.1.0.1 dev up1 proto 199"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def reconfigured(cfg: str, old: str, new: str) -> str:
    from pathlib import Path
    p = Path(cfg)
    p.write_text(p.read_text().replace(old, new))
    return cfg


def test_names_that_do_not_exist_are_usage_errors_before_any_route(net, tmp_path):
    r = oca(net, reconfigured(config(tmp_path), 'device = "up3"', 'device = "up9"'),
            "steer", "run")
    assert r.returncode == 2
    assert "steering.path[2].device: no network device 'up9'" in r.stderr
    r = oca(net, reconfigured(config(tmp_path), 'gateway = "10.3.0.1"', 'gateway = "10.9.0.1"'),
            "steer", "run")
    assert r.returncode == 2 and "steering.path[2].gateway: 10.9.0.1 is on none" in r.stderr
    subprocess.run(["ip", "-n", net.app, "route", "add", "192.0.2.0/24", "via", "10.1.0.1",
                    "table", "100"], check=True)
    r = oca(net, config(tmp_path), "steer", "run")
    assert r.returncode == 2 and "steering.table: table 100 holds routes" in r.stderr
    assert table(net) == "192.0.2.0/24 via 10.1.0.1 dev up1"
