"""An object opened for serving: its fd and the response heads and access-log pieces
rendered once, not per request. The worker's table of them is oca/serve/objects.py.

An OpenObject closes its fd when the last reference goes, not when the table
drops it: a response in flight keeps reading the file it started with, so a
replaced object (a new file name: layout.py) never mixes old and new bytes, and
a removed one finishes the responses already under way.
"""

from __future__ import annotations

import contextlib
import os

from _fastpath import Entry

from ..storage.lookup import ObjectLocation
from .accesslog import json_str, object_prefix, plain_get_fragments
from .head import http_date


class DiskFailed(Exception):
    """The object exists but its disk is failed: 404, or a redirect to the origin."""


class OpenObject(Entry):
    """An object opened for serving, with its response headers rendered once.

    Its base, ``_fastpath.Entry``, holds what the connection loop reads (id, fd, size,
    target, tier, the heads of :meth:`Handler.render_heads`, the log pieces) and the
    counters ``hits`` and ``body_bytes`` the loop adds to for every response it sends
    from this object."""

    __slots__ = ("etag", "content_type", "mtime", "disk", "last_modified", "headers")

    def __init__(self, object_id: str, fd: int, loc: ObjectLocation):
        Entry.__init__(self, object_id, fd, loc.size, loc.tier)
        self.etag = f'"{loc.xxh3}"'
        self.content_type = loc.content_type
        self.mtime = loc.mtime
        self.disk = loc.disk
        self.last_modified = http_date(loc.mtime)
        # RFC 9110 8.8.3 (strong ETag from the content digest), 8.8.2, 8.3, 14.3.
        self.headers = (f"ETag: {self.etag}\r\nLast-Modified: {self.last_modified}\r\n"
                        f"Content-Type: {loc.content_type}\r\nAccept-Ranges: bytes\r\n")
        # Access-log fragments, rendered once per open object instead of per request.
        self.log_get = object_prefix("GET", object_id)
        self.log_head = object_prefix("HEAD", object_id)
        self.log_tier = json_str(loc.tier)
        self.log_plain = plain_get_fragments(object_id, loc.size, loc.tier)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
