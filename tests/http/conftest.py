"""A real `oca serve` in a subprocess, for end-to-end tests.

``served`` runs once with the Cython fast path and once with the pure-Python
twin (OCA_NO_EXTENSIONS=1): every end-to-end test that uses it runs against both.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import OCA_BIN, Appliance, make_appliance, make_file, write_config

FASTPATHS = ["cython", "python"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `oca serve` and the appliance it serves."""

    app: Appliance
    proc: subprocess.Popen
    port: int
    admin_port: int
    access_log: Path
    fastpath: str
    objects: dict[str, bytes] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def conn(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, headers: dict | None = None):
        """One request on a new connection: (status, headers dict lower-case, body)."""
        c = self.conn()
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            c.close()

    def admin(self, method: str, path: str):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def oca(self, *args: str):
        return self.app.oca(*args)

    def put(self, object_id: str, data: bytes, tier: str = "ssd") -> None:
        src = self.app.root / f"src-{object_id}"
        src.write_bytes(data)
        r = self.oca("put", object_id, str(src), "--tier", tier, "--replace")
        assert r.returncode == 0, r.stderr
        self.objects[object_id] = data

    def log_lines(self) -> list[dict]:
        """The access log, after the server's once-a-second flush."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]

    def worker_pids(self) -> list[int]:
        status, body = self.admin("GET", "/status")
        return json.loads(body)["workers"]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(root: Path, fastpath: str = "cython", workers: int = 1, server_extra: str = "",
                 extra: str = "", objects: dict[str, tuple[bytes, str]] | None = None,
                 layout: dict | None = None, disk_paths: dict | None = None,
                 store_extra: str = "", name: str = "test1") -> Server:
    """Build an appliance under *root* (*disk_paths*: tier -> existing folders to use as
    its disks), store *objects* (id -> (bytes, tier)), start `oca serve` and wait until
    /health answers. *store_extra* adds keys to ``[store]``; *name* is ``[server] name``."""
    root.mkdir(parents=True, exist_ok=True)
    app = make_appliance(root, layout or {"ssd": ["64M"], "flash": ["64M"], "hdd": ["128M"]},
                         disk_paths=disk_paths)
    port, admin_port = free_port(), free_port()
    access_log = root / "log" / "access.jsonl"
    server_section = (
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin_port}"\n'
        f'workers = {workers}\naccess_log = "{access_log}"\nname = "{name}"\n{server_extra}\n'
    )
    entries = [(p, tier, cap) for tier, caps in (layout or {"ssd": ["64M"], "flash": ["64M"],
                                                           "hdd": ["128M"]}).items()
               for p, cap in zip(app.disks[tier], caps, strict=True)]
    write_config(root, entries, extra=server_section + extra, store_extra=store_extra)
    objects = objects or {}
    with app.open() as store:
        for object_id, (data, tier) in objects.items():
            src = root / f"src-{object_id}"
            src.write_bytes(data)
            store.put(object_id, src, tier)
    env = dict(os.environ)
    env.pop("OCA_FAULT", None)
    env.pop("OCA_CONFIG", None)
    if fastpath == "python":
        env["OCA_NO_EXTENSIONS"] = "1"
    else:
        env.pop("OCA_NO_EXTENSIONS", None)
    stderr = open(root / "serve.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(OCA_BIN), "-c", str(app.config_path), "serve"],
                            stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL, env=env)
    stderr.close()
    srv = Server(app, proc, port, admin_port, access_log, fastpath,
                 {object_id: data for object_id, (data, _) in objects.items()})
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"oca serve exited {proc.returncode}: "
                               f"{(root / 'serve.log').read_text()}")
        try:
            status, _, _ = srv.request("GET", "/health")
            if status == 200 and len(srv.worker_pids()) == workers:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            srv.stop()
            raise RuntimeError(f"oca serve did not come up: {(root / 'serve.log').read_text()}")
        time.sleep(0.05)
    return srv


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05):
    """Poll *predicate* until it returns a true value (returned) or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture(params=FASTPATHS)
def served(request, tmp_path):
    """A server holding big.mp4 (3 MiB + 17 bytes, ssd), small.m4s (16 KiB, flash),
    tail.ts (100 KiB, hdd) and empty.bin (0 bytes), on the Cython fast path or the
    pure-Python twin."""
    objects = {
        "big.mp4": (make_file(tmp_path / "b", (3 << 20) + 17, seed=1).read_bytes(), "ssd"),
        "small.m4s": (make_file(tmp_path / "s", 16 << 10, seed=2).read_bytes(), "flash"),
        "tail.ts": (make_file(tmp_path / "t", 100 << 10, seed=3).read_bytes(), "hdd"),
        "empty.bin": (b"", "ssd"),
    }
    srv = start_server(tmp_path / "app", request.param, objects=objects)
    yield srv
    srv.stop()
