"""What the compiled connection loop and its pure-Python twin share: limits, connection
states and the request-line check, in one place."""

import re

RECV_SIZE = 64 << 10
"""Bytes read per readability event, into the one receive buffer of the process."""
MAX_BODY = 1 << 20
"""A GET/HEAD body beyond this is refused (413): nothing we serve takes one."""
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
