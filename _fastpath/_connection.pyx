"""The connection loop of ``oca serve``, compiled: the twin of ``_pyconnection.py``, whose
docstring (and ``_fastpath/__init__.pyi``) is the interface of both; the C-level fields
are declared in ``_connection.pxd``.

What compiling buys, per request: the read is a recv(2) into a C buffer that llhttp parses
in place with C callbacks (no Python object for a field the loop does not act on), the
send is a C call into the loop of ``_sendfile.pyx`` (no Python call around it), and a GET of an open entry (whole, one simple range, or a
``/range/`` URL) runs in C from the parser's callback to its access-log line. Responses
decided in Python (``Response`` descriptors) are sent, counted and logged here too: no
Python runs per chunk or per writability event.
Exceptions are never unwound through C: the send loop returns errno values that
``send_response_c`` raises after taking the GIL back, and an exception raised in a parser
callback is caught there and stops the parse (llhttp's HPE_USER): the request is answered
400, as httptools' HttpParserCallbackError is in the twin; one that is not a refusal
(a bug) is logged.
"""

cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.list cimport PyList_Append, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.errno cimport EAGAIN, EINTR, errno
from libc.math cimport rint
from libc.string cimport memcmp, memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec
from posix.unistd cimport close as c_close

from llhttp cimport (
    HPE_INVALID_METHOD,
    HPE_OK,
    HPE_PAUSED_UPGRADE,
    HTTP_GET,
    HTTP_REQUEST,
    llhttp_errno_t,
    llhttp_execute,
    llhttp_init,
    llhttp_method_name,
    llhttp_method_t,
    llhttp_settings_init,
    llhttp_settings_t,
    llhttp_should_keep_alive,
    llhttp_t,
)
from connection cimport (
    SHUT_WR,
    oca_poll_add,
    oca_poll_create,
    oca_poll_del,
    oca_poll_wait,
    oca_poll_want,
    recv,
    shutdown,
)

from ._sendfile cimport send_response_c

import errno as _errno
import logging
from collections import deque

from . import _framing
from ._framing import (
    LINGER_TIMEOUT,
    MAX_BODY,
    MAX_PIPELINE,
    absolute_path,
    unknown_method,
    valid_host,
)

cdef int IDLE = _framing.IDLE
cdef int READING = _framing.READING
cdef int WRITING = _framing.WRITING
cdef int CLOSED = _framing.CLOSED

# The access-log lines the loop puts together wait in a buffer of this size per worker
# (AccessLog.lines receives them as one str): 64 KiB, as nginx's `access_log ... buffer=`.
cdef enum:
    LOG_BUFFER = 65536
    DATE_SIZE = 29       # an IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"

# One receive buffer per process serves every connection (requests are parsed
# synchronously).
cdef size_t recv_size = _framing.RECV_SIZE
cdef char *recv_buffer = <char *>PyMem_Malloc(recv_size)
if recv_buffer == NULL:
    raise MemoryError()

# The first bytes (lower case) of the request header names the loop acts on: any other
# field (User-Agent, Accept ...) is passed over on its first byte. Set from the handler's
# REQUEST_HEADERS by the first Shared; Host and Transfer-Encoding are checked here.
cdef bint wanted_first[256]
wanted_first[<unsigned char>c'h'] = True
wanted_first[<unsigned char>c't'] = True

# What a request header field is to the loop (Reader.kind), from its name.
cdef enum:
    FIELD_OTHER = 0      # passed over: no object is made for it
    FIELD_HOST = 1
    FIELD_RANGE = 2
    FIELD_TE = 3         # Transfer-Encoding
    FIELD_WANTED = 4     # another of the handler's REQUEST_HEADERS
    NAME_SIZE = 32       # longer names are none of these


class _ParseStop(Exception):
    """A callback refused the request (it has answered it): llhttp stops there."""


_log = logging.getLogger("oca.serve")

_DISK_ERRORS = (_errno.EIO, _errno.ENODATA, _errno.ENXIO)


cdef extern from "Python.h":
    # Compact ASCII strings keep their characters right after the object: the access-log
    # pieces are all such strings (json.encoder's ASCII escaper made them).
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    void *PyUnicode_DATA(object s)


cdef inline Py_ssize_t ascii_length(str s) except -1:
    # The length of *s*, which must be a compact ASCII string (put_str copies it).
    if not PyUnicode_IS_COMPACT_ASCII(s):
        raise ValueError(f"access-log fragment {s!r} is not ASCII")
    return PyUnicode_GET_LENGTH(s)


cdef inline char *put_str(char *p, str s) noexcept:
    # Copy the compact ASCII string *s* to p; the end.
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    memcpy(p, PyUnicode_DATA(s), n)
    return p + n


cdef inline char *put_text(char *p, const char *text) noexcept:
    while text[0]:
        p[0] = text[0]
        p += 1
        text += 1
    return p


cdef inline char *put_int(char *p, long long v) noexcept:
    # v >= 0 in decimal; the end.
    cdef char digits_[20]
    cdef int n = 0
    if v == 0:
        p[0] = c'0'
        return p + 1
    while v > 0:
        digits_[n] = <char>(c'0' + v % 10)
        v //= 10
        n += 1
    while n > 0:
        n -= 1
        p[0] = digits_[n]
        p += 1
    return p


cdef inline char *put_thousandths(char *p, long long n) noexcept:
    # n / 1000 with 3 decimals (n >= 0), as format(n / 1000, ".3f") writes it.
    cdef long long frac = n % 1000
    p = put_int(p, n // 1000)
    p[0] = c'.'
    p[1] = <char>(c'0' + frac // 100)
    p[2] = <char>(c'0' + frac // 10 % 10)
    p[3] = <char>(c'0' + frac % 10)
    return p + 4


cdef inline char *put_ms(char *p, double seconds) noexcept:
    # *seconds* as milliseconds with 3 decimals, rounded to the microsecond (a duration
    # from the monotonic clock: never negative). Integer arithmetic: format(x, ".3f")
    # costs ~190 ns in glibc's printf.
    cdef long long us = <long long>(seconds * 1e6 + 0.5)
    return put_thousandths(p, us if us > 0 else 0)


cdef inline double clock_seconds(int clock) noexcept:
    # As time.monotonic() and time.time() compute it (CPython's _PyTime: nanoseconds,
    # then one division), so the values compare exactly with the Python side's.
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <double>(<long long>ts.tv_sec * 1000000000 + ts.tv_nsec) / 1e9


cdef long long digits(const char *p, Py_ssize_t n) noexcept:
    # 1 to 18 ASCII digits (no 2^63 overflow) as a number, else -1.
    cdef long long v = 0
    cdef Py_ssize_t i
    if n <= 0 or n > 18:
        return -1
    for i in range(n):
        if not c'0' <= p[i] <= c'9':
            return -1
        v = v * 10 + (p[i] - c'0')
    return v


cdef bint valid_host_c(bytes value) noexcept:
    # _framing.valid_host for the common forms (reg-name or IPv4 with a port, no
    # brackets or percent signs); anything else is left to it.
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef Py_ssize_t i
    cdef bint port = False
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if port:
            if not c'0' <= c <= c'9':
                return False
        elif c == c':':
            port = True
        elif not (c'a' <= c <= c'z' or c'A' <= c <= c'Z' or c'0' <= c <= c'9'
                  or c == c'.' or c == c'-' or c == c'_' or c == c'~'):
            return valid_host(value)
    return True


@cython.freelist(64)
cdef class Entry:
    """An object open for serving, as the connection loop reads it (docs/fastpath.md)."""

    def __init__(self, str object_id, int fd, long long size, str tier):
        self.id = object_id
        self.fd = fd
        self.size = size
        self.url = b"/o/" + object_id.encode()
        self.tier = tier
        self.hits = 0
        self.body_bytes = 0
        self.head200 = self.head206 = self.head_slice = self.head_slice_mid = b""
        self.head_from = self.head_until = 0.0
        self.log_get = self.log_head = self.log_tier = ""
        self.log_plain = ("", "")
        self.tier_slot = -1


@cython.final
cdef class EntryTable:
    """The open entries: at most *capacity*, least recently used first out."""

    def __init__(self, Py_ssize_t capacity):
        self.capacity = capacity
        self.by_id = {}
        self.by_url_ = {}
        self.first = self.last = None

    cdef void unlink(self, Entry entry) noexcept:
        if entry.prev is None:
            self.first = entry.next
        else:
            entry.prev.next = entry.next
        if entry.next is None:
            self.last = entry.prev
        else:
            entry.next.prev = entry.prev
        entry.prev = entry.next = None

    cdef void append(self, Entry entry) noexcept:
        entry.prev = self.last
        entry.next = None
        if self.last is None:
            self.first = entry
        else:
            self.last.next = entry
        self.last = entry

    cdef Entry lookup_url(self, bytes url):
        cdef object found = self.by_url_.get(url)
        cdef Entry entry
        if found is None:
            return None
        entry = <Entry>found
        if entry is not self.last:
            self.unlink(entry)
            self.append(entry)
        return entry

    def add(self, Entry entry):
        """Add *entry* as the most recent; return the entry it put out (the one it
        replaced under the same id, else the least recent one past *capacity*)."""
        cdef Entry old = self.remove(entry.id)
        self.by_id[entry.id] = entry
        self.by_url_[entry.url] = entry
        self.append(entry)
        if old is None and len(self.by_id) > self.capacity:
            old = self.remove(self.first.id)
        return old

    def get(self, str object_id):
        cdef object found = self.by_id.get(object_id)
        cdef Entry entry
        if found is None:
            return None
        entry = <Entry>found
        if entry is not self.last:
            self.unlink(entry)
            self.append(entry)
        return entry

    def by_url(self, bytes url):
        """The entry whose target is exactly *url* (``/o/<id>``), made the most recent."""
        return self.lookup_url(url)

    def remove(self, str object_id):
        cdef object found = self.by_id.pop(object_id, None)
        cdef Entry entry
        if found is None:
            return None
        entry = <Entry>found
        del self.by_url_[entry.url]
        self.unlink(entry)
        return entry

    def clear(self):
        """Remove every entry; return them."""
        entries = list(self)
        for entry in entries:
            self.unlink(entry)
        self.by_id.clear()
        self.by_url_.clear()
        return entries

    def __len__(self):
        return len(self.by_id)

    def __iter__(self):
        cdef list out = []
        cdef Entry entry = self.first
        while entry is not None:
            out.append(entry)
            entry = entry.next
        return iter(out)


@cython.final
@cython.freelist(64)
cdef class Response:
    """A response decided in Python, as the connection loop sends it (docs/fastpath.md)."""

    def __init__(self, int status, bytes head not None, Entry entry=None,
                 long long offset=0, long long count=0, list parts=None,
                 bint keep_alive=True, Py_ssize_t head_len=-1, str method="GET",
                 str oid=None, str range=None, str path=None):
        self.status = status
        self.head = head
        self.entry = entry
        self.offset = offset
        self.count = count
        self.parts = parts
        self.keep_alive = keep_alive
        self.head_len = PyBytes_GET_SIZE(head) if head_len < 0 else head_len
        self.method = method
        self.oid = oid
        self.range = range
        self.path = path
        if count and entry is None:
            raise ValueError("a response with body bytes from a file needs its entry")

    def body_sent(self):
        """Body bytes that went out so far."""
        cdef long long n = self.done + self.sent - self.head_len
        return n if n > 0 else 0


cdef Response own_response(int status, bytes head, Entry entry, long long offset,
                           long long count, str rng, double t0):
    # A response the loop decided, when it does not go out in one call.
    cdef Response resp = Response.__new__(Response)
    resp.status = status
    resp.head = head
    resp.entry = entry
    resp.offset = offset
    resp.count = count
    resp.keep_alive = True
    resp.head_len = PyBytes_GET_SIZE(head)
    resp.method = "GET"
    resp.oid = entry.id
    resp.range = rng
    resp.t0 = t0
    resp.own = True
    return resp


cdef Py_ssize_t date_offset(bytes head) noexcept:
    # Where the Date value of a head from Handler.render_heads starts (after its first
    # "\r\nDate: ", within its first 128 bytes, with DATE_SIZE bytes to it), -1: none.
    cdef const char *p = PyBytes_AS_STRING(head)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t i
    if n > 128:
        n = 128
    for i in range(n - 8 - DATE_SIZE + 1):
        if p[i] == c'\r' and p[i + 1] == c'\n' and memcmp(p + i + 2, b"Date: ", 6) == 0:
            return i + 8
    return -1


cdef bytes redated(bytes head, const char *date):
    # A copy of *head* with *date* in place of its Date value; None if it has none.
    cdef Py_ssize_t at = date_offset(head)
    cdef bytes out
    if at < 0:
        return None
    out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head))
    memcpy(PyBytes_AS_STRING(out) + at, date, DATE_SIZE)
    return out


@cython.final
cdef class Shared:
    """What every connection of one worker reads, taken from the server once."""

    def __init__(self, server):
        handler = server.handler
        self.server = server
        self.handler = handler
        self.loop = server.loop
        self.entries = handler.objects.entries
        self.access_log = handler.access_log
        self.logging = handler.logging
        self.log_max_lines = handler.access_log.MAX_BUFFERED_LINES if self.logging else 0
        self.wanted = handler.REQUEST_HEADERS
        if b"range" not in self.wanted:
            raise ValueError("the handler's REQUEST_HEADERS lack range: the loop keeps it")
        for name in self.wanted:
            wanted_first[<unsigned char>PyBytes_AS_STRING(name)[0]] = True
        self.header_timeout = server.header_timeout
        self.keepalive_timeout = server.keepalive_timeout
        self.send_timeout = server.send_timeout
        self.max_head_size = server.max_head_size
        self.max_header_size = server.max_header_size
        self.max_url_size = server.max_url_size
        self.budget = server.sendfile_max_chunk
        self.max_ranges = handler.max_ranges
        self.pool = []
        self.poll_fd = oca_poll_create()
        if self.poll_fd < 0:
            raise OSError(errno, "cannot create the connections' poll descriptor")
        self.loop.add_reader(self.poll_fd, self.on_events)
        metrics = handler.metrics
        self.counts = metrics.counts
        if len(self.counts) - 1 > 64:
            raise ValueError(f"{len(self.counts) - 1} counters: the compiled loop holds 64")
        self.counter_count = len(self.counts) - 1
        metrics.add_source(self.fold)
        self.log_lines = handler.access_log.lines if self.logging else None
        self.log_appliance = handler.access_log.appliance_json if self.logging else "null"
        if self.logging:
            self.log_buf = <char *>PyMem_Malloc(LOG_BUFFER)
            if self.log_buf == NULL:
                raise MemoryError()
            handler.access_log.add_source(self.fold_log)
        self.metrics_slots = metrics.slots
        self.slot_200, self.slot_no_tier, self.slot_fastpath = metrics.slots(200, None, True)
        self.slot_206 = metrics.slots(206, None, True)[0]
        self.status_slots = {}
        self.slot_bucket0 = metrics.BUCKET0
        self.slot_seconds = metrics.SECONDS
        bounds = metrics.BUCKETS
        if len(bounds) > 64:
            raise ValueError(f"{len(bounds)} histogram buckets: the compiled loop holds 64")
        self.bucket_count = len(bounds)
        for i, bound in enumerate(bounds):
            self.bucket_bounds[i] = bound

    def __cinit__(self):
        self.poll_fd = -1

    def __dealloc__(self):
        if self.poll_fd >= 0:
            c_close(self.poll_fd)
        PyMem_Free(self.by_fd)
        PyMem_Free(self.log_buf)

    def fold_log(self):
        """Move the lines put together in C since the last move into AccessLog.lines (its
        flush calls this first; the loop calls it before any line made in Python, so
        lines keep their order)."""
        self.move_log()
        self.log_pending = 0

    cdef int move_log(self) except -1:
        if self.log_len:
            PyList_Append(self.log_lines, PyUnicode_DecodeASCII(self.log_buf, self.log_len,
                                                                NULL))
            self.log_len = 0
        return 0

    def on_events(self):
        # The poll fd is readable: serve every connection it reports, each in the one
        # direction it is watched for (level-triggered: one with more than 256 ready
        # waits for the next call).
        cdef int fds[256]
        cdef int n = oca_poll_wait(self.poll_fd, fds, 256)
        cdef int i, fd
        cdef Connection conn
        for i in range(n):
            fd = fds[i]
            if fd < self.by_fd_size and self.by_fd[fd] != NULL:
                conn = <Connection>self.by_fd[fd]
                if conn.writing:
                    conn.writable()
                else:
                    conn.read()

    cdef int watch(self, int fd, object conn) except -1:
        # Report readability of *fd* to *conn* (which unwatches before it goes).
        cdef Py_ssize_t size
        cdef void **grown
        if fd >= self.by_fd_size:
            size = max(fd + 1, 2 * self.by_fd_size, 1024)
            grown = <void **>PyMem_Realloc(self.by_fd, size * sizeof(void *))
            if grown == NULL:
                raise MemoryError()
            memset(grown + self.by_fd_size, 0, (size - self.by_fd_size) * sizeof(void *))
            self.by_fd = grown
            self.by_fd_size = size
        if oca_poll_add(self.poll_fd, fd) < 0:
            raise OSError(errno, f"cannot watch fd {fd}")
        self.by_fd[fd] = <void *>conn
        return 0

    cdef int want(self, int fd, bint write) except -1:
        # Watch *fd* (watched already) for writing, or again for reading.
        if oca_poll_want(self.poll_fd, fd, write) < 0:
            raise OSError(errno, f"cannot watch fd {fd} for {'writing' if write else 'reading'}")
        return 0

    cdef void unwatch(self, int fd) noexcept:
        oca_poll_del(self.poll_fd, fd)
        if fd < self.by_fd_size:
            self.by_fd[fd] = NULL

    cdef int heads(self, Entry entry, double now) except -1:
        # *entry*'s heads for the second of *now* (epoch). Handler.render_heads renders
        # them; once it has for one entry this second, the others' heads of an earlier
        # second are copied with its Date value (29 bytes: an IMF-fixdate) in place of
        # theirs, in C: one Python call a second per worker, not one per object.
        cdef bytes h200, h206, hslice
        cdef Py_ssize_t at
        if self.date_from <= now < self.date_from + 1.0 and entry.head200 is not None \
                and entry.head206 is not None and entry.head_slice is not None:
            h200 = redated(entry.head200, self.date)
            h206 = redated(entry.head206, self.date)
            hslice = redated(entry.head_slice, self.date)
            if h200 is not None and h206 is not None and hslice is not None:
                entry.head200 = h200
                entry.head206 = h206
                entry.head_slice = hslice
                entry.head_from = self.date_from
                entry.head_until = self.date_from + 1.0
                return 0
        self.handler.render_heads(entry, now)
        at = date_offset(entry.head200)
        if at >= 0:
            memcpy(self.date, PyBytes_AS_STRING(entry.head200) + at, DATE_SIZE)
            self.date_from = entry.head_from
        return 0

    cdef Py_ssize_t status_slot(self, int status) except -1:
        if status == 200:
            return self.slot_200
        if status == 206:
            return self.slot_206
        slot = self.status_slots.get(status)
        if slot is None:
            slot = self.status_slots[status] = self.metrics_slots(status, None, True)[0]
        return slot

    def fold(self):
        """Add the counts kept in C since the last fold to WorkerMetrics.counts (its
        publish calls this first)."""
        cdef list counts = self.counts
        cdef Py_ssize_t i
        for i in range(self.counter_count):
            if self.ccounts[i]:
                counts[i] += self.ccounts[i]
                self.ccounts[i] = 0
        if self.cseconds:
            counts[self.slot_seconds] += self.cseconds
            self.cseconds = 0.0

    cdef int count(self, int status, Entry entry, long long body, double dur) except -1:
        # WorkerMetrics.record(status, tier, body, dur, True), and the entry's counters,
        # in C: folded into WorkerMetrics.counts at each publish (fold).
        cdef Py_ssize_t i = 0
        self.ccounts[self.status_slot(status)] += 1
        if entry is None:
            self.ccounts[self.slot_no_tier] += body
        else:
            if entry.tier_slot < 0:
                entry.tier_slot = self.metrics_slots(status, entry.tier, True)[1]
            self.ccounts[entry.tier_slot] += body
            entry.hits += 1
            entry.body_bytes += body
        self.ccounts[self.slot_fastpath] += 1
        # bisect_left: the first bound >= dur (Prometheus' "le"); past the last: +Inf.
        while i < self.bucket_count and self.bucket_bounds[i] < dur:
            i += 1
        self.ccounts[self.slot_bucket0 + i] += 1
        self.cseconds += dur
        return 0

    cdef int log_own(self, Entry entry, int status, str rng, long long body, double dur,
                     str client_json) except -1:
        # The access-log line of a GET the loop decided: AccessLog.log_plain's line for a
        # whole 200, AccessLog.log_object's otherwise, with the same fields, written into
        # the worker's C buffer (moved into AccessLog.lines as one str when full, before
        # a line made in Python, and when the log flushes).
        cdef double ts = clock_seconds(CLOCK_REALTIME)
        cdef str before, after
        cdef Py_ssize_t size
        cdef char *p
        cdef bint plain = status == 200 and rng is None and body == entry.size
        if plain:
            before, after = entry.log_plain
            size = (ascii_length(self.log_appliance) + ascii_length(before)
                    + ascii_length(client_json) + ascii_length(after))
        else:
            size = (ascii_length(self.log_appliance) + ascii_length(entry.log_get)
                    + ascii_length(client_json) + ascii_length(entry.log_tier)
                    + (0 if rng is None else ascii_length(rng)))
        # The numbers (20 digits each at most) and the fixed keys take less than 200 more.
        size += 200
        if self.log_len + size > LOG_BUFFER:
            self.move_log()
            if size > LOG_BUFFER:
                raise ValueError(f"an access-log line of {size} bytes or more")
        # AccessLog.set_millisecond's line_head: ts rounded to the millisecond (rint: ties
        # to even, as Python's round), written as Python's ".3f" writes it.
        p = put_text(self.log_buf + self.log_len, '{"ts":')
        p = put_thousandths(p, <long long>rint(ts * 1000.0))
        p = put_text(p, ',"appliance":')
        p = put_str(p, self.log_appliance)
        p = put_text(p, ',"method":')
        if plain:
            p = put_str(p, before)
            p = put_str(p, client_json)
            p = put_text(p, ',"dur_ms":')
            p = put_ms(p, dur)
            p = put_str(p, after)
        else:
            # rng is "bytes=<digits>-[<digits>]" (the only form the loop answers): no
            # character of it needs escaping in JSON.
            p = put_str(p, entry.log_get)
            p = put_text(p, ',"status":')
            p = put_int(p, status)
            p = put_text(p, ',"bytes":')
            p = put_int(p, body)
            if rng is None:
                p = put_text(p, ',"range":null,"client":')
            else:
                p = put_text(p, ',"range":"')
                p = put_str(p, rng)
                p = put_text(p, '","client":')
            p = put_str(p, client_json)
            p = put_text(p, ',"dur_ms":')
            p = put_ms(p, dur)
            p = put_text(p, ',"tier":')
            p = put_str(p, entry.log_tier)
            p = put_text(p, '}\n')
        self.log_len = p - self.log_buf
        self.log_pending += 1
        if self.log_pending >= self.log_max_lines:
            self.access_log.flush()  # which moves the buffer first (fold_log)
        return 0


@cython.final
cdef class Reader:
    """llhttp's parser state and the connection it reads for; the parser's C callbacks
    (cb_* below) act on the connection through it. Between requests it goes back to the
    worker's pool, so an idle connection holds none. The handler reads the parsed request
    through it (``conn.parser``): get_method(), should_keep_alive(), get_http_version(),
    as httptools' parser offers them in the twin."""

    cdef Connection conn
    cdef llhttp_t p
    # The current field: its name's first NAME_SIZE bytes (name_len counts them all),
    # what it is, and for a kept one its value so far; values: how many pieces of the
    # value llhttp has passed (more than one: split by a read, or an obs-fold).
    cdef char name[NAME_SIZE]
    cdef Py_ssize_t name_len
    cdef int kind, values
    cdef bytes key, value
    cdef bint prev_lf                   # the previous read ended with LF
    cdef bint within                    # a message begun and not complete
    cdef object error                   # what stopped the parse in a callback

    def __cinit__(self):
        llhttp_init(&self.p, HTTP_REQUEST, &settings)
        self.p.data = <void *>self

    def get_method(self):
        """The request's method, as bytes."""
        return <bytes>llhttp_method_name(<llhttp_method_t>self.p.method)

    def should_keep_alive(self):
        """Whether the connection may carry another request after this one."""
        return llhttp_should_keep_alive(&self.p) != 0

    def get_http_version(self):
        """The request's HTTP version, "1.1" or "1.0"."""
        return f"{self.p.http_major}.{self.p.http_minor}"


# llhttp's callbacks. An exception (a refusal, _ParseStop, or any other) is kept in the
# reader's error and stops the parse: llhttp_execute returns HPE_USER.

cdef llhttp_settings_t settings
llhttp_settings_init(&settings)


cdef int cb_message_begin(llhttp_t *p) noexcept:
    (<Reader>p.data).within = True
    return 0


cdef int cb_url(llhttp_t *p, const char *at, size_t n) noexcept:
    cdef Reader r = <Reader>p.data
    try:
        r.conn.on_url(at, n)
    except BaseException as e:
        r.error = e
        return -1
    return 0


cdef int cb_header_field(llhttp_t *p, const char *at, size_t n) noexcept:
    cdef Reader r = <Reader>p.data
    cdef Py_ssize_t room = NAME_SIZE - r.name_len
    if room > 0:
        memcpy(r.name + r.name_len, at, n if <Py_ssize_t>n < room else room)
    r.name_len += n
    return 0


cdef int cb_header_field_complete(llhttp_t *p) noexcept:
    cdef Reader r = <Reader>p.data
    cdef Py_ssize_t n = r.name_len
    cdef const char *c = r.name
    cdef char lower[NAME_SIZE]
    cdef Py_ssize_t i
    r.kind = FIELD_OTHER
    r.values = 0
    if n == 0 or n > NAME_SIZE or not wanted_first[<unsigned char>c[0] | 0x20]:
        return 0
    if n == 4 and c[0] | 0x20 == c'h' and c[1] | 0x20 == c'o' and c[2] | 0x20 == c's' \
            and c[3] | 0x20 == c't':
        r.kind = FIELD_HOST
    elif n == 5 and c[0] | 0x20 == c'r' and c[1] | 0x20 == c'a' and c[2] | 0x20 == c'n' \
            and c[3] | 0x20 == c'g' and c[4] | 0x20 == c'e':
        r.kind = FIELD_RANGE
        r.key = b"range"
    else:
        for i in range(n):
            lower[i] = c[i] | 0x20 if c'A' <= c[i] <= c'Z' else c[i]
        try:
            key = PyBytes_FromStringAndSize(lower, n)
            if key == b"transfer-encoding":
                r.kind = FIELD_TE
            elif key in r.conn.shared.wanted:
                r.kind = FIELD_WANTED
                r.key = key
        except BaseException as e:
            r.error = e
            return -1
    return 0


cdef int cb_header_value(llhttp_t *p, const char *at, size_t n) noexcept:
    cdef Reader r = <Reader>p.data
    r.values += 1
    if r.values > 1 and ((at[-1] == c'\n') if at > recv_buffer else r.prev_lf):
        # An obs-fold (RFC 9112 section 5.2: reject it, or replace it with a space; the
        # twin's llhttp rejects it): 400.
        r.error = _ParseStop("obs-fold")
        return -1
    if r.kind == FIELD_OTHER:
        return 0
    try:
        if r.value is None:
            r.value = PyBytes_FromStringAndSize(at, n)
        else:
            r.value += PyBytes_FromStringAndSize(at, n)
    except BaseException as e:
        r.error = e
        return -1
    return 0


cdef int cb_header_value_complete(llhttp_t *p) noexcept:
    cdef Reader r = <Reader>p.data
    cdef bytes value
    r.name_len = 0
    if r.kind == FIELD_OTHER:
        return 0
    value = b"" if r.value is None else r.value
    r.value = None
    try:
        r.conn.on_header(r.kind, r.key, value)
    except BaseException as e:
        r.error = e
        return -1
    finally:
        r.key = None
        r.kind = FIELD_OTHER
    return 0


cdef int cb_headers_complete(llhttp_t *p) noexcept:
    (<Reader>p.data).conn.head_bytes = -1  # no more head-size accounting
    return 0


cdef int cb_body(llhttp_t *p, const char *at, size_t n) noexcept:
    cdef Reader r = <Reader>p.data
    try:
        r.conn.on_body(n)
    except BaseException as e:
        r.error = e
        return -1
    return 0


cdef int cb_message_complete(llhttp_t *p) noexcept:
    cdef Reader r = <Reader>p.data
    r.within = False
    try:
        r.conn.on_message_complete()
    except BaseException as e:
        r.error = e
        return -1
    return 0


settings.on_message_begin = cb_message_begin
settings.on_url = cb_url
settings.on_header_field = cb_header_field
settings.on_header_field_complete = cb_header_field_complete
settings.on_header_value = cb_header_value
settings.on_header_value_complete = cb_header_value_complete
settings.on_headers_complete = cb_headers_complete
settings.on_body = cb_body
settings.on_message_complete = cb_message_complete


@cython.final
cdef class Connection:
    """One client connection: parse requests, send responses, in order."""

    cdef Shared shared
    cdef Reader reader
    cdef readonly int fd, state
    cdef readonly str client_json
    cdef readonly double deadline, t0
    cdef double read_at
    cdef readonly bytes url
    cdef readonly object headers
    # The Range field while it is the only acted-on one (no dict made for it: the common
    # request of a player); headers holds it too once another comes.
    cdef bytes range_only
    cdef Response current
    cdef object queue
    cdef int head_bytes, body_bytes  # both bounded far below 2^31 (max_head_size, MAX_BODY)
    cdef signed char hosts
    # watched: in the worker's poll set (from its start to its close); writing: watched
    # for writability (a response under way waits for room or its next budget);
    # linger: close in stages after this response (a rejected request: its client may
    # still be sending); lingering: half-closed, reading to the client's end (_close).
    cdef unsigned char chunked, watched, writing, closing, reusable, linger, lingering

    def __init__(self, Shared shared not None, int fd, str client_json):
        self.shared = shared
        self.fd = fd
        self.client_json = client_json
        self.state = IDLE
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + shared.keepalive_timeout
        self.url = b""
        shared.watch(fd, self)
        self.watched = True

    @property
    def idle(self):
        """Between requests, with no response under way."""
        return self.state == IDLE and self.current is None

    @property
    def client(self):
        """The peer's address (the JSON string of an address needs no escapes)."""
        return self.client_json[1:-1]

    @property
    def parser(self):
        """The request's parser (a Reader: get_method, should_keep_alive,
        get_http_version), while one is read."""
        return self.reader

    # -- reading ------------------------------------------------------------

    def on_readable(self):
        self.read()

    cdef int read(self) except -1:
        cdef ssize_t n
        cdef double now
        cdef bint starts
        cdef Shared shared = self.shared
        cdef Reader reader
        cdef llhttp_errno_t err
        if self.lingering:
            return self.drain()
        while True:
            n = recv(self.fd, recv_buffer, recv_size, 0)
            if n >= 0 or errno != EINTR:
                break
        if n < 0:
            if errno != EAGAIN:  # EWOULDBLOCK is EAGAIN on Linux and FreeBSD
                self._close()
            return 0
        if n == 0:
            self._close()
            return 0
        now = self.read_at = clock_seconds(CLOCK_MONOTONIC)
        starts = self.state != READING  # this read begins a request
        if starts:
            self.state = READING
            self.head_bytes = 0
            self.deadline = now + shared.header_timeout
        if self.head_bytes >= 0:
            self.head_bytes += n
            if self.head_bytes > shared.max_head_size:
                self.reject(431)
                return 0
        reader = self.reader  # a local reference: the callbacks may drop self.reader
        if reader is None:
            if shared.pool:
                reader = self.reader = <Reader>shared.pool.pop()
            else:
                reader = self.reader = Reader()
            reader.conn = self
        self.reusable = True
        err = llhttp_execute(&reader.p, recv_buffer, n)
        reader.prev_lf = recv_buffer[n - 1] == c'\n'
        if err != HPE_OK:
            self.reader = None
            if reader.error is not None and not isinstance(reader.error, _ParseStop):
                _log.error("connection %s: a request's callback failed; answered 400",
                           self.client, exc_info=reader.error)
            reader.error = None
            if err == HPE_INVALID_METHOD:
                # llhttp's HPE_INVALID_METHOD is both an unknown method token ("FOO /o/x
                # HTTP/1.1": 405, as nginx answers for a static file) and a request line
                # it cannot parse at all ("GET\r\n", a TLS handshake): 400.
                self.reject(405 if starts and unknown_method(
                    PyBytes_FromStringAndSize(recv_buffer, n), n) else 400)
            elif err == HPE_PAUSED_UPGRADE and reader.p.upgrade:
                # llhttp stops after a request asking to switch protocols (Upgrade,
                # CONNECT). It has been answered in HTTP/1.1 (RFC 9110 section 7.8: a
                # server may ignore Upgrade); nothing after it is read: close once its
                # response is sent.
                last = self.queue[-1] if self.queue else self.current
                if last is None:
                    self._close()
                else:
                    (<Response>last).keep_alive = False
            elif not self.closing:
                # Malformed, or a callback stopped it (a refusal has already answered).
                self.reject(400)
            return 0
        if self.state != READING and not self.closing and self.reader is not None:
            # Between requests: the parser goes back to the worker's pool (unless a
            # pipelined request has begun in this read: it stays with its connection).
            if not reader.within:
                if self.reusable:
                    reader.conn = None
                    shared.pool.append(reader)
                self.reader = None
        return 0

    # llhttp's callbacks (cb_* above), through Reader ---------------------------

    cdef int on_url(self, const char *at, size_t n) except -1:
        if not self.url:
            self.t0 = self.read_at
            self.url = PyBytes_FromStringAndSize(at, n)
        else:
            self.url += PyBytes_FromStringAndSize(at, n)
        if PyBytes_GET_SIZE(self.url) > self.shared.max_url_size:
            self.reject(414)
            raise _ParseStop("URL too long")
        return 0

    cdef int on_header(self, int kind, bytes key, bytes value) except -1:
        # A field the loop acts on (Reader.kind: Host, Range, Transfer-Encoding, another
        # of REQUEST_HEADERS, by its lower-case name *key*). The whole head is bounded
        # by max_head_size (read); a kept field's value alone by max_header_size.
        if kind == FIELD_HOST:
            # RFC 9112 section 3.2: one Host field, with a valid value.
            if self.hosts >= 0 and valid_host_c(value):
                self.hosts = 2 if self.hosts else 1
            else:
                self.hosts = -1
            return 0
        if kind == FIELD_TE:
            self.chunked = True
            return 0
        if PyBytes_GET_SIZE(value) > self.shared.max_header_size:
            self.reject(431)
            raise _ParseStop("header too large")
        if kind == FIELD_RANGE and self.headers is None and self.range_only is None:
            self.range_only = value
            return 0
        if self.headers is None:
            self.headers = {}
            if self.range_only is not None:
                self.headers[b"range"] = self.range_only
                self.range_only = None
        self.headers[key] = value
        return 0

    cdef int on_body(self, size_t n) except -1:
        self.body_bytes += n
        if self.body_bytes > MAX_BODY:
            self.reject(413)
            raise _ParseStop("body too large")
        return 0

    cdef int on_message_complete(self) except -1:
        cdef Shared shared
        cdef double t0
        cdef bint keep_alive
        cdef Response resp
        if self.closing:
            # llhttp goes on through the rest of the read after a callback closed the
            # connection (a send failed, too many pipelined requests): none is answered.
            return 0
        shared = self.shared
        handler = shared.handler
        cdef llhttp_t *parser = &self.reader.p
        keep_alive = llhttp_should_keep_alive(parser) != 0
        if not keep_alive:
            self.reusable = False
        # RFC 9112 section 3.2: a 400 for an HTTP/1.1 request without Host, and for any
        # with more than one or an invalid one. Section 6.1: a Transfer-Encoding in an
        # HTTP/1.0 request is faulty framing (llhttp accepts it there): 400 and close.
        if self.hosts != 1 or self.chunked:
            if self.hosts < 0 or self.hosts > 1:
                faulty = True
            else:
                http11 = parser.http_major == 1 and parser.http_minor == 1
                faulty = (self.hosts == 0 and http11) or (self.chunked and not http11)
            if faulty:
                self.reject(400)
                raise _ParseStop("bad Host or Transfer-Encoding")
        url = self.url
        if PyBytes_GET_SIZE(url) == 0 or PyBytes_AS_STRING(url)[0] != c'/':
            url = absolute_path(url)
        t0 = self.t0
        headers = self.headers
        rng = self.range_only
        self.url = b""
        self.headers = None
        self.range_only = None
        self.body_bytes = 0
        self.head_bytes = 0
        self.hosts = 0
        self.chunked = False
        self.t0 = 0.0
        self.state = IDLE
        if (keep_alive and headers is None and handler.tokens is None and not handler.closing
                and parser.method == HTTP_GET
                and self.answer(url, rng, t0)):
            return 0
        if rng is not None:
            headers = {b"range": rng}
        self.url = url
        self.headers = headers
        self.t0 = t0
        resp = <Response?>handler.respond(self)
        self.url = b""
        self.headers = None
        self.t0 = 0.0
        resp.t0 = t0
        self.queue_response(resp)
        return 0

    cdef bint answer(self, bytes url, bytes rng, double t0) except -1:
        # Answer a keep-alive GET of an open entry here when it is a whole object, one
        # range "bytes=a-b" or "bytes=a-" (*rng*, the request's only acted-on field), or
        # a /range/ URL; False: the handler decides.
        cdef EntryTable entries = self.shared.entries
        cdef Entry entry = entries.lookup_url(url)
        cdef const char *p
        cdef Py_ssize_t n, dash, cut
        cdef long long first, last
        if entry is not None:
            if rng is None:
                self.send_entry(entry, 200, None, 0, entry.size, t0)
                return True
            if self.shared.max_ranges < 1:
                return False
            p = PyBytes_AS_STRING(rng)
            n = PyBytes_GET_SIZE(rng)
            if n < 8 or p[0] != c'b' or p[1] != c'y' or p[2] != c't' or p[3] != c'e' \
                    or p[4] != c's' or p[5] != c'=':
                return False
            dash = 6
            while dash < n and p[dash] != c'-':
                dash += 1
            if dash == n:
                return False
            first = digits(p + 6, dash - 6)
            if first < 0 or first >= entry.size:
                return False
            if dash + 1 == n:
                last = entry.size - 1
            else:
                last = digits(p + dash + 1, n - dash - 1)
                if last < first:
                    return False
                if last >= entry.size:
                    last = entry.size - 1
            self.send_entry(entry, 206, rng.decode("latin-1"), first, last - first + 1, t0)
            return True
        if rng is not None:
            return False
        p = PyBytes_AS_STRING(url)
        n = PyBytes_GET_SIZE(url)
        if n < 12 or p[0] != c'/' or p[1] != c'o' or p[2] != c'/':
            return False
        cut = url.find(b"/range/", 3)
        if cut < 0:
            return False
        entry = entries.lookup_url(url[:cut])
        if entry is None:
            return False
        dash = cut + 7
        while dash < n and p[dash] != c'-':
            dash += 1
        if dash == n:
            return False
        first = digits(p + cut + 7, dash - cut - 7)
        last = digits(p + dash + 1, n - dash - 1)
        if first < 0 or last < first or first >= entry.size:
            return False
        if last >= entry.size:
            last = entry.size - 1
        self.send_entry(entry, -1, None, first, last - first + 1, t0)
        return True

    # -- writing ------------------------------------------------------------

    cdef int send_entry(self, Entry entry, int status, str rng, long long offset,
                        long long count, double t0) except -1:
        # A response of *entry* decided here: 200 (the whole object), 206 (one range) or
        # -1 (a /range/ URL's 200). No Response object unless it does not go out whole.
        cdef double now = clock_seconds(CLOCK_REALTIME)
        cdef double end
        cdef long long sent
        cdef bytes head
        cdef Response resp
        if not entry.head_from <= now < entry.head_until:
            self.shared.heads(entry, now)
        if status == 200:
            head = entry.head200
        elif status == 206:
            head = head_206(entry, offset, count)
        else:
            status = 200
            head = head_slice(entry, offset, count)
        if self.current is not None:  # pipelined behind a response under way
            self.queue_response(own_response(status, head, entry, offset, count, rng, t0))
            return 0
        try:
            sent = send_response_c(self.fd, head, entry.fd, offset, count, 0,
                                   self.shared.budget + PyBytes_GET_SIZE(head)
                                   if self.shared.budget > 0 else 0)
        except OSError as e:
            resp = own_response(status, head, entry, offset, count, rng, t0)
            self.send_failed(resp, e)
            self.finish(resp)
            return 0
        if sent < PyBytes_GET_SIZE(head) + count:
            resp = own_response(status, head, entry, offset, count, rng, t0)
            resp.sent = sent
            self.wait_writable(resp)
            return 0
        end = clock_seconds(CLOCK_MONOTONIC)
        self.shared.count(status, entry, count, end - t0)
        if self.shared.logging:
            self.shared.log_own(entry, status, rng, count, end - t0, self.client_json)
        self.deadline = end + self.shared.keepalive_timeout
        return 0

    cdef int queue_response(self, Response resp) except -1:
        if self.current is None:
            self.start(resp)
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(resp)
            if len(self.queue) > MAX_PIPELINE:
                self._close()
        return 0

    cdef int start(self, Response resp) except -1:
        # Send *resp*; when the socket fills up, wait for writability.
        while True:
            if not self.send(resp):
                self.wait_writable(resp)
                return 0
            self.finish(resp)
            if self.closing:
                return 0
            if not self.queue:
                return 0
            resp = <Response>self.queue.popleft()

    cdef int wait_writable(self, Response resp) except -1:
        # *resp* is under way and the socket is full (or its budget spent): send the
        # rest when the socket is writable. Reading stops meanwhile (pipelined requests
        # wait in the socket).
        self.current = resp
        if not self.writing:
            self.writing = True
            self.shared.want(self.fd, True)
        self.state = WRITING
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + self.shared.send_timeout
        return 0

    cdef int writable(self) except -1:
        # The socket is writable: go on with the response under way, then the queue.
        cdef Response resp = self.current
        cdef Shared shared = self.shared
        cdef long long before = resp.done + resp.sent
        if not self.send(resp):
            if resp.done + resp.sent != before:
                self.deadline = clock_seconds(CLOCK_MONOTONIC) + shared.send_timeout
            return 0
        self.current = None
        self.finish(resp)
        if self.closing:
            return 0
        while self.queue:
            resp = <Response>self.queue.popleft()
            if not self.send(resp):
                self.current = resp
                return 0
            self.finish(resp)
            if self.closing:
                return 0
        self.state = IDLE
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + shared.keepalive_timeout
        self.writing = False
        shared.want(self.fd, False)
        return 0

    cdef bint send(self, Response resp) except -1:
        # Send what the socket takes (at most the budget); True when *resp* is done.
        # The budget (sendfile_max_chunk) counts body bytes, as nginx's: the heads of
        # this turn's segments go out beside it (a 2 MiB object leaves in one turn).
        cdef long long budget = self.shared.budget
        cdef long long before, sent, offset, count, head_left
        cdef Py_ssize_t part
        cdef bytes head
        cdef int file_fd
        while True:
            part = resp.part
            if part == 0:
                head = resp.head
                offset = resp.offset
                count = resp.count
            else:
                segment = <tuple>resp.parts[part - 1]
                head = <bytes>segment[0]
                offset = segment[1]
                count = segment[2]
            file_fd = resp.entry.fd if count else -1
            before = resp.sent
            head_left = PyBytes_GET_SIZE(head) - before
            if head_left < 0:
                head_left = 0
            try:
                sent = send_response_c(self.fd, head, file_fd, offset, count, before,
                                       budget + head_left if budget > 0 else budget)
            except OSError as e:
                self.send_failed(resp, e)
                return True
            resp.sent = sent
            if sent < PyBytes_GET_SIZE(head) + count:
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

    cdef int send_failed(self, Response resp, exc) except -1:
        entry = resp.entry
        if exc.errno in _DISK_ERRORS and entry is not None:
            self.shared.handler.objects.fail_disk(entry.disk,
                                                  f"{exc.strerror} sending {entry.id}")
        resp.keep_alive = False
        resp.aborted = True
        return 0

    cdef int finish(self, Response resp) except -1:
        self.account(resp)
        if not resp.keep_alive or self.shared.handler.closing:
            # Past the drain deadline or shutting down: no idle connection is kept.
            self._close()
            return 0
        self.deadline = clock_seconds(CLOCK_MONOTONIC) + self.shared.keepalive_timeout
        return 0

    cdef int account(self, Response resp) except -1:
        # Count *resp* (worker metrics, its entry's hits and body bytes) and log it.
        cdef Shared shared = self.shared
        cdef double dur = clock_seconds(CLOCK_MONOTONIC) - resp.t0
        cdef long long body = resp.done + resp.sent - resp.head_len
        cdef Entry entry = resp.entry
        if body < 0:
            body = 0
        shared.count(resp.status, entry, body, dur)
        if not shared.logging:
            return 0
        if resp.own:
            shared.log_own(entry, resp.status, resp.range, body, dur, self.client_json)
            return 0
        log = shared.access_log
        method = resp.method
        shared.move_log()  # the lines before this one go first
        if entry is not None and (method == "GET" or method == "HEAD"):
            log.log_object(clock_seconds(CLOCK_REALTIME),
                           entry.log_get if method == "GET" else entry.log_head,
                           resp.status, body, resp.range, self.client_json, dur * 1000.0,
                           entry.log_tier, resp.scope)
            return 0
        log.log(clock_seconds(CLOCK_REALTIME), method, resp.oid, resp.status, body,
                resp.range, self.client, dur * 1000.0, None if entry is None else entry.tier,
                resp.path, resp.scope)
        return 0

    cdef int reject(self, int status) except -1:
        # Answer a malformed request with *status* and close, whatever is queued.
        cdef Response resp
        if self.closing:
            return 0
        self.linger = True
        resp = <Response?>self.shared.handler.error(status)
        resp.t0 = self.t0 or clock_seconds(CLOCK_MONOTONIC)
        self.queue = None
        if self.current is None:
            self.start(resp)
        else:
            self._close()
        if not self.closing:
            self._close()
        return 0

    # -- closing ------------------------------------------------------------

    def close(self):
        """Close now (a timeout, the drain deadline, shutdown), lingering or not."""
        if self.lingering:
            self.release()
        else:
            self._close()

    cdef int _close(self) except -1:
        # Close after the last response; a rejected request's connection in stages.
        if self.closing:
            return 0
        if self.linger and self.current is None and self.watched:
            # RFC 9112 section 9.6: a client may still be sending the rest of a request
            # we refused; closing with unread bytes makes the kernel answer them with a
            # reset, which can destroy our response before the client reads it. So
            # half-close, read and drop what comes until the client closes its side or
            # LINGER_TIMEOUT passes (the sweep), then close (nginx's lingering_close).
            self.closing = True
            self.lingering = True
            self.state = CLOSED
            self.queue = None
            self.reader = None
            if self.writing:
                self.writing = False
                self.shared.want(self.fd, False)
            if shutdown(self.fd, SHUT_WR) < 0:
                return self.release()
            self.deadline = clock_seconds(CLOCK_MONOTONIC) + LINGER_TIMEOUT
            return 0
        return self.release()

    cdef int drain(self) except -1:
        # Lingering: drop what the client sends (at most 16 reads a readiness report);
        # its end, or an error, closes.
        cdef ssize_t n
        cdef int reads = 0
        while reads < 16:
            n = recv(self.fd, recv_buffer, recv_size, 0)
            if n > 0:
                reads += 1
            elif n < 0 and errno == EINTR:
                continue
            elif n < 0 and errno == EAGAIN:
                return 0
            else:
                return self.release()
        return 0

    cdef int release(self) except -1:
        # Close the socket and forget the connection.
        cdef Response resp
        if self.fd < 0:
            return 0  # released already
        self.lingering = False
        self.closing = True
        self.state = CLOSED
        if self.watched:
            self.watched = False
            self.shared.unwatch(self.fd)
        resp = self.current
        if resp is not None:
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
        self.shared.server.forget(self)
        c_close(self.fd)
        self.fd = -1
        return 0


cdef bytes concat(bytes a, const char *b, Py_ssize_t nb, bytes c, const char *d,
                  Py_ssize_t nd):
    # a + b[:nb] + c + d[:nd] as one new bytes object (c may be None).
    cdef Py_ssize_t na = PyBytes_GET_SIZE(a)
    cdef Py_ssize_t nc = 0 if c is None else PyBytes_GET_SIZE(c)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, na + nb + nc + nd)
    cdef char *o = PyBytes_AS_STRING(out)
    memcpy(o, PyBytes_AS_STRING(a), na)
    memcpy(o + na, b, nb)
    if nc:
        memcpy(o + na + nb, PyBytes_AS_STRING(c), nc)
    memcpy(o + na + nb + nc, d, nd)
    return out


cdef bytes head_206(Entry entry, long long offset, long long count):
    # Handler._conditional's single-range head, keep-alive. The numbers by put_int:
    # glibc's snprintf was 6% of a worker's user time on 1 MiB ranges (perf).
    cdef char tail[160]
    cdef char *p = put_int(tail, offset)
    p[0] = c'-'
    p = put_int(p + 1, offset + count - 1)
    p[0] = c'/'
    p = put_int(p + 1, entry.size)
    p = put_text(p, "\r\nContent-Length: ")
    p = put_int(p, count)
    p = put_text(p, "\r\nConnection: keep-alive\r\n\r\n")
    return concat(entry.head206, tail, p - tail, None, NULL, 0)


cdef bytes head_slice(Entry entry, long long offset, long long count):
    # Handler._path_range's 200 head, keep-alive.
    cdef char mid[64]
    cdef char tail[64]
    cdef char *m = put_int(mid, offset)
    cdef char *t
    m[0] = c'-'
    m = put_int(m + 1, offset + count - 1)
    m = put_text(m, "\"\r\n")
    t = put_int(tail, count)
    t = put_text(t, "\r\nConnection: keep-alive\r\n\r\n")
    return concat(entry.head_slice, mid, m - mid, entry.head_slice_mid, tail, t - tail)
