"""Probes on a real namespaced network: each path's probes go over that path only (its
source address, its table), a path whose link is down loses its rounds while the others
answer, a slow path shows its delay, and one slow path does not delay the others."""

from __future__ import annotations

import json
import statistics

import pytest

from tests.steering.netns import ORIGIN, Network

pytestmark = pytest.mark.root

PROBE = r'''
import json, sys, time
from oca.steering.probe import Prober
urls = ("http://%s/health" % sys.argv[1],)
probers = [Prober(f"p{k}", urls, f"10.{k}.0.2", interval=float(sys.argv[3])).start()
           for k in (1, 2, 3)]
time.sleep(float(sys.argv[2]))
for p in probers:
    p.stop()
print(json.dumps({p.name: [(r.t, r.ok, r.rtt_ms) for r in p.history()] for p in probers}))
'''


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    yield n
    n.close()


def rounds(net: Network, seconds: float, interval: float = 0.2) -> dict:
    return json.loads(net.run_in_app(PROBE, ORIGIN, str(seconds), str(interval)))


def counters(net: Network, k: int) -> int:
    import subprocess
    out = subprocess.run(["ip", "-n", net.app, "-s", "-j", "link", "show", f"up{k}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["tx"]["packets"]


def test_each_path_probed_over_itself(net):
    before = [counters(net, k) for k in (1, 2, 3)]
    got = rounds(net, 1.5)
    after = [counters(net, k) for k in (1, 2, 3)]
    for name in ("p1", "p2", "p3"):
        assert len(got[name]) >= 5 and all(ok for _, ok, _ in got[name]), name
    # Each path's packets left by its own link.
    assert all(a - b >= 5 * 3 for a, b in zip(after, before, strict=True))


def test_a_down_link_and_a_slow_path(net):
    net.link(2, up=False)
    net.delay("10.3.0.0/24", 0.15)  # well inside the 0.45 s timeout of a 0.5 s interval
    got = rounds(net, 3.0, interval=0.5)
    assert all(ok for _, ok, _ in got["p1"]) and len(got["p1"]) >= 5
    assert not any(ok for _, ok, _ in got["p2"])
    # A slow answer still answers, and its RTT (connect to status line) shows the delay.
    assert all(ok for _, ok, _ in got["p3"])
    assert min(rtt for _, _, rtt in got["p3"]) >= 150
    assert statistics.median(rtt for _, _, rtt in got["p1"]) < \
        statistics.median(rtt for _, _, rtt in got["p3"])
    # p1 kept its pace while p2 timed out and p3 was slow: the threads do not wait on
    # each other.
    assert len(got["p1"]) >= len(got["p2"])


def test_a_path_slower_than_the_timeout_is_lost(net):
    net.delay("10.3.0.0/24", 1.0)  # more than the 0.18 s timeout of a 0.2 s interval
    got = rounds(net, 1.5)
    assert not any(ok for _, ok, _ in got["p3"])
    assert all(ok for _, ok, _ in got["p1"])
