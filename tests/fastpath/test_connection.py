"""The connection loop, both implementations, in-process: a real Handler, a table of open
entries and an event loop in a thread; a client on the other end of a socket pair.

What it pins: every object response is sent by the loop from the handler's descriptor
(``Response``) or decided by the loop itself (plain GETs of any size, one simple range,
``/range/`` URLs: no call to ``Handler.respond``), with exact bytes through budgeted and
partial sends, a stalled reader, pipelining; and every response counts into its entry's
``hits`` and ``body_bytes``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import oca.http.handler as handler_module
from oca.http.accesslog import (
    MAX_BUFFERED_LINES,
    AccessLog,
    json_str,
    object_prefix,
    plain_get_fragments,
)
from oca.http.handler import Handler
from oca.http.head import http_date
from oca.http.metrics import MetricsArea
from oca.storage.lookup import ObjectLocation
from tests.fastpath.conftest import CONNECTIONS

MiB = 1 << 20
BIG = 3 * MiB + 17
SMALL = 16 << 10
XXH = "0123456789abcdef0123456789abcdef"


def object_class(mod):
    """oca.http.objects.OpenObject over *mod*'s Entry (the handler reads these fields)."""

    class TestObject(mod.Entry):
        __slots__ = ("etag", "content_type", "mtime", "disk", "last_modified", "headers")

        def __init__(self, object_id: str, fd: int, loc: ObjectLocation):
            super().__init__(object_id, fd, loc.size, loc.tier)
            self.etag = f'"{loc.xxh3}"'
            self.content_type = loc.content_type
            self.mtime = loc.mtime
            self.disk = loc.disk
            self.last_modified = http_date(loc.mtime)
            self.headers = (f"ETag: {self.etag}\r\nLast-Modified: {self.last_modified}\r\n"
                            f"Content-Type: {loc.content_type}\r\nAccept-Ranges: bytes\r\n")
            self.log_get = object_prefix("GET", object_id)
            self.log_head = object_prefix("HEAD", object_id)
            self.log_tier = json_str(loc.tier)
            self.log_plain = plain_get_fragments(object_id, loc.size, loc.tier)

    return TestObject


class Table:
    """The part of the worker's ObjectTable the handler and the loop use."""

    def __init__(self, mod, objects: dict):
        self.entries = mod.EntryTable(16)
        self.objects = objects
        self.healthy = True
        self.map = objects
        self.disk_states: dict = {}
        self.failed: list = []

    def get(self, object_id):
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.objects.get(object_id)
            if entry is not None:
                self.entries.add(entry)
        return entry

    def fail_disk(self, disk, reason):
        self.failed.append((disk, reason))


class Harness:
    """A worker's loop in a thread, serving one socket pair through *mod*'s Connection."""

    def __init__(self, mod, tmp_path: Path, budget: int, sndbuf: int | None = None):
        self.mod = mod
        self.data = {"big.mp4": random.Random(1).randbytes(BIG),
                     "small.m4s": random.Random(2).randbytes(SMALL)}
        cls = object_class(mod)
        self.fds = []
        objects = {}
        for oid, data in self.data.items():
            path = tmp_path / oid
            path.write_bytes(data)
            fd = os.open(path, os.O_RDONLY)
            self.fds.append(fd)
            objects[oid] = cls(oid, fd, ObjectLocation(str(path), len(data), XXH, "ssd",
                                                       "video/mp4", str(tmp_path), 1700000000))
        self.table = Table(mod, objects)
        self.area = MetricsArea(slots=1)
        self.metrics = self.area.worker(0)
        self.access_log = AccessLog(tmp_path / "access.jsonl", "t1")
        config = SimpleNamespace(server=SimpleNamespace(origin_url=None, max_ranges=16,
                                                        name="t1"))
        self.handler = Handler(self.table, config, self.metrics, self.access_log)
        self.responds = 0
        respond = self.handler.respond

        def counting(conn):
            self.responds += 1
            return respond(conn)
        self.handler.respond = counting
        self.loop = asyncio.new_event_loop()
        self.header_timeout = self.keepalive_timeout = self.send_timeout = 30.0
        self.max_header_size = 16 << 10
        self.max_url_size = 8 << 10
        self.max_head_size = self.max_header_size + self.max_url_size
        self.sendfile_max_chunk = budget
        self.forgotten: list = []
        self.pending = b""
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.shared = self.call(lambda: mod.Shared(self))
        server_side, self.client = socket.socketpair()
        if sndbuf is not None:
            server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        server_side.setblocking(False)
        self.client.settimeout(10)
        self.conn = self.call(lambda: mod.Connection(self.shared, server_side.detach(),
                                                     '"192.0.2.7"'))

    def call(self, fn):
        """Run *fn* on the loop's thread; its result."""
        done = threading.Event()
        box = []

        def run():
            try:
                box.append(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                box.append(e)
            done.set()
        self.loop.call_soon_threadsafe(run)
        assert done.wait(10)
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def forget(self, conn) -> None:
        self.forgotten.append(conn)

    def send(self, data: bytes) -> None:
        self.client.sendall(data)

    def response(self, head_only: bool = False) -> tuple[int, dict, bytes]:
        buf = self.pending
        while b"\r\n\r\n" not in buf:
            chunk = self.client.recv(65536)
            assert chunk, f"closed inside a head: {buf!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:])}
        length = 0 if head_only else int(fields.get("content-length", 0))
        body = bytearray(rest[:length])
        self.pending = rest[length:]
        while len(body) < length:
            chunk = self.client.recv(min(1 << 20, length - len(body)))
            assert chunk, f"closed after {len(body)} of {length} body bytes"
            body += chunk
        return int(lines[0].split()[1]), fields, bytes(body)

    def counts(self, oid: str) -> tuple[int, int]:
        entry = self.table.objects[oid]
        return self.call(lambda: (entry.hits, entry.body_bytes))

    def log_lines(self) -> list[str]:
        self.call(self.access_log.flush)
        path = self.access_log.path
        return path.read_text().splitlines() if path.exists() else []

    def close(self) -> None:
        self.call(self.conn.close)
        self.client.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.access_log.close()
        self.area.close()
        for fd in self.fds:
            os.close(fd)


@pytest.fixture(params=sorted(CONNECTIONS))
def mod(request, monkeypatch):
    module = importlib.import_module(CONNECTIONS[request.param])
    # The handler builds the descriptors of the loop under test.
    monkeypatch.setattr(handler_module, "Response", module.Response)
    return module


@pytest.fixture
def served(mod, tmp_path):
    h = Harness(mod, tmp_path, budget=256 << 10)
    yield h
    h.close()


def get(target: str, *fields: str, method: str = "GET") -> bytes:
    extra = "".join(f"{f}\r\n" for f in fields)
    return f"{method} {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def multipart_parts(fields: dict, body: bytes) -> list[tuple[str, bytes]]:
    boundary = fields["content-type"].split("boundary=")[1].encode()
    out = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        rng = [x for x in head.decode().split("\r\n") if x.startswith("Content-Range")][0]
        out.append((rng.split(": ")[1], data[:-2]))
    return out


def test_the_loop_decides_plain_gets_ranges_and_range_urls_itself(served):
    h = served
    big = h.data["big.mp4"]
    h.send(get("/o/big.mp4"))  # first: the handler opens the entry
    assert h.response()[2] == big
    assert h.responds == 1
    cases = [
        (get("/o/big.mp4"), 200, big),  # larger than the 256 KiB budget: partial sends
        (get("/o/big.mp4", "Range: bytes=1048576-2097151"), 206, big[MiB:2 * MiB]),
        (get("/o/big.mp4", "Range: bytes=3000000-"), 206, big[3000000:]),
        (get("/o/big.mp4", "Range: bytes=5-99999999"), 206, big[5:]),
        (get("/o/big.mp4/range/100-2000099"), 200, big[100:2000100]),
        (get("/o/big.mp4/range/3145000-99999999"), 200, big[3145000:]),
    ]
    for request, status, body in cases:
        h.send(request)
        got_status, fields, got = h.response()
        assert (got_status, len(got)) == (status, len(body)), request
        assert got == body, request
        if status == 206:
            first = len(big) - len(body) if request.endswith(b"-\r\n\r\n") else None
            assert fields["content-range"].endswith(f"/{BIG}")
            assert first is None or fields["content-range"].startswith(f"bytes {first}-")
    assert h.responds == 1
    assert h.counts("big.mp4") == (1 + len(cases), len(big) + sum(len(b) for _, _, b in cases))


def test_heads_of_an_earlier_second_are_redated_with_one_render_a_second(served):
    """Handler.render_heads runs once a second per worker: the heads of the other
    entries rendered in an earlier second go out with the new Date and otherwise the
    same bytes (200, 206 and /range/ heads alike)."""
    h = served
    requests = {"small": get("/o/small.m4s"), "big": get("/o/big.mp4"),
                "206": get("/o/big.mp4", "Range: bytes=10-19"),
                "slice": get("/o/big.mp4/range/10-19")}

    def fetch(name):
        h.send(requests[name])
        status, fields, _ = h.response()
        return status, fields

    for name in ("small", "big"):  # the handler opens the entries
        fetch(name)
    renders = []
    render = h.handler.render_heads
    h.handler.render_heads = lambda entry, now: (renders.append(entry.id), render(entry, now))
    try:
        for _ in range(3):  # again if the second turns within the steps (rare)
            before = {name: fetch(name) for name in ("big", "206", "slice")}
            time.sleep(1.05 - time.time() % 1)  # the start of the next second
            second = int(time.time())
            renders.clear()
            after = {name: fetch(name) for name in ("small", "big", "206", "slice")}
            if int(time.time()) == second:
                break
        else:
            pytest.fail("the second turned during each try")
    finally:
        h.handler.render_heads = render
    assert renders == ["small.m4s"]  # big.mp4's heads were redated, not rendered
    date = after["small"][1]["date"]
    assert date == http_date(second)
    for name, (status, fields) in before.items():
        assert fields["date"] != date
        assert after[name] == (status, {**fields, "date": date}), name


def test_the_loop_and_the_handler_give_the_same_heads(served):
    h = served
    h.send(get("/o/small.m4s"))
    h.response()
    for fields in (("Range: bytes=10-20",), ()):
        # The handler's answer (HTTP/1.0: not a keep-alive GET, so never the loop's), then
        # the loop's to the same request in HTTP/1.1.
        for target in ("/o/small.m4s", "/o/small.m4s/range/10-20"):
            if fields and "/range/" in target:
                continue
            h.send(get(target, *fields))
            mine = h.response()
            responds = h.responds
            h.send(get(target, *fields, "If-Range: \"" + XXH + "\""))
            theirs = h.response()
            assert h.responds == responds + 1
            drop = {"date"}
            assert ({k: v for k, v in mine[1].items() if k not in drop}, mine[2]) == (
                {k: v for k, v in theirs[1].items() if k not in drop}, theirs[2]), target


def test_descriptors_from_the_handler_multipart_conditionals_head(served):
    h = served
    big = h.data["big.mp4"]
    h.send(get("/o/big.mp4", "Range: bytes=0-99,1000000-2999999,-10"))
    status, fields, body = h.response()
    multipart_length = len(body)
    assert status == 206
    assert multipart_parts(fields, body) == [
        (f"bytes 0-99/{BIG}", big[:100]),
        (f"bytes 1000000-2999999/{BIG}", big[1000000:3000000]),
        (f"bytes {BIG - 10}-{BIG - 1}/{BIG}", big[-10:])]
    h.send(get("/o/big.mp4", f'If-None-Match: "{XXH}"'))
    assert h.response()[0] == 304
    h.send(get("/o/big.mp4", method="HEAD"))
    status, fields, body = h.response(head_only=True)
    assert (status, fields["content-length"], body) == (200, str(BIG), b"")
    h.send(get("/o/big.mp4", "Range: bytes=99999999-"))
    assert h.response()[0] == 416
    # The multipart and the HEAD are sent from the entry (the HEAD with no body bytes);
    # the 304 and the 416 carry none of its bytes and no entry.
    assert h.counts("big.mp4") == (2, multipart_length)


def test_pipelined_mix_of_ranges_answered_in_order(served):
    h = served
    big, small = h.data["big.mp4"], h.data["small.m4s"]
    h.send(get("/o/small.m4s") + get("/o/big.mp4"))
    h.response()
    h.response()
    responds = h.responds
    batch = [
        (get("/o/big.mp4", "Range: bytes=0-999999"), 206, big[:1000000]),
        (get("/o/small.m4s"), 200, small),
        (get("/o/big.mp4", "Range: bytes=0-9,20-29"), 206, None),
        (get("/o/big.mp4/range/10-19"), 200, big[10:20]),
        (get("/o/nothing"), 404, None),
        (get("/o/big.mp4"), 200, big),
        (get("/o/small.m4s", "Range: bytes=100-"), 206, small[100:]),
    ]
    h.send(b"".join(r for r, _, _ in batch))
    for request, status, body in batch:
        got_status, fields, got = h.response()
        assert got_status == status, request
        if body is not None:
            assert got == body, request
        elif status == 206:
            assert [d for _, d in multipart_parts(fields, got)] == [big[0:10], big[20:30]]
    assert h.responds == responds + 2  # the multipart and the 404


@pytest.mark.parametrize("budget", [0, 8 << 10])
def test_stalled_reader_of_a_multipart_response_gets_every_byte(mod, tmp_path, budget):
    h = Harness(mod, tmp_path, budget=budget, sndbuf=16 << 10)
    try:
        big = h.data["big.mp4"]
        spec = "Range: bytes=0-99999,200000-1199999,2000000-2000000,3000000-"
        h.send(get("/o/big.mp4", spec) + get("/o/big.mp4", "Range: bytes=7-70006"))
        time.sleep(0.5)  # the server's socket fills up and it waits for writability
        assert h.call(lambda: h.conn.idle) is False
        status, fields, body = h.response()
        assert status == 206
        assert multipart_parts(fields, body) == [
            (f"bytes 0-99999/{BIG}", big[:100000]),
            (f"bytes 200000-1199999/{BIG}", big[200000:1200000]),
            (f"bytes 2000000-2000000/{BIG}", big[2000000:2000001]),
            (f"bytes 3000000-{BIG - 1}/{BIG}", big[3000000:])]
        assert int(fields["content-length"]) == len(body)
        assert h.response()[2] == big[7:70007]
        assert h.counts("big.mp4") == (2, len(body) + 70000)
        lines = h.log_lines()
        assert [f'"bytes":{len(body)}' in lines[0], '"bytes":70000' in lines[1]] == [True, True]
    finally:
        h.close()


def test_an_aborted_response_counts_the_bytes_that_went_out(mod, tmp_path):
    h = Harness(mod, tmp_path, budget=0, sndbuf=16 << 10)
    try:
        h.send(get("/o/big.mp4"))
        time.sleep(0.3)
        got = len(h.client.recv(4096))
        h.call(h.conn.close)  # the send timeout, the drain deadline
        hits, sent = h.counts("big.mp4")
        assert hits == 1
        assert got - 400 < sent < BIG
        assert f'"bytes":{sent}' in h.log_lines()[0]
    finally:
        h.close()


def test_entry_counters_are_read_and_zeroed_from_python(served):
    h = served
    h.send(get("/o/small.m4s") * 3 + get("/o/small.m4s", method="HEAD"))
    for _ in range(3):
        h.response()
    h.response(head_only=True)
    entry = h.table.objects["small.m4s"]
    assert h.counts("small.m4s") == (4, 3 * SMALL)

    def zero():
        entry.hits = entry.body_bytes = 0
    h.call(zero)
    h.send(get("/o/small.m4s", "Range: bytes=0-9"))
    h.response()
    assert h.counts("small.m4s") == (1, 10)


@pytest.mark.parametrize(("budget", "one_turn"), [(SMALL, True), (SMALL - 1, False)])
def test_the_budget_counts_body_bytes(mod, tmp_path, budget, one_turn):
    """sendfile_max_chunk counts body bytes, as nginx's: an object of exactly the budget
    leaves in the turn that read its request, head and all, whether the handler decided
    the response (the first request opens the entry) or the loop did; one byte more
    than the budget waits for the next turn."""
    h = Harness(mod, tmp_path, budget=budget, sndbuf=1 << 20)

    def turn():
        # Write the request and read it in one step on the loop's thread: no poll runs
        # between them, so what is left after on_readable is that turn's doing.
        h.client.sendall(get("/o/small.m4s"))
        h.conn.on_readable()
        return h.conn.idle
    try:
        for responds in (1, 1):
            assert h.call(turn) is one_turn
            status, _, body = h.response()
            assert (status, body) == (200, h.data["small.m4s"])
            assert h.responds == responds
    finally:
        h.close()


def test_idle_connection_holds_no_parser(served):
    h = served
    h.send(get("/o/small.m4s"))
    h.response()
    assert h.call(lambda: h.conn.parser) is None
    h.send(b"GET /o/small.m4s HTTP/1.1\r\n")  # half a request: its parser stays
    time.sleep(0.1)
    assert h.call(lambda: h.conn.parser) is not None
    h.send(b"Host: t\r\n\r\n")
    assert h.response()[2] == h.data["small.m4s"]
    assert h.call(lambda: h.conn.parser) is None


def test_entry_table(mod):
    table = mod.EntryTable(2)
    a, b, c = (mod.Entry(x, -1, 1, "ssd") for x in "abc")
    assert table.add(a) is None
    assert table.add(b) is None
    assert table.get("a") is a  # b is now the least recent
    assert table.add(c) is b
    assert [e.id for e in table] == ["a", "c"]
    assert table.by_url(b"/o/a") is a
    assert table.by_url(b"/o/b") is None
    a2 = mod.Entry("a", -1, 2, "ssd")
    assert table.add(a2) is a  # replaced under its id
    assert table.by_url(b"/o/a") is a2
    assert table.remove("c") is c
    assert table.remove("c") is None
    assert len(table) == 1
    assert table.clear() == [a2]
    assert len(table) == 0 and list(table) == []


def test_both_implementations_have_the_typed_interface(mod):
    # _fastpath/__init__.pyi declares the classes both implementations export: every
    # field and method named there exists on each.
    import ast

    tree = ast.parse((Path(mod.__file__).parent / "__init__.pyi").read_text())
    instances = {
        "Entry": mod.Entry("a", -1, 1, "ssd"),
        "EntryTable": mod.EntryTable(1),
        "Response": mod.Response(200, b"x"),
    }
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef) or cls.name not in instances:
            continue
        obj = instances[cls.name]
        for node in cls.body:
            if isinstance(node, ast.AnnAssign):
                assert hasattr(obj, node.target.id), (cls.name, node.target.id)
            elif isinstance(node, ast.FunctionDef):
                assert hasattr(type(obj), node.name), (cls.name, node.name)
    for name in ("Connection", "Shared"):
        cls = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == name)
        for node in cls.body:
            if isinstance(node, ast.FunctionDef):
                assert hasattr(getattr(mod, name), node.name), (name, node.name)


def test_log_lines_and_counters_keep_order_text_and_totals(served, tmp_path):
    """Lines the loop puts together (in C for the compiled one: a buffer of 64 KiB moved
    into AccessLog.lines when full, before a line made in Python, and at each flush) stay
    in request order with those the handler makes, each with the exact text AccessLog
    gives the same fields; the counters reach the metrics area at publish."""
    h = served
    sent = []
    for i in range(700):  # ~130 KiB of lines: the C buffer fills twice
        if i % 97 == 5:
            target, request = "nope", get("/o/nope")  # the handler's 404
        elif i % 3 == 0:
            target, request = "big.mp4", get("/o/big.mp4", f"Range: bytes={i}-{i + 99}")
        else:
            target, request = "small.m4s", get("/o/small.m4s")
        h.send(request)
        h.response()
        sent.append(target)
    lines = h.log_lines()
    assert len(lines) == len(sent)
    parsed = [json.loads(line) for line in lines]
    assert [p["object"] for p in parsed] == sent
    reference = AccessLog(tmp_path / "reference.jsonl", "t1")
    try:
        for line, p in zip(lines, parsed, strict=True):
            if p["object"] == "nope":
                assert p["status"] == 404
                continue
            reference.log_object(p["ts"], object_prefix("GET", p["object"]), p["status"],
                                 p["bytes"], p["range"], json_str(p["client"]), p["dur_ms"],
                                 json_str(p["tier"]))
            assert line + "\n" == reference.lines[-1]
    finally:
        reference.close()
    ranges = sum(1 for t in sent if t == "big.mp4")
    smalls = sum(1 for t in sent if t == "small.m4s")
    h.call(h.metrics.publish)
    totals = h.area.totals()
    assert totals.requests["206"] == ranges
    assert totals.requests["200"] == smalls
    assert totals.requests["404"] == len(sent) - ranges - smalls
    assert totals.body_bytes["ssd"] == 100 * ranges + SMALL * smalls
    assert totals.count == len(sent)


def test_the_log_is_written_every_max_buffered_lines(served):
    """Without a tick, the log reaches its file once MAX_BUFFERED_LINES lines are
    buffered (the loop's own lines counted too), not only at the next flush."""
    h = served
    for _ in range(MAX_BUFFERED_LINES + 10):
        h.send(get("/o/small.m4s"))
        h.response()
    written = h.call(lambda: h.access_log.path.read_text()).splitlines()
    assert MAX_BUFFERED_LINES <= len(written) <= MAX_BUFFERED_LINES + 10
    assert len(h.log_lines()) == MAX_BUFFERED_LINES + 10


def test_a_rejected_request_lingers_until_the_client_closes(served):
    """After a refused request (400: no Host) the loop half-closes, reads and drops what
    the client still sends, and closes once the client closes its side."""
    h = served
    h.send(b"GET /o/small.m4s HTTP/1.1\r\n\r\n")
    status, fields, _ = h.response()
    assert (status, fields["connection"]) == (400, "close")
    assert h.client.recv(1) == b""  # the server's side is shut
    assert h.forgotten == []  # ...and it still reads
    deadline = h.call(lambda: h.conn.deadline)
    assert deadline > time.monotonic() + h.mod.LINGER_TIMEOUT - 2
    h.client.sendall(b"x" * 300_000)  # dropped; more than the socket buffers hold
    h.client.shutdown(socket.SHUT_WR)
    for _ in range(1000):
        if h.call(lambda: len(h.forgotten)):
            break
        time.sleep(0.01)
    assert h.forgotten == [h.conn]


def test_a_lingering_connection_closes_at_once_when_told(served):
    """The sweep (its deadline passed), the drain deadline or shutdown close a lingering
    connection at once."""
    h = served
    h.send(b"GET /o/small.m4s HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")  # two Hosts: 400
    assert h.response()[0] == 400
    assert h.client.recv(1) == b""
    assert h.forgotten == []
    h.call(h.conn.close)
    assert h.forgotten == [h.conn]
    h.call(h.conn.close)  # again: nothing more
    assert h.forgotten == [h.conn]


def test_a_range_field_of_any_case_is_answered_by_the_loop(served):
    """Range (any case) as the only acted-on field: the loop's; with another one the
    handler decides and sees both (If-Range that does not match: the whole object)."""
    h = served
    big = h.data["big.mp4"]
    h.send(get("/o/big.mp4"))
    h.response()
    before = h.responds
    for name in ("Range", "RANGE", "range", "rAnGe"):
        h.send(get("/o/big.mp4", f"{name}: bytes=10-19", "User-Agent: t", "Host-X: y"))
        status, _, body = h.response()
        assert (status, body) == (206, big[10:20])
    assert h.responds == before
    h.send(get("/o/big.mp4", "Range: bytes=10-19", 'If-Range: "0000"'))
    status, _, body = h.response()
    assert (status, len(body)) == (200, len(big))
    h.send(get("/o/big.mp4", 'If-Range: "0000"', "Range: bytes=10-19"))
    status, _, body = h.response()
    assert (status, len(body)) == (200, len(big))
    assert h.responds == before + 2


def test_a_failing_handler_is_a_400_and_logged(served, caplog):
    """A bug in Python behind a parser callback (the handler raising) is not lost: the
    request is answered 400, the connection closed, and the exception logged."""
    h = served

    def broken(conn):
        raise RuntimeError("handler bug")
    h.handler.respond = broken
    with caplog.at_level("ERROR", logger="oca.serve"):
        h.send(get("/health"))
        status, _, _ = h.response()
        assert status == 400
        assert h.client.recv(1) == b""  # closed after it
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "callback failed" in errors[0].getMessage()
    assert isinstance(errors[0].exc_info[1], RuntimeError)
