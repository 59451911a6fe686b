"""The whole fill on loopback: an origin, a backbone appliance and a site of three
appliances, each a real server with its own store; `oca-fill plan` on generated access
logs; `oca fill apply` on the backbone box, then on the site's three at once. Run with
`oca serve` as the origin and with nginx serving a folder as the origin.

Asserted: every appliance holds exactly its manifest (ids, tiers, digests); each source
sent exactly the copies the manifests name it for (origin egress: one copy of each
object the backbone box gets from it, nothing for what the site gets from the backbone
box or its peers), counted from the sources' own access logs; those fill lines do not
change the next plan."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oca.digest import digest_bytes
from tests.http.conftest import free_port, start_server, wait_for

OCA_FILL = Path(sys.executable).parent / "oca-fill"
NOW = 1_795_000_000
SITE = ("a1", "a2", "a3")
TIERS_SITE = {"ssd": "2M", "flash": "3M", "hdd": "6M"}


def catalog(root: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    objects = {f"t{i:03d}-{q}.mp4": rng.randbytes(rng.randrange(64 << 10, 1536 << 10))
               for i in range(10) for q in ("1080p", "720p")}
    rows = ["id,size,xxh3,title"] + [f"{oid},{len(data)},{digest_bytes(data)},title"
                                     for oid, data in objects.items()]
    (root / "catalog.csv").write_text("\n".join(rows) + "\n")
    return objects


def access_log(root: Path, ids: list[str]) -> Path:
    rng = random.Random(11)
    weights = [1.0 / (k + 1) for k in range(len(ids))]
    lines = []
    for _ in range(3000):
        oid = rng.choices(ids, weights)[0]
        lines.append(json.dumps({"ts": NOW - rng.random() * 86400, "appliance": rng.choice(SITE),
                                 "method": "GET", "object": oid, "status": 200,
                                 "bytes": 1000, "range": None, "client": "192.0.2.9",
                                 "dur_ms": 1.0, "tier": "hdd"}))
    path = root / "viewers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class NginxOrigin:
    """nginx serving a folder of /o/<id> files (its ETags are not digests: the catalog's
    xxh3 in the manifests is what the agent verifies against)."""

    def __init__(self, root: Path, objects: dict[str, bytes]):
        (root / "www" / "o").mkdir(parents=True)
        for oid, data in objects.items():
            (root / "www" / "o" / oid).write_bytes(data)
        self.port = free_port()
        self.log = root / "access.log"
        conf = root / "nginx.conf"
        # As root, nginx's workers would run as nobody, who cannot enter pytest's folders.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {self.log};
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    sendfile on;
    server {{
        listen 127.0.0.1:{self.port};
        root {root}/www;
    }}
}}
""")
        (root / "tmp").mkdir()
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self._up() or None, timeout=10)

    def _up(self) -> bool:
        import http.client
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            c.request("HEAD", "/")
            c.getresponse()
            c.close()
            return True
        except OSError:
            return False

    def copies(self) -> collections.Counter:
        out = collections.Counter()
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                m = re.search(r'"GET /o/([^ ?]+)\S* HTTP/1.1" (200|206) ', line)
                if m:
                    out[m.group(1)] += 1
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def copies(server) -> collections.Counter:
    """Objects the server sent whole or in part to fills (scope fill, 200/206)."""
    return collections.Counter(x["object"] for x in server.log_lines()
                               if x.get("scope") == "fill" and x["status"] in (200, 206))


def held(app) -> dict[str, tuple[str, str]]:
    with app.open() as store:
        return {r.id: (r.tier, r.xxh3) for r in store.objects()}


@pytest.mark.parametrize("origin_kind", ["oca", "nginx"])
def test_a_night_of_fill_between_real_appliances(tmp_path, origin_kind):
    objects = catalog(tmp_path)
    key = tmp_path / "fill.key"
    key.write_text("k" * 64 + "\n")
    auth = f'[auth]\nfill_key_file = "{key}"\n'
    servers = {}
    try:
        if origin_kind == "oca":
            servers["origin"] = start_server(tmp_path / "origin", name="origin", extra=auth,
                                             objects={k: (v, "hdd") for k, v in objects.items()})
        else:
            servers["origin"] = NginxOrigin(tmp_path / "origin", objects)
        for name in ("bb1", *SITE):
            servers[name] = start_server(tmp_path / name, name=name, extra=auth)
        topo = {"origin": {"name": "origin", "url": servers["origin"].base},
                "backbone": [{"name": "bb1", "url": servers["bb1"].base,
                              "tiers": {"ssd": "16M", "hdd": "32M"}}],
                "sites": [{"name": "isp-a", "upstream": "bb1", "fill_window": "02:00-08:00",
                           "appliances": [{"name": n, "url": servers[n].base, "serve_gbps": 10,
                                           "tiers": TIERS_SITE} for n in SITE]}],
                "links": [{"from": "origin", "to": "bb1", "gbps": 10},
                          {"from": "bb1", "to": "isp-a", "gbps": 10}]}
        (tmp_path / "topology.json").write_text(json.dumps(topo))
        logs = [access_log(tmp_path, list(objects))]

        def plan(out: Path, *log_files: Path) -> dict[str, dict]:
            r = subprocess.run([str(OCA_FILL), "-q", "plan", "--catalog",
                                str(tmp_path / "catalog.csv"), "--topology",
                                str(tmp_path / "topology.json"), "--out", str(out), "--now",
                                str(NOW), "--logs", *map(str, log_files)],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            return {p.stem: json.loads(p.read_bytes()) for p in sorted(out.glob("*.json"))}

        manifests = plan(tmp_path / "night1", *logs)
        assert set(manifests) == {"bb1", *SITE}

        def apply(name: str) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "oca.cli.main", "-c", str(servers[name].app.config_path),
                 "fill", "apply", str(tmp_path / "night1" / f"{name}.json"), "--json",
                 "--parallel", "2", "--peer-wait", "60s"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        results = {}
        for batch in (["bb1"], list(SITE)):
            procs = {name: apply(name) for name in batch}
            for name, proc in procs.items():
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, f"{name}: {err}"
                results[name] = json.loads(out)
        # Every appliance holds exactly its manifest, verified, on the named tiers.
        for name, m in manifests.items():
            want = {o["id"]: (o["tier"], digest_bytes(objects[o["id"]])) for o in m["objects"]}
            assert held(servers[name].app) == want, name
        # Each source sent exactly the copies the manifests name it for.
        expected = collections.defaultdict(collections.Counter)
        for name, m in manifests.items():
            for o in m["objects"]:
                if o["source"] != name:
                    expected[o["source"]][o["id"]] += 1
        assert expected["origin"] == collections.Counter(o["id"] for o in
                                                         manifests["bb1"]["objects"])
        for node, server in servers.items():
            def seen(s=server, n=node):
                return s.copies() if n == "origin" and origin_kind == "nginx" else copies(s)
            # (The logs reach their files once a second: wait for the expected lines.)
            try:
                wait_for(lambda f=seen, n=node: f() == expected[n], timeout=5)
            finally:
                assert seen() == expected[node], node
            for name, r in results.items():
                assert r["bytes_by_source"].get(node, 0) == sum(
                    len(objects[o["id"]]) for o in manifests[name]["objects"]
                    if o["source"] == node and node != name), (name, node)
        # The fill lines in the sources' logs do not change tomorrow's plan.
        fill_logs = [s.access_log for n, s in servers.items()
                     if not (n == "origin" and origin_kind == "nginx")]
        assert plan(tmp_path / "night1-again", *logs, *fill_logs) == manifests
    finally:
        for s in servers.values():
            s.stop()
