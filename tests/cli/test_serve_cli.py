"""The operator's side of `oca serve`, through the real CLI against a real server:
`oca drain` / `oca undrain`, `oca status` with the server up and down, and `oca serve`
refusing to start (port taken, bad config) with a one-line error that names the key."""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import make_appliance, write_config
from tests.http.conftest import FASTPATHS, Server, free_port, start_server, wait_for

SMALL = random.Random(2).randbytes(16 << 10)


def one_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit *code*, nothing on stdout, one ``oca: error:`` line holding every needle."""
    assert res.returncode == code, f"exit {res.returncode}\nstdout: {res.stdout}\n{res.stderr}"
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and res.stderr.endswith("\n"), res.stderr
    assert lines[0].startswith("oca: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\n{res.stderr}"
    assert res.stderr == "", res.stderr
    return res.stdout


def get(s: socket.socket, path: str) -> tuple[bytes, dict, bytes]:
    """One GET on the open connection *s*: (status line, headers, body)."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed inside the response head: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.decode().lower(): v.strip().decode()
               for k, _, v in (line.partition(b":") for line in lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = s.recv(length - len(body))
        assert chunk, "connection closed inside the body"
        body += chunk
    return status, headers, body


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    ready, _, _ = select.select([s], [], [], timeout)
    if not ready:
        return False
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def no_traceback(srv: Server) -> None:
    log = (srv.app.root / "serve.log").read_text()
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path / "app", "cython", objects={"small.m4s": (SMALL, "flash")})
    yield srv
    srv.stop()
    no_traceback(srv)


def test_drain_deadline_then_undrain(server):
    srv = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as kept:
        assert get(kept, "/o/small.m4s")[0] == b"HTTP/1.1 200 OK"

        out = ok(srv.oca("drain", "--deadline", "2s"))
        drained = time.monotonic()
        assert out == ("draining: /health answers 503 now; connections close in 2 s "
                       "(oca undrain reverses it)\n")
        # /health says so at once, on the viewer port and on the admin listener.
        status, _, body = srv.request("GET", "/health")
        assert status == 503
        assert json.loads(body)["status"] == "draining"
        # Until the deadline, objects are still served, on kept and on new connections.
        # (Checked before the slower `oca status` calls, which could outlast the deadline.)
        status, headers, body = get(kept, "/o/small.m4s")
        assert (status, headers["connection"], body) == (b"HTTP/1.1 200 OK", "keep-alive", SMALL)
        status, _, body = srv.request("GET", "/o/small.m4s")
        assert (status, body) == (200, SMALL)
        status, body = srv.admin("GET", "/health")
        assert status == 503
        assert json.loads(body)["draining"] is True
        st = json.loads(ok(srv.oca("status", "--json")))["server"]
        assert (st["running"], st["draining"]) == (True, True)
        assert ok(srv.oca("status")).splitlines()[0].endswith(", draining")

        # At the deadline (checked once a second) the kept connection is closed.
        assert closed_by_server(kept, timeout=4)
        assert time.monotonic() - drained >= 1.5

    # Past the deadline: 503 and close for objects, /health still 503.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        status, headers, _ = get(s, "/o/small.m4s")
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert headers["connection"] == "close"
        assert closed_by_server(s, timeout=2)
    assert srv.request("GET", "/health")[0] == 503

    out = ok(srv.oca("undrain"))
    assert out == "serving: drain cancelled\n"
    status, _, body = srv.request("GET", "/health")
    assert status == 200
    assert json.loads(body)["draining"] is False
    assert srv.admin("GET", "/health")[0] == 200
    assert srv.request("GET", "/o/small.m4s")[::2] == (200, SMALL)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        for _ in range(3):
            status, headers, body = get(s, "/o/small.m4s")
            assert (status, headers["connection"], body) == (b"HTTP/1.1 200 OK", "keep-alive",
                                                             SMALL)
    st = json.loads(ok(srv.oca("status", "--json")))["server"]
    assert (st["draining"], st["drain_deadline"]) == (False, None)


@pytest.mark.parametrize("fastpath", FASTPATHS)
def test_status_shows_the_running_server_then_the_stopped_one(tmp_path, fastpath):
    srv = start_server(tmp_path / "app", fastpath, objects={"small.m4s": (SMALL, "flash")})
    try:
        workers = srv.worker_pids()
        st = json.loads(ok(srv.oca("status", "--json")))
        server = st["server"]
        assert server["running"] is True
        assert server["pid"] == srv.proc.pid
        assert server["workers"] == workers
        assert server["worker_count"] == 1
        assert server["fastpath"] == fastpath
        assert server["draining"] is False
        assert server["listen"] == f"127.0.0.1:{srv.port}"
        assert server["admin_listen"] == f"127.0.0.1:{srv.admin_port}"
        assert st["objects"] == 1
        first = ok(srv.oca("status")).splitlines()[0]
        assert first == (f"server: running, pid {srv.proc.pid}, 1 workers, fastpath {fastpath}, "
                         "serving")
    finally:
        assert srv.stop() == 0
    no_traceback(srv)
    server = json.loads(ok(srv.oca("status", "--json")))["server"]
    assert server["running"] is False
    assert f"127.0.0.1:{srv.admin_port}" in server["error"]
    assert ok(srv.oca("status")).splitlines()[0].startswith("server: not running (fastpath ")


def _appliance(tmp_path: Path, server_lines: str = ""):
    """An appliance whose config has a [server] section and no server running."""
    app = make_appliance(tmp_path / "app", {"ssd": ["64M"]})
    port, admin_port = free_port(), free_port()
    section = (f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin_port}"\n'
               f'workers = 1\n{server_lines}\n')
    write_config(app.root, [(app.disks["ssd"][0], "ssd", "64M")], extra=section)
    return app, port, admin_port


def test_drain_without_a_server_names_the_admin_address(tmp_path):
    app, _, admin_port = _appliance(tmp_path)
    for command in (["drain", "--deadline", "5s"], ["undrain"]):
        one_error(app.oca(*command), 1, f"127.0.0.1:{admin_port}", "server.admin_listen")


@pytest.mark.parametrize("deadline", ["nonsense", "-5s", "5 parsecs", ""])
def test_drain_with_a_bad_deadline_is_a_usage_error(tmp_path, deadline):
    app, _, _ = _appliance(tmp_path)
    one_error(app.oca("drain", "--deadline", deadline), 2, "--deadline")


@pytest.mark.parametrize("taken", ["listen", "admin_listen"])
def test_serve_with_its_port_taken_fails_naming_the_key(tmp_path, taken):
    app, port, admin_port = _appliance(tmp_path)
    busy = port if taken == "listen" else admin_port
    with socket.socket() as squatter:  # no SO_REUSEPORT: the port is simply taken
        squatter.bind(("127.0.0.1", busy))
        squatter.listen(1)
        res = app.oca("serve", timeout=30)
    one_error(res, 1, f"server.{taken} 127.0.0.1:{busy}", "Address already in use",
              str(app.config_path))


@pytest.mark.parametrize("line, key", [
    ('header_timeout = "soon"', "server.header_timeout"),
    ('keepalive_timeout = "2h"', "server.keepalive_timeout"),
    ("max_connections = 0", "server.max_connections"),
    ('max_url_size = "100"', "server.max_url_size"),
    ("max_ranges = 5000", "server.max_ranges"),
    ('sendfile_max_chunk = "lots"', "server.sendfile_max_chunk"),
    ('name = "no spaces allowed"', "server.name"),
    ("keepalive = true", "server.keepalive"),
])
def test_serve_with_a_bad_config_fails_naming_the_key(tmp_path, line, key):
    app, port, _ = _appliance(tmp_path, line)
    res = app.oca("serve", timeout=30)
    one_error(res, 1, f"{key}:", str(app.config_path))
    with pytest.raises(ConnectionRefusedError):  # and nothing was left listening
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_serve_with_a_bad_listen_address_fails_naming_the_key(tmp_path):
    app, _, _ = _appliance(tmp_path)
    app.config_path.write_text(re.sub(r'^listen = "127.0.0.1:\d+"', 'listen = "127.0.0.1:70000"',
                                      app.config_path.read_text(), count=1, flags=re.M))
    res = app.oca("serve", timeout=30)
    one_error(res, 1, "server.listen:", "out of range")



# -- drain and undrain answer once every worker has applied them ------------------------

WORKERS = 4


@pytest.fixture
def workers(tmp_path):
    srv = start_server(tmp_path / "app", "cython", workers=WORKERS,
                       objects={"small.m4s": (SMALL, "flash")})
    yield srv
    srv.stop()
    no_traceback(srv)


def health_from_every_worker(srv: Server, pids: set[int], at_least: int = 64) -> set[int]:
    """GET /health on new connections (the kernel spreads them over the workers' SO_REUSEPORT
    sockets) until every worker in *pids* has answered, and at least *at_least* times; the
    statuses seen."""
    statuses: set[int] = set()
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    n = 0
    while n < at_least or not pids <= seen:
        assert time.monotonic() < deadline, f"workers {sorted(pids - seen)} never answered"
        status, _, body = srv.request("GET", "/health")
        statuses.add(status)
        seen.add(json.loads(body)["pid"])
        n += 1
    return statuses


def test_drain_and_undrain_return_once_every_worker_applied_them(workers):
    srv = workers
    pids = set(srv.worker_pids())
    assert len(pids) == WORKERS
    ok(srv.oca("drain", "--deadline", "1h"))
    assert health_from_every_worker(srv, pids) == {503}
    ok(srv.oca("undrain"))
    assert health_from_every_worker(srv, pids) == {200}

    # A worker that cannot run (stopped) holds the command back until it has applied it.
    victim = min(pids)
    with ThreadPoolExecutor(1) as pool:
        os.kill(victim, signal.SIGSTOP)
        try:
            drain = pool.submit(srv.oca, "drain", "--deadline", "1h")
            with pytest.raises(TimeoutError):
                drain.result(timeout=1)
        finally:
            os.kill(victim, signal.SIGCONT)
        assert ok(drain.result(timeout=30)).startswith("draining: /health answers 503 now")
    assert health_from_every_worker(srv, pids) == {503}

    os.kill(victim, signal.SIGSTOP)
    with ThreadPoolExecutor(1) as pool:
        try:
            undrain = pool.submit(srv.oca, "undrain")
            with pytest.raises(TimeoutError):
                undrain.result(timeout=1)
        finally:
            os.kill(victim, signal.SIGCONT)
        assert ok(undrain.result(timeout=30)) == "serving: drain cancelled\n"
    assert health_from_every_worker(srv, pids) == {200}


def test_drain_names_the_worker_that_does_not_confirm(workers):
    srv = workers
    pids = set(srv.worker_pids())
    victim = max(pids)
    os.kill(victim, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = srv.oca("drain", "--deadline", "1h")
        waited = time.monotonic() - t0
    finally:
        os.kill(victim, signal.SIGCONT)
    line = one_error(res, 1, "drain not confirmed within 5 s", f"pid {victim} (slot ",
                     f"1 of {WORKERS} workers")
    for other in pids - {victim}:
        assert str(other) not in line
    assert waited >= 4.5
    # The others have drained; the stopped one drains once it runs again. Asking again
    # returns once every worker has.
    st = json.loads(ok(srv.oca("status", "--json")))["server"]
    assert st["draining"] is True
    ok(srv.oca("drain", "--deadline", "1h"))
    assert health_from_every_worker(srv, pids) == {503}
    ok(srv.oca("undrain"))
    assert health_from_every_worker(srv, pids) == {200}


def test_a_restarted_worker_starts_in_the_current_drain_state(workers):
    srv = workers
    old = set(srv.worker_pids())
    ok(srv.oca("drain", "--deadline", "1h"))
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    pids = wait_for(lambda: (p := set(srv.worker_pids())) != old and len(p) == WORKERS and p,
                    timeout=10)
    assert victim not in pids
    assert health_from_every_worker(srv, pids) == {503}
    ok(srv.oca("undrain"))
    assert health_from_every_worker(srv, pids) == {200}
