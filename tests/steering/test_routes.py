"""Routes and rules of ours on the namespaced network (pyroute2, inside the app
namespace): a mode's path routes the origin prefix, switching is one replace, traffic
really takes the chosen path (veth counters), isp-direct removes ours, reconcile drops
what a crashed run left, clear removes everything of ours, a vanished device is an
error, and --dry-run changes nothing."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.steering.netns import ORIGIN, PREFIX, Network

pytestmark = pytest.mark.root

ROUTES = r'''
import json, sys
from oca.steering.routes import Routes, RouteError
r = Routes([sys.argv[1]], 100, 1000, dry_run=sys.argv[2] == "dry")
try:
    for step in sys.argv[3:]:
        cmd, *args = step.split(":")
        if cmd == "apply":
            r.apply(*args)
        elif cmd == "direct":
            r.apply(None, None)
        elif cmd == "reconcile":
            r.reconcile()
        elif cmd == "clear":
            r.clear()
    print(json.dumps({"routes": r.installed(), "rules": sorted(r.rules())}))
except RouteError as e:
    print(json.dumps({"error": str(e)}))
'''


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    yield n
    n.close()


def routes(net: Network, *steps: str, dry: bool = False) -> dict:
    return json.loads(net.run_in_app(ROUTES, PREFIX, "dry" if dry else "real", *steps))


def ip_out(net: Network, *args: str) -> str:
    """The output of ``ip -n APP ARGS`` ("" for a table that does not exist yet)."""
    r = subprocess.run(["ip", "-n", net.app, *args], capture_output=True, text=True)
    if r.returncode != 0 and "does not exist" not in r.stderr:
        raise AssertionError(f"ip {' '.join(args)}: {r.stderr}")
    return r.stdout


def tx_bytes(net: Network, k: int) -> int:
    out = json.loads(ip_out(net, "-s", "-j", "link", "show", f"up{k}"))
    return out[0]["stats64"]["tx"]["bytes"]


def fetch(net: Network) -> int:
    """A GET of the origin from the app, with no source address chosen: the rule of ours
    decides its path."""
    return subprocess.run(["ip", "netns", "exec", net.app, "curl", "-s", "-o", "/dev/null",
                           "--max-time", "3", f"http://{ORIGIN}/health"]).returncode


def test_a_path_routes_the_prefix_and_traffic_takes_it(net):
    got = routes(net, "apply:10.2.0.1:up2")
    assert got == {"routes": {PREFIX: ["10.2.0.1", "up2"]}, "rules": [PREFIX]}
    table = ip_out(net, "route", "show", "table", "100")
    assert table.strip() == f"{PREFIX} via 10.2.0.1 dev up2 proto 199"
    assert f"to {PREFIX} lookup 100" in ip_out(net, "rule", "show")
    before = [tx_bytes(net, k) for k in (1, 2, 3)]
    for _ in range(5):
        assert fetch(net) == 0
    after = [tx_bytes(net, k) for k in (1, 2, 3)]
    # The five GETs went over path 2; paths 1 and 3 carried at most the links' own chatter
    # (IPv6 neighbour discovery, a few hundred bytes).
    sent = [a - b for a, b in zip(after, before, strict=True)]
    assert sent[1] > 5 * 300 and sent[0] < 400 and sent[2] < 400, sent
    # A switch is one replace; the rule stays one rule.
    got = routes(net, "apply:10.3.0.1:up3", "apply:10.3.0.1:up3")
    assert got == {"routes": {PREFIX: ["10.3.0.1", "up3"]}, "rules": [PREFIX]}
    assert ip_out(net, "rule", "show").count(f"to {PREFIX}") == 1
    before3 = tx_bytes(net, 3)
    assert fetch(net) == 0 and tx_bytes(net, 3) > before3


def test_isp_direct_reconcile_and_clear(net):
    routes(net, "apply:10.1.0.1:up1")
    got = routes(net, "direct")
    assert got == {"routes": {}, "rules": [PREFIX]}
    assert fetch(net) != 0  # no route of ours: the app's main table has none to the origin
    # A crashed run's route for a prefix no longer configured, and one not ours.
    subprocess.run(["ip", "-n", net.app, "route", "add", "198.51.100.0/24", "via", "10.1.0.1",
                    "table", "100", "proto", "199"], check=True)
    subprocess.run(["ip", "-n", net.app, "route", "add", "192.0.2.0/24", "via", "10.1.0.1",
                    "table", "100"], check=True)
    got = routes(net, "apply:10.1.0.1:up1", "reconcile")
    assert got["routes"] == {PREFIX: ["10.1.0.1", "up1"]}
    assert "192.0.2.0/24 via 10.1.0.1" in ip_out(net, "route", "show", "table", "100")
    got = routes(net, "clear")
    assert got == {"routes": {}, "rules": []}
    assert ip_out(net, "route", "show", "table", "100").strip() == \
        "192.0.2.0/24 via 10.1.0.1 dev up1"
    assert "lookup 100" not in ip_out(net, "rule", "show")


def test_a_missing_device_is_an_error_and_dry_run_changes_nothing(net):
    assert "up9 does not exist" in routes(net, "apply:10.1.0.1:up9")["error"]
    assert routes(net, "apply:10.2.0.1:up2", dry=True) == {"routes": {}, "rules": []}
    assert ip_out(net, "route", "show", "table", "100").strip() == ""
