"""`oca demo`: builds a three-tier appliance with video-like objects and shows it."""

from __future__ import annotations

import json

from oca.config import load_config
from oca.digest import digest_file
from oca.storage import Store
from tests.conftest import run_oca


def test_demo_builds_a_verified_three_tier_appliance(tmp_path):
    folder = tmp_path / "demo"
    r = run_oca("demo", "--dir", str(folder), "--size-mb", "24")
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
    again = run_oca("demo", "--dir", str(folder), "--size-mb", "24")
    assert again.returncode == 0, again.stderr
    listing = json.loads(run_oca("-c", str(folder / "oca.toml"), "ls", "--json").stdout)
    assert [(o["id"], o["xxh3"]) for o in listing] == sorted(
        (rec.id, rec.xxh3) for rec in records)
