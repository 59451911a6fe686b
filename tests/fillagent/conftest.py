"""Sources and a target for the fill agent: real `oca serve` processes as sources (the
origin, a backbone appliance, a peer), and a target appliance named ``a1`` whose store
`oca fill apply` fills (it need not serve)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from oca.digest import digest_bytes
from tests.conftest import Appliance, make_appliance, write_config
from tests.http.conftest import start_server

MiB = 1 << 20
LAYOUT = {"ssd": ["64M"], "flash": ["64M"], "hdd": ["128M"]}


def data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


OBJECTS = {  # id -> bytes, the catalog of these tests
    "a.mp4": data(1, 3 * MiB + 5),
    "b.mp4": data(2, 2 * MiB),
    "c.mp4": data(3, 1 * MiB + 7),
    "k.mp4": data(4, 512 << 10),
    "m.mp4": data(5, 700 << 10),
    "d.mp4": data(6, 300 << 10),
    # Larger than what loopback sockets buffer: a source killed mid-transfer has not
    # handed it all to the kernel yet.
    "big.mp4": data(8, 24 * MiB),
}


def target(root: Path, name: str = "a1", layout: dict | None = None,
           extra: str = "", disk_paths: dict | None = None) -> Appliance:
    """An appliance *name* with an empty store (no server); *disk_paths*: tier -> existing
    folders (mount points) for its disks."""
    app = make_appliance(root, layout or LAYOUT, disk_paths=disk_paths)
    entries = [(p, tier, cap) for tier, caps in (layout or LAYOUT).items()
               for p, cap in zip(app.disks[tier], caps, strict=True)]
    write_config(root, entries, extra=f'[server]\nname = "{name}"\n{extra}\n')
    return app


def manifest(path: Path, objects: list[tuple], delete=(), sources=None, upstream=None,
             appliance: str = "a1", generated: int = 1795000000) -> Path:
    """Write a manifest: *objects* as (id, tier, source, wave[, xxh3]); the digests
    default to the catalog's."""
    doc = {"appliance": appliance, "generated": generated, "delete": list(delete),
           "objects": [{"id": o[0], "size": len(OBJECTS[o[0]]),
                        "xxh3": o[4] if len(o) > 4 else digest_bytes(OBJECTS[o[0]]),
                        "tier": o[1], "source": o[2], "wave": o[3]} for o in objects]}
    if sources is not None:
        doc["sources"] = sources
    if upstream is not None:
        doc["upstream"] = upstream
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """The origin: every object, on hdd."""
    srv = start_server(tmp_path_factory.mktemp("origin"),
                       objects={k: (v, "hdd") for k, v in OBJECTS.items()})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """The backbone appliance: a.mp4 and b.mp4, and a c.mp4 of other bytes (a stale copy)."""
    srv = start_server(tmp_path_factory.mktemp("bb1"),
                       objects={"a.mp4": (OBJECTS["a.mp4"], "ssd"),
                                "b.mp4": (OBJECTS["b.mp4"], "flash"),
                                "c.mp4": (data(99, len(OBJECTS["c.mp4"])), "ssd")})
    yield srv
    srv.stop()
