"""Byte ranges: the Range header, Open Connect path ranges, multipart/byteranges bodies."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.http.ranges import (
    MAX_POSITION,
    Unsatisfiable,
    content_range,
    multipart_content_type,
    multipart_plan,
    new_boundary,
    parse_range,
    path_range,
    unsatisfied_range,
)

SIZE = 10000


# --- parse_range: satisfiable ------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("bytes=0-499", [(0, 499)]),
    ("bytes=500-999", [(500, 999)]),
    ("bytes=0-0", [(0, 0)]),
    ("bytes=9999-9999", [(9999, 9999)]),
    ("bytes=-500", [(9500, 9999)]),
    ("bytes=-1", [(9999, 9999)]),
    ("bytes=9500-", [(9500, 9999)]),
    ("bytes=9999-", [(9999, 9999)]),
    # whole object: still a range (206), as nginx
    ("bytes=0-", [(0, 9999)]),
    ("bytes=0-9999", [(0, 9999)]),
    ("bytes=-10000", [(0, 9999)]),
    # last clamped; suffix longer than the object is the whole object
    ("bytes=0-99999", [(0, 9999)]),
    ("bytes=9000-10000", [(9000, 9999)]),
    ("bytes=-20000", [(0, 9999)]),
    ("bytes=0-9223372036854775807", [(0, 9999)]),
    ("bytes=-9223372036854775807", [(0, 9999)]),
    # unit is case-insensitive
    ("BYTES=0-1", [(0, 1)]),
    ("Bytes=0-1", [(0, 1)]),
    # leading zeros, as nginx (even past 18 digits)
    ("bytes=007-010", [(7, 10)]),
    ("bytes=0000000000000000000000000007-10", [(7, 10)]),
    # optional whitespace around specs and around the dash
    ("bytes= 0-1", [(0, 1)]),
    ("bytes=0-1 ", [(0, 1)]),
    ("bytes=0 - 1", [(0, 1)]),
    ("bytes=\t0-1\t,\t5-6", [(0, 1), (5, 6)]),
    ("bytes=0-1 , 5 - 6 , - 3", [(0, 1), (5, 6), (9997, 9999)]),
    ("bytes=7 -", [(7, 9999)]),
    # RFC 9110 section 5.6.1: empty list elements are accepted
    ("bytes=0-1,,5-6", [(0, 1), (5, 6)]),
    ("bytes=,0-1", [(0, 1)]),
    ("bytes=0-1,", [(0, 1)]),
    ("bytes=, ,0-1, ,", [(0, 1)]),
    # several ranges: sorted
    ("bytes=0-0,-1", [(0, 0), (9999, 9999)]),
    ("bytes=500-600,100-200", [(100, 200), (500, 600)]),
    ("bytes=-100,0-99", [(0, 99), (9900, 9999)]),
    # ... overlapping and adjacent ones merged
    ("bytes=500-600,601-999", [(500, 999)]),
    ("bytes=500-700,601-999", [(500, 999)]),
    ("bytes=500-999,600-700", [(500, 999)]),
    ("bytes=0-0,2-2,1-1", [(0, 2)]),
    ("bytes=0-0,2-2", [(0, 0), (2, 2)]),
    ("bytes=0-,0-", [(0, 9999)]),
    ("bytes=0-4999,5000-", [(0, 9999)]),
    ("bytes=-5000,0-4999", [(0, 9999)]),
    ("bytes=0-1,0-1,0-1,0-1", [(0, 1)]),
    # unsatisfiable specs are dropped when others remain
    ("bytes=20000-,0-1", [(0, 1)]),
    ("bytes=0-1,10000-10001", [(0, 1)]),
])
def test_parse_range(value, expected):
    assert parse_range(value, SIZE, 16) == expected


def test_parse_range_one_byte_object():
    assert parse_range("bytes=0-", 1, 16) == [(0, 0)]
    assert parse_range("bytes=-1", 1, 16) == [(0, 0)]
    assert parse_range("bytes=-5", 1, 16) == [(0, 0)]
    assert parse_range("bytes=0-100", 1, 16) == [(0, 0)]
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=1-", 1, 16)


# --- parse_range: ignored (None -> 200 whole object) -------------------------------------

@pytest.mark.parametrize("value", [
    "",
    "bytes",
    "items=0-1",
    "bits=0-1",
    "bytes 0-1",
    "bytes =0-1",
    " bytes=0-1",
    "none",
    "0-1",
    "bytes:0-1",
])
def test_other_units_are_ignored(value):
    assert parse_range(value, SIZE, 16) is None


def test_more_than_max_ranges_is_ignored():
    assert parse_range("bytes=0-1,3-4", SIZE, 1) is None
    assert parse_range("bytes=0-1,3-4", SIZE, 2) == [(0, 1), (3, 4)]
    sixteen = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(16))
    assert len(parse_range(sixteen, SIZE, 16)) == 16
    assert parse_range(sixteen + ",500-501", SIZE, 16) is None
    # counted before merging: many overlapping ranges are the attack (CVE-2011-3192)
    assert parse_range("bytes=" + ",".join(["0-"] * 17), SIZE, 16) is None
    assert parse_range("bytes=" + ",".join(["0-"] * 16), SIZE, 16) == [(0, 9999)]


def test_max_ranges_zero_ignores_every_range():
    assert parse_range("bytes=0-1", SIZE, 0) is None
    assert parse_range("bytes=0-1,5-6", SIZE, 0) is None
    assert parse_range("bytes=-5", SIZE, 0) is None
    # ... but a header that selects nothing is still answered 416, as nginx
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=20000-", SIZE, 0)
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=x", SIZE, 0)


def test_max_ranges_counts_satisfiable_specs_in_order():
    # nginx counts the ranges it keeps: an unsatisfiable spec does not count
    assert parse_range("bytes=0-1,20000-30000", SIZE, 1) == [(0, 1)]
    assert parse_range("bytes=20000-,30000-,0-1", SIZE, 1) == [(0, 1)]
    # and stops at the first range too many, before reading further specs
    assert parse_range("bytes=0-1,3-4,5-1", SIZE, 1) is None
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=0-1,3-4,5-1", SIZE, 16)


# --- parse_range: 416 ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    # no spec at all
    "bytes=",
    "bytes=,",
    "bytes= ",
    "bytes=, ,",
    # not a spec
    "bytes=abc",
    "bytes=1",
    "bytes=-",
    "bytes= - ",
    "bytes=--1",
    "bytes=1--2",
    "bytes=1-2-3",
    "bytes=0-1;2-3",
    "bytes=1 2-3",
    "bytes=1-2 3",
    "bytes=0x10-20",
    "bytes=+1-2",
    "bytes=1-+2",
    "bytes=1_0-20",
    "bytes=1e3-2000",
    "bytes=1.0-2",
    "bytes=0-1,abc",
    "bytes=0-1,7",
    # non-ASCII digits that str.isdigit() would take
    "bytes=\u00b2-3",
    "bytes=0-\u0663",
    "bytes=\uff11-2",
    # first after last; -0 (RFC 9110 section 14.1.1: invalid)
    "bytes=5-1",
    "bytes=1-0",
    "bytes=-0",
    "bytes=-000",
    "bytes=0-1,5-1",
    "bytes=0-1,-0",
    "bytes=5-1,0-1",
    # past 2^63 - 1
    "bytes=0-9223372036854775808",
    "bytes=0-18446744073709551615",
    "bytes=9223372036854775808-",
    "bytes=-9223372036854775808",
    "bytes=0-" + "9" * 30,
    # nothing within the object
    "bytes=10000-",
    "bytes=10000-10000",
    "bytes=10000-20000",
    "bytes=20000-,30000-40000",
    "bytes=9223372036854775807-",
])
def test_unsatisfiable(value):
    with pytest.raises(Unsatisfiable):
        parse_range(value, SIZE, 16)


@pytest.mark.parametrize("value", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-5", "bytes=5-"])
def test_empty_object_has_no_satisfiable_range(value):
    with pytest.raises(Unsatisfiable):
        parse_range(value, 0, 16)


def test_position_limits():
    assert MAX_POSITION == 2**63 - 1
    last = f"bytes=0-{MAX_POSITION}"
    assert parse_range(last, 2**62, 16) == [(0, 2**62 - 1)]
    big = 2**62
    assert parse_range(f"bytes={big - 1}-", big, 16) == [(big - 1, big - 1)]


# --- parse_range: properties --------------------------------------------------------------

_ows = st.sampled_from(["", " ", "\t", "  "])
_pos = st.integers(min_value=0, max_value=60)
_spec = st.one_of(
    st.tuples(st.just("ab"), _pos, _pos),
    st.tuples(st.just("open"), _pos, st.just(0)),
    st.tuples(st.just("suffix"), st.just(0), _pos),
)


def _render(spec, ws) -> str:
    kind, a, b = spec
    w1, w2, w3, w4 = ws
    if kind == "ab":
        return f"{w1}{a}{w2}-{w3}{b}{w4}"
    if kind == "open":
        return f"{w1}{a}{w2}-{w4}"
    return f"{w1}-{w3}{b}{w4}"


def _expected(specs, size, max_ranges):
    """Brute force: the set of byte positions asked for; None to ignore; raise for 416."""
    covered: set[int] = set()
    count = 0
    for kind, a, b in specs:
        if kind == "ab":
            if a > b:
                raise Unsatisfiable
            chosen = range(a, min(b, size - 1) + 1)
        elif kind == "open":
            chosen = range(a, size)
        else:
            if b == 0:
                raise Unsatisfiable
            chosen = range(max(size - b, 0), size)
        if not chosen:
            continue
        count += 1
        if count > max_ranges:
            return None
        covered.update(chosen)
    if not covered:
        raise Unsatisfiable
    return covered


@settings(max_examples=2000, deadline=None)
@given(
    specs=st.lists(_spec, max_size=7),
    spaces=st.lists(st.tuples(_ows, _ows, _ows, _ows), min_size=7, max_size=7),
    size=st.integers(min_value=0, max_value=50),
    max_ranges=st.integers(min_value=0, max_value=8),
    unit=st.sampled_from(["bytes=", "BYTES=", "Bytes="]),
)
def test_parse_range_matches_brute_force(specs, spaces, size, max_ranges, unit):
    value = unit + ",".join(_render(s, w) for s, w in zip(specs, spaces, strict=False))
    try:
        expected = _expected(specs, size, max_ranges)
    except Unsatisfiable:
        with pytest.raises(Unsatisfiable):
            parse_range(value, size, max_ranges)
        return
    got = parse_range(value, size, max_ranges)
    if expected is None:
        assert got is None
        return
    assert got
    for first, last in got:
        assert 0 <= first <= last <= size - 1
    for (_, last), (first, _) in zip(got, got[1:], strict=False):
        assert first > last + 1  # sorted, apart, not even adjacent
    assert {i for first, last in got for i in range(first, last + 1)} == expected


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40), st.integers(min_value=0, max_value=100))
def test_parse_range_never_fails_otherwise(tail, size):
    try:
        got = parse_range("bytes=" + tail, size, 4)
    except Unsatisfiable:
        return
    assert got is None or all(0 <= a <= b < size for a, b in got)


# --- path_range ---------------------------------------------------------------------------

@pytest.mark.parametrize(("first", "last", "size", "expected"), [
    ("0", "99", 1000, (0, 99)),
    ("0", "999", 1000, (0, 999)),
    ("999", "999", 1000, (999, 999)),
    ("500", "5000", 1000, (500, 999)),
    ("0", "0", 1, (0, 0)),
    ("007", "010", 1000, (7, 10)),
    ("0", "9" * 18, 10, (0, 9)),
    ("1048576", "2097151", 268435456, (1048576, 2097151)),
])
def test_path_range(first, last, size, expected):
    assert path_range(first, last, size) == expected


@pytest.mark.parametrize(("first", "last", "size"), [
    ("1000", "1000", 1000),   # first == size
    ("1000", "2000", 1000),
    ("5", "4", 1000),         # first after last
    ("0", "0", 0),            # empty object
    ("", "5", 1000),
    ("5", "", 1000),
    ("", "", 1000),
    ("a", "5", 1000),
    ("1", "2x", 1000),
    ("-1", "5", 1000),
    ("+1", "5", 1000),
    (" 1", "5", 1000),
    ("1", "5 ", 1000),
    ("1_0", "20", 1000),
    ("\u00b2", "3", 1000),
    ("0", "\u0663", 1000),
    ("0", "1" + "0" * 18, 10),  # 19 digits
    ("0" * 19, "5", 1000),
])
def test_path_range_unsatisfiable(first, last, size):
    with pytest.raises(Unsatisfiable):
        path_range(first, last, size)


# --- header values ------------------------------------------------------------------------

def test_content_range_values():
    assert content_range(0, 499, 10000) == "bytes 0-499/10000"
    assert unsatisfied_range(10000) == "bytes */10000"
    assert multipart_content_type("abc") == "multipart/byteranges; boundary=abc"


def test_new_boundary():
    seen = {new_boundary() for _ in range(1000)}
    assert len(seen) == 1000
    for b in seen:
        assert re.fullmatch(r"[0-9a-f]{20}", b)


# --- multipart_plan -----------------------------------------------------------------------

def test_multipart_plan_exact():
    parts, length = multipart_plan([(0, 1), (5, 9)], 10, "video/mp4", "B0UND")
    assert parts == [
        (b"\r\n--B0UND\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-1/10\r\n\r\n", 0, 2),
        (b"\r\n--B0UND\r\nContent-Type: video/mp4\r\nContent-Range: bytes 5-9/10\r\n\r\n", 5, 5),
        (b"\r\n--B0UND--\r\n", 0, 0),
    ]
    assert length == 67 + 2 + 67 + 5 + 13 == 154
    obj = b"0123456789"
    body = b"".join(head + obj[off:off + n] for head, off, n in parts)
    assert body == (
        b"\r\n--B0UND\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-1/10\r\n\r\n01"
        b"\r\n--B0UND\r\nContent-Type: video/mp4\r\nContent-Range: bytes 5-9/10\r\n\r\n56789"
        b"\r\n--B0UND--\r\n"
    )
    assert len(body) == length


def _split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """A strict multipart/byteranges reader: [(fields, data)] per part."""
    delimiter = b"\r\n--" + boundary.encode()
    assert body.endswith(delimiter + b"--\r\n")
    pieces = body[:-len(delimiter + b"--\r\n")].split(delimiter)
    assert pieces[0] == b""  # empty preamble
    parts = []
    for piece in pieces[1:]:
        assert piece.startswith(b"\r\n")
        head, sep, data = piece[2:].partition(b"\r\n\r\n")
        assert sep
        fields = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n"))
        parts.append((fields, data))
    return parts


def _ranges_strategy():
    @st.composite
    def build(draw):
        size = draw(st.integers(min_value=1, max_value=300))
        cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=size - 1),
                                    min_size=2, max_size=12)))
        # consecutive pairs of cuts: sorted, one byte long or more, at most touching
        ranges = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
        return size, ranges
    return build()


@settings(max_examples=300, deadline=None)
@given(plan=_ranges_strategy(), seed=st.binary(min_size=1, max_size=16),
       content_type=st.sampled_from(["video/mp4", "application/octet-stream",
                                     "text/plain; charset=utf-8"]))
def test_multipart_plan_round_trips(plan, seed, content_type):
    size, ranges = plan
    obj = (seed * (size // len(seed) + 1))[:size]
    boundary = new_boundary()
    parts, length = multipart_plan(ranges, size, content_type, boundary)
    assert len(parts) == len(ranges) + 1
    assert parts[-1] == (f"\r\n--{boundary}--\r\n".encode(), 0, 0)
    assert length == sum(len(head) + n for head, _, n in parts)
    for (_, off, n), (first, last) in zip(parts, ranges, strict=False):
        assert (off, n) == (first, last - first + 1)
    body = b"".join(head + obj[off:off + n] for head, off, n in parts)
    assert len(body) == length
    read = _split_multipart(body, boundary)
    assert [fields for fields, _ in read] == [
        {"Content-Type": content_type, "Content-Range": f"bytes {a}-{b}/{size}"}
        for a, b in ranges
    ]
    assert [data for _, data in read] == [obj[a:b + 1] for a, b in ranges]


@settings(max_examples=100, deadline=None)
@given(plan=_ranges_strategy(),
       text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .-", min_size=1))
def test_multipart_plan_reads_back_with_email_parser(plan, text):
    size, ranges = plan
    obj = (text * (size // len(text) + 1))[:size].encode()
    boundary = new_boundary()
    parts, length = multipart_plan(ranges, size, "text/plain", boundary)
    body = b"".join(head + obj[off:off + n] for head, off, n in parts)
    message = email.message_from_bytes(
        f"Content-Type: {multipart_content_type(boundary)}\r\n".encode() + b"\r\n" + body,
        policy=email.policy.HTTP,
    )
    assert message.is_multipart()
    assert not message.defects
    got = [(p["Content-Range"], p.get_payload()) for p in message.iter_parts()]
    assert got == [(f"bytes {a}-{b}/{size}", obj[a:b + 1].decode()) for a, b in ranges]


def test_parse_range_then_plan():
    ranges = parse_range("bytes=-2,0-1,4-5", 10, 16)
    assert ranges == [(0, 1), (4, 5), (8, 9)]
    parts, length = multipart_plan(ranges, 10, "video/mp4", "b")
    assert [(off, n) for _, off, n in parts] == [(0, 2), (4, 2), (8, 2), (0, 0)]
