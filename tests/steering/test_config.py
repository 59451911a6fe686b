"""[steering] in oca.toml: the DESIGN.md keys and ours, and one-line errors naming the key
for every bad value (no route is touched: this is only the config)."""

from __future__ import annotations

import pytest

from oca.config import load_config
from oca.errors import ConfigError
from oca.steering.policy import settings_from
from tests.conftest import write_config

GOOD = '''
[steering]
interval = "1s"
hold_down = "30s"
prefixes = ["203.0.113.0/24", "2001:db8::/32"]
table = 100
origin_url = "http://203.0.113.10/"
preference = ["netflix-backbone", "isp-backbone", "backbone-oca"]
window = 8
consecutive = 4
margin_rtt = 0.25

[[steering.path]]
mode = "isp-backbone"
gateway = "10.1.0.1"
device = "up-isp"
source = "10.1.0.2"
probe = "http://203.0.113.10/health"

[[steering.path]]
mode = "netflix-backbone"
gateway = "10.2.0.1"
device = "up-nfx"
probe = ["http://203.0.113.10/health", "http://[2001:db8::10]/health"]
'''


def config(tmp_path, text: str):
    return load_config(write_config(tmp_path, [(tmp_path / "d", "hdd", None)], extra=text))


def test_the_keys_are_read(tmp_path):
    c = config(tmp_path, GOOD).steering
    assert c.enabled and (c.interval, c.hold_down, c.table, c.window, c.consecutive) == \
        (1.0, 30.0, 100, 8, 4)
    assert c.prefixes == ("203.0.113.0/24", "2001:db8::/32")
    assert c.origin_url == "http://203.0.113.10"
    assert [(p.mode, p.gateway, p.device, p.source, p.probe) for p in c.paths] == [
        ("isp-backbone", "10.1.0.1", "up-isp", "10.1.0.2", ("http://203.0.113.10/health",)),
        ("netflix-backbone", "10.2.0.1", "up-nfx", None,
         ("http://203.0.113.10/health", "http://[2001:db8::10]/health"))]
    s = settings_from(c)
    assert (s.window, s.consecutive, s.margin_rtt, s.hold_down) == (8, 4, 0.25, 30.0)
    assert not config(tmp_path, "").steering.enabled


@pytest.mark.parametrize(("old", "new", "key"), [
    ('mode = "isp-backbone"', 'mode = "isp-direct"', "steering.path[0].mode"),
    ('mode = "isp-backbone"', 'mode = "wormhole"', "steering.path[0].mode"),
    ('mode = "netflix-backbone"', 'mode = "isp-backbone"', "steering.path[1].mode"),
    ('probe = "http://203.0.113.10/health"\n', "", "steering.path[0].probe"),
    ('probe = "http://203.0.113.10/health"', 'probe = "http://198.51.100.1/health"',
     "steering.path[0].probe"),
    ('probe = "http://203.0.113.10/health"', 'probe = "http://origin.example/health"',
     "steering.path[0].probe"),
    ('gateway = "10.1.0.1"', 'gateway = "router1"', "steering.path[0].gateway"),
    ('device = "up-isp"', 'device = "a/b"', "steering.path[0].device"),
    ("table = 100", "table = 254", "steering.table"),
    ("table = 100", "table = 0", "steering.table"),
    ('prefixes = ["203.0.113.0/24", "2001:db8::/32"]', 'prefixes = ["203.0.113.5/24"]',
     "steering.prefixes"),
    ('prefixes = ["203.0.113.0/24", "2001:db8::/32"]', "prefixes = []", "steering.prefixes"),
    ('preference = ["netflix-backbone", "isp-backbone", "backbone-oca"]',
     'preference = ["isp-direct"]', "steering.preference"),
    ('interval = "1s"', 'interval = "soon"', "steering.interval"),
    ("window = 8", "window = 8\ndown_after = 4", "steering.down_after"),
    ("margin_rtt = 0.25", "margin_rtt = 2", "steering.margin_rtt"),
    ("window = 8", "window = 8\nspeed = 3", "steering.speed"),
])
def test_bad_steering_config_names_the_key(tmp_path, old, new, key):
    assert old in GOOD
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")
                       .replace("]", r"\]")) as e:
        config(tmp_path, GOOD.replace(old, new, 1))
    assert "\n" not in str(e.value)
