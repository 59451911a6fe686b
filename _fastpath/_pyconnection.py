"""The connection loop of ``oca serve`` in pure Python: the twin of ``_connection.pyx``.

The interface of both is ``_fastpath/__init__.pyi`` (docs/fastpath.md explains it):

* ``Entry``: an object open for serving, as the loop reads it (fd, size, target, the
  heads and log pieces rendered beforehand, the per-object counters ``hits`` and
  ``body_bytes``); ``oca.http.objects.OpenObject`` is its subclass.
* ``EntryTable``: the open entries, an LRU by id with a second index by target.
* ``Response``: a response decided in Python, as a descriptor: status, head bytes, the
  entry and the body segments (offset, count; then the multipart parts).
* ``Shared``: what every connection of one worker reads (the server's limits, the
  handler, the entries, the counter and log sinks), taken from the server once.
* ``Connection(shared, fd, client_json)``: one client connection (*client_json* is the
  peer's address as a JSON string, for the access log). It reads
  requests, parses them with httptools (llhttp), answers plain GETs, single ranges and
  ``/range/`` URLs of open entries itself, asks ``handler.respond(conn)`` for any other
  answer, sends every response (budgeted, partial sends, pipelining), counts it and
  writes its access-log line. It owns *fd* and closes it.

The handler reads ``conn.parser``, ``url``, ``headers`` (the REQUEST_HEADERS the request
has, by lower-case name, or None), ``t0`` (when its first byte was read, a
``time.monotonic`` reading), ``client`` and ``client_json``. The server reads
``deadline`` (when the current timeout ends, on the same clock) and ``idle`` (between
requests, nothing under way), and calls ``close()``.
"""

import contextlib
import errno
import logging
import os
import socket
import time
from collections import OrderedDict, deque

import httptools

from ._framing import (
    CLOSED,
    IDLE,
    LINGER_TIMEOUT,
    MAX_BODY,
    MAX_PIPELINE,
    READING,
    RECV_SIZE,
    WRITING,
    absolute_path,
    simple_range,
    slice_bounds,
    unknown_method,
    valid_host,
)
from ._pysendfile import send_response as _send_response

_log = logging.getLogger("oca.serve")

# Deadlines are taken from the clock, not from the sweep's time: a time up to a second
# old would cut a 1 s timeout to anything between nothing and a second. Response times
# are measured on the same clock, so one reading serves both.
_monotonic = time.monotonic
_time = time.time

# One receive buffer per process serves every connection (requests are parsed
# synchronously).
_recv_buffer = bytearray(RECV_SIZE)
_recv_view = memoryview(_recv_buffer)
_recv_list = [_recv_buffer]

_DISK_ERRORS = (errno.EIO, errno.ENODATA, errno.ENXIO)


class Entry:
    """An object open for serving, as the connection loop reads it."""

    __slots__ = ("id", "fd", "size", "url", "tier", "hits", "body_bytes", "head200",
                 "head206", "head_slice", "head_slice_mid", "head_from", "head_until",
                 "log_get", "log_head", "log_tier", "log_plain")

    def __init__(self, object_id: str, fd: int, size: int, tier: str | None):
        self.id = object_id
        self.fd = fd
        self.size = size
        self.url = b"/o/" + object_id.encode()
        self.tier = tier
        self.hits = 0
        self.body_bytes = 0
        # Rendered by Handler.render_heads for the epoch second [head_from, head_until).
        self.head200 = self.head206 = self.head_slice = b""
        self.head_slice_mid = b""
        self.head_from = self.head_until = 0.0
        self.log_get = self.log_head = self.log_tier = ""
        self.log_plain = ("", "")


class EntryTable:
    """The open entries: at most *capacity*, least recently used first out."""

    __slots__ = ("capacity", "_by_id", "_by_url")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._by_id: OrderedDict[str, Entry] = OrderedDict()
        self._by_url: dict[bytes, Entry] = {}

    def add(self, entry: Entry) -> Entry | None:
        """Add *entry* as the most recent; return the entry it put out (the one it
        replaced under the same id, else the least recent one past *capacity*)."""
        old = self._by_id.pop(entry.id, None)
        if old is not None:
            del self._by_url[old.url]
        self._by_id[entry.id] = entry
        self._by_url[entry.url] = entry
        if old is None and len(self._by_id) > self.capacity:
            old = self._by_id.popitem(last=False)[1]
            del self._by_url[old.url]
        return old

    def get(self, object_id: str) -> Entry | None:
        entry = self._by_id.get(object_id)
        if entry is not None:
            self._by_id.move_to_end(object_id)
        return entry

    def by_url(self, url: bytes) -> Entry | None:
        """The entry whose target is exactly *url* (``/o/<id>``), made the most recent."""
        entry = self._by_url.get(url)
        if entry is not None:
            self._by_id.move_to_end(entry.id)
        return entry

    def remove(self, object_id: str) -> Entry | None:
        entry = self._by_id.pop(object_id, None)
        if entry is not None:
            del self._by_url[entry.url]
        return entry

    def clear(self) -> list:
        """Remove every entry; return them."""
        entries = list(self._by_id.values())
        self._by_id.clear()
        self._by_url.clear()
        return entries

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(list(self._by_id.values()))


class Response:
    """A response decided in Python: ``head`` (its first *head_len* bytes are the head,
    any others a short body), then *count* bytes of *entry*'s file from *offset*, then
    each of *parts*, ``(part_head, offset, count)``, in order (multipart/byteranges)."""

    __slots__ = ("status", "head", "entry", "offset", "count", "parts", "keep_alive",
                 "head_len", "method", "oid", "range", "path", "scope", "t0",
                 "sent", "done", "part", "aborted")

    def __init__(self, status: int, head: bytes, entry: Entry | None = None, offset: int = 0,
                 count: int = 0, parts: list | None = None, keep_alive: bool = True,
                 head_len: int = -1, method: str = "GET", oid: str | None = None,
                 range: str | None = None, path: str | None = None):  # noqa: A002
        self.status = status
        self.head = head
        self.entry = entry
        self.offset = offset
        self.count = count
        self.parts = parts
        self.keep_alive = keep_alive
        self.head_len = len(head) if head_len < 0 else head_len
        self.method = method
        self.oid = oid
        self.range = range
        self.path = path
        self.scope = None  # the token's scope when not viewer ("fill"): logged
        self.t0 = 0.0
        self.sent = 0  # of the current segment (its head, then its file bytes)
        self.done = 0  # bytes of the segments before it
        self.part = 0  # the current segment: 0, then 1 + the index in parts
        self.aborted = False

    def body_sent(self) -> int:
        return max(0, self.done + self.sent - self.head_len)


_DATE_SIZE = 29  # an IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"


def _date_offset(head: bytes) -> int:
    """Where the Date value of a head from Handler.render_heads starts (after its first
    "\r\nDate: ", within its first 128 bytes, with 29 bytes to it), -1: none."""
    i = head.find(b"\r\nDate: ", 0, 128 - _DATE_SIZE)
    return -1 if i < 0 or i + 8 + _DATE_SIZE > len(head) else i + 8


def _redated(head: bytes, date: bytes) -> bytes | None:
    """A copy of *head* with *date* in place of its Date value; None if it has none."""
    at = _date_offset(head)
    return None if at < 0 else head[:at] + date + head[at + _DATE_SIZE:]


class Shared:
    """What every connection of one worker reads, taken from the server once."""

    __slots__ = ("server", "handler", "loop", "entries", "metrics", "access_log", "logging",
                 "wanted", "header_timeout", "keepalive_timeout", "send_timeout",
                 "max_head_size", "max_header_size", "max_url_size", "budget", "max_ranges",
                 "pool", "date", "date_from")

    def __init__(self, server):
        handler = server.handler
        self.server = server
        self.handler = handler
        self.loop = server.loop
        self.entries = handler.objects.entries
        self.metrics = handler.metrics
        self.access_log = handler.access_log
        self.logging = handler.logging
        self.wanted = handler.REQUEST_HEADERS
        self.header_timeout = server.header_timeout
        self.keepalive_timeout = server.keepalive_timeout
        self.send_timeout = server.send_timeout
        self.max_head_size = server.max_head_size
        self.max_header_size = server.max_header_size
        self.max_url_size = server.max_url_size
        self.budget = server.sendfile_max_chunk
        self.max_ranges = handler.max_ranges
        self.pool: list = []  # parsers between requests, for the next connection that reads
        # The Date value of the heads render_heads rendered last, for [date_from, +1 s).
        self.date = b""
        self.date_from = 0.0

    def heads(self, entry: Entry, now: float) -> None:
        """*entry*'s heads for the second of *now* (epoch). Handler.render_heads renders
        them; once it has for one entry this second, the others' heads of an earlier
        second are copied with its Date value (29 bytes: an IMF-fixdate) in place of
        theirs: one render_heads call a second per worker, not one per object."""
        if self.date_from <= now < self.date_from + 1.0:
            heads = [_redated(h, self.date)
                     for h in (entry.head200, entry.head206, entry.head_slice)]
            if None not in heads:
                entry.head200, entry.head206, entry.head_slice = heads
                entry.head_from = self.date_from
                entry.head_until = self.date_from + 1.0
                return
        self.handler.render_heads(entry, now)
        at = _date_offset(entry.head200)
        if at >= 0:
            self.date = entry.head200[at:at + _DATE_SIZE]
            self.date_from = entry.head_from

    def fold(self) -> None:
        """Nothing to add: this loop counts straight into WorkerMetrics.record."""

    def fold_log(self) -> None:
        """Nothing to add: this loop logs straight through AccessLog's methods."""


class Connection:
    """One client connection: parse requests, send responses, in order."""

    __slots__ = ("shared", "fd", "client_json", "reader", "state", "deadline",
                 "url", "headers", "head_bytes", "body_bytes", "hosts", "chunked",
                 "t0", "read_at", "current", "queue", "reading", "closing", "reusable",
                 "linger", "lingering")

    def __init__(self, shared: Shared, fd: int, client_json: str):
        self.shared = shared
        self.fd = fd
        self.client_json = client_json
        # A parser only while a request is being read (docs/fastpath.md, "Memory").
        self.reader: _Reader | None = None
        self.state = IDLE
        self.deadline = _monotonic() + shared.keepalive_timeout
        self.url = b""
        self.headers: dict[bytes, bytes] | None = None  # only the headers we act on
        self.head_bytes = 0
        self.body_bytes = 0
        self.hosts = 0  # Host fields seen; -1 once one is invalid
        self.chunked = False  # a Transfer-Encoding field was seen
        self.t0 = 0.0
        self.read_at = 0.0  # when the last read returned: a request's t0 is its first read
        self.current: Response | None = None  # the response being sent
        self.queue: deque | None = None  # responses of pipelined requests, decided ahead
        self.reading = True
        self.closing = False
        self.reusable = True  # the parser may serve another connection after this read
        self.linger = False  # close in stages after this response (a rejected request)
        self.lingering = False  # half-closed, reading to the client's end (close)
        shared.loop.add_reader(fd, self.on_readable)

    @property
    def idle(self) -> bool:
        """Between requests, with no response under way."""
        return self.state == IDLE and self.current is None

    # -- reading ------------------------------------------------------------

    def on_readable(self) -> None:
        if self.lingering:
            self._drain()
            return
        shared = self.shared
        try:
            n = os.readv(self.fd, _recv_list)
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
            self.deadline = now + shared.header_timeout
        if self.head_bytes >= 0:
            self.head_bytes += n
            if self.head_bytes > shared.max_head_size:
                self.reject(431)
                return
        reader = self.reader
        if reader is None:
            reader = self.reader = shared.pool.pop() if shared.pool else _Reader()
            reader.conn = self
        self.reusable = True
        try:
            reader.parser.feed_data(_recv_view[:n])
        except httptools.HttpParserInvalidMethodError:
            # llhttp's HPE_INVALID_METHOD is both an unknown method token ("FOO /o/x
            # HTTP/1.1": 405, as nginx answers for a static file) and a request line it
            # cannot parse at all ("GET\r\n", a TLS handshake): 400.
            self.reject(405 if starts and unknown_method(_recv_buffer, n) else 400)
            return
        except httptools.HttpParserUpgrade:
            # llhttp stops after a request asking to switch protocols (Upgrade, CONNECT).
            # It has been answered in HTTP/1.1 (RFC 9110 section 7.8: a server may ignore
            # Upgrade); nothing after it is read: close once its response is sent.
            self.reader = None
            last = self.queue[-1] if self.queue else self.current
            if last is None:
                self.close()
            else:
                last.keep_alive = False
            return
        except httptools.HttpParserError as e:
            self.reader = None
            cause = e.__context__  # what a callback raised (httptools chains it)
            if cause is not None and not isinstance(cause, httptools.HttpParserError):
                _log.error("connection %s: a request's callback failed; answered 400",
                           self.client, exc_info=cause)
            if not self.closing:
                self.reject(400)
            return
        if self.state != READING and not self.closing and self.reader is not None:
            # Between requests: the parser goes back to the worker's pool.
            if self.reusable:
                reader.conn = None
                shared.pool.append(reader)
            self.reader = None

    @property
    def client(self) -> str:
        """The peer's address (the JSON string of an address needs no escapes)."""
        return self.client_json[1:-1]

    @property
    def parser(self):
        """The request's parser (httptools.HttpRequestParser), while one is read."""
        return None if self.reader is None else self.reader.parser

    # httptools callbacks, through _Reader ---------------------------------

    def on_url(self, url: bytes) -> None:
        if not self.url:
            self.t0 = self.read_at
        self.url += url
        if len(self.url) > self.shared.max_url_size:
            self.reject(414)
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only the headers we act on are kept, by their lower-case name. The whole head
        # is bounded by max_header_size + max_url_size (on_readable); a kept field's
        # value alone by max_header_size.
        key = name.lower()
        if key == b"host":
            # RFC 9112 section 3.2: one Host field, with a valid value.
            self.hosts = self.hosts + 1 if self.hosts >= 0 and valid_host(value) else -1
            return
        if key == b"transfer-encoding":
            self.chunked = True
            return
        if key in self.shared.wanted:
            if len(value) > self.shared.max_header_size:
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
        shared = self.shared
        handler = shared.handler
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        if not keep_alive:
            self.reusable = False
        if self.framing_error(parser):
            self.reject(400)
            raise httptools.HttpParserError("bad Host or Transfer-Encoding")
        url = self.url
        if url[:1] != b"/":
            url = self.url = absolute_path(url)
        t0 = self.t0
        headers = self.headers
        self.url = b""
        self.headers = None
        self.body_bytes = 0
        self.head_bytes = 0
        self.hosts = 0
        self.chunked = False
        self.t0 = 0.0
        self.state = IDLE
        if (keep_alive and handler.tokens is None and not handler.closing
                and parser.get_method() == b"GET"
                and (headers is None or (len(headers) == 1 and b"range" in headers))
                and self.answer(url, headers, t0)):
            return
        self.url = url
        self.headers = headers
        self.t0 = t0
        resp = handler.respond(self)
        self.url = b""
        self.headers = None
        self.t0 = 0.0
        resp.t0 = t0
        self.queue_response(resp)

    def framing_error(self, parser) -> bool:
        # RFC 9112 section 3.2: a 400 for an HTTP/1.1 request without Host, and for any
        # with more than one or an invalid one. Section 6.1: a Transfer-Encoding in an
        # HTTP/1.0 request is faulty framing (llhttp accepts it there): 400 and close.
        if self.hosts < 0 or self.hosts > 1:
            return True
        version = parser.get_http_version()
        if version == "1.1":
            return self.hosts == 0
        return self.chunked

    def answer(self, url: bytes, headers, t0: float) -> bool:
        """Answer a keep-alive GET of an open entry here when it is a whole object, one
        simple range or a ``/range/`` URL; False when the handler must decide."""
        shared = self.shared
        entries = shared.entries
        entry = entries.by_url(url)
        if entry is not None:
            if headers is None:
                self.send_entry(entry, 200, None, 0, entry.size, t0)
                return True
            rng = headers[b"range"]
            bounds = simple_range(rng, entry.size) if shared.max_ranges > 0 else None
            if bounds is None:
                return False
            first, last = bounds
            self.send_entry(entry, 206, rng.decode("latin-1"), first, last - first + 1, t0)
            return True
        if headers is not None:
            return False
        cut = url.find(b"/range/", 3)
        if cut < 0 or not url.startswith(b"/o/"):
            return False
        entry = entries.by_url(url[:cut])
        if entry is None:
            return False
        bounds = slice_bounds(url, cut + 7, entry.size)
        if bounds is None:
            return False
        first, last = bounds
        self.send_entry(entry, -1, None, first, last - first + 1, t0)
        return True

    # -- writing ------------------------------------------------------------

    def send_entry(self, entry: Entry, status: int, rng: str | None, offset: int, count: int,
                   t0: float) -> None:
        """A response of *entry* decided here: 200 (the whole object), 206 (one range) or
        -1 (a ``/range/`` URL's 200)."""
        now = _time()
        if not entry.head_from <= now < entry.head_until:
            self.shared.heads(entry, now)
        if status == 200:
            head = entry.head200
        elif status == 206:
            head = (entry.head206 + f"{offset}-{offset + count - 1}/{entry.size}\r\n"
                    f"Content-Length: {count}\r\nConnection: keep-alive\r\n\r\n".encode())
        else:
            status = 200
            head = (entry.head_slice + f'{offset}-{offset + count - 1}"\r\n'.encode()
                    + entry.head_slice_mid
                    + f"{count}\r\nConnection: keep-alive\r\n\r\n".encode())
        resp = Response(status, head, entry, offset, count, None, True, -1, "GET", entry.id,
                        rng)
        resp.t0 = t0
        self.queue_response(resp)

    def queue_response(self, resp: Response) -> None:
        if self.current is None:
            self.start(resp)
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(resp)
            if len(self.queue) > MAX_PIPELINE:
                self.close()

    def start(self, resp: Response) -> None:
        """Send *resp*; when the socket fills up, wait for writability."""
        while True:
            if not self.send(resp):
                self.wait_writable(resp)
                return
            self.finish(resp)
            if self.closing:
                return
            if not self.queue:
                return
            resp = self.queue.popleft()

    def wait_writable(self, resp: Response) -> None:
        """*resp* is under way and the socket is full: send the rest when it is writable."""
        self.current = resp
        loop = self.shared.loop
        if self.reading:
            self.reading = False
            loop.remove_reader(self.fd)
        loop.add_writer(self.fd, self.on_writable)
        self.state = WRITING
        self.deadline = _monotonic() + self.shared.send_timeout

    def on_writable(self) -> None:
        resp = self.current
        shared = self.shared
        before = resp.done + resp.sent
        if not self.send(resp):
            if resp.done + resp.sent != before:
                self.deadline = _monotonic() + shared.send_timeout
            return
        shared.loop.remove_writer(self.fd)
        self.current = None
        self.finish(resp)
        if self.closing:
            return
        while self.queue:
            resp = self.queue.popleft()
            if not self.send(resp):
                self.current = resp
                shared.loop.add_writer(self.fd, self.on_writable)
                return
            self.finish(resp)
            if self.closing:
                return
        self.state = IDLE
        self.deadline = _monotonic() + shared.keepalive_timeout
        self.reading = True
        shared.loop.add_reader(self.fd, self.on_readable)

    def send(self, resp: Response) -> bool:
        """Send what the socket takes (at most the budget); True when *resp* is done.
        The budget (sendfile_max_chunk) counts body bytes, as nginx's: the heads of
        this turn's segments go out beside it (a 2 MiB object leaves in one turn)."""
        budget = self.shared.budget
        while True:
            part = resp.part
            if part == 0:
                head, offset, count = resp.head, resp.offset, resp.count
            else:
                head, offset, count = resp.parts[part - 1]
            entry = resp.entry
            before = resp.sent
            head_left = max(len(head) - before, 0)
            try:
                sent = resp.sent = _send_response(
                    self.fd, head, entry.fd if count else -1, offset, count, before,
                    budget + head_left if budget > 0 else budget)
            except OSError as e:
                self.send_failed(resp, e)
                return True
            if sent < len(head) + count:
                return False
            if resp.parts is None or part >= len(resp.parts):
                return True
            resp.done += sent
            resp.sent = 0
            resp.part = part + 1
            if budget > 0:
                budget -= sent - before - head_left
                if budget <= 0:
                    return False

    def send_failed(self, resp: Response, exc: OSError) -> None:
        entry = resp.entry
        if exc.errno in _DISK_ERRORS and entry is not None:
            self.shared.handler.objects.fail_disk(entry.disk,
                                                  f"{exc.strerror} sending {entry.id}")
        resp.keep_alive = False
        resp.aborted = True

    def finish(self, resp: Response) -> None:
        self.account(resp)
        if not resp.keep_alive or self.shared.handler.closing:
            # Past the drain deadline or shutting down: no idle connection is kept.
            self.close()
            return
        self.deadline = _monotonic() + self.shared.keepalive_timeout

    def account(self, resp: Response) -> None:
        """Count *resp* (worker metrics, its entry's hits and body bytes) and log it."""
        shared = self.shared
        end = _monotonic()
        dur = end - resp.t0
        body = resp.body_sent()
        entry = resp.entry
        tier = None if entry is None else entry.tier
        shared.metrics.record(resp.status, tier, body, dur, False)
        if entry is not None:
            entry.hits += 1
            entry.body_bytes += body
        if not shared.logging:
            return
        log = shared.access_log
        method = resp.method
        if entry is not None and (method == "GET" or method == "HEAD"):
            log.log_object(_time(), entry.log_get if method == "GET" else entry.log_head,
                           resp.status, body, resp.range, self.client_json, dur * 1000.0,
                           entry.log_tier, resp.scope)
            return
        log.log(_time(), method, resp.oid, resp.status, body, resp.range, self.client,
                dur * 1000.0, tier, resp.path, resp.scope)

    def reject(self, status: int) -> None:
        """Answer a malformed request with *status* and close, whatever is queued."""
        if self.closing:
            return
        self.linger = True
        resp = self.shared.handler.error(status)
        resp.t0 = self.t0 or _monotonic()
        self.queue = None
        if self.current is None:
            self.start(resp)
        else:
            self.close()
        if not self.closing:
            self.close()

    # -- closing ------------------------------------------------------------

    def close(self) -> None:
        """Close after the last response (a rejected request's connection in stages), or
        now: a timeout, the drain deadline, shutdown, the end of lingering."""
        if self.lingering:
            self._release()
            return
        if self.closing:
            return
        if self.linger and self.current is None:
            # RFC 9112 section 9.6 (see the compiled loop): half-close, read and drop what
            # the client still sends until it closes its side or LINGER_TIMEOUT passes.
            if not self.reading:
                self.reading = True
                self.shared.loop.add_reader(self.fd, self.on_readable)
            self.closing = True
            self.lingering = True
            self.state = CLOSED
            self.queue = None
            self.reader = None
            try:
                sock = socket.socket(fileno=self.fd)
                try:
                    sock.shutdown(socket.SHUT_WR)
                finally:
                    sock.detach()
            except OSError:
                self._release()
                return
            self.deadline = _monotonic() + LINGER_TIMEOUT
            return
        self._release()

    def _drain(self) -> None:
        for _ in range(16):
            try:
                n = os.readv(self.fd, _recv_list)
            except InterruptedError:
                continue
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if n == 0:
                self._release()
                return

    def _release(self) -> None:
        if self.fd < 0:
            return  # released already
        self.lingering = False
        self.closing = True
        self.state = CLOSED
        shared = self.shared
        loop = shared.loop
        if self.reading:
            loop.remove_reader(self.fd)
        resp = self.current
        if resp is not None:
            loop.remove_writer(self.fd)
            self.current = None
            # A response cut off (send_timeout, drain deadline, shutdown) still gets its
            # access-log line and its count, with the body bytes that did go out.
            resp.aborted = True
            resp.keep_alive = False
            self.account(resp)
        self.queue = None
        # llhttp may still call back for the rest of this read: the reader keeps its
        # connection (closing, it answers nothing) and is freed with the read.
        self.reader = None
        shared.server.forget(self)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


class _Reader:
    """A parser and the connection it reads for: the parser's protocol, passing its
    callbacks on. Between requests it goes back to the worker's pool, so an idle
    connection holds none."""

    __slots__ = ("conn", "parser")

    def __init__(self):
        self.conn: Connection | None = None
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.conn.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.conn.on_header(name, value)

    def on_headers_complete(self) -> None:
        self.conn.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.on_message_complete()
