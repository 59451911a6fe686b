"""Steering inside `oca serve` ([steering] set), all in the app namespace of a real
network: a role of its own; /health carries the mode and reason and turns 503 in
isp-direct; an object the box cannot serve is a 302 to the origin then; a drain puts the
appliance in isp-direct."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import OCA_BIN
from tests.http.conftest import wait_for
from tests.steering.netns import ORIGIN, Network
from tests.steering.test_loop import config

pytestmark = pytest.mark.root


@pytest.fixture
def net(tmp_path):
    (tmp_path / "net").mkdir()
    n = Network(tmp_path / "net")
    yield n
    n.close()


def in_app(net: Network, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", net.app, *cmd], capture_output=True,
                          text=True, timeout=30)


def get(net: Network, url: str) -> tuple[int, dict, str]:
    """(status, headers lower-case, body) of a GET from inside the app namespace."""
    r = in_app(net, "curl", "-s", "-D", "-", "--max-time", "5", url)
    if not r.stdout.startswith("HTTP/"):
        return 0, {}, "{}"  # not answering (yet)
    head, _, body = r.stdout.partition("\n\n")  # (text mode: CRLF read as LF)
    lines = head.split("\n")
    fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def test_health_and_302s_follow_isp_direct(net, tmp_path):
    cfg = config(tmp_path)
    text = Path(cfg).read_text().replace("[steering]",
                                         f'[steering]\norigin_url = "http://{ORIGIN}"')
    server = ('[server]\nlisten = "127.0.0.1:8080"\nadmin_listen = "127.0.0.1:8081"\n'
              f'workers = 1\naccess_log = "{tmp_path}/access.jsonl"\nname = "a1"\n')
    Path(cfg).write_text(server + text)
    r = in_app(net, str(OCA_BIN), "-c", cfg, "init")
    assert r.returncode == 0, r.stderr
    log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115 - closed once handed over
    proc = subprocess.Popen(["ip", "netns", "exec", net.app, str(OCA_BIN), "-c", cfg, "serve"],
                            stdout=log, stderr=log)
    log.close()
    try:
        health = "http://127.0.0.1:8080/health"
        status, _, body = wait_for(lambda: (lambda g: g if g[0] == 200 and json.loads(g[2])
                                            .get("mode") == "netflix-backbone" else None)(
            get(net, health) if proc.poll() is None else (0, {}, "{}")), timeout=20)
        assert json.loads(body)["status"] == "ok"
        st = json.loads(get(net, "http://127.0.0.1:8081/status")[2])
        assert len(st["steering"]) == 1 and not set(st["steering"]) & set(st["workers"])
        metrics = in_app(net, "curl", "-s", "http://127.0.0.1:8081/metrics").stdout
        for line in ('oca_steering_mode{mode="netflix-backbone"} 1.0',
                     'oca_steering_mode{mode="isp-direct"} 0.0',
                     'oca_steering_path_up{path="isp-backbone"} 1.0',
                     'oca_steering_path_loss{path="backbone-oca"} 0.0',
                     'oca_steering_switches{reason="hard"} 1.0'):
            assert f"\n{line}\n" in metrics, line
        assert 'oca_steering_path_rtt_ms{path="netflix-backbone"} ' in metrics
        assert get(net, "http://127.0.0.1:8080/o/nothere.mp4")[0] == 404
        # Every upstream path down: isp-direct.
        for k in (1, 2, 3):
            net.link(k, up=False)
        status, _, body = wait_for(lambda: (lambda g: g if g[0] == 503 else None)(
            get(net, health)), timeout=10)
        h = json.loads(body)
        assert (h["status"], h["mode"]) == ("isp-direct", "isp-direct")
        assert "no upstream path is up" in h["reason"]
        status, fields, _ = get(net, "http://127.0.0.1:8080/o/nothere.mp4?t=1")
        assert (status, fields["location"]) == (302, f"http://{ORIGIN}/o/nothere.mp4?t=1")
        # Back up; then a drain: the appliance itself unhealthy is isp-direct too.
        for k in (1, 2, 3):
            net.link(k, up=True)
        wait_for(lambda: json.loads(get(net, health)[2]).get("mode") not in (None, "isp-direct"),
                 timeout=10)
        r = in_app(net, str(OCA_BIN), "-c", cfg, "drain", "--deadline", "60s")
        assert r.returncode == 0, r.stderr
        h = wait_for(lambda: (lambda b: b if b.get("mode") == "isp-direct" else None)(
            json.loads(get(net, health)[2])), timeout=10)
        assert h["status"] == "draining" and "draining" in h["reason"]
        steer = json.loads(in_app(net, str(OCA_BIN), "-c", cfg, "steer", "status",
                                  "--json").stdout)
        assert steer["mode"] == "isp-direct"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # A clean stop: no route of ours left.
    r = subprocess.run(["ip", "-n", net.app, "route", "show", "table", "100"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == ""
