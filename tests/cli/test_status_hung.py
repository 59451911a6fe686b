"""One tier's disk on a FUSE mount that hangs (tests/hangfs.py). `oca status` answers
within about ``[store] disk_probe_timeout``, shows that disk failed with ``hung`` in the
reason and the others ok, exits as for any failed disk (0), and is ok again once the
mount answers; `oca put` to that tier lands on the disk that answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import make_appliance, make_file
from tests.hangfs import HangFS, hangfs
from tests.mounts import needs_root

__all__ = ["hangfs"]  # the fixture, imported for pytest
pytestmark = needs_root

TIMEOUT = 1.0


def test_status_with_a_hung_disk(hangfs: HangFS, tmp_path: Path):
    app = make_appliance(tmp_path / "app", {"ssd": ["64M"], "hdd": ["64M"]},
                         disk_paths={"hdd": [hangfs.path]})
    text = app.config_path.read_text()
    app.config_path.write_text(text.replace("[store]\n", f'[store]\ndisk_probe_timeout = '
                                                         f'"{TIMEOUT:g}s"\n', 1))
    src = make_file(tmp_path / "src.bin", 100_000)
    assert app.oca("put", "a.mp4", str(src), "--tier", "ssd").returncode == 0
    hdd = str(hangfs.path)

    def status() -> tuple[int, dict, float]:
        t0 = time.monotonic()
        r = app.oca("status", "--json", timeout=60)
        return r.returncode, json.loads(r.stdout) if r.stdout else {}, time.monotonic() - t0

    rc, st, _ = status()
    assert rc == 0 and {d["path"]: d["state"] for d in st["disks"]}[hdd] == "ok"

    hangfs.hang()
    try:
        rc, st, elapsed = status()
        assert rc == 0
        disks = {d["path"]: d for d in st["disks"]}
        assert disks[hdd]["state"] == "failed"
        assert disks[hdd]["reason"] == f"hung: no answer to a probe in {TIMEOUT:g} s"
        assert all(d["state"] == "ok" for p, d in disks.items() if p != hdd)
        assert st["tiers"]["hdd"]["healthy"] == 0 and st["tiers"]["ssd"]["healthy"] == 1
        # the interpreter's start-up and the other probes on a loaded machine, not the disk
        print(f"oca status --json with a hung disk: {elapsed:.2f} s")
        assert elapsed < TIMEOUT + 10
        hangfs.wait_blocked()
        r = app.oca("status", timeout=60)  # the table, too
        assert r.returncode == 0 and "hung: no answer to a probe" in r.stdout
    finally:
        hangfs.release()
    deadline = time.monotonic() + 30
    while True:
        rc, st, _ = status()
        if {d["path"]: d["state"] for d in st["disks"]}[hdd] == "ok" or \
                time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rc == 0 and {d["path"]: d["state"] for d in st["disks"]}[hdd] == "ok"


def test_put_goes_to_the_tiers_other_disk_while_one_hangs(hangfs: HangFS, tmp_path: Path):
    (tmp_path / "hdd1").mkdir()
    app = make_appliance(tmp_path / "app", {"ssd": ["64M"], "hdd": ["64M", "64M"]},
                         disk_paths={"hdd": [hangfs.path, tmp_path / "hdd1"]})
    text = app.config_path.read_text()
    app.config_path.write_text(text.replace("[store]\n", f'[store]\ndisk_probe_timeout = '
                                                         f'"{TIMEOUT:g}s"\n', 1))
    src = make_file(tmp_path / "src.bin", 100_000)
    hangfs.hang()
    try:
        r = app.oca("put", "b.mp4", str(src), "--tier", "hdd", timeout=60)
        assert r.returncode == 0, r.stderr
        r = app.oca("stat", "b.mp4", "--json", timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["disk"] == str(tmp_path / "hdd1")
    finally:
        hangfs.release()
