"""Response heads and the Date field."""

from __future__ import annotations

import email.utils
import http.client
import io
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.http.conditional import parse_http_date
from oca.http.head import REASONS, DateCache, current_date, format_head, http_date

DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
ETAG = '"0123456789abcdef0123456789abcdef"'


# --- Date ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("epoch", "expected"), [
    (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
    (784111777, DATE),
    (784111777.999, DATE),
    (951782400, "Tue, 29 Feb 2000 00:00:00 GMT"),
    (2**31, "Tue, 19 Jan 2038 03:14:08 GMT"),
    (253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"),
])
def test_http_date(epoch, expected):
    assert http_date(epoch) == expected


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=0, max_value=253402300799))
def test_http_date_matches_the_stdlib_and_parses_back(epoch):
    value = http_date(epoch)
    assert value == email.utils.formatdate(epoch, usegmt=True)
    assert parse_http_date(value) == epoch


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_date_cache_formats_once_per_second():
    clock = FakeClock(784111777.0)
    date = DateCache(clock)
    first = date()
    assert first == DATE
    clock.now = 784111777.999
    assert date() is first
    clock.now = 784111778.0
    assert date() == "Sun, 06 Nov 1994 08:49:38 GMT"
    clock.now = 784111838.5
    assert date() == "Sun, 06 Nov 1994 08:50:38 GMT"


def test_date_cache_follows_a_clock_stepped_back():
    clock = FakeClock(784111777.5)
    date = DateCache(clock)
    assert date() == DATE
    clock.now = 784111776.9
    assert date() == "Sun, 06 Nov 1994 08:49:36 GMT"
    clock.now = 0.0
    assert date() == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_current_date_is_now():
    before = int(time.time())
    value = current_date()
    after = int(time.time())
    assert before <= parse_http_date(value) <= after


# --- REASONS ------------------------------------------------------------------------------

def test_reasons():
    assert {code: REASONS[code] for code in (
        200, 206, 302, 304, 400, 403, 404, 405, 412, 413, 414, 416, 431, 500, 503)} == {
        200: "OK",
        206: "Partial Content",
        302: "Found",
        304: "Not Modified",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        412: "Precondition Failed",
        413: "Content Too Large",
        414: "URI Too Long",
        416: "Range Not Satisfiable",
        431: "Request Header Fields Too Large",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }


# --- format_head --------------------------------------------------------------------------

def test_format_head_200():
    head = format_head(200, [("Content-Type", "video/mp4"), ("ETag", ETAG),
                             ("Accept-Ranges", "bytes")], 1048576, True, DATE)
    assert head == (
        b"HTTP/1.1 200 OK\r\n"
        b"Server: oca\r\n"
        b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b"Content-Type: video/mp4\r\n"
        b'ETag: "0123456789abcdef0123456789abcdef"\r\n'
        b"Accept-Ranges: bytes\r\n"
        b"Content-Length: 1048576\r\n"
        b"Connection: keep-alive\r\n"
        b"\r\n"
    )


def test_format_head_206_close():
    head = format_head(206, (("Content-Range", "bytes 0-0/10"),), 1, False, DATE)
    assert head == (
        b"HTTP/1.1 206 Partial Content\r\nServer: oca\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b"Content-Range: bytes 0-0/10\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"
    )


def test_format_head_without_content_length():
    head = format_head(304, [("ETag", ETAG)], None, True, DATE)
    assert head == (
        b"HTTP/1.1 304 Not Modified\r\nServer: oca\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b'ETag: "0123456789abcdef0123456789abcdef"\r\nConnection: keep-alive\r\n\r\n'
    )


def test_format_head_no_headers_zero_length():
    assert format_head(404, [], 0, False, DATE) == (
        b"HTTP/1.1 404 Not Found\r\nServer: oca\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert format_head(416, (), 0, True, DATE).startswith(
        b"HTTP/1.1 416 Range Not Satisfiable\r\n")


def test_format_head_unknown_status_has_empty_reason():
    assert format_head(299, [], None, True, DATE).startswith(b"HTTP/1.1 299 \r\nServer: oca\r\n")


@pytest.mark.parametrize("status", sorted(REASONS))
def test_every_status_line(status):
    head = format_head(status, [], 0, True, DATE)
    assert head.split(b"\r\n", 1)[0] == f"HTTP/1.1 {status} {REASONS[status]}".encode()


_token = st.text(alphabet="!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters,
                 min_size=1, max_size=20)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                 max_size=40).flatmap(
    lambda v: st.sampled_from([v, v + " x", "a " + v]))


@settings(max_examples=500, deadline=None)
@given(status=st.sampled_from(sorted(REASONS)),
       headers=st.lists(st.tuples(_token, _value), max_size=10),
       content_length=st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
       keep_alive=st.booleans())
def test_format_head_parses_back(status, headers, content_length, keep_alive):
    head = format_head(status, headers, content_length, keep_alive, DATE)
    assert head.endswith(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    for line in lines:  # no stray CR or LF from any field
        assert b"\r" not in line and b"\n" not in line
    assert lines[0] == f"HTTP/1.1 {status} {REASONS[status]}".encode()
    expected = [("Server", "oca"), ("Date", DATE), *headers]
    if content_length is not None:
        expected.append(("Content-Length", str(content_length)))
    expected.append(("Connection", "keep-alive" if keep_alive else "close"))
    assert len(lines) == 1 + len(expected)
    parsed = http.client.parse_headers(io.BytesIO(head.split(b"\r\n", 1)[1]))
    assert list(parsed.items()) == expected


# --- cost ---------------------------------------------------------------------------------
