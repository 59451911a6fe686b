"""Shared fixtures: temporary three-tier appliances and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from oca.config import load_config
from oca.storage import Store

OCA_BIN = Path(sys.executable).parent / "oca"


def run_oca(*args: str, config: Path | None = None, env: dict | None = None,
            cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed ``oca`` command; returns the completed process (never raises)."""
    cmd = [str(OCA_BIN)]
    if config is not None:
        cmd += ["-c", str(config)]
    full_env = dict(os.environ)
    full_env.pop("OCA_FAULT", None)
    full_env.pop("OCA_CONFIG", None)
    if env:
        full_env.update(env)
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


@dataclass
class Appliance:
    """A temporary appliance: a config file, an index and disk folders."""

    root: Path
    config_path: Path
    disks: dict[str, list[Path]]  # tier -> disk paths

    def config(self):
        return load_config(self.config_path)

    def open(self) -> Store:
        return Store(self.config())

    def oca(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run_oca(*args, config=self.config_path, **kw)


def write_config(root: Path, disks: list[tuple[Path, str, str | None]],
                 index: Path | None = None, extra: str = "", store_extra: str = "") -> Path:
    """Write ``root/oca.toml`` for *disks* given as (path, tier, capacity or None);
    *extra* goes before ``[store]``, *store_extra* into it."""
    lines = [extra, "[store]", f'index = "{index or root / "var" / "index.sqlite"}"',
             store_extra]
    for path, tier, capacity in disks:
        lines += ["[[store.disk]]", f'path = "{path}"', f'tier = "{tier}"']
        if capacity:
            lines.append(f'capacity = "{capacity}"')
    cfg = root / "oca.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def make_appliance(root: Path, layout: dict[str, list[str | None]] | None = None,
                   init: bool = True, disk_paths: dict[str, list[Path]] | None = None
                   ) -> Appliance:
    """An appliance under *root*; *layout* maps tier -> capacities of its disks.

    *disk_paths* may give existing folders (mount points) to use instead of new ones.
    """
    layout = layout or {"ssd": ["64M"], "flash": ["128M"], "hdd": ["256M", "256M"]}
    disks: dict[str, list[Path]] = {}
    entries = []
    for tier, caps in layout.items():
        for i, cap in enumerate(caps):
            if disk_paths and tier in disk_paths:
                path = disk_paths[tier][i]
            else:
                path = root / f"{tier}{i}"
                path.mkdir(parents=True, exist_ok=True)
            disks.setdefault(tier, []).append(path)
            entries.append((path, tier, cap))
    cfg = write_config(root, entries)
    app = Appliance(root, cfg, disks)
    if init:
        Store.init(app.config()).close()
    return app


@pytest.fixture
def appliance(tmp_path: Path) -> Appliance:
    """An initialised appliance: ssd0 (64M), flash0 (128M), hdd0 and hdd1 (256M each)."""
    return make_appliance(tmp_path)


@pytest.fixture
def store(appliance: Appliance):
    s = appliance.open()
    yield s
    s.close()


def make_file(path: Path, size: int, seed: int = 0) -> Path:
    """A file of *size* pseudo-random bytes, reproducible from *seed*."""
    import random

    path.write_bytes(random.Random(seed).randbytes(size))
    return path
