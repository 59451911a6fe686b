"""`oca serve` end to end: a real server process, real clients (http.client, raw sockets,
curl, REDbot), every response compared byte for byte with the stored object.

Read-only checks share one server per fast-path implementation (``ro``, module scope);
tests that change the store, the disks, the log or the counters get a server of their own
(``served`` from conftest.py, or ``start_server`` for other settings). Every server runs
once on the Cython fast path and once on the pure-Python twin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oca.digest import digest_bytes
from oca.http.auth import Signer, load_key
from tests.conftest import make_file
from tests.http.conftest import FASTPATHS, Server, start_server, wait_for

SEEN_WITHIN = 1.5
"""Changes from another process are seen within 1 s (the worker's tick); plus slack."""

MAX_RANGES = 16  # [server] max_ranges default
OBJECT_FIELDS = {"server", "date", "etag", "last-modified", "content-type", "accept-ranges",
                 "content-length", "connection"}


# -- raw HTTP/1.1 on a socket -----------------------------------------------------------


@dataclass
class Response:
    version: str
    status: int
    reason: str
    fields: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


class Client:
    """One TCP connection, written to in raw bytes, responses read strictly in order."""

    def __init__(self, srv: Server, rcvbuf: int | None = None, timeout: float = 10):
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connect(): it sets the advertised window
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", srv.port))
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self) -> Response:
        """The status line and header fields of the next response."""
        line = self.file.readline(65536)
        if not line:
            raise EOFError("connection closed before a response")
        assert line.endswith(b"\r\n"), line
        version, status, reason = line[:-2].decode("latin-1").split(" ", 2)
        fields = []
        while True:
            line = self.file.readline(65536)
            assert line.endswith(b"\r\n"), line
            if line == b"\r\n":
                break
            name, colon, value = line[:-2].decode("latin-1").partition(":")
            assert colon and name == name.strip(), line
            fields.append((name, value.strip(" \t")))
        headers = {name.lower(): value for name, value in fields}
        assert len(headers) == len(fields), f"a repeated field: {fields}"
        return Response(version, int(status), reason, fields, headers, b"")

    def read(self, n: int) -> bytes:
        data = self.file.read(n)
        assert len(data) == n, f"{len(data)} of {n} bytes before the connection closed"
        return data

    def response(self, method: str = "GET") -> Response:
        r = self.head()
        if method != "HEAD" and r.status != 304:
            r.body = self.read(int(r.headers["content-length"]))
        return r

    def closed(self) -> bool:
        """True when the server closed the connection (EOF; a timeout raises instead)."""
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def request_bytes(method: str, path: str, headers: dict | None = None,
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}"]
    if version == "HTTP/1.1":
        lines.append("Host: 127.0.0.1")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(srv: Server, method: str, path: str, headers: dict | None = None,
             version: str = "HTTP/1.1") -> tuple[Response, bool]:
    """One request on a new connection: the response, and whether the server then closed."""
    c = Client(srv)
    try:
        c.send(request_bytes(method, path, headers, version))
        r = c.response(method)
        if r.headers.get("connection") == "close":
            return r, c.closed()
        return r, False
    finally:
        c.close()


def raw_exchange(srv: Server, data: bytes) -> tuple[Response, bool]:
    """Send *data* as it is; the response and whether the server closed after it."""
    c = Client(srv)
    try:
        c.send(data)
        r = c.response()
        return r, c.closed()
    finally:
        c.close()


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str, bytes]]:
    """(Content-Type, Content-Range, data) of each part of a multipart/byteranges body,
    read strictly: RFC 9110 section 14.6, each part's length from its Content-Range."""
    kind, _, param = content_type.partition(";")
    assert kind == "multipart/byteranges"
    name, _, boundary = param.strip().partition("=")
    assert name == "boundary" and boundary
    delimiter = b"\r\n--" + boundary.encode()
    parts = []
    pos = 0
    while True:
        assert body.startswith(delimiter, pos), body[pos:pos + 80]
        pos += len(delimiter)
        if body.startswith(b"--\r\n", pos):
            assert pos + 4 == len(body), "bytes after the closing delimiter"
            return parts
        assert body.startswith(b"\r\n", pos)
        end = body.index(b"\r\n\r\n", pos)
        fields = dict(line.split(": ", 1)
                      for line in body[pos + 2:end].decode("latin-1").split("\r\n"))
        assert set(fields) == {"Content-Type", "Content-Range"}, fields
        span = fields["Content-Range"].removeprefix("bytes ").split("/")[0]
        first, last = (int(x) for x in span.split("-"))
        pos = end + 4
        parts.append((fields["Content-Type"], fields["Content-Range"],
                      body[pos:pos + last - first + 1]))
        pos += last - first + 1


def http_time(value: str) -> float:
    assert value.endswith(" GMT") and len(value) == 29, value  # IMF-fixdate
    return parsedate_to_datetime(value).timestamp()


# -- servers --------------------------------------------------------------------------


@dataclass
class Meta:
    size: int
    etag: str
    mtime: int
    content_type: str
    tier: str


def metadata(srv: Server) -> dict[str, Meta]:
    """What the index says of each object (the server must say the same)."""
    with srv.app.open() as store:
        return {r.id: Meta(r.size, f'"{r.xxh3}"', int(r.mtime), r.content_type, r.tier)
                for r in store.objects()}


def served_objects(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """The objects of conftest.py's ``served``."""
    return {
        "big.mp4": (make_file(tmp / "b", (3 << 20) + 17, seed=1).read_bytes(), "ssd"),
        "small.m4s": (make_file(tmp / "s", 16 << 10, seed=2).read_bytes(), "flash"),
        "tail.ts": (make_file(tmp / "t", 100 << 10, seed=3).read_bytes(), "hdd"),
        "empty.bin": (b"", "ssd"),
    }


@pytest.fixture(scope="module", params=FASTPATHS)
def ro(request, tmp_path_factory):
    """One server per fast path for the tests that change nothing, holding the objects
    of ``served``."""
    tmp = tmp_path_factory.mktemp(f"ro-{request.param}")
    srv = start_server(tmp / "app", request.param, objects=served_objects(tmp))
    try:
        srv.meta = metadata(srv)
        yield srv
    finally:
        srv.stop()


def check_object_head(r: Response, srv, oid: str, status: int, length: int) -> None:
    """The fields of a 200/206 single-part response for *oid*, exactly."""
    m = srv.meta[oid]
    assert r.version == "HTTP/1.1"
    assert r.status == status
    assert set(r.headers) == OBJECT_FIELDS | ({"content-range"} if status == 206 else set())
    assert r.headers["server"] == "oca"
    assert abs(http_time(r.headers["date"]) - time.time()) < 5
    assert r.headers["etag"] == m.etag == f'"{digest_bytes(srv.objects[oid])}"'
    assert http_time(r.headers["last-modified"]) == m.mtime
    assert r.headers["content-type"] == m.content_type
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(length)


# -- whole objects: GET and HEAD ------------------------------------------------------


@pytest.mark.parametrize("oid", ["big.mp4", "small.m4s", "tail.ts", "empty.bin"])
def test_get_whole_object(ro, oid):
    data = ro.objects[oid]
    r, _ = exchange(ro, "GET", f"/o/{oid}")
    check_object_head(r, ro, oid, 200, len(data))
    assert r.headers["connection"] == "keep-alive"
    assert r.body == data


@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=0-99"}, {"Range": "bytes=0-9,20-29"},
                                     {"Range": "bytes=99999-"}])
def test_head_has_the_get_fields_and_no_body(ro, headers):
    get, _ = exchange(ro, "GET", "/o/small.m4s", headers)
    # Connection: close lets the end of the stream show that no body byte follows the head.
    c = Client(ro)
    try:
        c.send(request_bytes("HEAD", "/o/small.m4s", {**headers, "Connection": "close"}))
        head = c.head()
        assert c.closed()
    finally:
        c.close()
    assert head.status == get.status
    assert head.reason == get.reason
    names = [n for n, _ in get.fields]
    assert [n for n, _ in head.fields] == names
    for (name, a), (_, b) in zip(get.fields, head.fields, strict=True):
        if name == "Date":
            assert abs(http_time(a) - http_time(b)) <= 1
        elif name == "Connection":
            assert (a, b) == ("keep-alive", "close")
        elif name == "Content-Type" and a.startswith("multipart/"):
            assert b.split(";")[0] == "multipart/byteranges"  # a fresh boundary each time
        else:
            assert a == b, name


# -- ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("bytes=100-199", 100, 199),            # single range
    ("bytes=0-0", 0, 0),
    ("bytes=-500", 16384 - 500, 16383),     # suffix
    ("bytes=-99999", 0, 16383),             # suffix longer than the object
    ("bytes=16000-", 16000, 16383),         # open-ended
    ("bytes=16000-99999", 16000, 16383),    # last clamped
    ("bytes=0-", 0, 16383),                 # the whole object is still a range
    ("bytes=0-99,50-149", 0, 149),          # overlapping: coalesced into one
    ("bytes=10-19,20-29", 10, 29),          # adjacent: coalesced
    ("bytes=5-9,99999-", 5, 9),             # an unsatisfiable spec among others is dropped
])
def test_single_range(ro, spec, first, last):
    data = ro.objects["small.m4s"]
    r, _ = exchange(ro, "GET", "/o/small.m4s", {"Range": spec})
    check_object_head(r, ro, "small.m4s", 206, last - first + 1)
    assert r.reason == "Partial Content"
    assert r.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert r.body == data[first:last + 1]


def test_single_range_of_a_large_object(ro):
    data = ro.objects["big.mp4"]
    first, last = 1 << 20, len(data) - 1
    r, _ = exchange(ro, "GET", "/o/big.mp4", {"Range": f"bytes={first}-"})
    check_object_head(r, ro, "big.mp4", 206, last - first + 1)
    assert r.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert r.body == data[first:]


@pytest.mark.parametrize(("spec", "spans"), [
    ("bytes=0-9,100-109,-10", [(0, 9), (100, 109), (16374, 16383)]),
    ("bytes=-10,0-9", [(0, 9), (16374, 16383)]),                       # sorted
    ("bytes=0-99,50-149,200-209,205-300", [(0, 149), (200, 300)]),     # overlaps coalesced
    ("bytes=1-1, 3-3 ,,5-5", [(1, 1), (3, 3), (5, 5)]),               # OWS, empty elements
    (f"bytes={','.join(f'{2 * i}-{2 * i}' for i in range(MAX_RANGES))}",
     [(2 * i, 2 * i) for i in range(MAX_RANGES)]),                     # as many as allowed
])
def test_multiple_ranges_are_multipart(ro, spec, spans):
    data = ro.objects["small.m4s"]
    m = ro.meta["small.m4s"]
    r, _ = exchange(ro, "GET", "/o/small.m4s", {"Range": spec})
    assert r.status == 206
    assert set(r.headers) == OBJECT_FIELDS
    assert r.headers["etag"] == m.etag
    assert http_time(r.headers["last-modified"]) == m.mtime
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(len(r.body))
    parts = parse_multipart(r.body, r.headers["content-type"])
    assert [(ctype, crange) for ctype, crange, _ in parts] == [
        (m.content_type, f"bytes {a}-{b}/{len(data)}") for a, b in spans]
    assert [body for _, _, body in parts] == [data[a:b + 1] for a, b in spans]


def test_multipart_of_a_large_object(ro):
    data = ro.objects["big.mp4"]
    spans = [(0, 999), (1 << 20, (2 << 20) - 1), (len(data) - 17, len(data) - 1)]
    spec = "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)
    r, _ = exchange(ro, "GET", "/o/big.mp4", {"Range": spec})
    assert r.status == 206
    parts = parse_multipart(r.body, r.headers["content-type"])
    assert [(crange, body) for _, crange, body in parts] == [
        (f"bytes {a}-{b}/{len(data)}", data[a:b + 1]) for a, b in spans]


def test_multipart_boundary_is_fresh(ro):
    a, _ = exchange(ro, "GET", "/o/small.m4s", {"Range": "bytes=0-1,5-6"})
    b, _ = exchange(ro, "GET", "/o/small.m4s", {"Range": "bytes=0-1,5-6"})
    assert a.headers["content-type"] != b.headers["content-type"]


@pytest.mark.parametrize("spec", [
    ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGES + 1)),      # one over the cap
    ",".join(["0-99"] * (MAX_RANGES + 1)),                              # counted before merging
])
def test_too_many_ranges_serve_the_whole_object(ro, spec):
    r, _ = exchange(ro, "GET", "/o/small.m4s", {"Range": f"bytes={spec}"})
    check_object_head(r, ro, "small.m4s", 200, 16384)
    assert r.body == ro.objects["small.m4s"]


@pytest.mark.parametrize("spec", ["items=0-9", "bytes 0-9"])
def test_range_of_another_unit_is_ignored(ro, spec):
    r, _ = exchange(ro, "GET", "/o/small.m4s", {"Range": spec})
    assert r.status == 200
    assert r.body == ro.objects["small.m4s"]


@pytest.mark.parametrize(("oid", "spec"), [
    ("small.m4s", "bytes=16384-"),
    ("small.m4s", "bytes=99999-100000"),
    ("small.m4s", "bytes=20000-30000,40000-"),
    ("small.m4s", "bytes=9-5"),          # invalid: first after last
    ("small.m4s", "bytes=-0"),
    ("small.m4s", "bytes=abc"),
    ("small.m4s", "bytes="),
    ("empty.bin", "bytes=0-"),
    ("empty.bin", "bytes=-5"),
])
def test_unsatisfiable_range_is_416(ro, oid, spec):
    size = len(ro.objects[oid])
    for method in ("GET", "HEAD"):
        r, _ = exchange(ro, method, f"/o/{oid}", {"Range": spec})
        assert (r.status, r.reason) == (416, "Range Not Satisfiable")
        assert r.headers["content-range"] == f"bytes */{size}"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert "date" in r.headers
    assert r.body == b""
    r, _ = exchange(ro, "GET", f"/o/{oid}", {"Range": spec})
    assert r.body == b"416 Range Not Satisfiable\n"


# -- /o/<id>/range/<first>-<last> -----------------------------------------------------


@pytest.mark.parametrize(("first", "last", "end"), [
    (0, 0, 0), (100, 199, 199), (16000, 99999, 16383), (0, 16383, 16383)])
def test_path_range(ro, first, last, end):
    data = ro.objects["small.m4s"]
    m = ro.meta["small.m4s"]
    r, _ = exchange(ro, "GET", f"/o/small.m4s/range/{first}-{last}")
    # The range is the resource: 200, a validator naming the slice, no further ranges.
    assert r.status == 200
    assert set(r.headers) == {"server", "date", "etag", "content-type", "accept-ranges",
                              "content-length", "connection"}
    assert r.headers["etag"] == f'"{m.etag[1:-1]}-{first}-{end}"'
    assert r.headers["content-type"] == m.content_type
    assert r.headers["accept-ranges"] == "none"
    assert r.headers["content-length"] == str(end - first + 1)
    assert r.body == data[first:end + 1]
    head, _ = exchange(ro, "HEAD", f"/o/small.m4s/range/{first}-{last}")
    assert (head.status, head.body) == (200, b"")
    assert {k: v for k, v in head.headers.items() if k != "date"} == {
        k: v for k, v in r.headers.items() if k != "date"}


def test_path_range_preconditions(ro):
    data = ro.objects["small.m4s"]
    whole = ro.meta["small.m4s"].etag
    etag = f'"{whole[1:-1]}-10-19"'
    for headers, status in (({"If-None-Match": etag}, 304), ({"If-None-Match": "*"}, 304),
                            ({"If-None-Match": whole}, 200),  # another resource's tag
                            ({"If-Match": etag}, 200), ({"If-Match": whole}, 412),
                            ({"Range": "bytes=0-1"}, 200)):  # no ranges of a range
        for method in ("GET", "HEAD"):
            r, _ = exchange(ro, method, "/o/small.m4s/range/10-19", headers)
            assert r.status == status, (method, headers)
            if status == 304:
                assert r.headers["etag"] == etag
                assert "content-length" not in r.headers
            if status == 200 and method == "GET":
                assert r.body == data[10:20]


def test_path_range_of_a_large_object(ro):
    data = ro.objects["big.mp4"]
    status, headers, body = ro.request("GET", "/o/big.mp4/range/1048576-3145727")
    assert status == 200
    assert body == data[1048576:3145728]


@pytest.mark.parametrize(("path", "status"), [
    ("/o/small.m4s/range/16384-16400", 416),
    ("/o/small.m4s/range/10-5", 416),
    ("/o/empty.bin/range/0-0", 416),
    ("/o/small.m4s/range/-5", 404),
    ("/o/small.m4s/range/5-", 404),
    ("/o/small.m4s/range/a-b", 404),
    ("/o/small.m4s/range/1-2/3", 404),
    ("/o/small.m4s/range/1234567890123456789-1234567890123456790", 404),
])
def test_bad_path_range(ro, path, status):
    r, _ = exchange(ro, "GET", path)
    assert r.status == status
    if status == 416:
        oid = path.split("/")[2]
        assert r.headers["content-range"] == f"bytes */{len(ro.objects[oid])}"


# -- conditional requests -------------------------------------------------------------


def test_if_none_match_and_if_modified_since_304(ro):
    m = ro.meta["small.m4s"]
    lm = ro.request("HEAD", "/o/small.m4s")[1]["last-modified"]
    for headers in ({"If-None-Match": m.etag}, {"If-None-Match": f'"x", {m.etag}'},
                    {"If-None-Match": f"W/{m.etag}"}, {"If-None-Match": "*"},
                    {"If-Modified-Since": lm},
                    {"If-Modified-Since": "Fri, 31 Dec 9999 23:59:59 GMT"},
                    {"If-None-Match": m.etag, "Range": "bytes=0-9"}):
        for method in ("GET", "HEAD"):
            c = Client(ro)
            try:
                # A second request behind it shows where the 304 ends: no body, no length.
                c.send(request_bytes(method, "/o/small.m4s", headers)
                       + request_bytes("GET", "/o/empty.bin"))
                r = c.head()
                assert (r.status, r.reason) == (304, "Not Modified"), headers
                assert set(r.headers) == {"server", "date", "etag", "last-modified",
                                          "connection"}
                assert r.headers["etag"] == m.etag
                assert r.headers["last-modified"] == lm
                after = c.response()
                assert (after.status, after.body) == (200, b"")
            finally:
                c.close()


def test_conditions_that_do_not_hold_serve_200(ro):
    data = ro.objects["small.m4s"]
    m = ro.meta["small.m4s"]
    earlier = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(m.mtime - 10))
    for headers in ({"If-None-Match": '"0123"'}, {"If-Modified-Since": earlier},
                    {"If-Modified-Since": "not a date"},
                    # If-None-Match decides; If-Modified-Since is then ignored (RFC 9110 13.2.2)
                    {"If-None-Match": '"0123"',
                     "If-Modified-Since": "Fri, 31 Dec 9999 23:59:59 GMT"},
                    {"If-Match": m.etag}, {"If-Match": "*"}):
        r, _ = exchange(ro, "GET", "/o/small.m4s", headers)
        assert r.status == 200, headers
        assert r.body == data


def test_precondition_failed_412(ro):
    m = ro.meta["small.m4s"]
    earlier = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(m.mtime - 10))
    for headers in ({"If-Match": '"0123"'}, {"If-Match": f"W/{m.etag}"},
                    {"If-Unmodified-Since": earlier},
                    {"If-Match": '"0123"', "Range": "bytes=0-9"}):
        r, _ = exchange(ro, "GET", "/o/small.m4s", headers)
        assert (r.status, r.reason) == (412, "Precondition Failed"), headers
        assert r.body == b"412 Precondition Failed\n"


def test_if_range(ro):
    data = ro.objects["small.m4s"]
    m = ro.meta["small.m4s"]
    lm = ro.request("HEAD", "/o/small.m4s")[1]["last-modified"]
    for if_range, status in ((m.etag, 206), (lm, 206), ('"0123"', 200), (f"W/{m.etag}", 200),
                             ("Thu, 01 Jan 1998 00:00:00 GMT", 200), ("garbage", 200)):
        r, _ = exchange(ro, "GET", "/o/small.m4s",
                        {"Range": "bytes=10-19,30-39", "If-Range": if_range})
        assert r.status == status, if_range
        if status == 200:
            assert r.body == data
        else:
            parts = parse_multipart(r.body, r.headers["content-type"])
            assert [body for _, _, body in parts] == [data[10:20], data[30:40]]
    r, _ = exchange(ro, "GET", "/o/small.m4s", {"Range": "bytes=10-19", "If-Range": m.etag})
    assert (r.status, r.body) == (206, data[10:20])


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/o/nope.mp4", "/o/", "/o/.hidden", "/o/-dash", "/o/a%2Fb", "/o/../oca.toml",
    "/o/small.m4s/", "/o/small.m4s/other", "/o/small%2Em4s", "/o/" + "a" * 129, "/", "/x",
    "/objects/small.m4s", "/o/small.m4s%00", "/metrics",
])
def test_not_found_404(ro, path):
    for method in ("GET", "HEAD"):
        r, closed = exchange(ro, method, path)
        assert (r.status, r.reason) == (404, "Not Found")
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-length"] == str(len(b"404 Not Found\n"))
        assert r.headers["connection"] == "keep-alive" and not closed
    assert r.body == b""
    assert exchange(ro, "GET", path)[0].body == b"404 Not Found\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_405_with_allow(ro, method):
    for path in ("/o/small.m4s", "/o/small.m4s/range/0-9"):
        r, _ = exchange(ro, method, path, {"Content-Length": "0"})
        assert (r.status, r.reason) == (405, "Method Not Allowed")
        assert r.headers["allow"] == "GET, HEAD"
        assert r.body == b"405 Method Not Allowed\n"


def test_unknown_method_405_and_close(ro):
    r, closed = raw_exchange(ro, b"BREW /o/small.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.headers["connection"] == "close" and closed


@pytest.mark.parametrize("data", [
    b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\nNo-Colon-Here\r\n\r\n",
    b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /o/small.m4s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /o/small.m4s FTP/1.1\r\n\r\n",
], ids=["field-without-colon", "bad-content-length", "content-length-and-chunked",
        "bad-version"])
def test_malformed_request_400_and_close(ro, data):
    r, closed = raw_exchange(ro, data)
    assert (r.status, r.reason) == (400, "Bad Request")
    assert r.body == b"400 Bad Request\n"
    assert r.headers["connection"] == "close" and closed


def test_url_too_long_414(ro):
    r, closed = raw_exchange(ro, request_bytes("GET", "/o/" + "a" * 9000))
    assert (r.status, r.reason) == (414, "URI Too Long")
    assert r.headers["connection"] == "close" and closed
    # Just under the limit: served.
    r, _ = exchange(ro, "GET", "/o/small.m4s?" + "q" * 8000)
    assert r.status == 200


@pytest.mark.parametrize("headers", [
    {"Range": "bytes=" + ",".join(["0-0"] * 6000)},   # a field we read, past 16 KiB
    {"Cookie": "c" * 30000},                          # any field: the head past its limit
    {f"X-Field-{i}": "v" * 100 for i in range(300)},
], ids=["range", "cookie", "many-fields"])
def test_header_too_large_431(ro, headers):
    r, closed = raw_exchange(ro, request_bytes("GET", "/o/small.m4s", headers))
    assert (r.status, r.reason) == (431, "Request Header Fields Too Large")
    assert r.headers["connection"] == "close" and closed


def test_a_rejected_request_closes_in_stages_so_no_reset_destroys_the_answer(ro):
    """RFC 9112 section 9.6: after refusing a request (here a 400, no Host) the server
    shuts its side and reads on, so a client still sending gets no TCP reset, which could
    destroy the response before the client reads it. With a plain close, the bytes sent
    after it draw a reset and the next send fails (EPIPE or ECONNRESET)."""
    with socket.create_connection(("127.0.0.1", ro.port), timeout=10) as s:
        s.sendall(b"GET /o/small.m4s HTTP/1.1\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"\r\nConnection: close\r\n" in answer
        s.sendall(b"x" * 100_000)  # the rest of what this client was sending
        time.sleep(0.3)  # on loopback, a reset would be back long before this
        s.sendall(b"y" * 1000)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""


# -- connections ----------------------------------------------------------------------


def test_keep_alive_http_client(ro):
    c = ro.conn()
    try:
        sock = None
        for path, headers, status, body in (
                ("/o/small.m4s", {}, 200, ro.objects["small.m4s"]),
                ("/o/big.mp4", {"Range": "bytes=5-9"}, 206, ro.objects["big.mp4"][5:10]),
                ("/o/nope", {}, 404, b"404 Not Found\n"),
                ("/o/tail.ts", {}, 200, ro.objects["tail.ts"]),
                ("/o/big.mp4", {}, 200, ro.objects["big.mp4"])):
            c.request("GET", path, headers=headers)
            r = c.getresponse()
            assert (r.status, r.read()) == (status, body)
            assert not r.will_close
            sock = sock or c.sock
            assert c.sock is sock, "the connection was not kept alive"
    finally:
        c.close()


def test_pipelining_three_requests_in_one_write(ro):
    c = Client(ro)
    try:
        c.send(request_bytes("GET", "/o/big.mp4")
               + request_bytes("GET", "/o/small.m4s", {"Range": "bytes=-100"})
               + request_bytes("HEAD", "/o/tail.ts"))
        r1, r2, r3 = c.response(), c.response(), c.response("HEAD")
        assert (r1.status, r1.body) == (200, ro.objects["big.mp4"])
        assert (r2.status, r2.body) == (206, ro.objects["small.m4s"][-100:])
        assert (r3.status, r3.body) == (200, b"")
        assert r3.headers["content-length"] == str(len(ro.objects["tail.ts"]))
        # Still open: a fourth on the same connection.
        c.send(request_bytes("GET", "/o/tail.ts", {"Connection": "close"}))
        r4 = c.response()
        assert (r4.status, r4.body) == (200, ro.objects["tail.ts"])
        assert r4.headers["connection"] == "close"
        assert c.closed()
    finally:
        c.close()


def test_pipelined_requests_after_close_are_not_answered(ro):
    c = Client(ro)
    try:
        c.send(request_bytes("GET", "/o/small.m4s", {"Connection": "close"})
               + request_bytes("GET", "/o/tail.ts"))
        r = c.response()
        assert (r.status, r.body) == (200, ro.objects["small.m4s"])
        assert c.closed()
    finally:
        c.close()


def test_connection_close(ro):
    r, closed = exchange(ro, "GET", "/o/small.m4s", {"Connection": "close"})
    assert r.headers["connection"] == "close" and closed
    assert r.body == ro.objects["small.m4s"]


def test_http10_client(ro):
    data = ro.objects["small.m4s"]
    r, closed = exchange(ro, "GET", "/o/small.m4s", version="HTTP/1.0")
    assert r.version == "HTTP/1.1"  # RFC 9110 section 2.5: our version, their features
    assert r.status == 200
    assert r.headers["connection"] == "close" and closed
    assert r.body == data
    r, closed = exchange(ro, "GET", "/o/small.m4s", {"Range": "bytes=1-2"}, version="HTTP/1.0")
    assert (r.status, r.body) == (206, data[1:3]) and closed
    # HTTP/1.0 with keep-alive asked for: kept open.
    c = Client(ro)
    try:
        for _ in range(2):
            c.send(request_bytes("GET", "/o/small.m4s", {"Connection": "keep-alive"},
                                 version="HTTP/1.0"))
            r = c.response()
            assert r.headers["connection"] == "keep-alive"
            assert r.body == data
    finally:
        c.close()


def test_health(ro):
    status, headers, body = ro.request("GET", "/health")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["appliance"] == "test1"
    assert health["draining"] is False
    assert health["fastpath"] == ro.fastpath
    assert health["objects"] == len(ro.objects)
    assert set(health["disks"].values()) == {"ok"}
    status, body = ro.admin("GET", "/health")
    assert status == 200
    assert json.loads(body)["fastpath"] == ro.fastpath


# -- curl -----------------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20", *args],
                          capture_output=True, timeout=30)


@pytest.fixture
def need_curl():
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (make test installs it)")


def test_curl_resumes_a_download(ro, need_curl, tmp_path):
    data = ro.objects["big.mp4"]
    out = tmp_path / "big.mp4"
    out.write_bytes(data[:1000])
    r = curl("-C", "-", "-o", str(out), "-w", "%{http_code}", f"{ro.base}/o/big.mp4")
    assert (r.returncode, r.stdout) == (0, b"206"), r.stderr
    assert out.read_bytes() == data


def test_curl_reuses_one_connection(ro, need_curl):
    r = curl("-w", "%{num_connects}\n", "-o", "/dev/null", f"{ro.base}/o/small.m4s",
             "-o", "/dev/null", f"{ro.base}/o/tail.ts", "-o", "/dev/null",
             f"{ro.base}/o/small.m4s/range/0-9")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [b"1", b"0", b"0"]


def test_curl_multirange_and_http10(ro, need_curl):
    data = ro.objects["tail.ts"]
    r = curl("--http1.0", "-r", "0-9,-10", "-D", "-", f"{ro.base}/o/tail.ts")
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    ctype = next(line.split(b": ", 1)[1] for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-type:"))
    parts = parse_multipart(body, ctype.decode())
    assert [p[2] for p in parts] == [data[:10], data[-10:]]


# -- REDbot ---------------------------------------------------------------------------


REDBOT_EXPECTED = {
    # REDbot sends its own Range, If-None-Match and If-Modified-Since requests.
    "/o/small.m4s": {"CL_CORRECT", "DATE_CORRECT", "RANGE_CORRECT", "INM_304", "IMS_304"},
    "/o/small.m4s/range/0-99": {"CL_CORRECT", "DATE_CORRECT", "INM_304"},
}


def test_redbot_finds_nothing_bad(ro):
    """REDbot (HTTP lint) on each URL form: no note of level "bad", and the notes that show
    it did check ranges and validators. Its command line cannot add request headers, so
    ranged requests are its own and the path form's."""
    exe = Path(sys.executable).parent / "redbot"
    if not exe.exists():
        pytest.fail("redbot is not installed: pip install -e '.[test]'")
    runs = {path: subprocess.Popen([str(exe), "-o", "har", ro.base + path], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for path in REDBOT_EXPECTED}
    results = {path: (proc.communicate(timeout=120), proc.returncode)
               for path, proc in runs.items()}
    for path, ((out, err), returncode) in results.items():
        assert returncode == 0, err
        entries = json.loads(out)["log"]["entries"]
        assert len(entries) == 1, entries
        messages = entries[0]["_red_messages"]
        bad = [m for m in messages if m["level"].lower() == "bad"]
        assert not bad, f"{path}: {json.dumps(bad, indent=1)}"
        notes = {m["note_id"] for m in messages}
        assert REDBOT_EXPECTED[path] <= notes, f"{path}: {sorted(notes)}"


# -- signed URLs ----------------------------------------------------------------------

KEY_TEXT = b"8d2f4a6c0e1b3d5f7a9c2e4b6d8f0a1c"


@pytest.fixture(params=FASTPATHS)
def signed(request, tmp_path):
    key_file = tmp_path / "url.key"
    key_file.write_bytes(KEY_TEXT + b"\n")
    objects = {"small.m4s": (os.urandom(4096), "flash")}
    srv = start_server(tmp_path / "app", request.param, objects=objects,
                       extra=f'[auth]\nkey_file = "{key_file}"\n')
    srv.key = load_key(key_file)
    yield srv
    srv.stop()


def test_signed_urls(signed, need_curl):
    srv, key, data = signed, signed.key, signed.objects["small.m4s"]
    now = int(time.time())
    good = Signer(key).token("small.m4s", now + 60)
    assert good == f"{now + 60}.{good.split('.')[1]}" and key == KEY_TEXT
    for query, status in (
            (f"?t={good}", 200),
            (f"?x=1&t={good}&y=2", 200),
            ("", 403),
            ("?t=", 403),
            (f"?t={now + 60}", 403),
            (f"?t={Signer(key).token('small.m4s', now - 5)}", 403),                 # expired
            (f"?t={now + 3600}.{good.split('.')[1]}", 403),                 # expiry changed
            (f"?t={Signer(key).token('other.m4s', now + 60)}", 403),                # another object
            (f"?t={Signer(b'another key of 32 bytes........').token('small.m4s', now + 60)}", 403),
            (f"?t={good.upper()}", 403)):
        r, _ = exchange(srv, "GET", f"/o/small.m4s{query}")
        assert r.status == status, query
        assert r.body == (data if status == 200 else b"403 Forbidden\n"), query
    r, _ = exchange(srv, "GET", f"/o/small.m4s/range/0-9?t={good}")
    assert (r.status, r.body) == (200, data[:10])
    r, _ = exchange(srv, "GET", f"/o/small.m4s?t={good}", {"Range": "bytes=0-9,-1"})
    assert r.status == 206
    assert exchange(srv, "HEAD", "/o/small.m4s")[0].status == 403
    # A URL that names no object, or another method, is answered before any token matters.
    assert exchange(srv, "GET", "/o/.bad")[0].status == 404
    assert exchange(srv, "POST", "/o/small.m4s", {"Content-Length": "0"})[0].status == 405
    assert exchange(srv, "GET", "/health")[0].status == 200

    # The operator's `oca sign` prints a URL this server accepts (fetched with curl).
    res = srv.oca("sign", "small.m4s", "--ttl", "60s", "--base", srv.base)
    assert res.returncode == 0, res.stderr
    url = res.stdout.strip()
    assert url.startswith(f"{srv.base}/o/small.m4s?t=")
    r = curl("-w", "\n%{http_code}", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data + b"\n200"
    r = curl("-o", "/dev/null", "-w", "%{http_code}", url[:-1] + ("0" if url[-1] != "0" else "1"))
    assert r.stdout == b"403"


# -- changes made while serving -------------------------------------------------------


def test_put_rm_mv_verify_are_seen_while_serving(served):
    srv = served
    new = os.urandom(50_000)
    assert srv.request("GET", "/o/new.mp4")[0] == 404

    # put: served within a second, with the type it was stored with (not its id's)
    (srv.app.root / "new").write_bytes(new)
    r = srv.oca("put", "new.mp4", str(srv.app.root / "new"), "--type", "video/webm")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: srv.request("GET", "/o/new.mp4")[::2] == (200, new), SEEN_WITHIN)
    assert srv.request("GET", "/o/new.mp4")[1]["content-type"] == "video/webm"

    # rm: an object that was open in the worker stops being served
    assert srv.request("GET", "/o/small.m4s")[0] == 200
    assert srv.oca("rm", "small.m4s").returncode == 0
    wait_for(lambda: srv.request("GET", "/o/small.m4s")[0] == 404, SEEN_WITHIN)
    assert srv.request("GET", "/o/small.m4s/range/0-9")[0] == 404

    # mv to another tier: still served, exactly, and the log names the new tier
    tail = srv.objects["tail.ts"]
    assert srv.request("GET", "/o/tail.ts")[::2] == (200, tail)
    r = srv.oca("mv", "tail.ts", "--tier", "ssd")
    assert r.returncode == 0, r.stderr

    def served_from_ssd():
        assert srv.request("GET", "/o/tail.ts")[::2] == (200, tail)
        return any(line["object"] == "tail.ts" and line["tier"] == "ssd"
                   for line in srv.log_lines())
    wait_for(served_from_ssd, SEEN_WITHIN + 1.5)  # + the log's once-a-second flush
    tiers = [line["tier"] for line in srv.log_lines() if line["object"] == "tail.ts"]
    assert tiers[0] == "hdd" and tiers[-1] == "ssd"
    assert tiers == sorted(tiers, key=lambda t: t == "ssd"), tiers  # hdd..., then ssd...
    assert all(line["status"] == 200 and line["bytes"] == len(tail)
               for line in srv.log_lines() if line["object"] == "tail.ts")

    # corrupt on disk + oca verify: quarantined, no longer served
    assert srv.request("GET", "/o/big.mp4")[0] == 200
    with srv.app.open() as store:
        path = store.path_of(store.get("big.mp4"))
    with open(path, "r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = srv.oca("verify", "big.mp4")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "corrupt: big.mp4" in r.stdout
    wait_for(lambda: srv.request("GET", "/o/big.mp4")[0] == 404, SEEN_WITHIN)
    assert srv.request("GET", "/o/new.mp4")[::2] == (200, new)


def test_replaced_object_never_mixes_old_and_new_bytes(served, tmp_path):
    """A slow reader keeps the bytes it started with; new requests get the new ones."""
    srv = served
    size = 12 << 20  # beyond what socket buffers can hold (tcp_wmem max: 4 MiB by default)
    old = make_file(tmp_path / "old", size, seed=10).read_bytes()
    new = make_file(tmp_path / "new", size, seed=11).read_bytes()
    srv.put("movie.mp4", old, tier="hdd")
    wait_for(lambda: srv.request("HEAD", "/o/movie.mp4")[0] == 200, SEEN_WITHIN)

    def mid_response(old, change, after):
        """GET with a small receive window; *change* and *after* once the first bytes
        arrived; then the rest must be exactly *old*."""
        slow = Client(srv, rcvbuf=4096, timeout=30)
        try:
            slow.send(request_bytes("GET", "/o/movie.mp4"))
            r = slow.head()
            assert (r.status, r.headers["etag"]) == (200, f'"{digest_bytes(old)}"')
            assert r.headers["content-length"] == str(size)
            start = slow.read(64 << 10)
            change()
            after()
            rest = slow.read(size - len(start))
            assert start + rest == old, "the response mixed old and new bytes"
        finally:
            slow.close()

    def replaced():
        srv.put("movie.mp4", new, tier="hdd")

    def new_is_served():
        etag = f'"{digest_bytes(new)}"'
        wait_for(lambda: srv.request("HEAD", "/o/movie.mp4")[1]["etag"] == etag, SEEN_WITHIN)
        status, headers, body = srv.request("GET", "/o/movie.mp4")
        assert status == 200 and body == new

    mid_response(old, replaced, new_is_served)

    # And a removed one finishes the responses under way.
    def removed():
        assert srv.oca("rm", "movie.mp4").returncode == 0

    def gone():
        wait_for(lambda: srv.request("HEAD", "/o/movie.mp4")[0] == 404, SEEN_WITHIN)

    mid_response(new, removed, gone)


# -- disks failing while serving ------------------------------------------------------


def test_vanished_disk_answers_404_then_heals(served):
    srv = served
    marker = srv.app.disks["flash"][0] / ".oca-disk"
    assert srv.request("GET", "/o/small.m4s")[0] == 200  # open in the worker's cache
    marker.rename(marker.with_name("moved-away"))
    try:
        wait_for(lambda: srv.request("GET", "/o/small.m4s")[0] == 404, SEEN_WITHIN)
        assert srv.request("GET", "/o/small.m4s/range/0-9")[0] == 404
        assert srv.request("HEAD", "/o/small.m4s")[0] == 404
        # Objects on other disks are served; so is /health, while a disk is healthy.
        assert srv.request("GET", "/o/tail.ts")[::2] == (200, srv.objects["tail.ts"])
        status, _, body = srv.request("GET", "/health")
        assert status == 200
        assert json.loads(body)["disks"][str(srv.app.disks["flash"][0])] == "failed"
    finally:
        marker.with_name("moved-away").rename(marker)
    # The mount came back (the marker proves it is the same filesystem): served again.
    wait_for(lambda: srv.request("GET", "/o/small.m4s")[::2]
             == (200, srv.objects["small.m4s"]), SEEN_WITHIN)


@pytest.mark.parametrize("fastpath", FASTPATHS)
def test_failed_disk_redirects_to_the_origin(tmp_path, fastpath):
    srv = start_server(tmp_path / "app", fastpath, objects=served_objects(tmp_path),
                       server_extra='origin_url = "http://origin.example"')
    try:
        assert srv.request("GET", "/o/big.mp4")[0] == 200
        ssd = str(srv.app.disks["ssd"][0])
        with srv.app.open() as store:
            store.mark_failed(store.disks[ssd], "test: I/O errors")
        wait_for(lambda: srv.request("GET", "/o/big.mp4")[0] == 302, SEEN_WITHIN)
        for method, path, location in (
                ("GET", "/o/big.mp4", "http://origin.example/o/big.mp4"),
                ("HEAD", "/o/big.mp4", "http://origin.example/o/big.mp4"),
                ("GET", "/o/empty.bin?t=1.ab&x=y", "http://origin.example/o/empty.bin?t=1.ab&x=y")):
            r, _ = exchange(srv, method, path, {"Range": "bytes=0-9"})
            assert (r.status, r.reason) == (302, "Found")
            assert r.headers["location"] == location
        # Objects on healthy disks are still served here; unknown ones are not redirected.
        assert srv.request("GET", "/o/tail.ts")[::2] == (200, srv.objects["tail.ts"])
        assert srv.request("GET", "/o/nope.mp4")[0] == 404
    finally:
        srv.stop()


# -- drain ----------------------------------------------------------------------------


def test_past_the_drain_deadline_503(served):
    srv = served
    keep = Client(srv)
    try:
        keep.send(request_bytes("GET", "/o/small.m4s"))
        assert keep.response().status == 200
        status, _ = srv.admin("POST", "/drain?deadline=0")
        assert status == 200
        wait_for(lambda: srv.request("GET", "/o/small.m4s")[0] == 503, SEEN_WITHIN)
        r, closed = exchange(srv, "GET", "/o/tail.ts")
        assert (r.status, r.reason) == (503, "Service Unavailable")
        assert r.headers["connection"] == "close" and closed
        assert srv.request("GET", "/health")[0] == 503
        assert json.loads(srv.request("GET", "/health")[2])["draining"] is True
        assert keep.closed(), "an idle keep-alive connection outlived the drain deadline"
    finally:
        keep.close()
    status, _ = srv.admin("POST", "/undrain")
    assert status == 200
    wait_for(lambda: srv.request("GET", "/o/small.m4s")[::2]
             == (200, srv.objects["small.m4s"]), SEEN_WITHIN)
    assert srv.request("GET", "/health")[0] == 200


# -- observability --------------------------------------------------------------------


def test_access_log_lines_and_reopen_on_sighup(served):
    srv = served
    t0 = time.time()
    srv.request("GET", "/o/small.m4s", {"Range": "bytes=0-99"})
    srv.request("HEAD", "/o/big.mp4")
    srv.request("GET", "/o/tail.ts")
    srv.request("GET", "/o/nope.mp4")
    srv.request("GET", "/zzz")
    srv.request("GET", "/o/small.m4s/range/10-19")
    t1 = time.time()

    def ours():
        return [line for line in srv.log_lines() if line.get("path") != "/health"]
    lines = wait_for(lambda: len(ours()) >= 6 and ours())
    assert len(lines) == 6
    for line in lines:
        assert set(line) >= {"ts", "appliance", "object", "status", "bytes", "range", "client",
                             "dur_ms", "method", "tier"}
        assert isinstance(line["ts"], float) and t0 <= line["ts"] <= t1 + 0.01
        assert line["appliance"] == "test1"
        assert line["client"] == "127.0.0.1"
        assert isinstance(line["dur_ms"], float) and 0 <= line["dur_ms"] < 5000
    got = [(x["method"], x["object"], x["status"], x["bytes"], x["range"], x["tier"])
           for x in lines]
    assert got == [
        ("GET", "small.m4s", 206, 100, "bytes=0-99", "flash"),
        ("HEAD", "big.mp4", 200, 0, None, "ssd"),
        ("GET", "tail.ts", 200, 100 << 10, None, "hdd"),
        ("GET", "nope.mp4", 404, len(b"404 Not Found\n"), None, None),
        ("GET", None, 404, len(b"404 Not Found\n"), None, None),
        ("GET", "small.m4s", 200, 10, None, "flash"),
    ]
    assert lines[4]["path"] == "/zzz"

    # logrotate: rename, SIGHUP, and new lines go to a new file.
    rotated = srv.access_log.with_name("access.jsonl.1")
    srv.access_log.rename(rotated)
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(srv.access_log.exists)
    srv.request("GET", "/o/tail.ts", {"Range": "bytes=-5"})
    new = wait_for(lambda: [x for x in srv.log_lines() if x["object"] == "tail.ts"])
    assert [(x["status"], x["bytes"], x["range"]) for x in new] == [(206, 5, "bytes=-5")]
    old = [json.loads(x) for x in rotated.read_text().splitlines()]
    assert [x for x in old if x.get("path") != "/health"] == lines
    assert srv.proc.poll() is None


@pytest.mark.parametrize(("oid", "tier"), [("tail.ts", "hdd"), ("big.mp4", "ssd")])
def test_plain_gets_answer_log_and_count_as_the_general_path(served, oid, tier):
    # The first GET of an object opens its file on the general path (Handler.respond);
    # the plain keep-alive GETs after it take the hot path (no Job; in C on the compiled
    # connection loop). big.mp4 is larger than sendfile_max_chunk: its plain GETs go on
    # as a Job after the first send. Heads, bodies, log lines and counts must not tell
    # the paths apart.
    srv = served
    data = srv.objects[oid]
    sends = "fastpath" if srv.fastpath == "cython" else "fallback"
    before = wait_for(lambda: settled_metrics(srv), 5)
    c = Client(srv)
    try:
        responses = []
        for _ in range(3):
            c.send(request_bytes("GET", f"/o/{oid}"))
            responses.append(c.response())
    finally:
        c.close()
    first = [f for f in responses[0].fields if f[0] != "Date"]
    for r in responses:
        assert (r.status, [f for f in r.fields if f[0] != "Date"], r.body) == (200, first, data)

    def raw_lines():
        text = srv.access_log.read_text() if srv.access_log.exists() else ""
        return [line for line in text.splitlines() if f'"object":"{oid}"' in line]
    lines = wait_for(lambda: len(raw_lines()) == 3 and raw_lines())
    # Byte for byte, but for the time and the duration.
    assert len({re.sub(r'"(ts|dur_ms)":[0-9.]+', "", line) for line in lines}) == 1, lines

    def counted():
        after = scrape_metrics(srv)
        return {k: after[k] - before.get(k, 0) for k in (
            ("oca_requests_total", (("status", "200"),)),
            ("oca_body_bytes_total", (("tier", tier),)),
            ("oca_sends_total", (("path", sends),)),
            ("oca_response_seconds_count", ()))}
    want = dict.fromkeys(counted(), 3)
    want[("oca_body_bytes_total", (("tier", tier),))] = 3 * len(data)
    wait_for(lambda: counted() == want, 3)


def scrape_metrics(srv: Server) -> dict[tuple[str, tuple], float]:
    status, body = srv.admin("GET", "/metrics")
    assert status == 200
    return parse_metrics(body.decode())


def settled_metrics(srv: Server) -> dict[tuple[str, tuple], float] | None:
    """The metrics once they stopped moving (workers publish once a second)."""
    first = scrape_metrics(srv)
    time.sleep(1.1)
    return first if first == scrape_metrics(srv) else None


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics(served):
    srv = served

    def scrape():
        status, body = srv.admin("GET", "/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    def delta(before, after):
        return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}

    def settled():
        # Workers publish once a second: wait for the start-up's /health polls to show.
        first = scrape()
        time.sleep(1.1)
        return first == scrape() and first
    before = wait_for(settled, 5)
    assert before[("oca_workers", ())] == 1
    big, tail = srv.objects["big.mp4"], srv.objects["tail.ts"]
    srv.request("GET", "/o/big.mp4")
    srv.request("GET", "/o/small.m4s", {"Range": "bytes=0-99"})
    srv.request("GET", "/o/tail.ts")
    srv.request("GET", "/o/nope.mp4")
    etag = f'"{digest_bytes(srv.objects["small.m4s"])}"'
    srv.request("GET", "/o/small.m4s", {"If-None-Match": f'"x", {etag}'})
    srv.request("HEAD", "/o/big.mp4")
    srv.request("POST", "/o/big.mp4")
    n = 7
    sends = "fastpath" if srv.fastpath == "cython" else "fallback"
    text_bytes = len(b"404 Not Found\n") + len(b"405 Method Not Allowed\n")
    expected = {
        ("oca_requests_total", (("status", "200"),)): 3,
        ("oca_requests_total", (("status", "206"),)): 1,
        ("oca_requests_total", (("status", "304"),)): 1,
        ("oca_requests_total", (("status", "404"),)): 1,
        ("oca_requests_total", (("status", "405"),)): 1,
        ("oca_body_bytes_total", (("tier", "ssd"),)): len(big),
        ("oca_body_bytes_total", (("tier", "flash"),)): 100,
        ("oca_body_bytes_total", (("tier", "hdd"),)): len(tail),
        ("oca_body_bytes_total", (("tier", "none"),)): text_bytes,
        ("oca_sends_total", (("path", sends),)): n,
        ("oca_response_seconds_count", ()): n,
    }

    seen = {}

    def counted():
        seen.clear()
        seen.update((k, v) for k, v in delta(before, scrape()).items()
                    if k[0] not in ("oca_response_seconds_sum", "oca_response_seconds_bucket"))
        return seen == expected
    try:
        wait_for(counted, 3)
    except AssertionError:
        assert seen == expected
    after = scrape()
    assert after[("oca_response_seconds_sum", ())] > before[("oca_response_seconds_sum", ())]
    assert after[("oca_response_seconds_bucket", (("le", "+Inf"),))] == after[
        ("oca_response_seconds_count", ())]
    other = "fallback" if sends == "fastpath" else "fastpath"
    assert after[("oca_sends_total", (("path", other),))] == 0


@pytest.mark.parametrize("method", ["HEAD", "POST", "DELETE"])
def test_health_is_get_only(ro, method):
    # docs/serve.md: GET /health; any other method 405 with Allow: GET.
    status, headers, _ = ro.request(method, "/health")
    assert status == 405
    assert headers["allow"] == "GET"
