"""`oca serve` against hostile and unlucky clients, end to end on the real server.

Malformed requests, absurd ranges and paths, slow, stalled and vanishing clients,
thousands of idle connections, a killed worker, SIGTERM in the middle of a download.
Each bad request gets its exact status line or a close; after each one a good GET on a
new connection still returns the exact bytes; the worker's descriptors return to where
they were; the server's log never shows a traceback.

Raw sockets throughout where the request is malformed: http.client would refuse to send
most of these.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import resource
import select
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.http.conftest import FASTPATHS, Server, start_server, wait_for

MiB = 1 << 20
BIG = (3 * MiB) + 17  # the vanishing client's object
HUGE = 32 * MiB  # the stalled reader's object
DOWNLOAD = 64 * MiB  # the download SIGTERM must not cut

# The server that takes the abuse: short timeouts so that slow clients are dealt with
# within a test's patience, and a 64 KiB header limit so that 10,000 ranges fit into one
# Range header while a 100 KiB header is still too large.
HOSTILE_CONFIG = ('header_timeout = "1s"\nkeepalive_timeout = "1s"\nsend_timeout = "1s"\n'
                  'max_header_size = "64K"')


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- helpers --------------------------------------------------------------------

def connect(srv: Server, rcvbuf: int | None = None, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect(): the window the server sees is fixed at the handshake.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", srv.port))
    return s


def read_response(s: socket.socket, head_only: bool = False) -> tuple[bytes, dict, bytes]:
    """One response from *s*: (status line, headers with lower-case names, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed inside the response head: {buf[:300]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.decode().lower()] = value.strip().decode()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = s.recv(min(1 << 20, length - len(body)))
        if not chunk:
            raise AssertionError(f"connection closed after {len(body)} of {length} body bytes")
        body += chunk
    assert len(body) == length, "more bytes than Content-Length"
    return status_line, headers, bytes(body)


def closed_by_server(s: socket.socket, timeout: float = 3.0) -> bool:
    """True when the server has closed *s* (EOF or reset) within *timeout*, with no
    further bytes sent."""
    ready, _, _ = select.select([s], [], [], timeout)
    if not ready:
        return False
    try:
        data = s.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return True
    assert data == b"", f"unexpected bytes after the response: {data[:200]!r}"
    return True


def send_quietly(s: socket.socket, data: bytes) -> None:
    """Send what the server takes: it may answer and close before reading it all."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        s.sendall(data)


def assert_serving(srv: Server, object_id: str = "small.m4s") -> None:
    """A good GET on a new connection returns the object's exact bytes."""
    status, headers, body = srv.request("GET", f"/o/{object_id}")
    assert status == 200
    assert body == srv.objects[object_id]


def assert_no_traceback(srv: Server) -> None:
    log = (srv.app.root / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def worker_pid(srv: Server) -> int:
    (pid,) = srv.worker_pids()
    return pid


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int) -> int:
    """The worker's descriptors once the connections our client just closed are gone."""
    count = fd_count(pid)
    while True:
        time.sleep(0.05)
        again = fd_count(pid)
        if again == count:
            return count
        count = again


def rss_kib(pid: int) -> int:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert m is not None
    return int(m.group(1))


def fd_limits(pid: int) -> tuple[int, int]:
    m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", Path(f"/proc/{pid}/limits").read_text(),
                  re.M)
    assert m is not None
    return int(m.group(1)), int(m.group(2))


def access_lines(srv: Server, object_id: str) -> list[dict]:
    return [line for line in srv.log_lines() if line.get("object") == object_id]


def requests_total(srv: Server) -> int:
    status, body = srv.admin("GET", "/metrics")
    assert status == 200
    return sum(int(float(m)) for m in
               re.findall(r"^oca_requests_total\{[^}]*\} (\S+)$", body.decode(), re.M))


# -- the abused server: one per fast path, shared by this module's tests --------

@pytest.fixture(scope="module")
def hostile_servers(tmp_path_factory) -> Callable[[str], Server]:
    started: dict[str, Server] = {}

    def get(fastpath: str) -> Server:
        if fastpath not in started:
            objects = {"big.mp4": (_data(BIG, 1), "ssd"),
                       "small.m4s": (_data(16 << 10, 2), "flash"),
                       "huge.mp4": (_data(HUGE, 3), "hdd"),
                       "pipe.mp4": (_data(BIG, 5), "ssd")}
            started[fastpath] = start_server(tmp_path_factory.mktemp(f"hostile-{fastpath}"),
                                             fastpath, server_extra=HOSTILE_CONFIG,
                                             objects=objects)
        return started[fastpath]

    yield get
    for srv in started.values():
        assert srv.stop() == 0
        assert_no_traceback(srv)


@pytest.fixture(params=FASTPATHS)
def hostile(request, hostile_servers) -> Server:
    """The abused server on the Cython fast path and on the pure-Python twin."""
    srv = hostile_servers(request.param)
    yield srv
    assert srv.proc.poll() is None, "oca serve died"
    assert_no_traceback(srv)


# -- malformed requests ------------------------------------------------------------

_OBJ = b"/o/small.m4s"
BAD_REQUESTS = [
    # (id, request bytes, exact status line)
    ("bad-version", b"GET " + _OBJ + b" HTXP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("extra-token", b"GET " + _OBJ + b" HTTP/1.1 x\r\nHost: x\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("no-target", b"GET\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("leading-space", b" GET " + _OBJ + b" HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("tls-hello", bytes.fromhex("160301020001000001fc0303") + _data(32, 7),
     b"HTTP/1.1 400 Bad Request"),
    ("header-without-colon", b"GET " + _OBJ + b" HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("nul-in-header", b"GET " + _OBJ + b" HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("bare-cr-in-header", b"GET " + _OBJ + b" HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("bare-cr-ending-line", b"GET " + _OBJ + b" HTTP/1.1\rHost: x\r\n\r\n",
     b"HTTP/1.1 400 Bad Request"),
    ("100k-header", b"GET " + _OBJ + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 << 10)
     + b"\r\n\r\n", b"HTTP/1.1 431 Request Header Fields Too Large"),
    ("100k-range-header", b"GET " + _OBJ + b" HTTP/1.1\r\nRange: bytes=0-0" + b",0-0" * 25_000
     + b"\r\n\r\n", b"HTTP/1.1 431 Request Header Fields Too Large"),
    ("10k-url", b"GET /o/" + b"a" * (10 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     b"HTTP/1.1 414 URI Too Long"),
    ("get-body-cl-and-te", b"GET " + _OBJ + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("get-body-te-and-cl", b"GET " + _OBJ + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
     b"\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    ("two-content-lengths", b"GET " + _OBJ + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Content-Length: 6\r\n\r\nhello!", b"HTTP/1.1 400 Bad Request"),
    # Unknown method tokens: llhttp rejects them (HPE_INVALID_METHOD); a well-formed request
    # line with a method nobody here implements gets 405 and Allow, as nginx answers for a
    # static file.
    ("unknown-method", b"FOO " + _OBJ + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     b"HTTP/1.1 405 Method Not Allowed"),
    ("unknown-method-prefix-of-known", b"GETX " + _OBJ + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     b"HTTP/1.1 405 Method Not Allowed"),
    ("lower-case-method", b"get " + _OBJ + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     b"HTTP/1.1 405 Method Not Allowed"),
]


@pytest.mark.parametrize("request_bytes, status_line",
                         [pytest.param(r, s, id=i) for i, r, s in BAD_REQUESTS])
def test_malformed_request_gets_its_status_and_a_close(hostile, request_bytes, status_line):
    assert_serving(hostile)  # the object's fd is in the open-file cache: a stable baseline
    pid = worker_pid(hostile)
    fds = settled_fd_count(pid)
    with connect(hostile) as s:
        send_quietly(s, request_bytes)
        got_status, headers, body = read_response(s)
        assert got_status == status_line
        assert headers["connection"] == "close"
        assert body == status_line.split(b" ", 1)[1] + b"\n"
        if got_status.startswith(b"HTTP/1.1 405"):
            assert headers["allow"] == "GET, HEAD"
        assert closed_by_server(s)
    assert_serving(hostile)
    wait_for(lambda: fd_count(pid) == fds)


@pytest.mark.parametrize("object_id", ["small.m4s", "big.mp4"])
def test_upgrade_request_is_answered_in_http11_then_closed(hostile, object_id):
    # RFC 9110 section 7.8: a server may ignore Upgrade. The request is answered; what
    # follows it (the client's next protocol) is not read as HTTP: the connection closes.
    with connect(hostile) as s:
        s.sendall(f"GET /o/{object_id} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                  "Upgrade: websocket\r\n\r\n".encode() + os.urandom(64))
        status, _, body = read_response(s)
        assert status == b"HTTP/1.1 200 OK"
        assert body == hostile.objects[object_id]
        assert closed_by_server(s)
    assert_serving(hostile)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND"])
def test_known_but_unsupported_method_gets_405_with_allow(hostile, method):
    with connect(hostile) as s:
        s.sendall(f"{method} /o/small.m4s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
                  "hello".encode())
        status, headers, body = read_response(s)
        assert status == b"HTTP/1.1 405 Method Not Allowed"
        assert headers["allow"] == "GET, HEAD"
        # The body was read and the connection stays usable.
        s.sendall(b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(s)
        assert status == b"HTTP/1.1 200 OK"
        assert body == hostile.objects["small.m4s"]
    assert_serving(hostile)


@pytest.mark.parametrize("value", [
    "bytes=5-1", "bytes=-0", "bytes=9223372036854775808-", "bytes=0-9223372036854775808",
    "bytes=99999999999999999999999999-", "bytes=-99999999999999999999999999",
    f"bytes={BIG}-", "bytes=0-1,5-1", "bytes=x-y", "bytes=",
])
def test_bad_or_absurd_range_gets_416(hostile, value):
    with connect(hostile) as s:
        s.sendall(f"GET /o/big.mp4 HTTP/1.1\r\nHost: x\r\nRange: {value}\r\n\r\n".encode())
        status, headers, _ = read_response(s)
        assert status == b"HTTP/1.1 416 Range Not Satisfiable"
        assert headers["content-range"] == f"bytes */{BIG}"
    assert_serving(hostile)


def test_ten_thousand_ranges_are_ignored(hostile):
    # Over max_ranges (16) the Range header is ignored and the whole object served, as
    # nginx does: no multipart body of 10,000 parts.
    value = "bytes=" + ",".join(f"{i}-" for i in range(10_000))
    assert len(value) < 64 << 10
    with connect(hostile) as s:
        s.sendall(f"GET /o/big.mp4 HTTP/1.1\r\nHost: x\r\nRange: {value}\r\n\r\n".encode())
        status, headers, body = read_response(s)
        assert status == b"HTTP/1.1 200 OK"
        assert "content-range" not in headers
        assert body == hostile.objects["big.mp4"]
    assert_serving(hostile)


@pytest.mark.parametrize("target", [
    "/o/../..", "/o/%2e%2e", "/o/%2E%2E/%2e%2e/etc/passwd", "/o/..%2f..%2fetc%2fpasswd",
    "/o/a%00b", "/o/small.m4s%00", "/o/no-such-object.mp4", "/o/.hidden", "/o/",
    "/o/small.m4s/../small.m4s", "/o/small.m4s/range/0-x", "/o/%73mall.m4s",
    "/../../etc/passwd", "//o/small.m4s", "*",
])
def test_path_outside_the_object_ids_gets_404(hostile, target):
    with connect(hostile) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, body = read_response(s)
        assert status == b"HTTP/1.1 404 Not Found"
        assert body == b"404 Not Found\n"
        # A 404 is an answer, not a protocol error: the connection stays open.
        s.sendall(b"HEAD /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(s, head_only=True)
        assert status == b"HTTP/1.1 200 OK"
        assert headers["content-length"] == str(16 << 10)
    assert_serving(hostile)


# -- slow, idle, stalled and vanishing clients -------------------------------------------

def test_slowloris_is_disconnected_after_header_timeout(hostile):
    srv = hostile
    request = b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 100 + b"\r\n\r\n"
    with connect(srv) as s:
        t0 = time.monotonic()
        closed_after = None
        for i in range(len(request)):
            try:
                s.send(request[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            # Another client is served normally meanwhile.
            assert_serving(srv)
            if closed_by_server(s, timeout=0.3):
                closed_after = time.monotonic() - t0
                break
        assert closed_after is not None, "the slow client was never disconnected"
        # header_timeout is 1 s, checked by a sweep once a second: not before, not much after.
        assert 0.9 <= closed_after <= 2.5, closed_after
    assert_serving(srv)


def test_idle_keepalive_connection_is_closed_after_keepalive_timeout(hostile):
    srv = hostile
    with connect(srv) as s:
        s.sendall(b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(s)
        assert status == b"HTTP/1.1 200 OK"
        assert headers["connection"] == "keep-alive"
        t0 = time.monotonic()
        assert closed_by_server(s, timeout=4.0)
        idle = time.monotonic() - t0
        assert 0.9 <= idle <= 2.5, idle
    assert_serving(srv)


def test_keepalive_timeout_is_not_cut_short(hostile):
    # Clients that come back within keepalive_timeout (1 s) are answered, wherever in the
    # server's once-a-second sweep their last response happened to end: four clients 0.25 s
    # apart, each idle 0.3 s, cover every phase of the sweep.
    srv = hostile
    socks: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(4):
            s = connect(srv)
            s.sendall(b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == b"HTTP/1.1 200 OK"
            socks.append((s, time.monotonic()))
            time.sleep(0.25)
        for s, done in socks:
            time.sleep(max(0.0, done + 0.3 - time.monotonic()))
            s.sendall(b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(s)
            assert status == b"HTTP/1.1 200 OK"
            assert body == srv.objects["small.m4s"]
    finally:
        for s, _ in socks:
            s.close()


def test_header_sent_within_header_timeout_is_served(hostile):
    # The same for header_timeout (1 s): a header that takes 0.3 s is not cut.
    srv = hostile
    socks: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(4):
            s = connect(srv)
            s.sendall(b"GET /o/small.m4s HTTP/1.1\r\n")
            socks.append((s, time.monotonic()))
            time.sleep(0.25)
        for s, started in socks:
            time.sleep(max(0.0, started + 0.3 - time.monotonic()))
            s.sendall(b"Host: x\r\n\r\n")
            status, _, body = read_response(s)
            assert status == b"HTTP/1.1 200 OK"
            assert body == srv.objects["small.m4s"]
    finally:
        for s, _ in socks:
            s.close()
    assert_serving(srv)


def test_client_vanishing_mid_body_is_logged_and_forgotten(hostile):
    pid = worker_pid(hostile)
    assert_serving(hostile, "big.mp4")  # warm the open-file cache: a stable fd baseline
    fds = settled_fd_count(pid)
    with connect(hostile, rcvbuf=4096) as s:
        s.sendall(b"GET /o/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        # close() with unread bytes: the kernel answers the server with a reset.
    lines = wait_for(lambda: [ln for ln in access_lines(hostile, "big.mp4")
                              if ln["status"] == 200 and ln["bytes"] < BIG], timeout=5)
    assert len(lines) == 1
    assert lines[0]["status"] == 200
    assert lines[0]["bytes"] < BIG
    wait_for(lambda: fd_count(pid) == fds)
    assert_serving(hostile, "big.mp4")


def test_pipelining_flood_is_cut_without_phantom_responses(hostile):
    # 70 pipelined requests behind a response that cannot go out: past 64 queued the
    # connection closes. The one in flight is logged as cut; none of the others is
    # answered or logged, not even those parsed after the close from the same read.
    pid = worker_pid(hostile)
    assert hostile.request("HEAD", "/o/pipe.mp4")[0] == 200  # its fd into the open-file cache
    fds = settled_fd_count(pid)

    def gets() -> list[dict]:
        return [ln for ln in access_lines(hostile, "pipe.mp4") if ln["method"] == "GET"]

    with connect(hostile, rcvbuf=4096) as s:
        s.sendall(b"GET /o/pipe.mp4 HTTP/1.1\r\nHost: x\r\n\r\n" * 70)
        assert s.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        lines = wait_for(gets, timeout=5)
        assert len(lines) == 1
        assert lines[0]["status"] == 200
        assert 0 < lines[0]["bytes"] < BIG
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        assert received < BIG
    wait_for(lambda: fd_count(pid) == fds)
    assert_serving(hostile)
    time.sleep(1.1)  # one more access-log flush
    assert len(gets()) == 1


def test_stalled_reader_is_closed_after_send_timeout(hostile):
    pid = worker_pid(hostile)
    with connect(hostile, rcvbuf=4096, timeout=10) as s:
        s.sendall(b"GET /o/huge.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        # The worker stays responsive while the stalled response waits.
        assert_serving(hostile)
        # send_timeout is 1 s without progress; the sweep runs once a second. The cut
        # response is logged with the bytes it did send.
        lines = wait_for(lambda: access_lines(hostile, "huge.mp4"), timeout=5)
        assert time.monotonic() - t0 < 4
        assert len(lines) == 1
        assert lines[0]["status"] == 200
        assert 0 < lines[0]["bytes"] < HUGE
        # What is left to read is what sat in the socket buffers, then EOF or a reset.
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        assert 0 < received < HUGE // 2
    assert_serving(hostile)
    assert_serving(hostile, "big.mp4")
    assert fd_count(pid) < 64


# -- many connections -----------------------------------------------------------

@pytest.fixture
def raised_fd_limit():
    """This process may hold 5,000 client sockets; the server must get its own way."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 12_000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for 5,000 connections")
    target = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_five_thousand_idle_connections(tmp_path, raised_fd_limit):
    # The server starts with a service manager's usual soft limit (systemd: 1024) and
    # must raise its own to the hard limit: every connection is a descriptor.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        srv = start_server(tmp_path / "app", "cython",
                           objects={"small.m4s": (_data(16 << 10, 2), "flash")})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        pid = worker_pid(srv)
        assert fd_limits(pid)[0] == fd_limits(pid)[1]
        assert fd_limits(pid)[0] > 5000 + 100

        request = b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n"
        expected = srv.objects["small.m4s"]

        def open_idle(n: int) -> list[socket.socket]:
            socks = []
            for _ in range(n):
                s = connect(srv)
                socks.append(s)
                s.sendall(request)
                status, _, body = read_response(s)
                assert status == b"HTTP/1.1 200 OK" and body == expected
            return socks

        def close_all(socks: list[socket.socket]) -> None:
            for s in socks:
                s.close()

        assert_serving(srv)
        fds0 = settled_fd_count(pid)
        rss_start = rss_kib(pid)
        socks = open_idle(5000)
        try:
            assert fd_count(pid) == fds0 + 5000
            rss_peak = rss_kib(pid)
            assert_serving(srv)  # a new client is still served
        finally:
            close_all(socks)
        wait_for(lambda: abs(fd_count(pid) - fds0) <= 2, timeout=10)
        rss_closed = [rss_kib(pid)]
        print(f"\nworker RSS {rss_start} KiB, {rss_peak} KiB with 5,000 idle connections: "
              f"{(rss_peak - rss_start) * 1024 / 5000:.0f} bytes per idle connection")
        # The allocators keep what the first 5,000 took (their high-water mark, which
        # settles over a few rounds); a leak would add its per-connection cost each round.
        for _ in range(2):
            close_all(open_idle(5000))
            wait_for(lambda: abs(fd_count(pid) - fds0) <= 2, timeout=10)
            rss_closed.append(rss_kib(pid))
        print(f"worker RSS after closing them, three rounds: {rss_closed} KiB")
        assert rss_closed[-1] - rss_peak < 5 * 1024
        assert_serving(srv)
    finally:
        assert srv.stop() == 0
    assert_no_traceback(srv)


def test_over_max_connections_gets_503_then_served_again(tmp_path):
    srv = start_server(tmp_path / "app", "cython", server_extra="max_connections = 100",
                       objects={"small.m4s": (_data(16 << 10, 2), "flash")})
    socks: list[socket.socket] = []
    try:
        for _ in range(100):
            s = connect(srv)
            socks.append(s)
            s.sendall(b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == b"HTTP/1.1 200 OK"
        with connect(srv) as s:  # the 101st
            status, headers, body = read_response(s)
            assert status == b"HTTP/1.1 503 Service Unavailable"
            assert headers["connection"] == "close"
            assert headers["retry-after"] == "1"
            assert closed_by_server(s)
        for s in socks[:10]:
            s.close()
        del socks[:10]

        def served() -> bool:
            with connect(srv) as s:
                s.sendall(b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, body = read_response(s)
                return status == b"HTTP/1.1 200 OK" and body == srv.objects["small.m4s"]

        wait_for(served, timeout=3)
        # The connections that stayed open are still served.
        socks[0].sendall(b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(socks[0])[2] == srv.objects["small.m4s"]
    finally:
        for s in socks:
            s.close()
        assert srv.stop() == 0
    assert_no_traceback(srv)


# -- the processes --------------------------------------------------------------

def test_killed_worker_is_restarted_and_counters_do_not_go_back(tmp_path):
    srv = start_server(tmp_path / "app", "cython", workers=2,
                       objects={"small.m4s": (_data(16 << 10, 2), "flash")})
    try:
        before = requests_total(srv)
        for _ in range(20):
            assert_serving(srv)
        counted = wait_for(lambda: (n := requests_total(srv)) >= before + 20 and n, timeout=5)
        old = set(srv.worker_pids())
        victim = min(old)
        os.kill(victim, signal.SIGKILL)
        # Connections the kernel had queued on the victim's SO_REUSEPORT socket die with
        # it; once it is gone, the other worker takes them all while the supervisor
        # restarts this one.
        wait_for(lambda: not os.path.exists(f"/proc/{victim}"))
        last = counted
        for _ in range(10):
            assert_serving(srv)
            now = requests_total(srv)
            assert now >= last
            last = now
        pids = wait_for(lambda: (p := set(srv.worker_pids())) != old and len(p) == 2 and p)
        assert victim not in pids
        assert len(pids - old) == 1
        assert requests_total(srv) >= last
        for _ in range(20):
            assert_serving(srv)
        wait_for(lambda: requests_total(srv) >= last + 20, timeout=5)
        status, body = srv.admin("GET", "/health")
        assert status == 200
        assert sorted(json.loads(body)["workers"]) == sorted(pids)
        log = (srv.app.root / "serve.log").read_text()
        assert f"(pid {victim}) exited with signal 9; restarting" in log
    finally:
        assert srv.stop() == 0
    assert_no_traceback(srv)


@pytest.mark.parametrize("fastpath", FASTPATHS)
def test_sigterm_finishes_the_download_in_flight(tmp_path, fastpath):
    data = _data(DOWNLOAD, 4)
    srv = start_server(tmp_path / "app", fastpath, objects={"movie.mp4": (data, "hdd")})
    try:
        s = connect(srv, timeout=10)
        s.sendall(b"GET /o/movie.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, body_start = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert f"Content-Length: {DOWNLOAD}\r\n".encode() in head + b"\r\n"
        digest = hashlib.sha256(body_start)
        received = len(body_start)
        srv.proc.send_signal(signal.SIGTERM)
        refused = False
        chunks = 0
        # A slow reader: 64 MiB in 256 KiB reads with a pause, about 1.5 s.
        while received < DOWNLOAD:
            chunk = s.recv(min(256 << 10, DOWNLOAD - received))
            assert chunk, f"connection closed after {received} of {DOWNLOAD} bytes"
            digest.update(chunk)
            received += len(chunk)
            chunks += 1
            time.sleep(0.005)
            if not refused and chunks % 16 == 0:
                try:
                    socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                except ConnectionRefusedError:
                    refused = True
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert refused, "new connections were still accepted during the shutdown"
        # Its response done, the connection is closed and the server exits at once, not
        # after shutdown_timeout (30 s).
        assert closed_by_server(s, timeout=5)
        s.close()
        assert srv.proc.wait(10) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1)
        (line,) = access_lines(srv, "movie.mp4")
        assert (line["status"], line["bytes"]) == (200, DOWNLOAD)
        log = (srv.app.root / "serve.log").read_text()
        assert "stopped" in log
    finally:
        srv.stop()
    assert_no_traceback(srv)


def test_health_under_urllib_after_abuse(hostile):
    # A plain client library still sees a healthy server after everything above.
    with urllib.request.urlopen(f"{hostile.base}/health", timeout=5) as r:
        assert r.status == 200
        assert json.loads(r.read())["status"] == "ok"
