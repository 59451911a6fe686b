"""``oca sign``: the real ``oca`` executable prints signed viewer URLs (docs/cli.md) that
the library's TokenChecker accepts."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from oca.http.auth import TokenChecker
from tests.conftest import run_oca, write_config

KEY = b"0f3e9a8b7c6d5e4f3a2b1c0d9e8f7a6b"
OID = "title-42.h264.1080p.mp4"
NOW = 1_700_000_000


def config_with_key(root: Path, server: str = "", key: bytes = KEY) -> Path:
    """A config whose [auth] key_file holds *key* (plus a newline, as editors leave it)."""
    (root / "ssd0").mkdir(exist_ok=True)
    key_file = root / "url.key"
    key_file.write_bytes(key + b"\n")
    return write_config(root, [(root / "ssd0", "ssd", None)],
                        extra=f'{server}[auth]\nkey_file = "{key_file}"\n')


def run_sign(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_oca("sign", *args, config=config)


def printed_url(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and res.stdout.endswith("\n"), res.stdout
    return lines[0]


def one_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert res.returncode == code, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("oca: error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def test_url_verifies_with_the_library(tmp_path: Path):
    before = time.time()
    url = printed_url(run_sign(config_with_key(tmp_path), OID))
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:8080", f"/o/{OID}")
    assert parts.query.startswith("t=")
    expires = int(parts.query[2:].partition(".")[0])
    assert before + 3600 - 1 <= expires <= time.time() + 3600  # default --ttl 1h
    checker = TokenChecker(KEY)
    assert checker.check(OID, parts.query, time.time())
    assert checker.check(OID, parts.query, expires)
    assert not checker.check(OID, parts.query, expires + 1)
    assert not checker.check("other.mp4", parts.query, time.time())
    assert not TokenChecker(KEY + b"x").check(OID, parts.query, time.time())


@pytest.mark.parametrize("ttl, seconds", [("1h", 3600), ("90s", 90), ("2d", 172800),
                                          ("30m", 1800), ("45", 45), ("1.5s", 1)])
def test_now_and_ttl_give_the_exact_expiry(tmp_path: Path, ttl: str, seconds: int):
    url = printed_url(run_sign(config_with_key(tmp_path), OID, "--ttl", ttl,
                               "--now", str(NOW)))
    query = urlsplit(url).query
    assert query.startswith(f"t={NOW + seconds}.")
    assert TokenChecker(KEY).check(OID, query, NOW + seconds)
    assert not TokenChecker(KEY).check(OID, query, NOW + seconds + 1)


def test_same_inputs_same_url(tmp_path: Path):
    cfg = config_with_key(tmp_path)
    args = (OID, "--now", str(NOW), "--ttl", "1h", "--base", "https://cdn.example.net/")
    first = printed_url(run_sign(cfg, *args))
    assert first == printed_url(run_sign(cfg, *args))
    assert first.startswith(f"https://cdn.example.net/o/{OID}?t={NOW + 3600}.")


@pytest.mark.parametrize("listen, base", [
    ('listen = "[::1]:9443"', "http://[::1]:9443"),
    ('listen = "0.0.0.0:80"', "http://0.0.0.0:80"),
    ('listen = "edge.example.net:8080"', "http://edge.example.net:8080"),
])
def test_default_base_is_server_listen(tmp_path: Path, listen: str, base: str):
    cfg = config_with_key(tmp_path, server=f"[server]\n{listen}\n")
    url = printed_url(run_sign(cfg, OID, "--now", str(NOW)))
    assert url.startswith(f"{base}/o/{OID}?t={NOW + 3600}.")


def test_key_file_not_set(tmp_path: Path):
    (tmp_path / "ssd0").mkdir()
    cfg = write_config(tmp_path, [(tmp_path / "ssd0", "ssd", None)])
    line = one_error(run_sign(cfg, OID), 1)
    assert line == f"oca: error: {cfg}: auth.key_file is not set: signed URLs are off"


def test_key_file_missing_or_short(tmp_path: Path):
    cfg = config_with_key(tmp_path, key=b"short")
    one_error(run_sign(cfg, OID), 1, str(tmp_path / "url.key"), "5 bytes, at least 16 needed")
    (tmp_path / "url.key").unlink()
    one_error(run_sign(cfg, OID), 1, str(tmp_path / "url.key"), "No such file or directory")


@pytest.mark.parametrize("ttl", ["1x", "", "-5m", "0", "0s", "soon", "100000000d"])
def test_bad_ttl_is_a_usage_error(tmp_path: Path, ttl: str):
    one_error(run_sign(config_with_key(tmp_path), OID, "--ttl", ttl, "--now", str(NOW)), 2,
              "--ttl")


@pytest.mark.parametrize("object_id", ["../etc/passwd", "a/b", ".hidden", "a|b", "x" * 129])
def test_bad_id_is_a_usage_error(tmp_path: Path, object_id: str):
    one_error(run_sign(config_with_key(tmp_path), object_id), 2, "invalid object id")


def test_usage_errors_come_before_the_config(tmp_path: Path):
    # Without [auth] the command would fail with 1; a bad command line is reported first.
    (tmp_path / "ssd0").mkdir()
    cfg = write_config(tmp_path, [(tmp_path / "ssd0", "ssd", None)])
    one_error(run_sign(cfg, "a/b"), 2, "invalid object id")
    one_error(run_sign(cfg, OID, "--ttl", "1x"), 2, "--ttl")


@pytest.mark.parametrize("args, needle", [
    (("--now", "yesterday"), "--now"),
    (("--now", "-1"), "--now"),
    (("--now", "nan"), "--now"),
    (("--base", "ftp://cdn.example.net"), "--base"),
    (("--base", "https://cdn.example.net/?x=1"), "--base"),
    (("--base", "cdn.example.net"), "--base"),
])
def test_bad_now_or_base_is_a_usage_error(tmp_path: Path, args: tuple[str, ...], needle: str):
    one_error(run_sign(config_with_key(tmp_path), OID, *args), 2, needle)


def test_missing_id_is_a_usage_error(tmp_path: Path):
    one_error(run_sign(config_with_key(tmp_path)), 2)
