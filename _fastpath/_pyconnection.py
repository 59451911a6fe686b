"""One client connection of ``oca serve`` in pure Python: the twin of ``_connection.pyx``.

``Connection(server, sock, client, client_json)`` serves the non-blocking socket *sock*
of the peer *client* (its IP address; *client_json* is the same as a JSON string, for
the access log): it reads requests, parses them with httptools (llhttp) and answers them
in order, pipelined ones included. It uses

* of ``server``: ``loop`` (add_reader, add_writer), ``handler``, ``forget(conn)`` (called
  once, on close) and the limits ``header_timeout``, ``keepalive_timeout``,
  ``send_timeout``, ``max_head_size``, ``max_header_size``, ``max_url_size`` and
  ``sendfile_max_chunk``;
* of ``server.handler``: ``respond(conn)`` (the Job answering a parsed request),
  ``done(conn, job)`` (count and log it), ``error(conn, status)`` (a malformed request),
  ``REQUEST_HEADERS``, ``tokens``, ``closing`` and ``objects``; and for a plain keep-alive
  GET of an open object (``objects.by_url``), the hot path, ``plain_head``,
  ``plain_job`` (only when the socket fills up) and ``plain_done``. The compiled loop
  reads ``objects.urls`` and ``objects.open`` instead of calling ``by_url``, and does
  ``plain_done``'s work in C through ``handler.metrics`` and ``handler.access_log``.

The handler reads ``conn.parser``, ``url``, ``headers`` (the REQUEST_HEADERS the request
has, by lower-case name, or None), ``t0`` (when its first byte was read, a
``time.monotonic`` reading), ``client`` and ``client_json``. The server reads
``deadline`` (when the current timeout ends, on the same clock) and ``idle`` (between
requests, nothing under way), and calls ``close()``.
"""

import contextlib
import errno
import socket
import time
from collections import deque

import httptools

from ._framing import (
    CLOSED,
    IDLE,
    MAX_BODY,
    MAX_PIPELINE,
    READING,
    RECV_SIZE,
    WRITING,
    unknown_method,
)
from ._pysendfile import send_response as _send_response

# Deadlines are taken from the clock, not from the sweep's time: a time up to a second
# old would cut a 1 s timeout to anything between nothing and a second. Response times
# are measured on the same clock, so one reading serves both.
_monotonic = time.monotonic
_time = time.time

# One receive buffer per process serves every connection (requests are parsed
# synchronously), so an idle keep-alive connection costs only its Connection, parser and
# poll handle.
_recv_buffer = bytearray(RECV_SIZE)
_recv_view = memoryview(_recv_buffer)


class Connection:
    """One client connection: parse requests, send responses, in order."""

    __slots__ = ("server", "handler", "wanted", "sock", "fd", "client", "client_json",
                 "parser", "state", "deadline", "url", "headers", "head_bytes", "body_bytes",
                 "t0", "read_at", "current", "queue", "reading", "closing")

    def __init__(self, server, sock: socket.socket, client: str, client_json: str):
        self.server = server
        handler = self.handler = server.handler
        self.wanted = handler.REQUEST_HEADERS
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.client_json = client_json
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
        self.read_at = 0.0  # when the last read returned: a request's t0 is its first read
        self.current = None  # the Job being sent
        self.queue: deque | None = None  # Jobs of pipelined requests, parsed ahead
        self.reading = True
        self.closing = False
        server.loop.add_reader(self.fd, self.on_readable)

    @property
    def idle(self) -> bool:
        """Between requests, with no response under way."""
        return self.state == IDLE and self.current is None

    # -- reading ------------------------------------------------------------

    def on_readable(self) -> None:
        server = self.server
        try:
            n = self.sock.recv_into(_recv_buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if n == 0:
            self.close()
            return
        now = self.read_at = _monotonic()
        starts = self.state != READING  # this read begins a request
        if starts:
            self.state = READING
            self.head_bytes = 0
            self.deadline = now + server.header_timeout
        if self.head_bytes >= 0:
            self.head_bytes += n
            if self.head_bytes > server.max_head_size:
                self.reject(431)
                return
        try:
            self.parser.feed_data(_recv_view[:n])
        except httptools.HttpParserInvalidMethodError:
            # llhttp's HPE_INVALID_METHOD is both an unknown method token ("FOO /o/x
            # HTTP/1.1": 405, as nginx answers for a static file) and a request line it
            # cannot parse at all ("GET\r\n", a TLS handshake): 400.
            self.reject(405 if starts and unknown_method(_recv_buffer, n) else 400)
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
            self.t0 = self.read_at
        self.url += url
        if len(self.url) > self.server.max_url_size:
            self.reject(414)
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only the headers we act on are kept, by their lower-case name. The whole head
        # is bounded in on_readable; one kept header alone by max_header_size.
        key = name.lower()
        if key in self.wanted:
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
        handler = self.handler
        parser = self.parser
        if (self.headers is None and self.current is None and handler.tokens is None
                and not handler.closing and parser.get_method() == b"GET"
                and parser.should_keep_alive()):
            # The hot path: a plain keep-alive GET of an object whose file is open, looked
            # up by the raw target; nothing in flight before it.
            obj = handler.objects.by_url(self.url)
            if obj is not None:
                t0 = self.t0
                self.url = b""
                self.body_bytes = 0
                self.head_bytes = 0
                self.t0 = 0.0
                self.state = IDLE
                self.send_plain(obj, t0)
                return
        job = handler.respond(self)
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

    def send_plain(self, obj, t0: float) -> None:
        """Send the 200 of a plain GET of *obj*: no Job unless the socket fills up."""
        handler = self.handler
        server = self.server
        now = _time()
        if not obj.head_from <= now < obj.head_until:
            handler.plain_head(obj, now)
        head = obj.head200
        try:
            sent = _send_response(self.fd, head, obj.fd, 0, obj.size, 0,
                                  server.sendfile_max_chunk)
        except OSError as e:
            job = handler.plain_job(obj, t0)
            self.send_failed(job, e)
            self.finish(job)
            return
        if sent < len(head) + obj.size:
            job = handler.plain_job(obj, t0)
            job.sent = sent
            self.wait_writable(job)
            return
        end = _monotonic()
        handler.plain_done(self, obj, end - t0)
        self.deadline = end + server.keepalive_timeout

    def start(self, job) -> None:
        """Send *job*; when the socket fills up, wait for writability."""
        while True:
            if not self.send(job):
                self.wait_writable(job)
                return
            self.finish(job)
            if self.closing:
                return
            if not self.queue:
                return
            job = self.queue.popleft()

    def wait_writable(self, job) -> None:
        """*job* is under way and the socket is full: send the rest when it is writable."""
        self.current = job
        if self.reading:
            self.reading = False
            self.server.loop.remove_reader(self.fd)
        self.server.loop.add_writer(self.fd, self.on_writable)
        self.state = WRITING
        self.deadline = _monotonic() + self.server.send_timeout

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

    def send(self, job) -> bool:
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

    def send_failed(self, job, exc: OSError) -> None:
        if exc.errno in (errno.EIO, errno.ENODATA, errno.ENXIO) and job.obj is not None:
            self.server.objects.fail_disk(job.obj.disk, f"{exc.strerror} sending {job.obj.id}")
        job.keep_alive = False
        job.aborted = True

    def finish(self, job) -> None:
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
