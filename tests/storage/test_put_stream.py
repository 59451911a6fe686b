"""Store.put_stream: ingest from a socket, an HTTP response or a raw fd, atomically, and
resume a partial ingest with a range request after the source broke off."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from oca.digest import digest_bytes
from oca.errors import DigestMismatchError, StoreError, UsageError
from oca.storage import layout
from oca.storage.recovery import PARTIAL_KEEP, recover
from oca.storage.store import COPY_CHUNK, PartialIngestError
from tests.conftest import Appliance

SIZE = 2 * COPY_CHUNK + 12345


def blob(size: int = SIZE, seed: int = 7) -> bytes:
    import random
    return random.Random(seed).randbytes(size)


def tmp_files(app: Appliance) -> list[str]:
    return sorted(str(p) for paths in app.disks.values() for d in paths
                  for p in (d / layout.TMP).iterdir())


_OPEN: list = []


def send_then_close(data: bytes) -> socket.socket:
    """The reading end of a socketpair; a thread writes *data* and closes the other end."""
    ours, theirs = socket.socketpair()
    _OPEN.append(ours)

    def feed():
        with theirs, contextlib.suppress(OSError):  # the reader may stop early: EPIPE
            theirs.sendall(data)

    threading.Thread(target=feed, daemon=True).start()
    return ours


def fed(data: bytes):
    """A socket's ``makefile('rb')`` that yields *data* then ends (closed at teardown)."""
    stream = send_then_close(data).makefile("rb")
    _OPEN.append(stream)
    return stream


@pytest.fixture(autouse=True)
def _close_streams():
    yield
    while _OPEN:
        _OPEN.pop().close()


class _Origin(http.server.BaseHTTPRequestHandler):
    """Serves DATA with Range support; drops the connection after CUT bytes if set."""

    data = b""
    cut: int | None = None

    def do_GET(self):  # noqa: N802 (http.server's name)
        first = 0
        rng = self.headers.get("Range")
        if rng:
            first = int(rng.removeprefix("bytes=").rstrip("-"))
        body = self.data[first:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut is not None:
            self.wfile.write(body[:self.cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    handler = type("Origin", (_Origin,), {"data": blob(), "cut": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def fetch(server, start: int = 0) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", "/o/x", headers={"Range": f"bytes={start}-"} if start else {})
    return conn.getresponse()


def test_from_a_socket(store, appliance):
    data = blob()
    sock = send_then_close(data)
    with sock, sock.makefile("rb") as stream:
        rec = store.put_stream("a.mp4", stream, SIZE, "hdd", xxh3=digest_bytes(data))
    assert (rec.size, rec.xxh3, rec.tier) == (SIZE, digest_bytes(data), "hdd")
    assert Path(store.path_of(rec)).read_bytes() == data
    assert tmp_files(appliance) == []
    assert store.index.reserved_by_disk() == {}
    assert store.changes_since(0, 10)[0][-1] == "a.mp4"


def test_from_a_raw_fd_without_digest(store, appliance):
    data = blob(1000)
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        rec = store.put_stream("b", r, 1000, "ssd")
    finally:
        os.close(r)
    assert rec.xxh3 == digest_bytes(data)
    assert tmp_files(appliance) == []


def test_reads_exactly_size_bytes_of_a_longer_stream(store):
    """A keep-alive connection goes on after the body: put_stream must not read past it."""
    data = blob(5000)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(data + b"NEXT RESPONSE")
        stream = ours.makefile("rb", buffering=0)
        rec = store.put_stream("c", stream, 5000, "ssd")
        assert rec.xxh3 == digest_bytes(data)
        assert ours.recv(100) == b"NEXT RESPONSE"


def test_from_an_http_response(store, origin):
    data = origin.RequestHandlerClass.data
    with fetch(origin) as resp:
        rec = store.put_stream("d.mp4", resp, SIZE, "flash", xxh3=digest_bytes(data))
    assert Path(store.path_of(rec)).read_bytes() == origin.RequestHandlerClass.data


def test_dropped_connection_then_resume_with_a_range_request(store, appliance, origin):
    data = origin.RequestHandlerClass.data
    digest = digest_bytes(data)
    origin.RequestHandlerClass.cut = 1_300_000
    with pytest.raises(PartialIngestError) as e:
        store.put_stream("e.mp4", fetch(origin), SIZE, "hdd", xxh3=digest)
    err = e.value
    assert (err.object_id, err.got, err.expected, err.resumable) == ("e.mp4", 1_300_000,
                                                                     SIZE, True)
    assert "e.mp4" in str(err) and f"1300000 of {SIZE} bytes" in str(err)
    assert store.find("e.mp4") is None
    assert store.index.reserved_by_disk() == {}
    assert store.partial_size("e.mp4", digest) == 1_300_000
    [partial] = tmp_files(appliance)
    assert partial.endswith(f"e.mp4.{digest}.partial")
    # a process that restarts in between finds it too, and recovery keeps it
    report = recover(store)
    assert report.partials_kept == [partial] and report.temp_removed == []
    origin.RequestHandlerClass.cut = None
    seen = []
    rec = store.put_stream("e.mp4", fetch(origin, 1_300_000), SIZE, "hdd", xxh3=digest,
                           start=1_300_000, on_bytes=seen.append)
    assert seen[0] > 1_300_000 and seen[-1] == SIZE
    assert rec.xxh3 == digest and Path(store.path_of(rec)).read_bytes() == data
    assert tmp_files(appliance) == []
    assert store.partial_size("e.mp4", digest) == 0


def test_a_longer_partial_is_cut_to_start(store, appliance):
    data = blob()
    digest = digest_bytes(data)
    with pytest.raises(PartialIngestError):
        store.put_stream("f", fed(data[:2_000_000]), SIZE, "ssd",
                         xxh3=digest)
    rec = store.put_stream("f", fed(data[1_000_000:]), SIZE,
                           "ssd", xxh3=digest, start=1_000_000)
    assert rec.xxh3 == digest and tmp_files(appliance) == []


def test_resume_beyond_the_partial_is_refused(store):
    data = blob()
    digest = digest_bytes(data)
    with pytest.raises(StoreError, match="no partial ingest"):
        store.put_stream("g", fed(b""), SIZE, "ssd", xxh3=digest,
                         start=10)
    with pytest.raises(PartialIngestError):
        store.put_stream("g", fed(data[:100]), SIZE, "ssd",
                         xxh3=digest)
    with pytest.raises(StoreError, match="has 100 bytes"):
        store.put_stream("g", fed(b""), SIZE, "ssd", xxh3=digest,
                         start=200)
    with pytest.raises(UsageError, match="needs the expected xxh3"):
        store.put_stream("g", fed(b""), SIZE, "ssd", start=200)


def test_digest_mismatch_discards_the_partial(store, appliance):
    data = blob()
    with pytest.raises(DigestMismatchError):
        store.put_stream("h", fed(data), SIZE, "hdd",
                         xxh3="0" * 32)
    assert store.find("h") is None
    assert tmp_files(appliance) == [] and store.index.reserved_by_disk() == {}


def test_early_end_without_digest_keeps_nothing(store, appliance):
    with pytest.raises(PartialIngestError) as e:
        store.put_stream("i", fed(b"x" * 100), 1000, "hdd")
    assert e.value.resumable is False and "nothing kept" in str(e.value)
    assert tmp_files(appliance) == []


def test_recovery_removes_partials_older_than_the_keep_time(store, appliance):
    data = blob()
    digest = digest_bytes(data)
    with pytest.raises(PartialIngestError):
        store.put_stream("j", fed(data[:5000]), SIZE, "ssd",
                         xxh3=digest)
    [partial] = tmp_files(appliance)
    old = time.time() - PARTIAL_KEEP - 60
    os.utime(partial, (old, old))
    report = recover(store)
    assert report.temp_removed == [partial] and tmp_files(appliance) == []


def test_a_partial_held_by_a_live_ingest_is_not_taken(store, appliance):
    """Two fills of one object at once: the second is refused, the first carries on."""
    import fcntl

    data = blob()
    digest = digest_bytes(data)
    with pytest.raises(PartialIngestError):
        store.put_stream("k", fed(data[:5000]), SIZE, "ssd",
                         xxh3=digest)
    [partial] = tmp_files(appliance)
    fd = os.open(partial, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the other ingest holds it
        with pytest.raises(StoreError, match="being ingested by another process"):
            store.put_stream("k", fed(data[5000:]), SIZE, "ssd",
                             xxh3=digest, start=5000)
    finally:
        os.close(fd)
    assert tmp_files(appliance) == [partial]
    assert store.index.reserved_by_disk() == {}


# -- crash at every fault point ---------------------------------------------------------

_INGEST = """
import sys
from oca.config import load_config
from oca.storage.store import Store
config, start, size, digest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with Store(load_config(config)) as store:
    store.put_stream("movie.mp4", 0, size, "hdd", xxh3=digest, start=start)
"""

STREAM_FAULTS = ("stream.after_reserve", "stream.write", "stream.after_fsync",
                 "stream.after_rename", "stream.after_index")


def ingest(app: Appliance, data: bytes, start: int, fault: str | None):
    env = {k: v for k, v in os.environ.items() if k != "OCA_FAULT"}
    if fault:
        env["OCA_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-c", _INGEST, str(app.config_path), str(start), str(len(data)),
         digest_bytes(data)], input=data[start:], capture_output=True, env=env, timeout=60)


@pytest.mark.parametrize("fault,wins", [
    ("stream.after_reserve", "old"), ("stream.write@1", "old"),
    (f"stream.write@{COPY_CHUNK + 1}", "old"), (f"stream.write@{SIZE}", "old"),
    ("stream.after_fsync", "old"), ("stream.after_rename", "new"),
    ("stream.after_index", "new")])
def test_crash_then_recover_then_resume(appliance, fault, wins):
    data = blob()
    digest = digest_bytes(data)
    r = ingest(appliance, data, 0, fault)
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = appliance.oca("recover", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["temp_removed"] == [] and report["quarantined"] == []
    with appliance.open() as store:
        assert store.index.reserved_by_disk() == {}
        rec = store.find("movie.mp4")
        if wins == "new":
            assert rec is not None and rec.xxh3 == digest
            assert Path(store.path_of(rec)).read_bytes() == data
            assert tmp_files(appliance) == []
            return
        assert rec is None
        kept = store.partial_size("movie.mp4", digest)
    assert len(report["partials_kept"]) == (1 if fault != "stream.after_reserve" else 0)
    if "@" in fault:
        assert kept >= int(fault.partition("@")[2])
    r = ingest(appliance, data, kept, None)
    assert r.returncode == 0, r.stderr
    with appliance.open() as store:
        rec = store.find("movie.mp4")
        assert rec is not None and Path(store.path_of(rec)).read_bytes() == data
    assert tmp_files(appliance) == []
    assert appliance.oca("verify").returncode == 0
