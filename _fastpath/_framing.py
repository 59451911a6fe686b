"""What the compiled connection loop and its pure-Python twin share: limits, connection
states and the request-line check, in one place."""

import re

RECV_SIZE = 64 << 10
"""Bytes read per readability event, into the one receive buffer of the process."""
MAX_BODY = 1 << 20
"""A GET/HEAD body beyond this is refused (413): nothing we serve takes one."""
LINGER_TIMEOUT = 5.0
"""Seconds a connection closed after a rejected request stays half-closed, reading and
dropping what its client still sends, before it is closed (RFC 9112 section 9.6; nginx's
lingering_timeout)."""
MAX_PIPELINE = 64
"""Requests parsed ahead of the response being sent; beyond, the connection closes."""

# Connection states, for the timeout sweep.
IDLE, READING, WRITING, CLOSED = 0, 1, 2, 3

# RFC 9112 section 3: method (a token) SP request-target SP HTTP-version.
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) [!-~]+ HTTP/1\.[01]\r?\n")


def unknown_method(data, n: int) -> bool:
    """Whether the request in *data* [:n] has a well-formed request line whose method is
    one we do not serve (llhttp knows only registered methods)."""
    m = _REQUEST_LINE.match(data, 0, n)
    return m is not None and m.group(1) not in (b"GET", b"HEAD")


# RFC 9112 section 3.2 / RFC 3986 section 3.2.2: Host = uri-host [ ":" port ], uri-host
# an IP-literal in brackets, or a reg-name (unreserved, pct-encoded, sub-delims; an
# IPv4 address is one). An empty value is valid (RFC 9110 section 7.2).
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?\Z")
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def valid_host(value: bytes) -> bool:
    """Whether *value* is a valid Host field value."""
    return _HOST.match(value) is not None


def absolute_path(url: bytes) -> bytes:
    """The path and query of an absolute-form request target (RFC 9112 section 3.2.2:
    a server MUST accept it), ``/`` when it has none; any other target as it is."""
    m = _ABSOLUTE.match(url)
    if m is None:
        return url
    rest = url[m.end():]
    return rest if rest[:1] == b"/" else b"/" + rest


def _digits(data: bytes, start: int, end: int) -> int:
    # 1 to 18 ASCII digits (no 2^63 overflow), else -1.
    if not 0 < end - start <= 18:
        return -1
    n = 0
    for i in range(start, end):
        c = data[i] - 48
        if not 0 <= c <= 9:
            return -1
        n = n * 10 + c
    return n


def simple_range(value: bytes, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of ``bytes=a-b`` or ``bytes=a-`` within an object of *size*
    bytes, *last* clamped; None for anything else (the handler decides those: other
    forms, several ranges, 416s). What the connection loop answers itself, the same as
    ranges.parse_range gives for these forms."""
    if value[:6] != b"bytes=":
        return None
    dash = value.find(b"-", 6)
    if dash < 0:
        return None
    first = _digits(value, 6, dash)
    if first < 0 or first >= size:
        return None
    if dash + 1 == len(value):
        return first, size - 1
    last = _digits(value, dash + 1, len(value))
    if last < first:
        return None
    return first, last if last < size else size - 1


def slice_bounds(url: bytes, start: int, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of the ``<first>-<last>`` at *start* of a ``/range/`` URL of an
    object of *size* bytes, *last* clamped; None for anything else (ranges.path_range)."""
    dash = url.find(b"-", start)
    if dash < 0:
        return None
    first = _digits(url, start, dash)
    last = _digits(url, dash + 1, len(url))
    if first < 0 or last < first or first >= size:
        return None
    return first, last if last < size else size - 1
