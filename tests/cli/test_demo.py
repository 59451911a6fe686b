"""`oca demo`: builds a three-tier appliance with video-like objects and shows it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from oca.config import load_config
from oca.digest import digest_file
from oca.storage import Store
from tests.conftest import OCA_BIN, run_oca
from tests.http.conftest import free_port


def test_demo_builds_a_verified_three_tier_appliance(tmp_path):
    folder = tmp_path / "demo"
    r = run_oca("demo", "--dir", str(folder), "--size-mb", "24", "--no-serve")
    assert r.returncode == 0, r.stderr
    assert f"Demo appliance in {folder}" in r.stdout
    assert "verify: 16 of 16 objects match their xxh3 digests" in r.stdout

    with Store(load_config(folder / "oca.toml")) as store:
        records = list(store.objects())
        tiers = {rec.tier for rec in records}
        for rec in records:
            assert digest_file(store.path_of(rec)) == (rec.xxh3, rec.size)
            assert rec.content_type == "video/mp4"
    assert tiers == {"ssd", "flash", "hdd"}
    assert 20 << 20 <= sum(rec.size for rec in records) <= 28 << 20
    # One title, four encodes: the ladder.
    assert {rec.id for rec in records if rec.id.startswith("title0000-")} == {
        f"title0000-{rung}.mp4" for rung in ("1080p", "720p", "480p", "240p")}

    # Running it again reuses the appliance: same objects, same bytes.
    again = run_oca("demo", "--dir", str(folder), "--size-mb", "24", "--no-serve")
    assert again.returncode == 0, again.stderr
    listing = json.loads(run_oca("-c", str(folder / "oca.toml"), "ls", "--json").stdout)
    assert [(o["id"], o["xxh3"]) for o in listing] == sorted(
        (rec.id, rec.xxh3) for rec in records)


def test_demo_serves_and_its_curl_commands_work(tmp_path):
    folder = tmp_path / "demo"
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OCA_CONFIG", "OCA_FAULT")}
    proc = subprocess.Popen(
        [str(OCA_BIN), "demo", "--dir", str(folder), "--size-mb", "16", "--port", str(port),
         "--admin-port", str(admin)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        stdin=subprocess.DEVNULL)
    try:
        out = ""
        deadline = time.monotonic() + 60
        while "Starting oca serve" not in out:
            line = proc.stdout.readline()
            assert line, f"demo exited early: {out}"
            out += line
            assert time.monotonic() < deadline
        commands = [line.strip().split("   ")[0].strip() for line in out.splitlines()
                    if line.strip().startswith("curl -s -o /dev/null")]
        assert len(commands) == 4, out

        def run(cmd: str) -> str:
            for _ in range(100):  # the server is starting
                r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
                if r.stdout and not r.stdout.startswith("000"):
                    return r.stdout.strip()
                time.sleep(0.1)
            raise AssertionError(f"no answer to {cmd}")

        full, ranged, not_modified, unsigned = (run(c) for c in commands)
        assert re.fullmatch(r"200 \d+ bytes", full), full
        assert ranged == "206 1048576 bytes"
        assert not_modified == "304 0 bytes"
        assert unsigned.startswith("403 ")
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in out + rest


def free_ports(n: int) -> int:
    """The first of *n* consecutive free loopback ports, below the ephemeral range (where
    a client connection made meanwhile could take one before its server binds it)."""
    import random
    import socket
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        base = random.randrange(10000, low - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def test_demo_fleet_plans_fills_and_serves_a_viewer(tmp_path):
    """`oca demo --fleet`: five real servers, a plan, the fill (bb1 first, then the site
    at once), a signed URL from a1, where the bytes came from; every box holds exactly
    its manifest."""
    folder = tmp_path / "demo"
    r = run_oca("demo", "--fleet", "--dir", str(folder), "--size-mb", "16", "--no-serve",
                "--port", str(free_ports(10)), timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "oca-fill plan: 4 manifests" in r.stdout
    assert re.search(r"served by a1 \(200, .*, bytes match\)", r.stdout)
    assert re.search(r"bb1 +added +\d+ objects: .* from origin", r.stdout)
    fleet = folder / "fleet"
    for node in ("bb1", "a1", "a2", "a3"):
        manifest = json.loads((fleet / "manifests" / f"{node}.json").read_text())
        with Store(load_config(fleet / node / "oca.toml")) as store:
            assert {(o.id, o.tier, o.xxh3) for o in store.objects()} == {
                (o["id"], o["tier"], o["xxh3"]) for o in manifest["objects"]}, node
