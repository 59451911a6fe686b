"""oca.toml: typed parsing, path resolution, and errors that name the file and the key."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from oca.config import (
    Config,
    DiskConfig,
    ServerConfig,
    StoreConfig,
    find_config,
    load_config,
    parse_listen,
)
from oca.errors import ConfigError

STORE = """
[store]
index = "var/index.sqlite"

[[store.disk]]
path = "data/ssd0"
tier = "ssd"
"""


def write(tmp_path: Path, text: str, name: str = "oca.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


# -- a valid config -----------------------------------------------------------


def test_full_config_parses_into_typed_objects(tmp_path):
    cfg = write(tmp_path, """
[server]
listen = "[::1]:8080"
admin_listen = "127.0.0.1:9081"
workers = 4
access_log = "logs/access.jsonl"
name = "oca-isp-a-01"

[store]
index = "var/index.sqlite"

[[store.disk]]
path = "data/ssd0"
tier = "ssd"
capacity = "500G"

[[store.disk]]
path = "/srv/oca/hdd0"
tier = "hdd"
capacity = 1048576

[[store.disk]]
path = "data/flash0"
tier = "flash"
capacity = "1.5T"

[[store.disk]]
path = "data/hdd1"
tier = "hdd"
""")
    assert load_config(cfg) == Config(
        path=cfg,
        server=ServerConfig(
            listen=("::1", 8080),
            admin_listen=("127.0.0.1", 9081),
            workers=4,
            access_log=tmp_path / "logs" / "access.jsonl",
            name="oca-isp-a-01",
        ),
        store=StoreConfig(
            index=tmp_path / "var" / "index.sqlite",
            disks=(
                DiskConfig(tmp_path / "data" / "ssd0", "ssd", 500 << 30),
                DiskConfig(Path("/srv/oca/hdd0"), "hdd", 1 << 20),
                DiskConfig(tmp_path / "data" / "flash0", "flash", 3 << 39),
                DiskConfig(tmp_path / "data" / "hdd1", "hdd", None),
            ),
        ),
    )


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(tmp_path, monkeypatch):
    etc = tmp_path / "etc" / "oca"
    etc.mkdir(parents=True)
    cfg = write(etc, STORE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load_config(cfg)
    assert c.store.index == etc / "var" / "index.sqlite"
    assert c.store.disks[0].path == etc / "data" / "ssd0"
    # A relative config path is made absolute too.
    monkeypatch.chdir(etc)
    c = load_config("oca.toml")
    assert c.path == etc / "oca.toml"
    assert c.store.index == etc / "var" / "index.sqlite"


def test_server_section_is_optional_with_defaults(tmp_path):
    c = load_config(write(tmp_path, STORE))
    assert c.server.listen == ("127.0.0.1", 8080)
    assert c.server.admin_listen == ("127.0.0.1", 8081)
    assert c.server.workers == 0
    assert c.server.worker_count == (os.cpu_count() or 1)
    assert c.server.access_log is None
    assert c.server.name == socket.gethostname()


def test_disk_path_with_dotdot_is_normalised(tmp_path):
    c = load_config(write(tmp_path, STORE.replace("data/ssd0", "data/x/../ssd0")))
    assert c.store.disks[0].path == tmp_path / "data" / "ssd0"


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    (":80", ("0.0.0.0", 80)),
    ("localhost:65535", ("localhost", 65535)),
    ("[::1]:8080", ("::1", 8080)),
    ("[::]:443", ("::", 443)),
    ("[::ffff:10.0.0.1]:1", ("::ffff:10.0.0.1", 1)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("8080", "expected host:port, not '8080'"),
    ("localhost", "expected host:port, not 'localhost'"),
    ("::1:8080", "expected host:port, not '::1:8080'"),
    ("[::1]8080", "expected host:port, not '[::1]8080'"),
    ("host:http", "expected host:port, not 'host:http'"),
    ("host:123456", "expected host:port, not 'host:123456'"),
    ("host:0", "port 0 out of range 1-65535"),
    ("host:65536", "port 65536 out of range 1-65535"),
    ("my host:80", "expected host:port, not 'my host:80'"),
])
def test_parse_listen_rejects(text, why):
    with pytest.raises(ValueError) as e:
        parse_listen(text)
    assert str(e.value) == why


# -- errors name the file and the key ----------------------------------------


@pytest.mark.parametrize(("server", "message"), [
    ('bogus = 1', "server.bogus: unknown key"),
    ('workers = "2"', "server.workers: must be int, not str '2'"),
    ('workers = true', "server.workers: must be int, not bool True"),
    ('workers = 2.5', "server.workers: must be int, not float 2.5"),
    ('workers = 0', "server.workers: must be between 1 and 1024, not 0"),
    ('workers = 1025', "server.workers: must be between 1 and 1024, not 1025"),
    ('listen = 8080', "server.listen: must be string, not int 8080"),
    ('listen = "8080"', "server.listen: expected host:port, not '8080'"),
    ('admin_listen = "127.0.0.1:0"', "server.admin_listen: port 0 out of range 1-65535"),
    ('access_log = false', "server.access_log: must be string, not bool False"),
    ('name = "bad name"',
     "server.name: appliance name 'bad name' must match [A-Za-z0-9][A-Za-z0-9._-]{0,62}"),
])
def test_server_errors(tmp_path, server, message):
    cfg = write(tmp_path, f"[server]\n{server}\n{STORE}")
    assert error_of(cfg) == f"{cfg}: {message}"


def test_server_must_be_a_table(tmp_path):
    cfg = write(tmp_path, f"server = 5\n{STORE}")
    assert error_of(cfg) == f"{cfg}: server: must be a table, not int"


def test_unknown_top_level_key(tmp_path):
    cfg = write(tmp_path, f"colour = 'blue'\n{STORE}")
    assert error_of(cfg) == f"{cfg}: colour: unknown key"


def test_unknown_top_level_table(tmp_path):
    cfg = write(tmp_path, f"{STORE}\n[serve]\nlisten = ':80'\n")
    assert error_of(cfg) == f"{cfg}: serve: unknown key"


def test_unknown_key_in_store(tmp_path):
    cfg = write(tmp_path, STORE.replace("[store]", "[store]\nindx = 'x'"))
    assert error_of(cfg) == f"{cfg}: store.indx: unknown key"


def disk_cfg(tmp_path: Path, *disks: str, index: str = "var/index.sqlite") -> Path:
    text = f'[store]\nindex = "{index}"\n'
    for body in disks:
        text += f"\n[[store.disk]]\n{body}\n"
    return write(tmp_path, text)


@pytest.mark.parametrize(("disk", "message"), [
    ('path = "d0"\ntier = "ssd"\nsize = "1G"', "store.disk[1].size: unknown key"),
    ('path = "d0"\ntier = 3', "store.disk[1].tier: must be string, not int 3"),
    ('path = "d0"\ntier = "nvme"',
     "store.disk[1].tier: unknown tier 'nvme' (expected one of ssd, flash, hdd)"),
    ('path = "d0"\ntier = "SSD"',
     "store.disk[1].tier: unknown tier 'SSD' (expected one of ssd, flash, hdd)"),
    ('path = 7\ntier = "ssd"', "store.disk[1].path: must be string, not int 7"),
    ('tier = "ssd"', "store.disk[1].path: missing (required)"),
    ('path = ""\ntier = "ssd"', "store.disk[1].path: must not be empty"),
    ('path = "d0"', "store.disk[1].tier: missing (required)"),
    ('path = "d0"\ntier = "ssd"\ncapacity = "12X"',
     "store.disk[1].capacity: not a size: '12X' (expected e.g. 4096, 500M, 2T)"),
    ('path = "d0"\ntier = "ssd"\ncapacity = "-1G"',
     "store.disk[1].capacity: not a size: '-1G' (expected e.g. 4096, 500M, 2T)"),
    ('path = "d0"\ntier = "ssd"\ncapacity = true',
     "store.disk[1].capacity: must be string or int, not bool True"),
    ('path = "d0"\ntier = "ssd"\ncapacity = 1.5',
     "store.disk[1].capacity: must be string or int, not float 1.5"),
    ('path = "d0"\ntier = "ssd"\ncapacity = 0',
     "store.disk[1].capacity: must be greater than zero"),
    ('path = "d0"\ntier = "ssd"\ncapacity = "0G"',
     "store.disk[1].capacity: must be greater than zero"),
    ('path = "d0"\ntier = "ssd"\ncapacity = -5',
     "store.disk[1].capacity: size must not be negative: -5"),
])
def test_disk_errors_name_the_entry_and_key(tmp_path, disk, message):
    cfg = disk_cfg(tmp_path, 'path = "ok0"\ntier = "hdd"', disk)
    assert error_of(cfg) == f"{cfg}: {message}"


def test_missing_store(tmp_path):
    cfg = write(tmp_path, "[server]\nworkers = 2\n")
    assert error_of(cfg) == f"{cfg}: store: missing (required) [store] section"


def test_empty_file_is_missing_store(tmp_path):
    cfg = write(tmp_path, "")
    assert error_of(cfg) == f"{cfg}: store: missing (required) [store] section"


def test_store_must_be_a_table(tmp_path):
    cfg = write(tmp_path, 'store = "x"\n')
    assert error_of(cfg) == f"{cfg}: store: must be a table, not str"


def test_missing_index(tmp_path):
    cfg = write(tmp_path, STORE.replace('index = "var/index.sqlite"', ""))
    assert error_of(cfg) == f"{cfg}: store.index: missing (required)"


def test_index_of_wrong_type(tmp_path):
    cfg = write(tmp_path, STORE.replace('"var/index.sqlite"', "1"))
    assert error_of(cfg) == f"{cfg}: store.index: must be string, not int 1"


def test_no_disk_key(tmp_path):
    cfg = write(tmp_path, '[store]\nindex = "i.sqlite"\n')
    assert error_of(cfg) == f"{cfg}: store.disk: missing (required)"


def test_no_disks(tmp_path):
    cfg = write(tmp_path, '[store]\nindex = "i.sqlite"\ndisk = []\n')
    assert error_of(cfg) == f"{cfg}: store.disk: at least one [[store.disk]] is needed"


def test_disk_as_a_single_table(tmp_path):
    cfg = write(tmp_path, '[store]\nindex = "i.sqlite"\n[store.disk]\npath = "d"\ntier = "ssd"\n')
    assert error_of(cfg) == (
        f"{cfg}: store.disk: must be list, not dict {{'path': 'd', 'tier': 'ssd'}}")


def test_disk_entry_not_a_table(tmp_path):
    cfg = write(tmp_path, '[store]\nindex = "i.sqlite"\ndisk = ["/data/ssd0"]\n')
    assert error_of(cfg) == f"{cfg}: store.disk[0]: must be a table, not str"


def test_duplicate_disk(tmp_path):
    cfg = disk_cfg(tmp_path, 'path = "d0"\ntier = "ssd"', 'path = "d1"\ntier = "hdd"',
                   'path = "d0"\ntier = "hdd"')
    assert error_of(cfg) == (
        f"{cfg}: store.disk[2].path: duplicate disk {tmp_path / 'd0'} (also store.disk[0])")


@pytest.mark.parametrize("spelling", ["a/../a", "./a", "a/", "a//"])
def test_duplicate_disk_spelled_differently(tmp_path, spelling):
    cfg = disk_cfg(tmp_path, 'path = "a"\ntier = "ssd"', f'path = "{spelling}"\ntier = "hdd"')
    assert error_of(cfg) == (
        f"{cfg}: store.disk[1].path: duplicate disk {tmp_path / 'a'} (also store.disk[0])")


def test_duplicate_disk_absolute_and_relative(tmp_path):
    cfg = disk_cfg(tmp_path, 'path = "a"\ntier = "ssd"', f'path = "{tmp_path}/a"\ntier = "hdd"')
    assert "store.disk[1].path: duplicate disk" in error_of(cfg)


@pytest.mark.parametrize(("first", "second"), [("d", "d/sub"), ("d/sub", "d")])
def test_nested_disks(tmp_path, first, second):
    cfg = disk_cfg(tmp_path, f'path = "{first}"\ntier = "ssd"', f'path = "{second}"\ntier = "hdd"')
    assert error_of(cfg) == (
        f"{cfg}: store.disk[1].path: disk {tmp_path / second} nests with store.disk[0] "
        f"{tmp_path / first}")


def test_sibling_disks_with_a_common_prefix_do_not_nest(tmp_path):
    cfg = disk_cfg(tmp_path, 'path = "hdd1"\ntier = "hdd"', 'path = "hdd10"\ntier = "hdd"')
    assert [d.path.name for d in load_config(cfg).store.disks] == ["hdd1", "hdd10"]


def test_index_on_a_data_disk(tmp_path):
    cfg = disk_cfg(tmp_path, 'path = "d0"\ntier = "ssd"', 'path = "d1"\ntier = "hdd"',
                   index="d1/meta/index.sqlite")
    assert error_of(cfg) == (
        f"{cfg}: store.index: index {tmp_path / 'd1/meta/index.sqlite'} must not live on a "
        f"data disk ({tmp_path / 'd1'})")


def test_index_beside_data_disks_is_fine(tmp_path):
    cfg = disk_cfg(tmp_path, 'path = "d0"\ntier = "ssd"', index="d0-index.sqlite")
    assert load_config(cfg).store.index == tmp_path / "d0-index.sqlite"


def test_bad_toml(tmp_path):
    cfg = write(tmp_path, "[store\nindex = 1\n")
    message = error_of(cfg)
    assert message.startswith(f"{cfg}: not valid TOML: ")
    assert "line 1" in message


def test_missing_file(tmp_path):
    cfg = tmp_path / "nope.toml"
    assert error_of(cfg) == f"{cfg}: config file not found"


def test_config_is_a_directory(tmp_path):
    assert error_of(tmp_path) == f"{tmp_path}: cannot read config: Is a directory"


def test_config_error_exit_code_is_operational():
    assert ConfigError("x").exit_code == 1


# -- find_config ----------------------------------------------------------------


def test_find_config_explicit_wins(tmp_path, monkeypatch):
    write(tmp_path, STORE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCA_CONFIG", "/etc/oca/env.toml")
    assert find_config("/etc/oca/explicit.toml") == Path("/etc/oca/explicit.toml")


def test_find_config_cwd_before_env(tmp_path, monkeypatch):
    write(tmp_path, STORE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCA_CONFIG", "/etc/oca/env.toml")
    found = find_config(None)
    assert found == Path("oca.toml")
    assert load_config(found).path == tmp_path / "oca.toml"


def test_find_config_env_when_no_cwd_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCA_CONFIG", "/etc/oca/env.toml")
    assert find_config(None) == Path("/etc/oca/env.toml")


def test_find_config_none_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OCA_CONFIG", raising=False)
    with pytest.raises(ConfigError) as e:
        find_config(None)
    assert str(e.value) == (
        f"no config: oca.toml not found in {tmp_path} and $OCA_CONFIG not set "
        "(give one with -c FILE)")


def test_find_config_empty_env_is_unset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCA_CONFIG", "")
    with pytest.raises(ConfigError, match=r"\$OCA_CONFIG not set"):
        find_config(None)


# -- [store] disk_probe_timeout ------------------------------------------------


def test_disk_probe_timeout_default(tmp_path):
    assert load_config(write(tmp_path, STORE)).store.disk_probe_timeout == 2.0


@pytest.mark.parametrize(("value", "seconds"), [('"500ms"', 0.5), ('"5s"', 5.0), ("3", 3.0),
                                                ("0.25", 0.25), ('"5m"', 300.0)])
def test_disk_probe_timeout_parses_a_duration(tmp_path, value, seconds):
    cfg = write(tmp_path, STORE.replace("[store]", f"[store]\ndisk_probe_timeout = {value}"))
    assert load_config(cfg).store.disk_probe_timeout == seconds


@pytest.mark.parametrize(("value", "message"), [
    ('"soon"', "not a duration: 'soon' (expected e.g. 250ms, 30s, 5m, 1h)"),
    ('"10ms"', "must be between 0.1s and 300s, not '10ms'"),
    ('"1h"', "must be between 0.1s and 300s, not '1h'"),
    ("-1", "duration must not be negative: -1"),
    ("true", "must be string or int or float, not bool True"),
])
def test_disk_probe_timeout_bad_values_name_the_key(tmp_path, value, message):
    cfg = write(tmp_path, STORE.replace("[store]", f"[store]\ndisk_probe_timeout = {value}"))
    assert error_of(cfg) == f"{cfg}: store.disk_probe_timeout: {message}"
