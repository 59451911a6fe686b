"""Per-call cost of the pure functions that decide a response: ranges, conditionals, heads.

What the serving path pays in Python when a request needs a decision (a Range header, a
conditional, a head to format); moved here from the tests (tests/http/test_ranges.py,
test_conditional.py, test_head.py), which assert behaviour only. No peer: the figure is
ns per call, beside the ~5 us of user CPU a whole 16 KiB request costs (bench/serve/).
Each call runs in pytest-benchmark's calibrated loop; the figure is the median round.
"""

from __future__ import annotations

import pytest

from oca.http import conditional
from oca.http.conditional import evaluate, if_range_allows
from oca.http.head import current_date, format_head, http_date
from oca.http.ranges import multipart_plan, new_boundary, parse_range, path_range

ETAG = '"0123456789abcdef0123456789abcdef"'
LM = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT: RFC 9110's example instant
DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
BIG = 268435456  # a 256 MiB object
SIX_HEADERS = [
    ("Content-Type", "video/mp4"),
    ("ETag", ETAG),
    ("Last-Modified", DATE),
    ("Accept-Ranges", "bytes"),
    ("Content-Range", "bytes 1048576-2097151/268435456"),
    ("Cache-Control", "max-age=31536000"),
]

CALLS = {
    "ranges.parse_range('bytes=1048576-2097151')":
        lambda: parse_range("bytes=1048576-2097151", BIG, 16),
    "ranges.parse_range('bytes=0-99,200-299,-100')":
        lambda: parse_range("bytes=0-99,200-299,-100", BIG, 16),
    "ranges.path_range('1048576', '2097151')": lambda: path_range("1048576", "2097151", BIG),
    "ranges.multipart_plan(3 ranges)":
        lambda: multipart_plan([(0, 99), (200, 299), (BIG - 100, BIG - 1)], BIG, "video/mp4",
                               "0123456789abcdef0123"),
    "ranges.new_boundary()": new_boundary,
    "conditional.evaluate(If-None-Match match)":
        lambda: evaluate("GET", ETAG, LM, None, ETAG, None, None),
    "conditional.evaluate(If-Modified-Since, memo hit)":
        lambda: evaluate("GET", ETAG, LM, None, None, DATE, None),
    "conditional._parse_http_date(IMF-fixdate)": lambda: conditional._parse_http_date(DATE),
    "conditional.if_range_allows(etag)": lambda: if_range_allows(ETAG, ETAG, LM),
    "head.format_head(206, 6 headers)":
        lambda: format_head(206, SIX_HEADERS, 1048576, True, current_date()),
    "head.current_date()": current_date,
    "head.http_date(t)": lambda: http_date(LM),
}


@pytest.mark.benchmark(group="http-calls")
@pytest.mark.parametrize("name", list(CALLS))
def test_call(benchmark, name: str, bench_report: dict) -> None:
    """ns per call of one decision function."""
    benchmark(CALLS[name])
    ns = benchmark.stats.stats.median * 1e9
    benchmark.extra_info["ns_per_call"] = round(ns)
    fig = bench_report.setdefault("http-calls", {"lines": []})
    fig["lines"].append(f"http call {name}: {ns:,.0f} ns")
