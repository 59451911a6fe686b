"""Byte ranges: which bytes of an object a response carries.

- ``Range: bytes=...`` (RFC 9110 section 14.1.1 syntax, 14.2 semantics) -> :func:`parse_range`.
- ``/o/<id>/range/<first>-<last>`` (Open Connect style, DESIGN.md) -> :func:`path_range`.
- More than one range -> a ``multipart/byteranges`` body (RFC 9110 section 14.6) laid out by
  :func:`multipart_plan` as part heads and file segments, so the body still goes out by sendfile.

Ranges are ``(first, last)`` inclusive byte positions, as on the wire. Nothing here reads the
object or knows the socket (STYLE.md: deciding which bytes to send is apart from sending them).

The behaviour follows nginx's ``ngx_http_range_filter_module`` (our benchmark peer) except where
the RFC or our own rules ask otherwise; every difference is named in :func:`parse_range`.
"""

from __future__ import annotations

import os

# nginx's NGX_MAX_OFF_T_VALUE: a byte position past it is no file offset on any platform.
MAX_POSITION = (1 << 63) - 1

# RFC 9110 section 5.6.3: OWS is spaces and horizontal tabs.
_WS = " \t"


class Unsatisfiable(Exception):
    """The Range is invalid or selects no byte of the object: answer 416 (RFC 9110 15.5.17)."""


def _position(digits: str) -> int:
    """A byte position from ASCII text that must be all digits (RFC 9110 ``1*DIGIT``)."""
    # Up to 18 digits cannot pass 2^63 - 1; longer ones (leading zeros, say) take the slow check.
    if len(digits) <= 18 and digits.isdigit():
        return int(digits)
    significant = digits.lstrip("0")
    if digits.isdigit() and len(significant) <= 19:
        number = int(significant or "0")
        if number <= MAX_POSITION:
            return number
    raise Unsatisfiable(f"bad byte position {digits[:24]!r}")


def parse_range(value: str, size: int, max_ranges: int) -> list[tuple[int, int]] | None:
    """The ``(first, last)`` byte positions a Range header asks of an object of *size* bytes.

    Returns the ranges sorted, with overlapping and adjacent ones merged (RFC 9110 section 14.2
    permits it; it defeats many-small-overlapping-ranges amplification), so the caller answers
    206 with one range or a multipart body. A single range covering the whole object is still a
    range (206), as in nginx.

    Returns None when the header is to be ignored (serve 200, the whole object):
    - the unit is not ``bytes`` (RFC 9110 section 14.2: MUST ignore an unknown unit);
    - more than *max_ranges* satisfiable ranges, counted in request order (nginx
      ``max_ranges``; Apache's CVE-2011-3192 fix). *max_ranges* 0 ignores every Range.

    Raises :class:`Unsatisfiable` (416) when the syntax is invalid -- a spec that is not
    ``a-b``, ``a-`` or ``-n``; ``a`` > ``b``; ``-0``; no spec at all; a position past 2^63 - 1 --
    or when no spec selects a byte: ``a`` >= *size* is dropped (``b`` is clamped to
    *size* - 1), ``-n`` with n > *size* is the whole object, and on an empty object every
    range is unsatisfiable (RFC 9110 section 14.1.1).

    Where this differs from nginx: nginx drops ``5-1`` and ``-0`` and goes on with the other
    specs, where they make the whole header invalid here (RFC 9110 section 14.1.1 calls them
    invalid; section 14.2 lets a server reject); nginx ignores ``bytes=`` and any range on an
    empty object (200), answered 416 here; nginx rejects empty list elements, which are skipped
    here (RFC 9110 section 5.6.1: a recipient MUST accept them); nginx serves 200 when
    overlapping ranges add up past the object, where they are merged here. Optional whitespace
    (SP and HTAB) is accepted around specs and around their ``-``, as nginx accepts spaces.
    """
    if not value.startswith("bytes=") and value[:6].lower() != "bytes=":
        return None
    if not value.isascii():
        # Position text must be ASCII digits; str.isdigit() alone would take "²" or "٣".
        raise Unsatisfiable("non-ASCII range")
    specs = value[6:]
    first, dash, last = specs.partition("-")
    if (
        dash and first.isdigit() and len(first) <= 18
        and (last.isdigit() and len(last) <= 18 or not last)
    ):
        # One plain "a-b" or "a-", what players send: no list to walk.
        a = int(first)
        b = int(last) if last else MAX_POSITION
        if a > b:
            raise Unsatisfiable(f"range {a}-{b}: first after last")
        if a >= size:
            raise Unsatisfiable(f"no range within {size} bytes")
        if max_ranges < 1:
            return None
        return [(a, b if b < size else size - 1)]
    ranges: list[tuple[int, int]] = []
    for spec in specs.split(","):
        spec = spec.strip(_WS)
        if not spec:
            continue
        dash = spec.find("-")
        if dash < 0:
            raise Unsatisfiable(f"bad range spec {spec[:40]!r}")
        first = spec[:dash].rstrip(_WS)
        last = spec[dash + 1:].lstrip(_WS)
        if not first:
            # suffix-range: the last n bytes (RFC 9110 section 14.1.1)
            n = _position(last)
            if n == 0:
                raise Unsatisfiable("suffix range -0")
            if size <= 0:
                continue
            ranges.append((size - n if n < size else 0, size - 1))
        else:
            a = _position(first)
            if last:
                b = _position(last)
                if a > b:
                    raise Unsatisfiable(f"range {a}-{b}: first after last")
                if a >= size:
                    continue
                ranges.append((a, b if b < size else size - 1))
            else:
                if a >= size:
                    continue
                ranges.append((a, size - 1))
        if len(ranges) > max_ranges:
            return None
    if not ranges:
        raise Unsatisfiable(f"no range within {size} bytes")
    if len(ranges) == 1:
        return ranges
    ranges.sort()
    merged = []
    lo, hi = ranges[0]
    for a, b in ranges:
        if a <= hi + 1:
            if b > hi:
                hi = b
        else:
            merged.append((lo, hi))
            lo, hi = a, b
    merged.append((lo, hi))
    return merged


def path_range(first: str, last: str, size: int) -> tuple[int, int]:
    """The ``(first, last)`` of ``/o/<id>/range/<first>-<last>`` on an object of *size* bytes.

    Both are 1 to 18 ASCII digits with *first* <= *last* and *first* < *size*; *last* is
    clamped to *size* - 1. Anything else raises :class:`Unsatisfiable`.
    """
    if (
        0 < len(first) <= 18 and 0 < len(last) <= 18
        and first.isascii() and last.isascii() and first.isdigit() and last.isdigit()
    ):
        a = int(first)
        b = int(last)
        if a <= b and a < size:
            return a, b if b < size else size - 1
    raise Unsatisfiable(f"bad path range {first[:24]!r}-{last[:24]!r} for {size} bytes")


def content_range(first: int, last: int, size: int) -> str:
    """The Content-Range value of a 206 with one range (RFC 9110 section 14.4)."""
    return f"bytes {first}-{last}/{size}"


def unsatisfied_range(size: int) -> str:
    """The Content-Range value of a 416 (RFC 9110 section 14.4: ``bytes */complete-length``)."""
    return f"bytes */{size}"


def new_boundary() -> str:
    """A fresh multipart boundary: 20 hex digits from os.urandom (one getrandom call).

    Random rather than nginx's counter: unguessable, and no state to carry across fork().
    Hex digits are all valid boundary characters (RFC 2046 section 5.1.1).
    """
    return os.urandom(10).hex()


def multipart_content_type(boundary: str) -> str:
    """The Content-Type of a multipart/byteranges response (RFC 9110 section 14.6)."""
    return f"multipart/byteranges; boundary={boundary}"


# The multipart/byteranges body (RFC 9110 section 14.6, RFC 2046 section 5.1.1), as nginx
# writes it; every line ends in CRLF, B is the boundary, T the object's type, S its size:
#
#     +------------------------------------------+
#     | CRLF                                     |  part head 1: the leading CRLF is the
#     | --B                                      |  delimiter's own CRLF (RFC 2046: an
#     | Content-Type: T                          |  empty preamble), kept so that every
#     | Content-Range: bytes a1-b1/S             |  part head has the same shape
#     | CRLF                                     |
#     +------------------------------------------+
#     | bytes a1..b1 of the object               |  file segment (offset a1, length b1-a1+1)
#     +------------------------------------------+
#     | CRLF --B ... Content-Range: a2-b2/S ...  |  part head 2, segment 2, ...
#     | bytes a2..b2 of the object               |
#     +------------------------------------------+
#     | CRLF                                     |  closing delimiter
#     | --B--                                    |
#     +------------------------------------------+
#
# The CRLF that precedes each "--B" belongs to the delimiter, not to the previous part's data.


def multipart_plan(
    ranges: list[tuple[int, int]], size: int, content_type: str, boundary: str
) -> tuple[list[tuple[bytes, int, int]], int]:
    """The multipart/byteranges body for *ranges* of an object of *size* bytes.

    Returns ``(parts, content_length)``: each part is ``(head, offset, length)``, meaning send
    *head* and then *length* bytes of the object from *offset*; the last part is
    ``(closing_delimiter, 0, 0)``. *content_length* is the body's total length.
    *ranges* are ``(first, last)`` positions as returned by :func:`parse_range`.
    """
    lead = f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes "
    tail = f"/{size}\r\n\r\n"
    parts: list[tuple[bytes, int, int]] = []
    total = 0
    for first, last in ranges:
        head = f"{lead}{first}-{last}{tail}".encode("latin-1")
        length = last - first + 1
        parts.append((head, first, length))
        total += len(head) + length
    closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
    parts.append((closing, 0, 0))
    return parts, total + len(closing)
