"""An object opened for serving: its fd and the response head and access-log pieces
rendered once, not per request. The worker's table of them is oca/serve/objects.py.

An OpenObject closes its fd when the last reference goes, not when the table
drops it: a response in flight keeps reading the file it started with, so a
replaced object (a new file name: layout.py) never mixes old and new bytes, and
a removed one finishes the responses already under way.
"""

from __future__ import annotations

import contextlib
import os

from ..storage.lookup import ObjectLocation
from .accesslog import json_str, object_prefix, plain_get_fragments
from .head import http_date


class DiskFailed(Exception):
    """The object exists but its disk is failed: 404, or a redirect to the origin."""


class OpenObject:
    """An object opened for serving, with its response headers rendered once."""

    __slots__ = ("id", "fd", "size", "etag", "tier", "content_type", "mtime", "disk",
                 "last_modified", "headers", "url", "log_get", "log_head", "log_tier",
                 "log_plain",
                 "head_from", "head_until", "head200", "hot", "hits", "body_bytes")

    def __init__(self, object_id: str, fd: int, loc: ObjectLocation):
        self.id = object_id
        self.fd = fd
        self.size = loc.size
        self.etag = f'"{loc.xxh3}"'
        self.tier = loc.tier
        self.content_type = loc.content_type
        self.mtime = loc.mtime
        self.disk = loc.disk
        self.last_modified = http_date(loc.mtime)
        # RFC 9110 8.8.3 (strong ETag from the content digest), 8.8.2, 8.3, 14.3.
        self.headers = (f"ETag: {self.etag}\r\nLast-Modified: {self.last_modified}\r\n"
                        f"Content-Type: {loc.content_type}\r\nAccept-Ranges: bytes\r\n")
        self.url = b"/o/" + object_id.encode()
        # Access-log fragments, rendered once per open object instead of per request.
        self.log_get = object_prefix("GET", object_id)
        self.log_head = object_prefix("HEAD", object_id)
        self.log_tier = json_str(loc.tier)
        self.log_plain = plain_get_fragments(object_id, loc.size, loc.tier)
        # The keep-alive 200 head of the plain-GET hot path, for the epoch second
        # [head_from, head_until) (Handler.plain_head).
        self.head_from = self.head_until = 0.0
        self.head200 = b""
        # The compiled connection loop's C copy of the fields a plain GET reads
        # (_fastpath's HotObject), made on the first one.
        self.hot = None
        # Responses and body bytes served from this object since the object table last
        # took them (oca/serve/objects.py reports them to the store watcher).
        self.hits = 0
        self.body_bytes = 0

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
