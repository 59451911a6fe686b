"""Conditional requests (RFC 9110 section 13) and HTTP-dates (section 5.6.7)."""

from __future__ import annotations

import email.utils
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.http import conditional
from oca.http.conditional import evaluate, if_range_allows, parse_http_date

ETAG = '"0123456789abcdef0123456789abcdef"'
OTHER = '"fedcba9876543210fedcba9876543210"'
LM = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT: the RFC's example instant
EQUAL = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"
LATER = "Mon, 07 Nov 1994 08:49:37 GMT"


@pytest.fixture
def year_2025(monkeypatch):
    """Pin today's year for rfc850-date's two-digit years."""
    class Clock:
        @staticmethod
        def gmtime():
            return time.gmtime(1750000000)  # June 2025
    monkeypatch.setattr(conditional, "time", Clock)


# --- parse_http_date ----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    # IMF-fixdate
    (EQUAL, LM),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
    ("Wed, 31 Dec 1969 23:59:59 GMT", -1),
    ("Sat, 29 Feb 2000 00:00:00 GMT", 951782400),
    ("Thu, 29 Feb 2024 12:00:00 GMT", 1709208000),
    ("Tue, 19 Jan 2038 03:14:08 GMT", 2**31),
    ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799),
    # the day name is not checked against the date (as nginx)
    ("Mon, 06 Nov 1994 08:49:37 GMT", LM),
    # asctime-date
    ("Sun Nov  6 08:49:37 1994", LM),
    ("Sun Nov 06 08:49:37 1994", LM),
    ("Wed Nov 16 08:49:37 1994", LM + 10 * 86400),
    ("Thu Jan  1 00:00:00 1970", 0),
])
def test_parse_http_date(value, expected):
    assert parse_http_date(value) == expected
    assert parse_http_date(value) == expected  # again, from the memo


@pytest.mark.usefixtures("year_2025")
@pytest.mark.parametrize(("value", "expected"), [
    ("Sunday, 06-Nov-94 08:49:37 GMT", LM),
    ("Monday, 06-Nov-94 08:49:37 GMT", LM),
    ("Wednesday, 01-Jan-70 00:00:00 GMT", 3155760000),  # 2070, not 1970
    ("Wednesday, 29-Feb-00 00:00:00 GMT", 951782400),
    ("Thursday, 29-Feb-24 12:00:00 GMT", 1709208000),
    ("Tuesday, 01-Jan-75 00:00:00 GMT", 3313526400),   # 2075: 50 years ahead, not more
    ("Friday, 01-Jan-76 00:00:00 GMT", 189302400),      # 2076 is more: 1976
])
def test_parse_rfc850_date(value, expected):
    assert parse_http_date(value) == expected


@pytest.mark.parametrize(("yy", "this_year", "year"), [
    (94, 2025, 1994),
    (24, 2025, 2024),
    (25, 2025, 2025),
    (75, 2025, 2075),
    (76, 2025, 1976),
    (0, 2025, 2000),
    (99, 2025, 1999),
    (1, 2099, 2101),
    (49, 2099, 2149),
    (50, 2099, 2050),
    (98, 2099, 2098),
    (49, 2000, 2049),
    (50, 2000, 2050),
    (51, 2000, 1951),
])
def test_two_digit_years(yy, this_year, year):
    # RFC 9110 section 5.6.7: not more than 50 years in the future
    assert conditional._full_year(yy, this_year) == year


@pytest.mark.parametrize("value", [
    "",
    "0",
    "784111777",
    "garbage",
    "Sun, 06 Nov 1994 08:49:37 gmt",
    "Sun, 06 Nov 1994 08:49:37 UTC",
    "Sun, 06 Nov 1994 08:49:37 +0000",
    "Sun, 06 Nov 1994 08:49:37",
    "sun, 06 Nov 1994 08:49:37 GMT",
    "Sun, 06 nov 1994 08:49:37 GMT",
    "Sun, 06 NOV 1994 08:49:37 GMT",
    "Xyz, 06 Nov 1994 08:49:37 GMT",
    "Sun, 6 Nov 1994 08:49:37 GMT",
    "Sun,  6 Nov 1994 08:49:37 GMT",
    "Sun, 06 Nov 94 08:49:37 GMT",
    "Sun, 06 Nov 1994 8:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37  GMT",
    "Sun, 06 Nov 1994 08-49-37 GMT",
    "Sun, 06 Nov 1994 08:49:3x GMT",
    "Sun, 06 Nov 1994 24:00:00 GMT",
    "Sun, 06 Nov 1994 23:60:00 GMT",
    "Sun, 06 Nov 1994 23:59:60 GMT",
    "Sun, 00 Nov 1994 08:49:37 GMT",
    "Sun, 31 Nov 1994 08:49:37 GMT",
    "Wed, 29 Feb 2023 08:49:37 GMT",
    "Thu, 29 Feb 1900 08:49:37 GMT",
    "Sun, 06 Nov 0000 08:49:37 GMT",
    "Sun, 06 Nov +994 08:49:37 GMT",
    "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
    " Sun, 06 Nov 1994 08:49:37 GMT",
    # asctime
    "Sun Nov 6  08:49:37 1994",
    "Sun Nov  6 08:49:37 94",
    "Sun Nov  6 08:49:37 1994 GMT",
    "Sun nov  6 08:49:37 1994",
    "Sun Nov 31 08:49:37 1994",
    "Sun Nov  6 08:49:37 19x4",
    # rfc850
    "Sun, 06-Nov-94 08:49:37 GMT",
    "Sunday, 06-Nov-1994 08:49:37 GMT",
    "sunday, 06-Nov-94 08:49:37 GMT",
    "Sunday, 06 Nov 94 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 UTC",
    "Sunday, 06-Nov-9x 08:49:37 GMT",
    "Sunday, 31-Nov-94 08:49:37 GMT",
    ", 06-Nov-94 08:49:37 GMT",
])
def test_not_http_dates(value):
    assert parse_http_date(value) is None


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=-62135596800, max_value=253402300799))
def test_every_format_round_trips(epoch):
    t = time.gmtime(epoch)
    imf = time.strftime("%a, %d %b %Y %H:%M:%S GMT", t)
    if t.tm_year < 1000:
        imf = imf.replace(f" {t.tm_year} ", f" {t.tm_year:04d} ")
    assert parse_http_date(imf) == epoch
    if t.tm_year >= 1000:
        assert parse_http_date(time.asctime(t)) == epoch
    if t.tm_year >= 1900:
        expected = email.utils.parsedate_to_datetime(imf).timestamp()
        assert parse_http_date(imf) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=100 * 365 * 86400))
def test_rfc850_round_trips_within_the_window(offset):
    this_year = time.gmtime().tm_year
    start = int(time.mktime((this_year - 49, 1, 1, 0, 0, 0, 0, 0, 0)) - time.timezone)
    epoch = start + offset
    t = time.gmtime(epoch)
    if t.tm_year > this_year + 50:
        return
    assert parse_http_date(time.strftime("%A, %d-%b-%y %H:%M:%S GMT", t)) == epoch


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=40))
def test_parse_http_date_never_raises(value):
    got = parse_http_date(value)
    assert got is None or isinstance(got, int)


def test_memo_stays_bounded():
    for i in range(3000):
        assert parse_http_date(f"Sun, 06 Nov {1000 + i:04d} 08:49:37 GMT") is not None
    assert len(conditional._parsed) <= conditional._PARSED_MAX
    assert parse_http_date(EQUAL) == LM


# --- evaluate: rule by rule ---------------------------------------------------------------

def ev(method="GET", if_match=None, if_none_match=None, if_modified_since=None,
       if_unmodified_since=None):
    return evaluate(method, ETAG, LM, if_match, if_none_match, if_modified_since,
                    if_unmodified_since)


def test_no_preconditions():
    assert ev() is None
    assert ev("HEAD") is None


@pytest.mark.parametrize(("if_match", "expected"), [
    (ETAG, None),
    ("*", None),
    (" * ", None),
    (f"{OTHER}, {ETAG}", None),
    (f"{OTHER},{ETAG}", None),
    (f" {OTHER} ,\t{ETAG}\t", None),
    (f'"a,b", {ETAG}', None),
    (OTHER, 412),
    (f"W/{ETAG}", 412),           # strong comparison: a weak tag never matches
    (f"W/{OTHER}, W/{ETAG}", 412),
    (ETAG[1:-1], 412),            # unquoted
    (f"{ETAG[:-1]}x\"", 412),
    (f'"x{ETAG[1:]}', 412),
    ("", 412),
    (f"{OTHER}, *", 412),         # "*" only alone
])
def test_if_match(if_match, expected):
    assert ev(if_match=if_match) == expected
    assert ev("HEAD", if_match=if_match) == expected


@pytest.mark.parametrize(("date", "expected"), [
    (BEFORE, 412),
    (EQUAL, None),
    (AFTER, None),
    (LATER, None),
    ("Sun Nov  6 08:49:36 1994", 412),
    ("garbage", None),
    (f"{BEFORE}, {BEFORE}", None),  # a list is not a valid date: ignored
])
def test_if_unmodified_since(date, expected):
    assert ev(if_unmodified_since=date) == expected


def test_if_unmodified_since_is_ignored_under_if_match():
    assert ev(if_match=ETAG, if_unmodified_since=BEFORE) is None
    assert ev(if_match="*", if_unmodified_since=BEFORE) is None
    assert ev(if_match=OTHER, if_unmodified_since=AFTER) == 412


@pytest.mark.parametrize(("if_none_match", "expected"), [
    (ETAG, 304),
    (f"W/{ETAG}", 304),           # weak comparison
    ("*", 304),
    (f"{OTHER}, {ETAG}", 304),
    (f"{OTHER},W/{ETAG}", 304),
    (f"\t{OTHER} , {ETAG} ", 304),
    (OTHER, None),
    (f"W/{OTHER}", None),
    (f"w/{ETAG}", None),          # W/ is case-sensitive
    (ETAG[1:-1], None),
    ("", None),
    (f"{OTHER}, *", None),
])
def test_if_none_match(if_none_match, expected):
    assert ev(if_none_match=if_none_match) == expected
    assert ev("HEAD", if_none_match=if_none_match) == expected
    assert ev("POST", if_none_match=if_none_match) == (412 if expected else None)


@pytest.mark.parametrize(("date", "expected"), [
    (EQUAL, 304),
    (AFTER, 304),
    (LATER, 304),
    (BEFORE, None),
    ("Sunday, 06-Nov-94 08:49:37 GMT", 304),
    ("Sun Nov  6 08:49:37 1994", 304),
    ("Sun Nov  6 08:49:36 1994", None),
    ("garbage", None),
    ("", None),
    (f"{EQUAL}, {EQUAL}", None),
])
def test_if_modified_since(date, expected, year_2025):
    assert ev(if_modified_since=date) == expected
    assert ev("HEAD", if_modified_since=date) == expected
    assert ev("POST", if_modified_since=date) is None  # GET and HEAD only


def test_if_modified_since_is_ignored_under_if_none_match():
    assert ev(if_none_match=OTHER, if_modified_since=EQUAL) is None
    assert ev(if_none_match=ETAG, if_modified_since=BEFORE) == 304


def test_order_of_evaluation():
    # 1 before 3: a failed If-Match wins over a matching If-None-Match
    assert ev(if_match=OTHER, if_none_match=ETAG) == 412
    # 2 before 3
    assert ev(if_unmodified_since=BEFORE, if_none_match=ETAG) == 412
    # 2 before 4
    assert ev(if_unmodified_since=BEFORE, if_modified_since=EQUAL) == 412
    # passing 1 then 3
    assert ev(if_match=ETAG, if_none_match=ETAG) == 304
    assert ev(if_match="*", if_none_match="*") == 304
    assert ev(if_match=ETAG, if_modified_since=EQUAL) == 304


# --- evaluate: the whole truth table ------------------------------------------------------

_IF_MATCH = {None: None, "match": ETAG, "star": "*", "miss": OTHER, "weak": f"W/{ETAG}"}
_TAGS = {None: None, "match": ETAG, "star": "*", "miss": OTHER, "weak": f"W/{ETAG}"}
_DATES = {None: None, "before": BEFORE, "equal": EQUAL, "after": AFTER, "bad": "x"}


def _rfc_9110_13_2_2(method, im, inm, ims, ius):
    """The steps, restated from the RFC text with the table's labels."""
    if im is not None:
        if im not in ("match", "star"):
            return 412
    elif ius == "before":
        return 412
    if inm is not None:
        if inm in ("match", "star", "weak"):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD") and ims in ("equal", "after"):
        return 304
    return None


@pytest.mark.parametrize(("method", "im", "inm", "ims", "ius"), list(itertools.product(
    ("GET", "HEAD", "POST"), _IF_MATCH, _TAGS, _DATES, _DATES)))
def test_truth_table(method, im, inm, ims, ius):
    got = evaluate(method, ETAG, LM, _IF_MATCH[im], _TAGS[inm], _DATES[ims], _DATES[ius])
    assert got == _rfc_9110_13_2_2(method, im, inm, ims, ius)


# --- If-Range -----------------------------------------------------------------------------

@pytest.mark.parametrize(("if_range", "expected"), [
    (ETAG, True),
    (f" {ETAG} ", True),
    (OTHER, False),
    (f"W/{ETAG}", False),     # strong comparison: a weak tag never matches
    (ETAG[1:-1], False),
    (f"{ETAG}, {OTHER}", False),
    (EQUAL, True),            # the date must be exactly Last-Modified
    ("Sun Nov  6 08:49:37 1994", True),
    ("Sunday, 06-Nov-94 08:49:37 GMT", True),
    (BEFORE, False),
    (AFTER, False),
    (LATER, False),
    ("", False),
    ("garbage", False),
    ("*", False),
])
def test_if_range(if_range, expected, year_2025):
    assert if_range_allows(if_range, ETAG, LM) is expected
