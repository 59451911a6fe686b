"""What to answer: from a parsed request and the object table to a response descriptor
(``_fastpath.Response``: status, head bytes, the object's entry and its body segments).
The connection loop (``_fastpath.Connection``) sends it, counts it and logs it; it
answers plain GETs, single ranges and ``/range/`` URLs of open objects itself, from the
heads rendered here once a second (:meth:`Handler.render_heads`).

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
_ALLOW_GET = (("Allow", "GET"),)
_NO_STORE = (("Cache-Control", "no-store"),)
_TEXT = "text/plain; charset=utf-8"
_time = time.time
Response = _fastpath.Response


class Handler:
    """Decides the response to each request of one worker."""

    REQUEST_HEADERS = frozenset({b"range", b"if-range", b"if-none-match",
                                 b"if-modified-since", b"if-match", b"if-unmodified-since"})
    """The request header fields acted on, by lower-case name: the connection keeps only
    these (``conn.headers``); a request with none of them may take the plain-GET path."""

    def __init__(self, objects, config, metrics, access_log, tokens=None, fill_tokens=None,
                 steering=None):
        self.objects = objects
        self.metrics = metrics
        self.access_log = access_log
        self.logging = access_log is not None and access_log.enabled
        self.tokens = tokens
        self.fill_tokens = fill_tokens  # [auth] fill_key_file: fill requests' tokens
        # The steering mode (oca.steering.board.Board) and where viewers go in isp-direct.
        self.steering = steering
        self.steering_origin = config.steering.origin_url if steering is not None else None
        self.origin = config.server.origin_url
        self.max_ranges = config.server.max_ranges
        self.appliance = config.server.name
        self.draining = False
        self.closing = False  # past the drain deadline: answer 503 and close

    # -- the request --------------------------------------------------------

    def respond(self, conn) -> Response:
        """The response to the request *conn* has parsed (``conn.parser``, ``url``,
        ``headers``), as a descriptor for the connection loop to send."""
        parser = conn.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive() and not self.closing
        url = conn.url
        name = "HEAD" if method == b"HEAD" else method.decode("latin-1")
        if url.startswith(b"/o/"):
            return self._object(conn, method, name, url, keep_alive)
        path = url.decode("latin-1")
        if url == b"/health" or url.startswith(b"/health?"):
            if method != b"GET":
                # docs/serve.md: GET /health only.
                return self._simple(405, name, keep_alive, None, _ALLOW_GET, path)
            return self._health(keep_alive, path)
        return self._simple(404, name, keep_alive, None, (), path)

    # -- what the connection loop answers itself ------------------------------

    def render_heads(self, obj: OpenObject, now: float) -> None:
        """Render the keep-alive heads the connection loop answers with, for the second of
        *now* (epoch): once a second per object, not per request. ``head200`` is the
        whole 200; ``head206`` a 206 up to its Content-Range's positions; ``head_slice``
        a ``/range/`` URL's 200 up to its ETag's positions, ``head_slice_mid`` from
        after them to the Content-Length value (no date: rendered once). The loop calls
        it for one entry a second and copies the others' heads of an earlier second with
        this one's Date value (the 29 bytes after the first ``\r\nDate: ``) in place:
        the Date is the only field here that changes with time."""
        start = f"Server: oca\r\nDate: {current_date.at(now)}\r\n"
        obj.head200 = (f"HTTP/1.1 200 OK\r\n{start}{obj.headers}Content-Length: {obj.size}\r\n"
                       "Connection: keep-alive\r\n\r\n").encode("latin-1")
        obj.head206 = (f"HTTP/1.1 206 Partial Content\r\n{start}{obj.headers}"
                       "Content-Range: bytes ").encode("latin-1")
        obj.head_slice = f'HTTP/1.1 200 OK\r\n{start}ETag: "{obj.etag[1:-1]}-'.encode("latin-1")
        if not obj.head_slice_mid:
            obj.head_slice_mid = (f"Content-Type: {obj.content_type}\r\nAccept-Ranges: none\r\n"
                                  "Content-Length: ").encode("latin-1")
        second = float(now // 1)
        obj.head_from = second
        obj.head_until = second + 1.0

    def _object(self, conn, method: bytes, name: str, url: bytes,
                keep_alive: bool) -> Response:
        q = url.find(b"?")
        try:
            rest = (url[3:] if q < 0 else url[3:q]).decode("ascii")
        except UnicodeDecodeError:
            return self._simple(404, name, keep_alive, None, (), url.decode("latin-1"))
        slash = rest.find("/")
        oid = rest if slash < 0 else rest[:slash]
        if not _ID.match(oid):
            return self._simple(404, name, keep_alive, None, (), url.decode("latin-1"))
        path_range = None
        if slash >= 0:
            path_range = _PATH_RANGE.match(rest, slash)
            if path_range is None:
                return self._simple(404, name, keep_alive, oid)
        if method != b"GET" and method != b"HEAD":
            return self._simple(405, name, keep_alive, oid, _ALLOW)
        if self.closing:
            return self._simple(503, name, False, oid)
        scope = None
        if self.tokens is not None or self.fill_tokens is not None:
            # A fill-scope token marks a fill's copy (logged with "scope": "fill", left
            # out of popularity); without one, a viewer token when [auth] key_file is on.
            query = None if q < 0 else url[q + 1:].decode("latin-1")
            now = _time()
            if self.fill_tokens is not None and self.fill_tokens.check(oid, query, now):
                scope = "fill"
            elif self.tokens is not None and not self.tokens.check(oid, query, now):
                return self._simple(403, name, keep_alive, oid)
        resp = self._serve(conn, method, name, oid, keep_alive, q, url, path_range)
        resp.scope = scope
        return resp

    def _serve(self, conn, method: bytes, name: str, oid: str, keep_alive: bool, q: int,
               url: bytes, path_range) -> Response:
        try:
            obj = self.objects.get(oid)
        except DiskFailed:
            if self.origin:
                query = "" if q < 0 else url[q:].decode("latin-1")
                loc = (("Location", f"{self.origin}/o/{oid}{query}"),)
                return self._simple(302, name, keep_alive, oid, loc)
            return self._simple(404, name, keep_alive, oid)
        if obj is None:
            if self.steering_origin and self._isp_direct():
                # isp-direct: this box is bypassed; what it cannot serve, the origin does.
                query = "" if q < 0 else url[q:].decode("latin-1")
                loc = (("Location", f"{self.steering_origin}/o/{oid}{query}"),)
                return self._simple(302, name, keep_alive, oid, loc)
            return self._simple(404, name, keep_alive, oid)
        head_only = method == b"HEAD"
        headers = conn.headers
        date = current_date()
        rng = headers.get(b"range") if headers else None
        asked = None if rng is None else rng.decode("latin-1")
        if path_range is not None:
            resp = self._path_range(obj, path_range, headers, name, keep_alive, date, asked)
        elif headers:
            resp = self._conditional(obj, headers, rng, name, keep_alive, date, asked)
        else:
            resp = None
        if resp is None:
            head = (f"HTTP/1.1 200 OK\r\nServer: oca\r\nDate: {date}\r\n{obj.headers}"
                    f"Content-Length: {obj.size}\r\n"
                    f"{'Connection: keep-alive' if keep_alive else 'Connection: close'}"
                    "\r\n\r\n").encode("latin-1")
            resp = Response(200, head, obj, 0, 0 if head_only else obj.size, None, keep_alive,
                            -1, name, oid, asked)
        return resp

    def _conditional(self, obj: OpenObject, headers: dict, rng: bytes | None, name: str,
                     keep_alive: bool, date: str, asked: str | None) -> Response | None:
        g = headers.get
        head_only = name == "HEAD"
        oid = obj.id
        if_match, inm = g(b"if-match"), g(b"if-none-match")
        ims, ius = g(b"if-modified-since"), g(b"if-unmodified-since")
        if if_match or inm or ims or ius:
            status = conditional.evaluate(name, obj.etag, obj.mtime,
                                          _s(if_match), _s(inm), _s(ims), _s(ius))
            if status == 304:
                # RFC 9110 15.4.5: the validators a 200 would carry, no body.
                head = format_head(304, (("ETag", obj.etag),
                                         ("Last-Modified", obj.last_modified)),
                                   None, keep_alive, date)
                return Response(304, head, None, 0, 0, None, keep_alive, -1, name, oid, asked)
            if status == 412:
                return self._simple(412, name, keep_alive, oid, (), None, asked)
        if rng is None:
            return None
        if_range = g(b"if-range")
        if if_range is not None and not conditional.if_range_allows(
                if_range.decode("latin-1"), obj.etag, obj.mtime):
            return None
        try:
            spans = ranges.parse_range(asked, obj.size, self.max_ranges)
        except ranges.Unsatisfiable:
            return self._simple(416, name, keep_alive, oid,
                                (("Content-Range", ranges.unsatisfied_range(obj.size)),),
                                None, asked)
        if spans is None:
            return None
        conn_hdr = "Connection: keep-alive" if keep_alive else "Connection: close"
        if len(spans) == 1:
            first, last = spans[0]
            n = last - first + 1
            head = (f"HTTP/1.1 206 Partial Content\r\nServer: oca\r\nDate: {date}\r\n"
                    f"{obj.headers}Content-Range: {ranges.content_range(first, last, obj.size)}"
                    f"\r\nContent-Length: {n}\r\n{conn_hdr}\r\n\r\n").encode("latin-1")
            return Response(206, head, obj, first, 0 if head_only else n, None, keep_alive,
                            -1, name, oid, asked)
        boundary = ranges.new_boundary()
        parts, length = ranges.multipart_plan(spans, obj.size, obj.content_type, boundary)
        fixed = obj.headers.replace(f"Content-Type: {obj.content_type}\r\n", "")
        head = (f"HTTP/1.1 206 Partial Content\r\nServer: oca\r\nDate: {date}\r\n{fixed}"
                f"Content-Type: {ranges.multipart_content_type(boundary)}\r\n"
                f"Content-Length: {length}\r\n{conn_hdr}\r\n\r\n").encode("latin-1")
        if head_only:
            return Response(206, head, obj, 0, 0, None, keep_alive, -1, name, oid, asked)
        # The first part's head goes with the response head; the parts after it follow.
        first_head, offset, count = parts[0]
        return Response(206, head + first_head, obj, offset, count, parts[1:], keep_alive,
                        len(head), name, oid, asked)

    def _path_range(self, obj: OpenObject, m: re.Match, headers: dict | None, name: str,
                    keep_alive: bool, date: str, asked: str | None) -> Response:
        oid = obj.id
        try:
            first, last = ranges.path_range(m.group(1), m.group(2), obj.size)
        except ranges.Unsatisfiable:
            return self._simple(416, name, keep_alive, oid,
                                (("Content-Range", ranges.unsatisfied_range(obj.size)),),
                                None, asked)
        n = last - first + 1
        # The range is the resource: a 200 whose validator names the slice.
        etag = f'"{obj.etag[1:-1]}-{first}-{last}"'
        if headers:
            # RFC 9110 13.2.1: preconditions apply to this 200 as to any other.
            g = headers.get
            status = conditional.evaluate(
                name, etag, obj.mtime, _s(g(b"if-match")), _s(g(b"if-none-match")),
                _s(g(b"if-modified-since")), _s(g(b"if-unmodified-since")))
            if status == 304:
                head = format_head(304, (("ETag", etag),), None, keep_alive, date)
                return Response(304, head, None, 0, 0, None, keep_alive, -1, name, oid, asked)
            if status == 412:
                return self._simple(412, name, keep_alive, oid, (), None, asked)
        head = format_head(200, (("ETag", etag), ("Content-Type", obj.content_type),
                                 ("Accept-Ranges", "none")), n, keep_alive, date)
        return Response(200, head, obj, first, 0 if name == "HEAD" else n, None, keep_alive,
                        -1, name, oid, asked)

    # -- small responses ----------------------------------------------------

    def _simple(self, status: int, name: str, keep_alive: bool, oid: str | None = None,
                headers: tuple = (), path: str | None = None,
                asked: str | None = None) -> Response:
        """A response with a short text body (its length announced, not sent, for HEAD)."""
        text = f"{status} {REASONS.get(status, '')}\n".encode()
        head = format_head(status, (*headers, ("Content-Type", _TEXT)), len(text), keep_alive,
                           current_date())
        return Response(status, head if name == "HEAD" else head + text, None, 0, 0, None,
                        keep_alive, len(head), name, oid, asked, path)

    def _isp_direct(self) -> bool:
        got = self.steering.read() if self.steering is not None else None
        return got is not None and got[0] == "isp-direct"

    def _health(self, keep_alive: bool, path: str) -> Response:
        healthy = self.objects.healthy
        status = "draining" if self.draining else "ok" if healthy else "no healthy disk"
        fields = {
            "status": status, "appliance": self.appliance, "draining": self.draining,
            "fastpath": _fastpath.IMPLEMENTATION, "pid": os.getpid(),
            "objects": len(self.objects.map), "disks": self.objects.disk_states,
        }
        if self.steering is not None:
            got = self.steering.read()
            mode, reason = got if got is not None else (None, "no decision yet")
            fields["mode"], fields["reason"] = mode, reason
            if mode == "isp-direct" and status == "ok":
                status = fields["status"] = "isp-direct"
        body = json.dumps(fields, sort_keys=True).encode() + b"\n"
        code = 200 if status == "ok" else 503
        head = format_head(code, (("Content-Type", "application/json"), *_NO_STORE),
                           len(body), keep_alive, current_date())
        return Response(code, head + body, None, 0, 0, None, keep_alive, len(head), "GET",
                        None, None, path)

    def error(self, status: int) -> Response:
        """A malformed request: *status*, and the connection closes."""
        return self._simple(status, "-", False, None, _ALLOW if status == 405 else ())

    def refuse(self, sock: socket.socket) -> None:
        """Over max_connections: a 503 and close, without reading the request."""
        head = format_head(503, (("Retry-After", "1"),), 0, False, current_date())
        with contextlib.suppress(OSError):
            sock.send(head)
        sock.close()
        self.metrics.record(503, None, 0, 0.0, False)


def _s(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
