"""What to answer: from a parsed request and the object table to a Job (head bytes
plus file segments). Nothing here sends; the connection loop (_fastpath.Connection) does.

URLs (DESIGN.md): ``GET|HEAD /o/<id>``, ``/o/<id>/range/<first>-<last>`` (Open
Connect style, answered 200 with just those bytes), ``?t=<expires>.<sig>`` when
signed URLs are on, and ``GET /health``. Anything else in a URL is a 404 and
never reaches the disk: the id must match the id pattern exactly, without any
percent-decoding.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time

import _fastpath

from ..ids import MAX_ID_LEN
from . import conditional, ranges
from .head import REASONS, current_date, format_head
from .objects import DiskFailed, OpenObject

_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID_LEN - 1}}}\Z")
_PATH_RANGE = re.compile(r"/range/([0-9]{1,18})-([0-9]{1,18})\Z")
_ALLOW = (("Allow", "GET, HEAD"),)
_NO_STORE = (("Cache-Control", "no-store"),)
_TEXT = "text/plain; charset=utf-8"
_FASTPATH = _fastpath.IMPLEMENTATION == "cython"
_monotonic = time.monotonic  # the clock of the connection's request times (conn.t0)
_time = time.time


class Job:
    """One response: a head and a file segment, then further parts (multipart)."""

    __slots__ = ("head", "file_fd", "offset", "count", "sent", "total", "parts", "obj",
                 "keep_alive", "status", "oid", "method", "range", "t0", "head_len",
                 "acc", "aborted", "path")

    def __init__(self, head: bytes, obj: OpenObject | None, offset: int, count: int,
                 status: int, keep_alive: bool):
        self.head = head
        self.obj = obj
        self.file_fd = obj.fd if obj is not None and count else -1
        self.offset = offset
        self.count = count
        self.sent = 0
        self.total = len(head) + count
        self.parts: list | None = None
        self.keep_alive = keep_alive
        self.status = status
        self.head_len = len(head)
        self.acc = 0
        self.aborted = False
        self.oid: str | None = None
        self.method = "GET"
        self.range: str | None = None
        self.t0 = 0.0
        self.path: bytes | None = None

    def next_part(self) -> bool:
        """Move on to the next multipart part; False when there is none."""
        self.acc += self.total
        if not self.parts:
            return False
        head, offset, count = self.parts.pop()
        self.head = head
        self.offset = offset
        self.count = count
        self.sent = 0
        self.total = len(head) + count
        return True

    def body_bytes(self) -> int:
        return max(0, self.acc + (self.sent if self.aborted else 0) - self.head_len)


class Handler:
    """Decides the response to each request of one worker."""

    REQUEST_HEADERS = frozenset({b"range", b"if-range", b"if-none-match",
                                 b"if-modified-since", b"if-match", b"if-unmodified-since"})
    """The request header fields acted on, by lower-case name: the connection keeps only
    these (``conn.headers``); a request with none of them may take the plain-GET path."""

    def __init__(self, objects, config, metrics, access_log, tokens=None,
                 fastpath_name: str = _fastpath.IMPLEMENTATION):
        self.objects = objects
        self.metrics = metrics
        self.access_log = access_log
        self.logging = access_log is not None and access_log.enabled
        self.tokens = tokens
        self.origin = config.server.origin_url
        self.max_ranges = config.server.max_ranges
        self.max_header_size = config.server.max_header_size
        self.appliance = config.server.name
        self.fastpath_name = fastpath_name
        self.draining = False
        self.closing = False  # past the drain deadline: answer 503 and close

    # -- the request --------------------------------------------------------

    def respond(self, conn) -> Job:
        parser = conn.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive() and not self.closing
        url = conn.url
        if url.startswith(b"/o/"):
            job = self._object(conn, method, url, keep_alive)
        elif url == b"/health" or url.startswith(b"/health?"):
            job = self._health(method, keep_alive)
        else:
            job = self._simple(404, method, keep_alive)
        job.method = "HEAD" if method == b"HEAD" else method.decode("latin-1")
        if job.oid is None:
            job.path = url
        job.t0 = conn.t0
        return job

    # -- the hot path: plain keep-alive GETs of open objects (_fastpath.Connection) --

    def plain_head(self, obj: OpenObject, now: float) -> None:
        """Render the keep-alive 200 head of *obj* for the second of *now* (epoch): once a
        second per object, not per request."""
        obj.head200 = (f"HTTP/1.1 200 OK\r\nServer: oca\r\nDate: {current_date.at(now)}\r\n"
                       f"{obj.headers}Content-Length: {obj.size}\r\n"
                       "Connection: keep-alive\r\n\r\n").encode("latin-1")
        second = float(now // 1)
        obj.head_from = second
        obj.head_until = second + 1.0

    def plain_job(self, obj: OpenObject, t0: float) -> Job:
        """The Job of a plain GET that did not go out in one call."""
        job = Job(obj.head200, obj, 0, obj.size, 200, True)
        job.oid = obj.id
        job.t0 = t0
        return job

    def plain_done(self, conn, obj: OpenObject, dur: float) -> None:
        """Count and log a plain GET sent whole in one call, *dur* seconds after its read."""
        self.metrics.record(200, obj.tier, obj.size, dur, _FASTPATH)
        if self.logging:
            before, after = obj.log_plain
            self.access_log.log_plain(_time(), before, conn.client_json, dur * 1000.0, after)

    def _object(self, conn, method: bytes, url: bytes, keep_alive: bool) -> Job:
        q = url.find(b"?")
        try:
            rest = (url[3:] if q < 0 else url[3:q]).decode("ascii")
        except UnicodeDecodeError:
            return self._simple(404, method, keep_alive)
        slash = rest.find("/")
        oid = rest if slash < 0 else rest[:slash]
        if not _ID.match(oid):
            return self._simple(404, method, keep_alive)
        path_range = None
        if slash >= 0:
            path_range = _PATH_RANGE.match(rest, slash)
            if path_range is None:
                return self._simple(404, method, keep_alive, oid)
        if method != b"GET" and method != b"HEAD":
            return self._simple(405, method, keep_alive, oid, _ALLOW)
        if self.closing:
            return self._simple(503, method, False, oid)
        if self.tokens is not None:
            query = None if q < 0 else url[q + 1:].decode("latin-1")
            if not self.tokens.check(oid, query, _time()):
                return self._simple(403, method, keep_alive, oid)
        try:
            obj = self.objects.get(oid)
        except DiskFailed:
            if self.origin:
                query = "" if q < 0 else url[q:].decode("latin-1")
                loc = (("Location", f"{self.origin}/o/{oid}{query}"),)
                return self._simple(302, method, keep_alive, oid, loc)
            return self._simple(404, method, keep_alive, oid)
        if obj is None:
            return self._simple(404, method, keep_alive, oid)
        head_only = method == b"HEAD"
        headers = conn.headers
        date = current_date()
        rng = headers.get(b"range") if headers else None
        if path_range is not None:
            job = self._path_range(obj, path_range, headers, head_only, keep_alive, date)
        elif headers:
            job = self._conditional(obj, headers, rng, head_only, keep_alive, date)
        else:
            job = None
        if job is None:
            head = (f"HTTP/1.1 200 OK\r\nServer: oca\r\nDate: {date}\r\n{obj.headers}"
                    f"Content-Length: {obj.size}\r\n"
                    f"{'Connection: keep-alive' if keep_alive else 'Connection: close'}"
                    "\r\n\r\n").encode("latin-1")
            job = Job(head, obj, 0, 0 if head_only else obj.size, 200, keep_alive)
        job.oid = oid
        if rng is not None:
            job.range = rng.decode("latin-1")
        return job

    def _conditional(self, obj: OpenObject, headers: dict, rng: bytes | None,
                     head_only: bool, keep_alive: bool, date: str) -> Job | None:
        g = headers.get
        if_match, inm = g(b"if-match"), g(b"if-none-match")
        ims, ius = g(b"if-modified-since"), g(b"if-unmodified-since")
        if if_match or inm or ims or ius:
            status = conditional.evaluate(
                "HEAD" if head_only else "GET", obj.etag, obj.mtime,
                _s(if_match), _s(inm), _s(ims), _s(ius))
            if status == 304:
                # RFC 9110 15.4.5: the validators a 200 would carry, no body.
                head = format_head(304, (("ETag", obj.etag),
                                         ("Last-Modified", obj.last_modified)),
                                   None, keep_alive, date)
                return Job(head, None, 0, 0, 304, keep_alive)
            if status == 412:
                return self._simple(412, b"HEAD" if head_only else b"GET", keep_alive)
        if rng is None:
            return None
        if_range = g(b"if-range")
        if if_range is not None and not conditional.if_range_allows(
                if_range.decode("latin-1"), obj.etag, obj.mtime):
            return None
        try:
            spans = ranges.parse_range(rng.decode("latin-1"), obj.size, self.max_ranges)
        except ranges.Unsatisfiable:
            return self._simple(416, b"HEAD" if head_only else b"GET", keep_alive, None,
                                (("Content-Range", ranges.unsatisfied_range(obj.size)),))
        if spans is None:
            return None
        conn_hdr = "Connection: keep-alive" if keep_alive else "Connection: close"
        if len(spans) == 1:
            first, last = spans[0]
            n = last - first + 1
            head = (f"HTTP/1.1 206 Partial Content\r\nServer: oca\r\nDate: {date}\r\n"
                    f"{obj.headers}Content-Range: bytes {first}-{last}/{obj.size}\r\n"
                    f"Content-Length: {n}\r\n{conn_hdr}\r\n\r\n").encode("latin-1")
            return Job(head, obj, first, 0 if head_only else n, 206, keep_alive)
        boundary = ranges.new_boundary()
        parts, length = ranges.multipart_plan(spans, obj.size, obj.content_type, boundary)
        fixed = obj.headers.replace(f"Content-Type: {obj.content_type}\r\n", "")
        head = (f"HTTP/1.1 206 Partial Content\r\nServer: oca\r\nDate: {date}\r\n{fixed}"
                f"Content-Type: {ranges.multipart_content_type(boundary)}\r\n"
                f"Content-Length: {length}\r\n{conn_hdr}\r\n\r\n").encode("latin-1")
        if head_only:
            return Job(head, None, 0, 0, 206, keep_alive)
        first_head, offset, count = parts[0]
        job = Job(head + first_head, obj, offset, count, 206, keep_alive)
        job.parts = parts[:0:-1]  # the rest, reversed: next_part pops from the end
        return job

    def _path_range(self, obj: OpenObject, m: re.Match, headers: dict, head_only: bool,
                    keep_alive: bool, date: str) -> Job:
        try:
            first, last = ranges.path_range(m.group(1), m.group(2), obj.size)
        except ranges.Unsatisfiable:
            return self._simple(416, b"HEAD" if head_only else b"GET", keep_alive, None,
                                (("Content-Range", ranges.unsatisfied_range(obj.size)),))
        n = last - first + 1
        # The range is the resource: a 200 whose validator names the slice.
        etag = f'"{obj.etag[1:-1]}-{first}-{last}"'
        if headers:
            # RFC 9110 13.2.1: preconditions apply to this 200 as to any other.
            g = headers.get
            status = conditional.evaluate(
                "HEAD" if head_only else "GET", etag, obj.mtime, _s(g(b"if-match")),
                _s(g(b"if-none-match")), _s(g(b"if-modified-since")),
                _s(g(b"if-unmodified-since")))
            if status == 304:
                head = format_head(304, (("ETag", etag),), None, keep_alive, date)
                return Job(head, None, 0, 0, 304, keep_alive)
            if status == 412:
                return self._simple(412, b"HEAD" if head_only else b"GET", keep_alive)
        head = format_head(200, (("ETag", etag), ("Content-Type", obj.content_type),
                                 ("Accept-Ranges", "none")), n, keep_alive, date)
        return Job(head, obj, first, 0 if head_only else n, 200, keep_alive)

    # -- small responses ----------------------------------------------------

    def _simple(self, status: int, method: bytes, keep_alive: bool, oid: str | None = None,
                headers: tuple = ()) -> Job:
        """A response with a short text body (its length announced, not sent, for HEAD)."""
        text = f"{status} {REASONS.get(status, '')}\n".encode()
        head = format_head(status, (*headers, ("Content-Type", _TEXT)), len(text), keep_alive,
                           current_date())
        job = Job(head if method == b"HEAD" else head + text, None, 0, 0, status, keep_alive)
        job.head_len = len(head)
        job.oid = oid
        return job

    def _health(self, method: bytes, keep_alive: bool) -> Job:
        healthy = self.objects.healthy
        status = "draining" if self.draining else "ok" if healthy else "no healthy disk"
        body = json.dumps({
            "status": status, "appliance": self.appliance, "draining": self.draining,
            "fastpath": self.fastpath_name, "pid": os.getpid(),
            "objects": len(self.objects.map), "disks": self.objects.disk_states,
        }, sort_keys=True).encode() + b"\n"
        code = 200 if status == "ok" else 503
        head = format_head(code, (("Content-Type", "application/json"), *_NO_STORE),
                           len(body), keep_alive, current_date())
        job = Job(head + (b"" if method == b"HEAD" else body), None, 0, 0, code, keep_alive)
        job.head_len = len(head)
        return job

    def error(self, conn, status: int) -> Job:
        """A malformed request: *status*, and the connection closes."""
        job = self._simple(status, b"GET", False, None, _ALLOW if status == 405 else ())
        job.t0 = conn.t0 or _monotonic()
        job.method = "-"
        return job

    def refuse(self, sock: socket.socket) -> None:
        """Over max_connections: a 503 and close, without reading the request."""
        head = format_head(503, (("Retry-After", "1"),), 0, False, current_date())
        with contextlib.suppress(OSError):
            sock.send(head)
        sock.close()
        self.metrics.record(503, None, 0, 0.0, False)

    # -- after the response -------------------------------------------------

    def done(self, conn, job: Job) -> None:
        dur = _monotonic() - job.t0
        body = job.acc - job.head_len if not job.aborted else job.body_bytes()
        if body < 0:
            body = 0
        obj = job.obj
        if obj is None:
            self.metrics.record(job.status, None, body, dur, _FASTPATH)
            if self.logging:
                self.access_log.log(_time(), job.method, job.oid, job.status, body, job.range,
                                    conn.client, dur * 1000.0, None,
                                    None if job.path is None else job.path.decode("latin-1"))
            return
        self.metrics.record(job.status, obj.tier, body, dur, _FASTPATH)
        if self.logging:
            method = job.method
            prefix = (obj.log_get if method == "GET" else obj.log_head if method == "HEAD"
                      else None)
            if prefix is None:
                self.access_log.log(_time(), method, job.oid, job.status, body, job.range,
                                    conn.client, dur * 1000.0, obj.tier)
            else:
                self.access_log.log_object(_time(), prefix, job.status, body, job.range,
                                           conn.client_json, dur * 1000.0, obj.log_tier)


def _s(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
