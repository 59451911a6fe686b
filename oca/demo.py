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
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"
workers = 2
access_log = "log/access.jsonl"
name = "demo1"

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


def build(folder: Path, total_mb: int) -> Path:
    """Create (or reuse) the demo appliance in *folder*; return its config path."""
    total = total_mb << 20
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("ssd0", "flash0", "hdd0", "var", "log"):
        (folder / sub).mkdir(exist_ok=True)
    cfg = folder / "oca.toml"
    if not cfg.exists():
        cfg.write_text(CONFIG.format(ssd=format_size(max(total // 4, 64 << 20)),
                                     flash=format_size(max(total // 2, 128 << 20)),
                                     hdd=format_size(max(total * 2, 512 << 20))))
    config = load_config(cfg)
    with Store.init(config) as store:
        recover(store)
        wanted = [c for c in catalog(total) if store.index.get(c[0]) is None]
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


def run_demo(folder: str, total_mb: int = 300) -> int:
    """Build the demo appliance and show what it holds."""
    root = Path(folder).absolute()
    cfg = build(root, total_mb)
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
    sample = objs[0].id if objs else "ID"
    out.write("Try:\n")
    for cmd in ("status", "ls --tier ssd", f"stat {sample}", f"mv {sample} --tier hdd",
                "verify --json"):
        out.write(f"  .venv/bin/oca -c {cfg} {cmd}\n")
    out.write("\nThe HTTP server (oca serve) is not part of this version yet; once it lands, "
              "`make demo` starts it here and prints curl commands.\n")
    return 0
