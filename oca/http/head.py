"""Response heads: status line and header fields (RFC 9112 section 4, RFC 9110 section 6.3),
and the Date field (RFC 9110 section 6.6.1, IMF-fixdate of section 5.6.7).

Built once per response as one string, encoded once; status lines and fixed fields are
precomputed, and the Date value is formatted at most once a second per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

# RFC 9110 section 15 reason phrases (413 is "Content Too Large" since RFC 9110).
REASONS: dict[int, str] = {
    200: "OK",
    206: "Partial Content",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

SERVER = "oca"

# Everything a head has before the Date value, per status.
_STARTS = {
    status: f"HTTP/1.1 {status} {reason}\r\nServer: {SERVER}\r\nDate: "
    for status, reason in REASONS.items()
}
_KEEP_ALIVE = "Connection: keep-alive\r\n\r\n"
_CLOSE = "Connection: close\r\n\r\n"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # time.struct_time.tm_wday order
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(epoch: float) -> str:
    """*epoch* seconds as an IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(epoch)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


class DateCache:
    """The Date header value for now, formatted at most once per second of *clock*.

    Call the instance: ``date = DateCache(); date()``. A clock stepped backwards is noticed
    (the cached second is checked from both sides).
    """

    __slots__ = ("_clock", "_start", "_end", "_value")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._start = 0.0
        self._end = 0.0  # [start, end) is the second the cached value names
        self._value = ""

    def __call__(self) -> str:
        return self.at(self._clock())

    def at(self, now: float) -> str:
        """The Date value for *now*, a reading of the clock the caller already took."""
        if self._start <= now < self._end:
            return self._value
        second = int(now // 1)
        self._start = float(second)
        self._end = float(second + 1)
        self._value = http_date(second)
        return self._value


current_date = DateCache()
"""The process's Date cache: ``current_date()`` is the Date value for now."""


def format_head(
    status: int,
    headers: Iterable[tuple[str, str]],
    content_length: int | None,
    keep_alive: bool,
    date: str,
) -> bytes:
    """The response head, ending in the empty line, as bytes::

        HTTP/1.1 <status> <reason>\\r\\n
        Server: oca\\r\\n
        Date: <date>\\r\\n
        <name>: <value>\\r\\n            for each of *headers*, in order
        Content-Length: <n>\\r\\n        when *content_length* is not None
        Connection: keep-alive|close\\r\\n
        \\r\\n

    *headers* are ``(name, value)`` pairs of str from our own code (ids, digests, validated
    content types): they are not checked for CR or LF here. A status missing from
    :data:`REASONS` gets an empty reason phrase (RFC 9112 section 4 allows it).
    """
    start = _STARTS.get(status) or f"HTTP/1.1 {status} \r\nServer: {SERVER}\r\nDate: "
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    tail = _KEEP_ALIVE if keep_alive else _CLOSE
    if content_length is None:
        return f"{start}{date}\r\n{fields}{tail}".encode("latin-1")
    return f"{start}{date}\r\n{fields}Content-Length: {content_length}\r\n{tail}".encode("latin-1")
