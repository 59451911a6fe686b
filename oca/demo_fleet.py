"""``oca demo --fleet``: the whole content loop on loopback.

An origin, a backbone appliance ``bb1`` and a site ``isp-a`` of three appliances
(``a1``-``a3``), each a real ``oca serve`` with its own store in ``DIR/<node>``; a
catalog of generated video-like objects on the origin; a day of generated viewer access
logs; ``oca-fill plan`` over them; ``oca fill apply`` on ``bb1``, then on the site's three
at once (one progress bar for the site); a signed URL served by a site appliance; and
where each box's bytes came from. The servers run until Ctrl-C (``--no-serve``: they
stop at the end).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .config import load_config
from .demo import LADDER
from .digest import digest_bytes
from .fill import state as fill_state
from .http.auth import load_key, signed_url
from .progress import Progress
from .units import format_size

BIN = Path(sys.executable).parent
SITE = ("a1", "a2", "a3")
NODES = ("origin", "bb1", *SITE)
NOW = None  # the plan's clock: the demo's own time

NODE_CONFIG = """\
# Written by `oca demo --fleet`. Paths are relative to this file.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = 1
access_log = "log/access.jsonl"
name = "{name}"

[auth]
fill_key_file = "../fill.key"
{viewer_key}
[store]
index = "var/index.sqlite"

[[store.disk]]
path = "ssd0"
tier = "ssd"
capacity = "{ssd}"

[[store.disk]]
path = "hdd0"
tier = "hdd"
capacity = "{hdd}"
"""


def _catalog(total: int) -> dict[str, bytes]:
    rng = random.Random(11)
    titles = max(4, total // (6 << 20))
    out = {}
    for t in range(titles):
        title_bytes = int(total / titles * rng.uniform(0.6, 1.4))
        for rung, share in LADDER:
            out[f"title{t:04d}-{rung}.mp4"] = rng.randbytes(max(4096, int(title_bytes * share)))
    return out


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"oca demo --fleet: {' '.join(cmd[:3])}...: {r.stderr.strip()}")
    return r


def _wait_up(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"oca demo --fleet: {base} did not come up") from None
            time.sleep(0.1)


def run_fleet(folder: str, total_mb: int = 60, serve: bool = True, base_port: int = 8100) -> int:
    root = Path(folder).absolute() / "fleet"
    root.mkdir(parents=True, exist_ok=True)
    out = sys.stdout
    oca, oca_fill = str(BIN / "oca"), str(BIN / "oca-fill")
    total = total_mb << 20
    objects = _catalog(total)
    key = root / "fill.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex() + "\n")
        key.chmod(0o600)
    viewer_key = root / "a1" / "demo.key"
    ports = {n: (base_port + 2 * i, base_port + 2 * i + 1) for i, n in enumerate(NODES)}
    cfgs = {}
    for name in NODES:
        node = root / name
        for sub in ("ssd0", "hdd0", "var", "log"):
            (node / sub).mkdir(parents=True, exist_ok=True)
        if name == "a1" and not viewer_key.exists():
            viewer_key.write_text(os.urandom(32).hex() + "\n")
        cfg = node / "oca.toml"
        cfg.write_text(NODE_CONFIG.format(
            port=ports[name][0], admin_port=ports[name][1], name=name,
            viewer_key='key_file = "demo.key"\n' if name == "a1" else "",
            ssd=format_size(max(total, 64 << 20)), hdd=format_size(max(total * 4, 256 << 20))))
        _run(oca, "-c", str(cfg), "init")
        cfgs[name] = cfg
    # The origin holds the catalog.
    have = {line.split("\t")[0] for line in
            _run(oca, "-c", str(cfgs["origin"]), "ls").stdout.splitlines()}
    todo = {k: v for k, v in objects.items() if k not in have}
    if todo:
        with Progress("origin: generating the catalog", total=sum(map(len, todo.values())),
                      unit="B") as p:
            for oid, data in todo.items():
                src = root / "origin" / "var" / oid
                src.write_bytes(data)
                _run(oca, "-c", str(cfgs["origin"]), "put", oid, str(src), "--tier", "hdd")
                src.unlink()
                p.update(len(data))
    base = {n: f"http://127.0.0.1:{ports[n][0]}" for n in NODES}
    servers = {}
    try:
        for name in NODES:
            log = open(root / name / "log" / "serve.log", "ab")  # noqa: SIM115
            servers[name] = subprocess.Popen([oca, "-c", str(cfgs[name]), "serve"],
                                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
        for name in NODES:
            _wait_up(base[name])
        out.write(f"\nFleet in {root}: origin {base['origin']}, backbone bb1 {base['bb1']}, "
                  f"site isp-a: " + ", ".join(f"{n} {base[n]}" for n in SITE) + "\n")
        # The planner's inputs: catalog, topology, a day of viewers at the site.
        now = int(time.time())
        (root / "catalog.csv").write_text("id,size,xxh3,title\n" + "".join(
            f"{oid},{len(data)},{digest_bytes(data)},{oid.split('-')[0]}\n"
            for oid, data in objects.items()))
        site_tiers = {"ssd": format_size(total // 6), "hdd": format_size(total // 3)}
        (root / "topology.json").write_text(json.dumps({
            "origin": {"name": "origin", "url": base["origin"]},
            "backbone": [{"name": "bb1", "url": base["bb1"],
                          "tiers": {"ssd": format_size(total // 2), "hdd": format_size(total)}}],
            "sites": [{"name": "isp-a", "upstream": "bb1", "fill_window": "02:00-08:00",
                       "appliances": [{"name": n, "url": base[n], "serve_gbps": 10,
                                       "tiers": site_tiers} for n in SITE]}],
            "links": [{"from": "origin", "to": "bb1", "gbps": 10},
                      {"from": "bb1", "to": "isp-a", "gbps": 10}]}, indent=1))
        rng = random.Random(5)
        ids = list(objects)
        weights = [1.0 / (k + 1) for k in range(len(ids))]
        (root / "viewers.jsonl").write_text("".join(json.dumps({
            "ts": now - rng.random() * 86400, "appliance": rng.choice(SITE), "method": "GET",
            "object": rng.choices(ids, weights)[0], "status": 200, "bytes": 100000,
            "range": None, "client": "192.0.2.1", "dur_ms": 1.0, "tier": "hdd"}) + "\n"
            for _ in range(5000)))
        night = root / "manifests"
        r = _run(oca_fill, "plan", "--catalog", str(root / "catalog.csv"), "--topology",
                 str(root / "topology.json"), "--logs", str(root / "viewers.jsonl"), "--out",
                 str(night), "--now", str(now))
        out.write(f"oca-fill plan: {len(list(night.glob('*.json')))} manifests in {night}\n")
        out.write(r.stdout)
        out.flush()
        # The fill: the backbone box first, then the site's three at once.
        summaries = {}
        for batch in (["bb1"], list(SITE)):
            procs = {n: subprocess.Popen([oca, "-c", str(cfgs[n]), "fill", "apply",
                                          str(night / f"{n}.json"), "--json"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True) for n in batch}
            configs = {n: load_config(cfgs[n]) for n in batch}
            label = "fill bb1" if batch == ["bb1"] else "fill site isp-a (a1, a2, a3)"
            with Progress(label, total=None, unit="B") as bar:
                shown = 0
                while any(p.poll() is None for p in procs.values()):
                    time.sleep(0.2)
                    done = 0
                    for n in batch:
                        st = fill_state.read(configs[n]) or {}
                        done += (st.get("progress") or {}).get("bytes", 0)
                    if done > shown:
                        bar.update(done - shown)
                        shown = done
            for n, p in procs.items():
                summaries[n] = json.loads(p.communicate()[0])
        out.write("\nWhere each box's bytes came from:\n")
        for n in ("bb1", *SITE):
            s = summaries[n]
            got = ", ".join(f"{format_size(b)} from {src}" for src, b in
                            sorted(s["bytes_by_source"].items())) or "nothing"
            out.write(f"  {n:4} added {s['added']:3d} objects: {got}"
                      f"{'' if s['ok'] else '  (NOT complete: see oca fill status)'}\n")
        # A viewer at the site: a signed URL served by a1.
        a1 = load_config(cfgs["a1"])
        held = [line.split("\t")[0] for line in
                _run(oca, "-c", str(cfgs["a1"]), "ls").stdout.splitlines()]
        if held:
            oid = held[0]
            url = signed_url(base["a1"], oid, load_key(a1.auth.key_file), 3600, time.time())
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read()
            ok = digest_bytes(body) == digest_bytes(objects[oid])
            out.write(f"\nA viewer's signed URL, served by a1 ({resp.status}, "
                      f"{format_size(len(body))}, {'bytes match' if ok else 'BYTES DIFFER'}):\n"
                      f"  {url}\n")
        out.write("\nOperator commands:\n")
        for n in ("bb1", "a1"):
            out.write(f"  {oca} -c {cfgs[n]} fill status\n")
        out.write(f"  curl -s http://127.0.0.1:{ports['a1'][1]}/metrics | grep oca_fill\n")
        out.flush()
        complete = all(s["ok"] for s in summaries.values())
        if not serve:
            return 0 if complete else 1
        out.write("\nThe fleet keeps serving; Ctrl-C stops it.\n")
        out.flush()
        try:
            while all(p.poll() is None for p in servers.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        for p in servers.values():
            p.terminate()
        for p in servers.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
