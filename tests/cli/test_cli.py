"""End-to-end tests of the operator CLI: the real ``oca`` executable in a subprocess
against temporary three-tier stores (docs/cli.md is the contract checked here)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import sqlite3
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
import xxhash

from oca.storage.layout import object_path
from tests.conftest import OCA_BIN, Appliance, make_appliance, make_file, run_oca

KIB = 1024
MIB = 1024 * KIB


# -- helpers -------------------------------------------------------------------

def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert the command succeeded quietly on stderr (piped: no progress output)."""
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert res.stderr == "", res.stderr
    return res


def one_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert the documented failure shape: exit *code*, nothing on stdout, exactly one
    line on stderr starting ``oca: error:`` that contains every needle."""
    assert res.returncode == code, f"exit {res.returncode}\nstdout: {res.stdout}\n{res.stderr}"
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and res.stderr.endswith("\n"), res.stderr
    assert lines[0].startswith("oca: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def xxh3(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def disk_of(app: Appliance, tier: str, i: int = 0) -> str:
    return str(app.disks[tier][i])


def fill(app: Appliance, objects: list[tuple[str, Path, str]]) -> dict:
    """Put (id, source, tier) objects in-process (set-up only); return id -> record."""
    with app.open() as store:
        return {oid: store.put(oid, src, tier) for oid, src, tier in objects}


def stored_path(app: Appliance, object_id: str) -> Path:
    with app.open() as store:
        return Path(store.path_of(store.get(object_id)))


def index_rows(app: Appliance) -> dict[str, list[tuple]]:
    """Rows of the index tables that say what is stored (read-only connection)."""
    db = sqlite3.connect(f"file:{app.config().store.index}?mode=ro", uri=True)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
                for t in ("objects", "reservations", "tombstones", "quarantine")}
    finally:
        db.close()


def snapshot(app: Appliance) -> dict:
    """What the store holds: `oca ls --json`, every folder and file (with a hash of its
    bytes) under every disk, and the index rows."""
    listing = ok(app.oca("ls", "--json"))
    files: list[tuple[str, str | None]] = []
    for disk in sorted(p for paths in app.disks.values() for p in paths):
        for dirpath, dirnames, filenames in os.walk(disk):
            dirnames.sort()
            files.append((os.path.relpath(dirpath, app.root) + "/", None))
            for name in sorted(filenames):
                data = Path(dirpath, name).read_bytes()
                files.append((os.path.relpath(os.path.join(dirpath, name), app.root),
                              hashlib.sha256(data).hexdigest()))
    return {"ls": json.loads(listing.stdout), "files": files, "index": index_rows(app)}


def run_on_pty(args: list[str], cwd: Path, winsize: tuple[int, int] | None = (24, 100)
               ) -> tuple[int, str, bytes]:
    """Run oca with stderr on a pseudo-terminal (stdout piped); return (exit, stdout,
    terminal bytes). *winsize* (rows, cols) or None for a terminal that reports 0x0."""
    master, slave = pty.openpty()
    if winsize:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *winsize, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("OCA_CONFIG", "OCA_FAULT")}
    proc = subprocess.Popen([str(OCA_BIN), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    term = b""
    deadline = time.monotonic() + 60
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"oca {args} did not finish; terminal so far: {term!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not data:
                break
            term += data
    finally:
        os.close(master)
        out, _ = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), term


# -- a populated store shared by the tests that must leave it unchanged --------------

@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict:
    """A three-tier store holding a.mp4 (hdd), b.ts (ssd), c.m4s (flash), the sources the
    bad-input cases use, and the store's snapshot taken before any of them ran."""
    root = tmp_path_factory.mktemp("shop")
    app = make_appliance(root)
    src = root / "src"
    src.mkdir()
    fill(app, [("a.mp4", make_file(src / "a.bin", 10 * KIB, seed=1), "hdd"),
               ("b.ts", make_file(src / "b.bin", 20 * KIB, seed=2), "ssd"),
               ("c.m4s", make_file(src / "c.bin", 30 * KIB, seed=3), "flash")])
    make_file(src / "new.bin", 5 * KIB, seed=4)
    (src / "a-folder").mkdir()
    with open(src / "huge.bin", "wb") as f:  # sparse: more than ssd0's 64M, costs nothing
        f.truncate(65 * MIB)
    return {"app": app, "root": root, "src": src, "before": snapshot(app)}


LONG_ID = "x" * 129
BAD_IDS = [
    pytest.param("../etc/passwd", "'../etc/passwd'", id="dotdot"),
    pytest.param("a/b", "'a/b'", id="slash"),
    pytest.param("", "must not be empty", id="empty"),
    pytest.param(LONG_ID, "129 characters", id="129-chars"),
    pytest.param(".hidden", "'.hidden'", id="dot-first"),
]


def check_unchanged(shop: dict, res: subprocess.CompletedProcess, code: int,
                    *needles: str) -> None:
    one_error(res, code, *needles)
    assert snapshot(shop["app"]) == shop["before"]


# Every bad id against each command that changes the store; one against the readers.
ID_CASES = [pytest.param(cmd, *p.values, id=f"{cmd}-{p.id}")
            for cmd in ("put", "rm", "mv") for p in BAD_IDS]
ID_CASES += [pytest.param(cmd, *BAD_IDS[0].values, id=f"{cmd}-dotdot")
             for cmd in ("stat", "verify")]


@pytest.mark.parametrize("command, object_id, names", ID_CASES)
def test_invalid_id_is_a_usage_error_and_changes_nothing(shop, command, object_id, names):
    extra = {"put": [str(shop["src"] / "new.bin")], "mv": ["--tier", "ssd"]}.get(command, [])
    res = shop["app"].oca(command, object_id, *extra)
    check_unchanged(shop, res, 2, "invalid object id", names)


# Each case: (args, with {src} for the sources folder; exit code; what the line names).
BAD_INPUTS = [
    pytest.param(["put", "new.bin", "{src}/missing.bin"], 1,
                 ["{src}/missing.bin", "No such file"], id="put-missing-source"),
    pytest.param(["put", "new.bin", "{src}/no-such-folder/new.bin"], 1,
                 ["{src}/no-such-folder/new.bin", "No such file"],
                 id="put-source-in-missing-folder"),
    # Root reads a mode-000 file anyway, so "unreadable" is a folder given as the source.
    pytest.param(["put", "new.bin", "{src}/a-folder"], 1,
                 ["{src}/a-folder", "not a regular file"], id="put-source-is-a-folder"),
    # A regular file whose read(2) fails with EIO: exercises the copy's error path.
    pytest.param(["put", "new.bin", "/proc/self/mem"], 1,
                 ["/proc/self/mem", "Input/output error"], id="put-source-read-error"),
    pytest.param(["put", "new.bin", "{src}/huge.bin", "--tier", "ssd"], 1,
                 ["tier ssd is full", "'new.bin'"], id="put-tier-full"),
    pytest.param(["put", "a.mp4", "{src}/new.bin"], 1,
                 ["'a.mp4' already stored", "--replace"], id="put-existing-id"),
    pytest.param(["put", "new.bin", "{src}/new.bin", "--xxh3", "0" * 32], 1,
                 ["{src}/new.bin", "does not match", "0" * 32], id="put-xxh3-wrong"),
    pytest.param(["put", "new.bin", "{src}/new.bin", "--xxh3", "XYZ"], 2,
                 ["invalid digest 'XYZ'"], id="put-xxh3-malformed"),
    pytest.param(["put", "new.bin", "{src}/new.bin", "--type", "video"], 2,
                 ["invalid content type 'video'"], id="put-bad-type"),
    pytest.param(["put", "new.bin", "{src}/new.bin", "--tier", "nvme"], 2,
                 ["--tier", "'nvme'"], id="put-unknown-tier"),
    pytest.param(["ls", "--tier", "nvme"], 2, ["--tier", "'nvme'"], id="ls-unknown-tier"),
    pytest.param(["mv", "a.mp4", "--tier", "nvme"], 2, ["--tier", "'nvme'"],
                 id="mv-unknown-tier"),
    pytest.param(["mv", "a.mp4", "--tier", "hdd"], 1, ["'a.mp4'", "already on tier hdd"],
                 id="mv-same-tier"),
    pytest.param(["mv", "nope.mp4", "--tier", "ssd"], 1, ["'nope.mp4'"], id="mv-unknown-id"),
    pytest.param(["rm", "nope.mp4"], 1, ["no object 'nope.mp4'"], id="rm-unknown-id"),
    pytest.param(["stat", "nope.mp4"], 1, ["no object 'nope.mp4'"], id="stat-unknown-id"),
    pytest.param(["verify", "nope.mp4"], 1, ["no object 'nope.mp4'"], id="verify-unknown-id"),
    pytest.param(["disk", "clear", "{src}"], 2, ["{src} is not a configured disk"],
                 id="disk-clear-unknown-disk"),
]


@pytest.mark.parametrize("args, code, needles", BAD_INPUTS)
def test_bad_input_fails_in_one_line_and_changes_nothing(shop, args, code, needles):
    src = str(shop["src"])
    res = shop["app"].oca(*[a.format(src=src) for a in args])
    check_unchanged(shop, res, code, *[n.format(src=src) for n in needles])


def _bad_configs(good: str, ssd0: str) -> dict[str, tuple[str, str]]:
    """name -> (config text, the key its error must name)."""
    return {
        "unknown-key": (good.replace("[store]\n", "[store]\nfoo = 1\n"), "store.foo"),
        "unknown-top-level-key": ("colour = 'red'\n" + good, "colour"),
        "bad-tier": (good.replace('tier = "ssd"', 'tier = "nvme"'), "store.disk[0].tier"),
        "bad-size": (good.replace('capacity = "64M"', 'capacity = "lots"'),
                     "store.disk[0].capacity"),
        "zero-size": (good.replace('capacity = "64M"', "capacity = 0"),
                      "store.disk[0].capacity"),
        "wrong-type": (good.replace('capacity = "64M"', "capacity = true"),
                       "store.disk[0].capacity"),
        "duplicate-disk": (good + f'[[store.disk]]\npath = "{ssd0}"\ntier = "hdd"\n',
                           "store.disk[4].path"),
        "no-index": (re.sub(r"index = .*\n", "", good), "store.index"),
        "not-toml": (good.replace("[store]", "[store", 1), "line"),
    }


@pytest.mark.parametrize("case", list(_bad_configs("", "")))
def test_bad_config_names_file_and_key_and_changes_nothing(shop, case):
    app = shop["app"]
    text, key = _bad_configs(app.config_path.read_text(), disk_of(app, "ssd"))[case]
    bad = shop["root"] / f"bad-{case}.toml"
    bad.write_text(text)
    res = run_oca("put", "new.bin", str(shop["src"] / "new.bin"), "--tier", "ssd", config=bad)
    check_unchanged(shop, res, 1, str(bad), key)


def test_missing_config_file_is_named(shop, tmp_path):
    res = run_oca("ls", config=tmp_path / "absent.toml")
    one_error(res, 1, str(tmp_path / "absent.toml"), "not found")


@pytest.mark.parametrize("args", [
    pytest.param(["frobnicate"], id="unknown-command"),
    pytest.param(["put"], id="put-no-args"),
    pytest.param(["put", "x.bin"], id="put-no-file"),
    pytest.param(["mv", "a.mp4"], id="mv-no-tier"),
    pytest.param(["rm"], id="rm-no-id"),
    pytest.param(["disk"], id="disk-no-subcommand"),
    pytest.param(["ls", "--bogus"], id="unknown-option"),
])
def test_usage_errors_exit_2(shop, args):
    res = shop["app"].oca(*args)
    line = one_error(res, 2)
    assert f"see `oca {args[0]}" in line or "see `oca --help`" in line


def test_no_command_prints_help_and_exits_2(shop):
    res = shop["app"].oca()
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.startswith("usage: oca")
    assert snapshot(shop["app"]) == shop["before"]


# -- happy paths ---------------------------------------------------------------------

def test_init_is_idempotent(tmp_path):
    app = make_appliance(tmp_path, init=False)
    index = app.config().store.index
    expected = "".join(f"{d}: tier {tier}, ok\n" for tier, disks in app.disks.items()
                       for d in disks) + f"index {index}: 0 objects\n"
    assert ok(app.oca("init")).stdout == expected
    markers = {d: json.loads((d / ".oca-disk").read_text())
               for disks in app.disks.values() for d in disks}
    assert len({m["disk_id"] for m in markers.values()}) == 4
    tiers = {d: tier for tier, disks in app.disks.items() for d in disks}
    for d, m in markers.items():
        assert sorted(p.name for p in d.iterdir()) == [".oca-disk", "objects", "quarantine", "tmp"]
        assert m["tier"] == tiers[d]
    before = index_rows(app)

    assert ok(app.oca("init")).stdout == expected
    for d, m in markers.items():
        assert json.loads((d / ".oca-disk").read_text())["disk_id"] == m["disk_id"]
    assert index_rows(app) == before
    with app.open() as store:
        assert {p: d.record.disk_id for p, d in store.disks.items()} == {
            str(d): m["disk_id"] for d, m in markers.items()}


def test_init_refuses_a_missing_disk_folder(tmp_path):
    app = make_appliance(tmp_path, init=False)
    app.disks["flash"][0].rmdir()
    one_error(app.oca("init"), 1, str(app.disks["flash"][0]), "does not exist")
    assert not app.config().store.index.exists()


def test_put_default_tier_is_the_slowest_configured(tmp_path):
    app = make_appliance(tmp_path / "three")
    data = make_file(tmp_path / "a.bin", 10 * KIB).read_bytes()
    res = ok(app.oca("put", "a.mp4", str(tmp_path / "a.bin")))
    assert res.stdout == f"a.mp4: 10K on hdd ({disk_of(app, 'hdd')}) xxh3 {xxh3(data)}\n"
    # The next one goes to the emptier hdd disk.
    res = ok(app.oca("put", "b.mp4", str(tmp_path / "a.bin")))
    assert res.stdout == f"b.mp4: 10K on hdd ({disk_of(app, 'hdd', 1)}) xxh3 {xxh3(data)}\n"

    two = make_appliance(tmp_path / "two", {"ssd": ["16M"], "flash": ["16M"]})
    res = ok(two.oca("put", "a.mp4", str(tmp_path / "a.bin")))
    assert res.stdout == f"a.mp4: 10K on flash ({disk_of(two, 'flash')}) xxh3 {xxh3(data)}\n"


def test_put_tier_type_and_xxh3(appliance, tmp_path):
    data = make_file(tmp_path / "seg.bin", 3 * KIB + 512, seed=7).read_bytes()
    t0 = time.time()
    res = ok(appliance.oca("put", "seg1.m4s", str(tmp_path / "seg.bin"), "--tier", "ssd",
                           "--xxh3", xxh3(data)))
    assert res.stdout == (f"seg1.m4s: 3.5K on ssd ({disk_of(appliance, 'ssd')}) "
                          f"xxh3 {xxh3(data)}\n")
    ok(appliance.oca("put", "seg2", str(tmp_path / "seg.bin"), "--tier", "flash",
                     "--type", "video/mp4; codecs=\"avc1.64001f\""))
    ok(appliance.oca("put", "seg3", str(tmp_path / "seg.bin")))
    records = json.loads(ok(appliance.oca("ls", "--json")).stdout)
    assert [(r["id"], r["tier"], r["disk"], r["content_type"], r["size"], r["xxh3"])
            for r in records] == [
        ("seg1.m4s", "ssd", disk_of(appliance, "ssd"), "video/iso.segment", len(data),
         xxh3(data)),
        ("seg2", "flash", disk_of(appliance, "flash"), 'video/mp4; codecs="avc1.64001f"',
         len(data), xxh3(data)),
        ("seg3", "hdd", disk_of(appliance, "hdd"), "application/octet-stream", len(data),
         xxh3(data)),
    ]
    assert all(t0 - 1 <= r["mtime"] <= time.time() + 1 for r in records)
    for r in records:
        assert stored_path(appliance, r["id"]).read_bytes() == data


def test_put_replace(appliance, tmp_path):
    old = make_file(tmp_path / "old.bin", 2 * KIB, seed=1).read_bytes()
    new = make_file(tmp_path / "new.bin", 4 * KIB, seed=2).read_bytes()
    ok(appliance.oca("put", "t.mp4", str(tmp_path / "old.bin"), "--tier", "flash"))
    old_path = stored_path(appliance, "t.mp4")
    res = ok(appliance.oca("put", "t.mp4", str(tmp_path / "new.bin"), "--replace"))
    # Without --tier a replace keeps the object on its tier.
    assert res.stdout == f"t.mp4: 4K on flash ({disk_of(appliance, 'flash')}) xxh3 {xxh3(new)}\n"
    assert not old_path.exists()
    assert stored_path(appliance, "t.mp4").read_bytes() == new
    assert xxh3(old) not in ok(appliance.oca("ls")).stdout
    objects = [p for disks in appliance.disks.values() for d in disks
               for p in (d / "objects").rglob("*") if p.is_file()]
    assert objects == [stored_path(appliance, "t.mp4")]


@pytest.fixture
def three(appliance, tmp_path) -> tuple[Appliance, dict[str, bytes]]:
    """The appliance holding a.mp4 (hdd, 10K), b.ts (ssd, 20K), c.m4s (flash, 30K)."""
    sizes = {"a.mp4": ("hdd", 10), "b.ts": ("ssd", 20), "c.m4s": ("flash", 30)}
    sources = {oid: make_file(tmp_path / f"{oid}.src", kib * KIB, seed=i)
               for i, (oid, (_, kib)) in enumerate(sizes.items())}
    fill(appliance, [(oid, sources[oid], tier) for oid, (tier, _) in sizes.items()])
    return appliance, {oid: src.read_bytes() for oid, src in sources.items()}


def test_ls_text_and_json(three):
    app, data = three
    types = {"a.mp4": "video/mp4", "b.ts": "video/mp2t", "c.m4s": "video/iso.segment"}
    tiers = {"a.mp4": "hdd", "b.ts": "ssd", "c.m4s": "flash"}
    assert ok(app.oca("ls")).stdout == "".join(
        f"{oid}\t{tiers[oid]}\t{len(data[oid])}\t{xxh3(data[oid])}\t{types[oid]}\n"
        for oid in ("a.mp4", "b.ts", "c.m4s"))
    records = json.loads(ok(app.oca("ls", "--json")).stdout)
    mtimes = {r["id"]: r["mtime"] for r in records}
    assert all(isinstance(t, float) for t in mtimes.values())
    assert records == [
        {"id": oid, "size": len(data[oid]), "xxh3": xxh3(data[oid]),
         "disk": disk_of(app, tiers[oid]), "tier": tiers[oid], "content_type": types[oid],
         "mtime": mtimes[oid], "hits": 0, "bytes_served": 0, "last_hit": None}
        for oid in ("a.mp4", "b.ts", "c.m4s")]
    flash = json.loads(ok(app.oca("ls", "--tier", "flash", "--json")).stdout)
    assert flash == [r for r in records if r["tier"] == "flash"]
    assert ok(app.oca("ls", "--tier", "ssd")).stdout.split("\t")[0] == "b.ts"
    empty = make_appliance(app.root / "empty", {"hdd": ["16M"]})
    assert ok(empty.oca("ls")).stdout == ""
    assert ok(empty.oca("ls", "--json")).stdout == "[]\n"


def test_stat_text_and_json(three):
    app, data = three
    info = json.loads(ok(app.oca("stat", "b.ts", "--json")).stdout)
    ssd0 = disk_of(app, "ssd")
    path = Path(info.pop("path"))
    assert info == {"id": "b.ts", "size": 20 * KIB, "xxh3": xxh3(data["b.ts"]), "disk": ssd0,
                    "tier": "ssd", "content_type": "video/mp2t", "mtime": info["mtime"],
                    "hits": 0, "bytes_served": 0, "last_hit": None, "disk_state": "ok",
                    "servable": True}
    assert path.is_relative_to(Path(ssd0) / "objects")
    assert path.name == f"b.ts.{xxh3(data['b.ts'])}"
    assert path.read_bytes() == data["b.ts"]
    text = ok(app.oca("stat", "b.ts")).stdout
    assert text == (f"id: b.ts\nsize: {20 * KIB}\nxxh3: {xxh3(data['b.ts'])}\ntier: ssd\n"
                    f"disk: {ssd0}\npath: {path}\ncontent_type: video/mp2t\n"
                    f"mtime: {info['mtime']}\nhits: 0\nbytes_served: 0\nlast_hit: None\n"
                    "disk_state: ok\nservable: True\n")


def test_mv_promotes_and_demotes(three):
    app, data = three
    old = stored_path(app, "a.mp4")
    res = ok(app.oca("mv", "a.mp4", "--tier", "ssd"))
    assert res.stdout == f"a.mp4: hdd -> ssd ({disk_of(app, 'ssd')})\n"
    assert not old.exists()
    new = stored_path(app, "a.mp4")
    assert new.is_relative_to(disk_of(app, "ssd")) and new.read_bytes() == data["a.mp4"]
    assert [r["id"] for r in json.loads(ok(app.oca("ls", "--tier", "ssd", "--json")).stdout)
            ] == ["a.mp4", "b.ts"]
    assert ok(app.oca("ls", "--tier", "hdd")).stdout == ""
    res = ok(app.oca("mv", "c.m4s", "--tier", "hdd"))
    assert res.stdout == f"c.m4s: flash -> hdd ({disk_of(app, 'hdd')})\n"
    info = json.loads(ok(app.oca("stat", "c.m4s", "--json")).stdout)
    assert (info["tier"], info["xxh3"]) == ("hdd", xxh3(data["c.m4s"]))
    assert Path(info["path"]).read_bytes() == data["c.m4s"]


def test_rm(three):
    app, _ = three
    path = stored_path(app, "c.m4s")
    res = ok(app.oca("rm", "c.m4s"))
    assert res.stdout == f"c.m4s: removed from flash ({disk_of(app, 'flash')})\n"
    assert not path.exists()
    assert [line.split("\t")[0] for line in ok(app.oca("ls")).stdout.splitlines()] == [
        "a.mp4", "b.ts"]
    one_error(app.oca("stat", "c.m4s"), 1, "no object 'c.m4s'")


def _flip_byte(path: Path, offset: int = 100) -> bytes:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(data)
    return bytes(data)


def test_verify_clean_then_corrupt_and_missing(three):
    app, data = three
    res = ok(app.oca("verify"))
    assert res.stdout == "checked 3 objects (60K): 3 ok, 0 corrupt, 0 missing, 0 skipped\n"

    b_path = stored_path(app, "b.ts")
    flipped = _flip_byte(b_path)
    c_path = stored_path(app, "c.m4s")
    c_path.unlink()
    res = app.oca("verify", "--json")
    assert res.returncode == 1, res.stderr
    assert res.stderr == ""
    report = json.loads(res.stdout)
    quarantined = Path(report["corrupt"][0]["quarantined_to"])
    assert report == {
        "checked": 3, "bytes": 30 * KIB, "ok": 1,
        "corrupt": [{"id": "b.ts", "disk": disk_of(app, "ssd"), "expected": xxh3(data["b.ts"]),
                     "actual": xxh3(flipped), "quarantined_to": str(quarantined)}],
        "missing": [{"id": "c.m4s", "disk": disk_of(app, "flash"), "path": str(c_path)}],
        "skipped": [], "failed_disks": {},
    }
    assert quarantined.parent == Path(disk_of(app, "ssd")) / "quarantine"
    assert quarantined.name.startswith(f"b.ts.{xxh3(data['b.ts'])}.")
    assert quarantined.read_bytes() == flipped
    assert not b_path.exists()
    assert ok(app.oca("ls")).stdout.splitlines() == [
        f"a.mp4\thdd\t{10 * KIB}\t{xxh3(data['a.mp4'])}\tvideo/mp4"]
    one_error(app.oca("stat", "b.ts"), 1, "no object 'b.ts'")

    a_path = stored_path(app, "a.mp4")
    bad_a = _flip_byte(a_path, 0)
    res = app.oca("verify", "a.mp4")
    assert res.returncode == 1 and res.stderr == ""
    hdd0 = disk_of(app, "hdd")
    first, second = res.stdout.splitlines()
    assert first == "checked 1 object (10K): 0 ok, 1 corrupt, 0 missing, 0 skipped"
    m = re.fullmatch(rf"corrupt: a\.mp4 on {re.escape(hdd0)}: expected {xxh3(data['a.mp4'])}, "
                     rf"got {xxh3(bad_a)}; quarantined to ({re.escape(hdd0)}/quarantine/\S+)",
                     second)
    assert m and Path(m.group(1)).read_bytes() == bad_a
    assert ok(app.oca("verify")).stdout == (
        "checked 0 objects (0): 0 ok, 0 corrupt, 0 missing, 0 skipped\n")
    assert json.loads(ok(app.oca("status", "--json")).stdout)["quarantined"] == 3


def test_recover_json(three, tmp_path):
    app, data = three
    ssd0, hdd0, hdd1 = disk_of(app, "ssd"), disk_of(app, "hdd"), disk_of(app, "hdd", 1)
    leftover = Path(ssd0, "tmp", "x.mp4.4242.abcd1234.tmp")
    leftover.write_bytes(b"half an ingest")
    stray = Path(object_path(hdd1, "b.ts", xxh3(data["b.ts"])))  # e.g. a move cut short
    stray.parent.mkdir(parents=True)
    stray.write_bytes(data["b.ts"])
    stored_path(app, "c.m4s").unlink()
    orphan_bytes = make_file(tmp_path / "z.bin", 3 * KIB, seed=9).read_bytes()
    orphan = Path(object_path(hdd0, "z.mp4", xxh3(orphan_bytes)))  # renamed, not indexed
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(orphan_bytes)
    foreign = Path(hdd0, "objects", "00", "00", "notes.txt")
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_text("not an object")

    report = json.loads(ok(app.oca("recover", "--json")).stdout)
    assert report == {
        "reservations_cleared": 0, "temp_removed": [str(leftover)], "partials_kept": [],
        "adopted": ["z.mp4"],
        "strays_removed": [str(stray)], "dropped_missing": ["c.m4s"], "quarantined": [],
        "foreign": [str(foreign)], "pending": [], "skipped_disks": {},
    }
    assert not leftover.exists() and not stray.exists() and foreign.exists()
    listed = json.loads(ok(app.oca("ls", "--json")).stdout)
    assert [(r["id"], r["tier"], r["disk"]) for r in listed] == [
        ("a.mp4", "hdd", hdd0), ("b.ts", "ssd", ssd0), ("z.mp4", "hdd", hdd0)]
    assert json.loads(ok(app.oca("recover", "--json")).stdout) == {
        "reservations_cleared": 0, "temp_removed": [], "partials_kept": [], "adopted": [],
        "strays_removed": [],
        "dropped_missing": [], "quarantined": [], "foreign": [str(foreign)], "pending": [],
        "skipped_disks": {}}
    assert ok(app.oca("recover")).stdout == (
        "temp files removed 0, adopted 0, strays removed 0, dropped (missing) 0, "
        f"quarantined 0\nleft alone (not an object file): {foreign}\n")


IO_KEYS = {"read_bytes", "write_bytes", "read_count", "write_count", "read_time_ms",
           "write_time_ms"}


def test_status_json(three):
    app, _ = three
    st = json.loads(ok(app.oca("status", "--json")).stdout)
    server = st.pop("server")
    assert (server["running"], server["fastpath"]) == (False, "cython")
    assert "127.0.0.1:8081" in server["error"]
    assert (st["index"], st["objects"], st["quarantined"], st["unconfigured_disks"]) == (
        str(app.config().store.index), 3, 0, {})
    assert st["tiers"] == {
        "ssd": {"capacity": 64 * MIB, "used": 20 * KIB, "objects": 1, "disks": 1, "healthy": 1},
        "flash": {"capacity": 128 * MIB, "used": 30 * KIB, "objects": 1, "disks": 1,
                  "healthy": 1},
        "hdd": {"capacity": 512 * MIB, "used": 10 * KIB, "objects": 1, "disks": 2, "healthy": 2},
    }
    expected = [(disk_of(app, "ssd"), "ssd", 64, 20 * KIB, 1),
                (disk_of(app, "flash"), "flash", 128, 30 * KIB, 1),
                (disk_of(app, "hdd"), "hdd", 256, 10 * KIB, 1),
                (disk_of(app, "hdd", 1), "hdd", 256, 0, 0)]
    assert len(st["disks"]) == 4
    for d, (path, tier, cap_mib, used, objects) in zip(st["disks"], expected, strict=True):
        io = d.pop("io")
        assert io is None or set(io) == IO_KEYS and all(v >= 0 for v in io.values())
        assert d["fs_size"] > 0 and 0 < d["fs_free"] <= d["fs_size"]
        assert d == {"path": path, "tier": tier, "state": "ok", "reason": None,
                     "capacity": cap_mib * MIB, "used": used, "reserved": 0,
                     "objects": objects, "fs_size": d["fs_size"], "fs_free": d["fs_free"]}


def test_status_text(three):
    app, _ = three
    lines = ok(app.oca("status")).stdout.splitlines()
    assert lines[0] == "server: not running (fastpath available: cython)"
    lines = lines[1:]
    assert lines[:7] == [
        f"index {app.config().store.index}: 3 objects, 0 quarantined",
        "fill: none yet",
        "TIER    DISKS HEALTHY  OBJECTS     USED CAPACITY",
        "ssd         1       1        1      20K      64M",
        "flash       1       1        1      30K     128M",
        "hdd         2       2        1      10K     512M",
        "",
    ]
    assert lines[7].split() == ["DISK", "TIER", "STATE", "OBJECTS", "USED", "CAPACITY", "FS",
                                "FREE", "READ", "WRITTEN"]
    rows = [line.split() for line in lines[8:]]
    assert [r[:6] for r in rows] == [
        [disk_of(app, "ssd"), "ssd", "ok", "1", "20K", "64M"],
        [disk_of(app, "flash"), "flash", "ok", "1", "30K", "128M"],
        [disk_of(app, "hdd"), "hdd", "ok", "1", "10K", "256M"],
        [disk_of(app, "hdd", 1), "hdd", "ok", "0", "0", "256M"],
    ]
    assert all(len(r) == 9 for r in rows)


def test_disk_clear(three):
    app, _ = three
    flash0 = disk_of(app, "flash")
    with app.open() as store:
        store.mark_failed(store.disks[flash0], "Input/output error while testing")
    st = json.loads(ok(app.oca("status", "--json")).stdout)
    assert [(d["state"], d["reason"], d["io"]) for d in st["disks"] if d["path"] == flash0] == [
        ("failed", "Input/output error while testing", None)]
    assert st["tiers"]["flash"]["healthy"] == 0
    text = ok(app.oca("status")).stdout
    assert "  failed: Input/output error while testing\n" in text
    assert json.loads(ok(app.oca("stat", "c.m4s", "--json")).stdout)["servable"] is False

    assert ok(app.oca("disk", "clear", flash0)).stdout == f"{flash0}: ok\n"
    assert json.loads(ok(app.oca("stat", "c.m4s", "--json")).stdout)["servable"] is True

    # A disk that is still bad after the clear: exit 1, and status says why.
    (Path(flash0) / ".oca-disk").unlink()
    res = app.oca("disk", "clear", flash0)
    assert res.returncode == 1 and res.stderr == ""
    assert res.stdout == f"{flash0}: failed (marker .oca-disk missing: filesystem not mounted?)\n"


# -- config discovery ----------------------------------------------------------------

@pytest.fixture
def three_configs(tmp_path) -> dict[str, Appliance]:
    """Three one-disk appliances: one per way of finding a config."""
    return {name: make_appliance(tmp_path / name, {"hdd": ["16M"]})
            for name in ("cwd", "env", "flag")}


def _index_used(res: subprocess.CompletedProcess) -> str:
    return json.loads(ok(res).stdout)["index"]


def _idx(app: Appliance) -> str:
    return str(app.config().store.index)


def test_config_from_cwd(three_configs):
    c = three_configs
    assert _index_used(run_oca("status", "--json", cwd=c["cwd"].root)) == _idx(c["cwd"])
    # ./oca.toml comes before $OCA_CONFIG
    res = run_oca("status", "--json", cwd=c["cwd"].root,
                  env={"OCA_CONFIG": str(c["env"].config_path)})
    assert _index_used(res) == _idx(c["cwd"])


def test_config_from_env(three_configs, tmp_path):
    c = three_configs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_oca("status", "--json", cwd=elsewhere, env={"OCA_CONFIG": str(c["env"].config_path)})
    assert _index_used(res) == _idx(c["env"])
    res = run_oca("ls", cwd=elsewhere, env={"OCA_CONFIG": str(tmp_path / "gone.toml")})
    one_error(res, 1, str(tmp_path / "gone.toml"), "not found")


def test_config_flag_wins(three_configs):
    c = three_configs
    env = {"OCA_CONFIG": str(c["env"].config_path)}
    res = run_oca("status", "--json", config=c["flag"].config_path, cwd=c["cwd"].root, env=env)
    assert _index_used(res) == _idx(c["flag"])
    res = run_oca("status", "--json", "-c", str(c["flag"].config_path), cwd=c["cwd"].root,
                  env=env)
    assert _index_used(res) == _idx(c["flag"])


def test_no_config_found(tmp_path):
    res = run_oca("ls", cwd=tmp_path)
    one_error(res, 1, "oca.toml", str(tmp_path), "$OCA_CONFIG", "-c FILE")


# -- progress: a bar on a terminal, nothing when piped --------------------------------

@pytest.fixture
def megabytes(appliance, tmp_path) -> Appliance:
    """The appliance holding 3 objects of 1.5 MB, one per tier."""
    fill(appliance, [(f"m{i}.mp4", make_file(tmp_path / f"m{i}", 3 * MIB // 2, seed=i), tier)
                     for i, tier in enumerate(("ssd", "flash", "hdd"))])
    return appliance


def test_piped_output_has_no_progress_bar(megabytes, tmp_path):
    app = megabytes
    make_file(tmp_path / "big", 4 * MIB, seed=5)
    results = [app.oca("put", "big.mp4", str(tmp_path / "big")),
               app.oca("mv", "big.mp4", "--tier", "flash"),
               app.oca("verify"), app.oca("verify", "--json"), app.oca("recover")]
    for res in results:
        ok(res)
        assert "\r" not in res.stdout and "\x1b" not in res.stdout
    assert results[2].stdout == (
        "checked 4 objects (8.5M): 4 ok, 0 corrupt, 0 missing, 0 skipped\n")


@pytest.mark.parametrize("winsize", [(24, 100), None], ids=["sized", "0x0"])
def test_terminal_shows_progress_bar(megabytes, winsize):
    code, out, term = run_on_pty(["-c", str(megabytes.config_path), "verify"],
                                 cwd=megabytes.root, winsize=winsize)
    assert code == 0, term
    assert out == "checked 3 objects (4.5M): 3 ok, 0 corrupt, 0 missing, 0 skipped\n"
    # tqdm redraws with a carriage return; "%|" is its bar, not a line ending's \r\n.
    assert b"\rverify:" in term and b"%|" in term, term


def test_terminal_json_output_has_no_bar(megabytes):
    code, out, term = run_on_pty(["-c", str(megabytes.config_path), "verify", "--json"],
                                 cwd=megabytes.root)
    assert code == 0, term
    assert json.loads(out)["ok"] == 3
    assert term == b""


def test_terminal_error_is_still_one_line(megabytes):
    code, out, term = run_on_pty(["-c", str(megabytes.config_path), "rm", "nope.mp4"],
                                 cwd=megabytes.root)
    assert (code, out) == (1, "")
    assert term.decode().splitlines() == ["oca: error: no object 'nope.mp4' in the store"]
