"""HTTP/1.1 connections of one worker: the socket is ours, not an asyncio transport.

Why not a transport: the body goes out by sendfile(2) on the socket, and a head
written through a transport may still sit in the transport's buffer when
sendfile runs (body bytes would land inside the head); uvloop implements neither
loop.sendfile nor loop.sock_sendfile. So each connection is a non-blocking fd
watched with loop.add_reader / loop.add_writer, parsed by httptools (llhttp), and
answered by one call into _fastpath.send_response per request (again per
writability event when the socket fills up).

Per worker, one receive buffer serves every connection (requests are parsed
synchronously), so an idle keep-alive connection costs only its Connection,
parser and poll handle.

Timeouts are checked by one sweep a second over all connections (nginx's
client_header_timeout, keepalive_timeout and send_timeout), not by a timer per
connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
import time
from collections import deque

import httptools

import _fastpath

from .accesslog import json_str
from .handler import Handler, Job

log = logging.getLogger("oca.serve")

RECV_SIZE = 64 << 10
MAX_BODY = 1 << 20
"""A GET/HEAD body beyond this is refused (413): nothing we serve takes one."""
MAX_PIPELINE = 64
"""Requests parsed ahead of the response being sent; beyond, the connection closes."""

_send_response = _fastpath.send_response
_FASTPATH = _fastpath.IMPLEMENTATION == "cython"
# Deadlines are taken from the clock, not from the sweep's time: a time up to a second
# old would cut a 1 s timeout to anything between nothing and a second.
_monotonic = time.monotonic
_perf_counter = time.perf_counter

# RFC 9112 section 3: method (a token) SP request-target SP HTTP-version.
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) [!-~]+ HTTP/1\.[01]\r?\n")

# Connection states, for the timeout sweep.
IDLE, READING, WRITING, CLOSED = 0, 1, 2, 3


class Connection:
    """One client connection: parse requests, send responses, in order."""

    __slots__ = ("server", "sock", "fd", "client", "client_json", "parser", "state",
                 "deadline", "url", "headers", "head_bytes", "body_bytes", "t0",
                 "current", "queue", "reading", "closing")

    def __init__(self, server: WorkerServer, sock: socket.socket, client: str):
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.client_json = json_str(client)
        self.parser = httptools.HttpRequestParser(self)
        self.state = IDLE
        self.deadline = _monotonic() + server.keepalive_timeout
        # Per-request fields, reset after each request (not in on_message_begin: one
        # Python callback less per request).
        self.url = b""
        self.headers: dict[bytes, bytes] | None = None  # only the headers we act on
        self.head_bytes = 0
        self.body_bytes = 0
        self.t0 = 0.0
        self.current: Job | None = None
        self.queue: deque[Job] | None = None
        self.reading = True
        self.closing = False
        server.loop.add_reader(self.fd, self.on_readable)

    # -- reading ------------------------------------------------------------

    def on_readable(self) -> None:
        server = self.server
        buf = server.recv_buffer
        try:
            n = self.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if n == 0:
            self.close()
            return
        starts = self.state != READING  # this read begins a request
        if starts:
            self.state = READING
            self.head_bytes = 0
            self.deadline = _monotonic() + server.header_timeout
        if self.head_bytes >= 0:
            self.head_bytes += n
            if self.head_bytes > server.max_header_size + server.max_url_size:
                self.reject(431)
                return
        try:
            self.parser.feed_data(server.recv_view[:n])
        except httptools.HttpParserInvalidMethodError:
            # llhttp's HPE_INVALID_METHOD is both an unknown method token ("FOO /o/x
            # HTTP/1.1": 405, as nginx answers for a static file) and a request line it
            # cannot parse at all ("GET\r\n", a TLS handshake): 400.
            self.reject(405 if starts and _unknown_method(buf, n) else 400)
        except httptools.HttpParserUpgrade:
            # llhttp stops after a request asking to switch protocols (Upgrade, CONNECT).
            # It has been answered in HTTP/1.1 (RFC 9110 section 7.8: a server may ignore
            # Upgrade); nothing after it is read: close once its response is sent.
            last = self.queue[-1] if self.queue else self.current
            if last is None:
                self.close()
            else:
                last.keep_alive = False
        except httptools.HttpParserError:
            if not self.closing:
                self.reject(400)

    # httptools callbacks ---------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if not self.url:
            self.t0 = _perf_counter()
        self.url += url
        if len(self.url) > self.server.max_url_size:
            self.reject(414)
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only the headers we act on are kept, by their lower-case name. The whole head
        # is bounded in on_readable; one kept header alone by max_header_size.
        key = name.lower()
        if key in _WANTED:
            if len(value) > self.server.max_header_size:
                self.reject(431)
                raise httptools.HttpParserError("header too large")
            if self.headers is None:
                self.headers = {key: value}
            else:
                self.headers[key] = value

    def on_headers_complete(self) -> None:
        self.head_bytes = -1  # the head is complete: no more head-size accounting

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY:
            self.reject(413)
            raise httptools.HttpParserError("body too large")

    def on_message_complete(self) -> None:
        if self.closing:
            # llhttp goes on through the rest of the read after a callback closed the
            # connection (a send failed, too many pipelined requests): none is answered.
            return
        job = self.server.handler.respond(self)
        self.url = b""
        self.headers = None
        self.body_bytes = 0
        self.head_bytes = 0
        self.t0 = 0.0
        self.state = IDLE
        if self.current is None:
            self.start(job)
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(job)
            if len(self.queue) > MAX_PIPELINE:
                self.close()

    # -- writing ------------------------------------------------------------

    def start(self, job: Job) -> None:
        """Send *job*; when the socket fills up, wait for writability."""
        while True:
            if not self.send(job):
                self.current = job
                if self.reading:
                    self.reading = False
                    self.server.loop.remove_reader(self.fd)
                self.server.loop.add_writer(self.fd, self.on_writable)
                self.state = WRITING
                self.deadline = _monotonic() + self.server.send_timeout
                return
            self.finish(job)
            if self.closing:
                return
            if not self.queue:
                return
            job = self.queue.popleft()

    def on_writable(self) -> None:
        job = self.current
        before = job.sent
        if not self.send(job):
            if job.sent != before:
                self.deadline = _monotonic() + self.server.send_timeout
            return
        self.server.loop.remove_writer(self.fd)
        self.current = None
        self.finish(job)
        if self.closing:
            return
        while self.queue:
            job = self.queue.popleft()
            if not self.send(job):
                self.current = job
                self.server.loop.add_writer(self.fd, self.on_writable)
                return
            self.finish(job)
            if self.closing:
                return
        self.state = IDLE
        self.deadline = _monotonic() + self.server.keepalive_timeout
        self.reading = True
        self.server.loop.add_reader(self.fd, self.on_readable)

    def send(self, job: Job) -> bool:
        """Send what the socket takes; True when *job* is complete."""
        while True:
            try:
                job.sent = _send_response(self.fd, job.head, job.file_fd, job.offset, job.count,
                                          job.sent, self.server.sendfile_max_chunk)
            except OSError as e:
                self.send_failed(job, e)
                return True
            if job.sent < job.total:
                return False
            if not job.next_part():
                return True

    def send_failed(self, job: Job, exc: OSError) -> None:
        if exc.errno in (errno.EIO, errno.ENODATA, errno.ENXIO) and job.obj is not None:
            self.server.objects.fail_disk(job.obj.disk, f"{exc.strerror} sending {job.obj.id}")
        job.keep_alive = False
        job.aborted = True

    def finish(self, job: Job) -> None:
        self.server.handler.done(self, job)
        if not job.keep_alive or self.server.handler.closing:
            # Past the drain deadline or shutting down: no idle connection is kept.
            self.close()
            return
        self.deadline = _monotonic() + self.server.keepalive_timeout

    def reject(self, status: int) -> None:
        """Answer a malformed request with *status* and close, whatever is queued."""
        if self.closing:
            return
        job = self.server.handler.error(self, status)
        self.queue = None
        if self.current is None:
            self.start(job)
        else:
            self.close()
        if not self.closing:
            self.close()

    # -- closing ------------------------------------------------------------

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.state = CLOSED
        loop = self.server.loop
        if self.reading:
            loop.remove_reader(self.fd)
        job = self.current
        if job is not None:
            loop.remove_writer(self.fd)
            self.current = None
            # A response cut off (send_timeout, drain deadline, shutdown) still gets its
            # access-log line and its count, with the body bytes that did go out.
            job.aborted = True
            job.keep_alive = False
            self.server.handler.done(self, job)
        self.queue = None
        # The parser holds our bound callbacks: without it the connection is freed at
        # once by reference counting, not by a full garbage collection much later.
        self.parser = None
        self.server.forget(self)
        with contextlib.suppress(OSError):
            self.sock.close()


def _unknown_method(buf: bytearray, n: int) -> bool:
    """Whether the request in *buf* [:n] has a well-formed request line whose method is
    one we do not serve (llhttp knows only registered methods)."""
    m = _REQUEST_LINE.match(buf, 0, n)
    return m is not None and m.group(1) not in (b"GET", b"HEAD")


_WANTED = frozenset({b"range", b"if-range", b"if-none-match", b"if-modified-since",
                     b"if-match", b"if-unmodified-since"})


class WorkerServer:
    """The accept loop and connection bookkeeping of one worker process."""

    def __init__(self, loop, listen_sock: socket.socket, handler: Handler, objects, config):
        self.loop = loop
        self.listen_sock = listen_sock
        self.handler = handler
        self.objects = objects
        server_cfg = config.server
        self.header_timeout = server_cfg.header_timeout
        self.keepalive_timeout = server_cfg.keepalive_timeout
        self.send_timeout = server_cfg.send_timeout
        self.max_connections = server_cfg.max_connections
        self.max_header_size = server_cfg.max_header_size
        self.max_url_size = server_cfg.max_url_size
        self.sendfile_max_chunk = server_cfg.sendfile_max_chunk
        self.recv_buffer = bytearray(RECV_SIZE)
        self.recv_view = memoryview(self.recv_buffer)
        self.connections: set[Connection] = set()
        self.now = time.monotonic()
        self.accepting = False
        self.draining_until: float | None = None

    def start(self) -> None:
        self.accepting = True
        self.loop.add_reader(self.listen_sock.fileno(), self.on_accept)

    def stop_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.listen_sock.fileno())
            self.listen_sock.close()

    def on_accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.listen_sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # EMFILE/ENFILE: out of descriptors. Log and stop this round.
                log.error("accept: %s", e.strerror)
                return
            sock.setblocking(False)
            if len(self.connections) >= self.max_connections:
                self.handler.refuse(sock)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = addr[0] if isinstance(addr, tuple) else str(addr)
            self.connections.add(Connection(self, sock, client))
            self.handler.metrics.active_connections = len(self.connections)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.handler.metrics.active_connections = len(self.connections)

    def sweep(self) -> None:
        """Once a second: close connections whose timeout passed."""
        now = self.now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline < now]:
            conn.close()

    def close_idle(self) -> None:
        for conn in [c for c in self.connections if c.state == IDLE and c.current is None]:
            conn.close()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()

    @property
    def busy(self) -> int:
        return sum(1 for c in self.connections if c.state != IDLE or c.current is not None)
