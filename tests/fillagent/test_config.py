"""[fill] and [auth] fill_key_file in oca.toml, rates, and the fill window's bounds."""

from __future__ import annotations

import time

import pytest

from oca.config import load_config, parse_window
from oca.errors import ConfigError
from oca.fill.role import window_bounds
from oca.units import format_rate, parse_rate
from tests.conftest import write_config


def config(tmp_path, fill: str):
    path = write_config(tmp_path, [(tmp_path / "d", "hdd", None)], extra=fill)
    return load_config(path)


def test_fill_keys_are_read(tmp_path):
    c = config(tmp_path, '[fill]\nmanifest_url = "m/a1.json"\nwindow = "22:30-06:00"\n'
                         'max_rate = "1.2G"\nparallel = 8\npoll_interval = "2m"\n'
                         '[auth]\nfill_key_file = "fill.key"\n')
    assert c.fill.manifest_url == str(tmp_path / "m" / "a1.json")
    assert c.fill.window == (22 * 60 + 30, 6 * 60)
    assert (c.fill.max_rate, c.fill.parallel, c.fill.poll_interval) == (1.2e9, 8, 120.0)
    assert c.auth.fill_key_file == tmp_path / "fill.key" and c.auth.key_file is None
    url = config(tmp_path, '[fill]\nmanifest_url = "http://planner.example/m/a1.json"\n')
    assert url.fill.manifest_url == "http://planner.example/m/a1.json"
    assert config(tmp_path, "").fill.manifest_url is None


@pytest.mark.parametrize(("fill", "key"), [
    ('window = "2-14"', "fill.window"),
    ('window = "02:00-02:00"', "fill.window"),
    ('window = "25:00-03:00"', "fill.window"),
    ('max_rate = "fast"', "fill.max_rate"),
    ("parallel = 0", "fill.parallel"),
    ('parallel = "4"', "fill.parallel"),
    ('manifest_url = ""', "fill.manifest_url"),
    ('poll_interval = "0s"', "fill.poll_interval"),
    ("speed = 1", "fill.speed"),
])
def test_bad_fill_keys_name_the_key(tmp_path, fill, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(tmp_path, f"[fill]\n{fill}\n")


def test_rates_are_bits_per_second_in_powers_of_1000():
    assert [parse_rate(x) for x in ("1.2G", "800M", "100k", "1.2Gbps", "10Mbit/s", 5)] == \
        [1.2e9, 8e8, 1e5, 1.2e9, 1e7, 5.0]
    assert format_rate(1.2e9) == "1.2Gbit/s" and format_rate(800) == "800bit/s"
    for bad in ("1.2GB", "-1M", "fast", True):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_window_bounds_open_now_or_next():
    assert parse_window("02:00-14:00") == (120, 840)
    at = time.mktime((2026, 12, 8, 10, 0, 0, 0, 0, -1))  # 10:00 local
    def local(day, h, m):
        return time.mktime((2026, 12, day, h, m, 0, 0, 0, -1))
    assert window_bounds(at, (120, 840)) == (local(8, 2, 0), local(8, 14, 0))  # open
    assert window_bounds(at, (720, 840)) == (local(8, 12, 0), local(8, 14, 0))  # later
    assert window_bounds(at, (60, 120)) == (local(9, 1, 0), local(9, 2, 0))  # tomorrow
    # Across midnight: at 23:00 the window opened at 22:00 and ends tomorrow 06:00; at
    # 03:00 it is the one that opened yesterday.
    assert window_bounds(local(8, 23, 0), (1320, 360)) == (local(8, 22, 0), local(9, 6, 0))
    assert window_bounds(local(8, 3, 0), (1320, 360)) == (local(7, 22, 0), local(8, 6, 0))
    assert window_bounds(at, None) == (at, None)
