"""Conditional requests: If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since and
If-Range (RFC 9110 section 13), and HTTP-date parsing (RFC 9110 section 5.6.7).

Objects carry a strong entity tag (the quoted xxh3 digest, DESIGN.md) and a Last-Modified
second. :func:`evaluate` applies the preconditions in the order of RFC 9110 section 13.2.2;
the caller applies it only to an object it would otherwise serve with 200 (section 13.2.1).
"""

from __future__ import annotations

import time
from datetime import date as _date

# RFC 9110 section 5.6.3: OWS is spaces and horizontal tabs.
_WS = " \t"

_SAFE = frozenset(("GET", "HEAD"))

_MONTHS = {
    "Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6,
    "Jul": 7, "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}
_DAY_NAMES = frozenset(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
_DAY_NAMES_LONG = frozenset(
    ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
)
_EPOCH_ORDINAL = _date(1970, 1, 1).toordinal()

# parse_http_date's memo of IMF-fixdate and asctime values, emptied when full.
_PARSED_MAX = 1024
_parsed: dict[str, int | None] = {}
_MISS = object()


def _epoch(year: int, month: str, day: str, hms: str) -> int | None:
    """Seconds since the epoch of a date and an ``HH:MM:SS``; None when not a real instant."""
    m = _MONTHS.get(month)
    if m is None or not day.isdigit() or hms[2:3] != ":" or hms[5:6] != ":" or len(hms) != 8:
        return None
    hh, mm, ss = hms[:2], hms[3:5], hms[6:]
    if not (hh.isdigit() and mm.isdigit() and ss.isdigit()):
        return None
    h, mi, s = int(hh), int(mm), int(ss)
    # nginx (ngx_parse_http_time) refuses a leap second too.
    if h > 23 or mi > 59 or s > 59 or not 1 <= year <= 9999:
        return None
    try:
        days = _date(year, m, int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # 31 Apr, 29 Feb 2023
        return None
    return days * 86400 + h * 3600 + mi * 60 + s


def _full_year(yy: int, this_year: int) -> int:
    """The year of a two-digit rfc850-date year (RFC 9110 section 5.6.7): the one with those
    last two digits that is not more than 50 years in the future."""
    year = this_year - this_year % 100 + yy
    if year > this_year + 50:
        year -= 100
    elif year <= this_year - 50:
        year += 100
    return year


def parse_http_date(value: str) -> int | None:
    """Epoch seconds of an HTTP-date, or None when *value* is not one; never raises.

    Accepts the three formats RFC 9110 section 5.6.7 requires of recipients, case-sensitively:
    IMF-fixdate ``Sun, 06 Nov 1994 08:49:37 GMT``, rfc850-date ``Sunday, 06-Nov-94 08:49:37
    GMT`` and asctime ``Sun Nov  6 08:49:37 1994``. The day name must be a day name but is not
    checked against the date (as in nginx).
    """
    # Clients send back the Last-Modified they were given, so few distinct values recur:
    # a hit costs a dict lookup, a parse about 1.5 us. rfc850 years depend on today: not kept.
    epoch = _parsed.get(value, _MISS)
    if epoch is _MISS:
        epoch = _parse_http_date(value)
        n = len(value)
        if n == 29 or n == 24:
            if len(_parsed) >= _PARSED_MAX:
                _parsed.clear()
            _parsed[value] = epoch
    return epoch


def _parse_http_date(value: str) -> int | None:
    if not isinstance(value, str) or not value.isascii():
        return None
    n = len(value)
    if n == 29:
        # IMF-fixdate: fixed columns.
        if (
            value[3:5] != ", " or value[7] != " " or value[11] != " " or value[16] != " "
            or value[25:] != " GMT" or value[:3] not in _DAY_NAMES
        ):
            return None
        year = value[12:16]
        if not year.isdigit():
            return None
        return _epoch(int(year), value[8:11], value[5:7], value[17:25])
    if n == 24 and value[3] == " ":
        # asctime-date: day-name SP month SP ( 2DIGIT / ( SP DIGIT ) ) SP time SP year
        if (
            value[7] != " " or value[10] != " " or value[19] != " "
            or value[:3] not in _DAY_NAMES
        ):
            return None
        day = value[9] if value[8] == " " else value[8:10]
        year = value[20:]
        if not year.isdigit():
            return None
        return _epoch(int(year), value[4:7], day, value[11:19])
    # rfc850-date: day-name-l "," SP 2DIGIT "-" month "-" 2DIGIT SP time SP "GMT"
    comma = value.find(",")
    rest = value[comma:]
    if (
        len(rest) != 24 or rest[:2] != ", " or rest[4] != "-" or rest[8] != "-"
        or rest[11] != " " or rest[20:] != " GMT" or value[:comma] not in _DAY_NAMES_LONG
    ):
        return None
    yy = rest[9:11]
    if not yy.isdigit():
        return None
    return _epoch(_full_year(int(yy), time.gmtime().tm_year), rest[5:8], rest[2:4], rest[12:20])


def _listed(value: str, etag: str, weak: bool) -> bool:
    """True when the entity-tag list *value* names *etag* (RFC 9110 section 8.8.3.2).

    Strong comparison: the same opaque tag, neither weak. Weak comparison also takes
    ``W/"x"`` for ``"x"``. *etag* is ours and strong. A comma inside a listed opaque tag cannot
    produce a false match: no piece of a tag split there begins with a double quote.
    """
    if value == etag:
        return True
    if etag not in value:
        return False
    for tag in value.split(","):
        tag = tag.strip(_WS)
        if tag == etag or (weak and tag[2:] == etag and tag[:2] == "W/"):
            return True
    return False


def evaluate(
    method: str,
    etag: str,
    last_modified: int,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
) -> int | None:
    """412 or 304 when the request's preconditions say so, else None (go on to Range).

    *etag* is the object's strong entity tag with its quotes, *last_modified* its
    Last-Modified in epoch seconds; a header absent from the request is None. Steps of RFC
    9110 section 13.2.2:

    1. If-Match (strong comparison; ``*`` matches any object) false -> 412.
    2. Without If-Match, If-Unmodified-Since a valid date earlier than *last_modified* -> 412.
    3. If-None-Match (weak comparison; ``*`` matches) true -> 304 for GET and HEAD, else 412.
    4. Without If-None-Match, for GET and HEAD, If-Modified-Since a valid date not earlier
       than *last_modified* -> 304.

    A date that is not a valid HTTP-date is ignored (sections 13.1.3, 13.1.4).
    """
    if if_match is not None:
        if if_match.strip(_WS) != "*" and not _listed(if_match, etag, weak=False):
            return 412
    elif if_unmodified_since is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and last_modified > since:
            return 412
    if if_none_match is not None:
        if if_none_match.strip(_WS) == "*" or _listed(if_none_match, etag, weak=True):
            return 304 if method in _SAFE else 412
    elif if_modified_since is not None and method in _SAFE:
        since = parse_http_date(if_modified_since)
        if since is not None and last_modified <= since:
            return 304
    return None


def if_range_allows(if_range: str, etag: str, last_modified: int) -> bool:
    """True when the Range may be honoured under *if_range*, else serve 200 whole (RFC 9110
    section 13.1.5). Call it only when the request has a Range.

    An entity tag must equal *etag* by strong comparison (a weak tag never does); an
    HTTP-date must equal *last_modified* exactly (as nginx); anything else is False.
    """
    if if_range == etag:
        return True
    if_range = if_range.strip(_WS)
    if if_range == etag:
        return True
    if if_range[:1] == '"' or if_range[:2] == "W/":
        return False
    return parse_http_date(if_range) == last_modified
