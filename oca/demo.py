"""``oca demo``: a demo appliance in a local folder.

Three tiers as plain directories (``ssd0``, ``flash0``, ``hdd0``), an ``oca.toml``
beside them, and a few hundred MB of generated objects shaped like a small
catalog: each title in several encodes (bitrate ladder), the popular titles on
SSD, the middle on flash, the long tail on HDD, as a fill would place them.
Running it again reuses what is there.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

from .config import load_config
from .progress import Progress
from .storage import Store
from .storage.recovery import recover
from .storage.scrub import verify
from .units import format_size

# Encodes of one title: (name, share of the title's bytes). A 1080p encode of a
# short clip is a few MB to a few tens of MB, as on a real ladder.
LADDER = (("1080p", 0.50), ("720p", 0.28), ("480p", 0.14), ("240p", 0.08))

CONFIG = """\
# Demo appliance written by `oca demo`. Paths are relative to this file.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = 2
access_log = "log/access.jsonl"
name = "demo1"

[auth]
key_file = "demo.key"

[store]
index = "var/index.sqlite"

[[store.disk]]
path = "ssd0"
tier = "ssd"
capacity = "{ssd}"

[[store.disk]]
path = "flash0"
tier = "flash"
capacity = "{flash}"

[[store.disk]]
path = "hdd0"
tier = "hdd"
capacity = "{hdd}"
"""


def catalog(total_bytes: int, seed: int = 7) -> list[tuple[str, int, str]]:
    """(id, size, tier) for a catalog of about *total_bytes*: 5% of bytes on ssd, 25% flash."""
    rng = random.Random(seed)
    titles = max(4, total_bytes // (12 << 20))
    per_title = total_bytes // titles
    out = []
    for t in range(titles):
        tier = "ssd" if t < titles * 0.1 else "flash" if t < titles * 0.4 else "hdd"
        title_bytes = int(per_title * rng.uniform(0.6, 1.4))
        for rung, share in LADDER:
            out.append((f"title{t:04d}-{rung}.mp4", max(4096, int(title_bytes * share)), tier))
    return out


def build(folder: Path, total_mb: int, port: int = 8080, admin_port: int = 8081) -> Path:
    """Create (or reuse) the demo appliance in *folder*; return its config path."""
    total = total_mb << 20
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("ssd0", "flash0", "hdd0", "var", "log"):
        (folder / sub).mkdir(exist_ok=True)
    key = folder / "demo.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex() + "\n")
        key.chmod(0o600)
    cfg = folder / "oca.toml"
    cfg.write_text(CONFIG.format(ssd=format_size(max(total // 4, 64 << 20)),
                                 flash=format_size(max(total // 2, 128 << 20)),
                                 hdd=format_size(max(total * 2, 512 << 20)),
                                 port=port, admin_port=admin_port))
    config = load_config(cfg)
    with Store.init(config) as store:
        recover(store)
        wanted = [c for c in catalog(total) if store.find(c[0]) is None]
        if wanted:
            with tempfile.TemporaryDirectory(dir=folder / "var") as tmp, \
                    Progress("generating objects", total=sum(s for _, s, _ in wanted),
                             unit="B") as p:
                src = Path(tmp) / "object"
                for object_id, size, tier in wanted:
                    with open(src, "wb") as f:
                        f.write(os.urandom(size))
                    store.put(object_id, src, tier)
                    p.update(size)
    return cfg


def run_demo(folder: str, total_mb: int = 300, serve: bool = True, port: int = 8080,
             admin_port: int = 8081) -> int:
    """Build the demo appliance, show what it holds, then serve it (foreground)."""
    root = Path(folder).absolute()
    cfg = build(root, total_mb, port, admin_port)
    config = load_config(cfg)
    with Store(config) as store:
        st = store.status(io=False)
        objs = list(store.objects())
        report = verify(store, objs)
    out = sys.stdout
    out.write(f"\nDemo appliance in {root}\n")
    for tier, t in st["tiers"].items():
        out.write(f"  {tier:6} {t['objects']:4d} objects  {format_size(t['used']):>7} of "
                  f"{format_size(t['capacity'])}\n")
    out.write(f"  verify: {report.ok} of {report.checked} objects match their xxh3 digests\n\n")
    sample = next((o for o in objs if o.tier == "ssd"), objs[0] if objs else None)
    oca = f".venv/bin/oca -c {cfg}"
    out.write("Operator commands:\n")
    for cmd in ("status", "ls --tier ssd", "verify --json", "drain --deadline 30s", "undrain"):
        out.write(f"  {oca} {cmd}\n")
    out.write("The whole fill loop (origin, backbone appliance, a site of three; planned and "
              "filled) on loopback:\n  .venv/bin/oca demo --fleet\n")
    if sample is not None and serve:
        out.write(curl_commands(config, sample.id, sample.xxh3))
    out.flush()
    if not serve:
        return 0
    from .serve.daemon import serve as run_server

    out.write("\nStarting oca serve (Ctrl-C stops it)...\n\n")
    out.flush()
    return run_server(config)


def curl_commands(config, object_id: str, digest: str) -> str:
    """curl lines that show a full GET, a range, a 304 and a signed URL at work."""
    from .http.auth import load_key, signed_url

    host, port = config.server.listen
    base = f"http://{host}:{port}"
    url = signed_url(base, object_id, load_key(config.auth.key_file), 3600, time.time())
    w = "-w '%{http_code} %{size_download} bytes\\n'"
    lines = [
        "",
        "Signed URLs are on ([auth] key_file = demo.key); this one is good for an hour:",
        f"  {url}",
        "",
        "Once the server is up (below), from another shell:",
        f"  curl -s -o /dev/null {w} '{url}'                    # full GET: 200",
        f"  curl -s -o /dev/null {w} -r 0-1048575 '{url}'       # a 1 MiB range: 206",
        f"  curl -s -o /dev/null {w} -H 'If-None-Match: \"{digest}\"' '{url}'   # 304",
        f"  curl -s -o /dev/null {w} '{base}/o/{object_id}'     # no token: 403",
        f"  curl -s {base}/health",
        f"  curl -s http://{config.server.admin_listen[0]}:{config.server.admin_listen[1]}"
        "/metrics | grep oca_requests_total",
        "",
    ]
    return "\n".join(lines) + "\n"
