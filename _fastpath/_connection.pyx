"""One client connection of ``oca serve``, compiled: the twin of ``_pyconnection.py``,
whose docstring is the interface of both.

What compiling buys, per request: the read is a recv(2) into a C buffer, the parser's
callbacks are C methods, the send is a C call into the loop of ``_sendfile.pyx`` (no
Python call around it), and a plain GET runs in C from the parser's callback to its
access-log line: the twin's ``Handler.plain_done`` (``WorkerMetrics.record`` and
``AccessLog.log_plain``) is done here through their documented fields, with the same
results (tests/http/test_metrics.py, test_accesslog.py check those interfaces).
Exceptions are never unwound through C: the send loop returns errno values that
``send_response_c`` raises after taking the GIL back, and an exception raised in a parser
callback is stored by httptools and raised again from ``feed_data``, as in the twin.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdio cimport snprintf
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

from connection cimport recv

from ._sendfile cimport send_response_c

import errno as _errno
from collections import deque

import httptools

from . import _framing
from ._framing import MAX_BODY, MAX_PIPELINE, unknown_method

cdef int IDLE = _framing.IDLE
cdef int READING = _framing.READING
cdef int WRITING = _framing.WRITING
cdef int CLOSED = _framing.CLOSED

# One receive buffer per process serves every connection (requests are parsed
# synchronously), so an idle keep-alive connection costs only its Connection, parser and
# poll handle.
cdef size_t recv_size = _framing.RECV_SIZE
cdef char *recv_buffer = <char *>PyMem_Malloc(recv_size)
if recv_buffer == NULL:
    raise MemoryError()

# Learnt by the first Connection from class constants of the handler and its metrics
# (learn_constants), the same for every instance.
cdef bint constants_ready = False
# The first bytes (lower case) of the request header names the handler acts on: any
# other field (Host, User-Agent, Accept ...) is passed over on its first byte.
cdef bint wanted_first[256]
# WorkerMetrics.counts indexes of a plain GET's 200 and of the fast path; the histogram's
# first index, bounds and the seconds sum's index.
cdef Py_ssize_t slot_200, slot_fastpath, slot_bucket0, slot_seconds
cdef double bucket_bounds[64]
cdef Py_ssize_t bucket_count
cdef object metrics_slots  # WorkerMetrics.slots


cdef int learn_constants(handler) except -1:
    global constants_ready, slot_200, slot_fastpath, slot_bucket0, slot_seconds
    global bucket_count, metrics_slots
    for name in handler.REQUEST_HEADERS:
        wanted_first[<unsigned char>PyBytes_AS_STRING(name)[0]] = True
    metrics = handler.metrics
    metrics_slots = metrics.slots
    slot_200, _, slot_fastpath = metrics_slots(200, None, True)
    slot_bucket0 = metrics.BUCKET0
    slot_seconds = metrics.SECONDS
    bounds = metrics.BUCKETS
    if len(bounds) > 64:
        raise ValueError(f"{len(bounds)} histogram buckets: the compiled loop holds 64")
    bucket_count = len(bounds)
    for i, bound in enumerate(bounds):
        bucket_bounds[i] = bound
    constants_ready = True
    return 0

_HttpParserError = httptools.HttpParserError
_HttpParserInvalidMethodError = httptools.HttpParserInvalidMethodError
_HttpParserUpgrade = httptools.HttpParserUpgrade
_HttpRequestParser = httptools.HttpRequestParser


@cython.final
cdef class HotObject:
    """What a plain GET reads of an open object (OpenObject, oca/http/objects.py), as C
    fields of one object, kept in ``OpenObject.hot``. Reading a dozen attributes of the
    OpenObject touched a dozen objects per request, cache misses under load; this is
    one. No reference back: the OpenObject's fd closes when its last reference goes."""

    cdef str id
    cdef int fd
    cdef long long size
    cdef bytes head  # the keep-alive 200 head of the epoch second [head_from, head_until)
    cdef double head_from, head_until
    cdef str log_before, log_after  # AccessLog.log_plain's pieces (plain_get_fragments)
    cdef Py_ssize_t tier_slot  # WorkerMetrics.counts index of the tier's body bytes

    def __init__(self, obj):
        self.id = obj.id
        self.fd = obj.fd
        self.size = obj.size
        self.head = obj.head200
        self.head_from = obj.head_from
        self.head_until = obj.head_until
        self.log_before, self.log_after = obj.log_plain
        self.tier_slot = metrics_slots(200, obj.tier, True)[1]


cdef inline double clock_seconds(int clock) noexcept:
    # As time.monotonic() and time.time() compute it (CPython's _PyTime: nanoseconds,
    # then one division), so the values compare exactly with the Python side's.
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <double>(<long long>ts.tv_sec * 1000000000 + ts.tv_nsec) / 1e9


@cython.final
cdef class Connection:
    """One client connection: parse requests, send responses, in order."""

    cdef object server, handler, objects, loop, sock, wanted, queue, access_log
    cdef list counts
    cdef readonly object parser, headers, current
    cdef readonly bytes url
    cdef readonly str client, client_json
    cdef readonly int fd, state
    cdef readonly double deadline, t0
    cdef double read_at
    cdef Py_ssize_t head_bytes, body_bytes
    cdef bint reading, closing, plain, logging
    cdef Py_ssize_t log_max_lines
    # The server's limits, copied: read per request.
    cdef double header_timeout, keepalive_timeout, send_timeout
    cdef Py_ssize_t max_head_size, max_header_size, max_url_size
    cdef long long budget

    def __init__(self, server, sock, str client, str client_json):
        self.server = server
        handler = self.handler = server.handler
        if not constants_ready:
            learn_constants(handler)
        self.objects = handler.objects
        self.wanted = handler.REQUEST_HEADERS
        # Plain GETs may skip the handler's general path unless URLs are signed.
        self.plain = handler.tokens is None
        self.counts = handler.metrics.counts
        self.logging = handler.logging
        self.access_log = handler.access_log
        self.log_max_lines = handler.access_log.MAX_BUFFERED_LINES if self.logging else 0
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.client_json = client_json
        self.header_timeout = server.header_timeout
        self.keepalive_timeout = server.keepalive_timeout
        self.send_timeout = server.send_timeout
        self.max_head_size = server.max_head_size
        self.max_header_size = server.max_header_size
        self.max_url_size = server.max_url_size
        self.budget = server.sendfile_max_chunk
        self.parser = _HttpRequestParser(self)
        self.state = IDLE
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + self.keepalive_timeout
        # Per-request fields, reset after each request (not in on_message_begin: one
        # callback less per request).
        self.url = b""
        self.headers = None  # only the headers we act on
        self.head_bytes = 0
        self.body_bytes = 0
        self.t0 = 0.0
        self.read_at = 0.0  # when the last read returned: a request's t0 is its first read
        self.current = None  # the Job being sent
        self.queue = None  # Jobs of pipelined requests, parsed ahead
        self.reading = True
        self.closing = False
        self.loop.add_reader(self.fd, self.on_readable)

    @property
    def idle(self):
        """Between requests, with no response under way."""
        return self.state == IDLE and self.current is None

    # -- reading ------------------------------------------------------------

    def on_readable(self):
        cdef ssize_t n
        cdef double now
        cdef bint starts
        while True:
            n = recv(self.fd, recv_buffer, recv_size, 0)
            if n >= 0 or errno != EINTR:
                break
        if n < 0:
            if errno != EAGAIN:  # EWOULDBLOCK is EAGAIN on Linux and FreeBSD
                self._close()
            return
        if n == 0:
            self._close()
            return
        now = self.read_at = clock_seconds(CLOCK_MONOTONIC)
        starts = self.state != READING  # this read begins a request
        if starts:
            self.state = READING
            self.head_bytes = 0
            self.deadline = now + self.header_timeout
        if self.head_bytes >= 0:
            self.head_bytes += n
            if self.head_bytes > self.max_head_size:
                self.reject(431)
                return
        data = PyBytes_FromStringAndSize(recv_buffer, n)
        try:
            self.parser.feed_data(data)
        except _HttpParserInvalidMethodError:
            # llhttp's HPE_INVALID_METHOD is both an unknown method token ("FOO /o/x
            # HTTP/1.1": 405, as nginx answers for a static file) and a request line it
            # cannot parse at all ("GET\r\n", a TLS handshake): 400.
            self.reject(405 if starts and unknown_method(data, n) else 400)
        except _HttpParserUpgrade:
            # llhttp stops after a request asking to switch protocols (Upgrade, CONNECT).
            # It has been answered in HTTP/1.1 (RFC 9110 section 7.8: a server may ignore
            # Upgrade); nothing after it is read: close once its response is sent.
            last = self.queue[-1] if self.queue else self.current
            if last is None:
                self._close()
            else:
                last.keep_alive = False
        except _HttpParserError:
            if not self.closing:
                self.reject(400)

    # httptools callbacks ---------------------------------------------------

    def on_url(self, bytes url):
        if not self.url:
            self.t0 = self.read_at
            self.url = url
        else:
            self.url += url
        if PyBytes_GET_SIZE(self.url) > self.max_url_size:
            self.reject(414)
            raise _HttpParserError("URL too long")

    def on_header(self, bytes name, bytes value):
        # Only the headers we act on are kept, by their lower-case name. The whole head
        # is bounded in on_readable; one kept header alone by max_header_size.
        if PyBytes_GET_SIZE(name) == 0:
            return
        if not wanted_first[<unsigned char>PyBytes_AS_STRING(name)[0] | 0x20]:
            return
        key = name.lower()
        if key in self.wanted:
            if PyBytes_GET_SIZE(value) > self.max_header_size:
                self.reject(431)
                raise _HttpParserError("header too large")
            if self.headers is None:
                self.headers = {key: value}
            else:
                self.headers[key] = value

    def on_headers_complete(self):
        self.head_bytes = -1  # the head is complete: no more head-size accounting

    def on_body(self, bytes body):
        self.body_bytes += PyBytes_GET_SIZE(body)
        if self.body_bytes > MAX_BODY:
            self.reject(413)
            raise _HttpParserError("body too large")

    def on_message_complete(self):
        cdef double t0
        cdef HotObject hot
        if self.closing:
            # llhttp goes on through the rest of the read after a callback closed the
            # connection (a send failed, too many pipelined requests): none is answered.
            return
        handler = self.handler
        if (self.headers is None and self.current is None and self.plain
                and not handler.closing):
            parser = self.parser
            if parser.get_method() == b"GET" and parser.should_keep_alive():
                # The hot path: a plain keep-alive GET of an object whose file is open,
                # looked up by the raw target (ObjectTable.by_url, inlined); nothing in
                # flight before it.
                objects = self.objects
                obj = (<dict?>objects.urls).get(self.url)
                if obj is not None:
                    hot = obj.hot
                    if hot is None:
                        hot = obj.hot = HotObject(obj)
                    objects.open.move_to_end(hot.id)
                    t0 = self.t0
                    self.url = b""
                    self.body_bytes = 0
                    self.head_bytes = 0
                    self.t0 = 0.0
                    self.state = IDLE
                    self.send_plain(obj, hot, t0)
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
                self._close()

    # -- writing ------------------------------------------------------------

    cdef int send_plain(self, obj, HotObject hot, double t0) except -1:
        # The 200 of a plain GET of *obj*: no Job unless the socket fills up.
        cdef double now = clock_seconds(CLOCK_REALTIME)
        cdef double end
        cdef long long sent
        handler = self.handler
        if not hot.head_from <= now < hot.head_until:
            handler.plain_head(obj, now)
            hot.head = obj.head200
            hot.head_from = obj.head_from
            hot.head_until = obj.head_until
        try:
            sent = send_response_c(self.fd, hot.head, hot.fd, 0, hot.size, 0, self.budget)
        except OSError as e:
            job = handler.plain_job(obj, t0)
            self.send_failed(job, e)
            self.finish(job)
            return 0
        if sent < PyBytes_GET_SIZE(hot.head) + hot.size:
            job = handler.plain_job(obj, t0)
            job.sent = sent
            self.wait_writable(job)
            return 0
        end = clock_seconds(CLOCK_MONOTONIC)
        self.plain_done(hot, end - t0)
        self.deadline = end + self.keepalive_timeout
        return 0

    cdef int plain_done(self, HotObject hot, double dur) except -1:
        # Handler.plain_done: WorkerMetrics.record(200, obj.tier, obj.size, dur, True) and
        # AccessLog.log_plain(time.time(), *obj.log_plain, client_json, dur * 1000).
        cdef list counts = self.counts
        cdef Py_ssize_t i = 0
        cdef double ts, ms_start, ms_end
        cdef char text[32]
        cdef int n
        cdef str line_head, dur_text
        counts[slot_200] += 1
        counts[hot.tier_slot] += hot.size
        counts[slot_fastpath] += 1
        # bisect_left: the first bound >= dur (Prometheus' "le"); past the last: +Inf.
        while i < bucket_count and bucket_bounds[i] < dur:
            i += 1
        counts[slot_bucket0 + i] += 1
        counts[slot_seconds] += dur
        if not self.logging:
            return 0
        log = self.access_log
        ts = clock_seconds(CLOCK_REALTIME)
        ms_start = log.ms_start
        ms_end = log.ms_end
        if not ms_start <= ts < ms_end:
            log.set_millisecond(ts)
        # C's "%.3f" and Python's format(x, ".3f") both round the exact binary value
        # correctly (ties to even): the same text.
        n = snprintf(text, sizeof(text), "%.3f", dur * 1000.0)
        dur_text = PyUnicode_DecodeASCII(text, n, NULL)
        line_head = log.line_head
        lines = <list?>log.lines
        lines.append(f'{line_head}{hot.log_before}{self.client_json},"dur_ms":{dur_text}'
                     f'{hot.log_after}')
        if len(lines) >= self.log_max_lines:
            log.flush()
        return 0

    cdef int start(self, job) except -1:
        # Send *job*; when the socket fills up, wait for writability.
        while True:
            if not self.send(job):
                self.wait_writable(job)
                return 0
            self.finish(job)
            if self.closing:
                return 0
            if not self.queue:
                return 0
            job = self.queue.popleft()

    cdef int wait_writable(self, job) except -1:
        # *job* is under way and the socket is full: send the rest when it is writable.
        self.current = job
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)
        self.loop.add_writer(self.fd, self.on_writable)
        self.state = WRITING
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + self.send_timeout
        return 0

    def on_writable(self):
        job = self.current
        before = job.sent
        if not self.send(job):
            if job.sent != before:
                self.deadline = clock_seconds(CLOCK_MONOTONIC) + self.send_timeout
            return
        self.loop.remove_writer(self.fd)
        self.current = None
        self.finish(job)
        if self.closing:
            return
        while self.queue:
            job = self.queue.popleft()
            if not self.send(job):
                self.current = job
                self.loop.add_writer(self.fd, self.on_writable)
                return
            self.finish(job)
            if self.closing:
                return
        self.state = IDLE
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + self.keepalive_timeout
        self.reading = True
        self.loop.add_reader(self.fd, self.on_readable)

    cdef int send(self, job) except -1:
        # Send what the socket takes; 1 when *job* is complete.
        cdef long long sent
        while True:
            try:
                sent = send_response_c(self.fd, job.head, job.file_fd, job.offset, job.count,
                                       job.sent, self.budget)
            except OSError as e:
                self.send_failed(job, e)
                return 1
            job.sent = sent
            if sent < job.total:
                return 0
            if not job.next_part():
                return 1

    cdef int send_failed(self, job, exc) except -1:
        if exc.errno in (_errno.EIO, _errno.ENODATA, _errno.ENXIO) and job.obj is not None:
            self.objects.fail_disk(job.obj.disk, f"{exc.strerror} sending {job.obj.id}")
        job.keep_alive = False
        job.aborted = True
        return 0

    cdef int finish(self, job) except -1:
        handler = self.handler
        handler.done(self, job)
        if not job.keep_alive or handler.closing:
            # Past the drain deadline or shutting down: no idle connection is kept.
            self._close()
            return 0
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + self.keepalive_timeout
        return 0

    cdef int reject(self, int status) except -1:
        # Answer a malformed request with *status* and close, whatever is queued.
        if self.closing:
            return 0
        job = self.handler.error(self, status)
        self.queue = None
        if self.current is None:
            self.start(job)
        else:
            self._close()
        if not self.closing:
            self._close()
        return 0

    # -- closing ------------------------------------------------------------

    def close(self):
        self._close()

    cdef int _close(self) except -1:
        if self.closing:
            return 0
        self.closing = True
        self.state = CLOSED
        loop = self.loop
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
            self.handler.done(self, job)
        self.queue = None
        # The parser holds our bound callbacks: without it the connection is freed at
        # once by reference counting, not by a full garbage collection much later.
        self.parser = None
        self.server.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        return 0
