"""Sizes and durations as operators write them."""

from __future__ import annotations

import pytest

from oca.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0),
    ("4096", 4096),
    (" 4096 ", 4096),
    (4096, 4096),
    (0, 0),
    ("1K", 1024),
    ("1k", 1024),
    ("500M", 500 << 20),
    ("500G", 500 << 30),
    ("2T", 2 << 40),
    ("1P", 1 << 50),
    ("1.5T", 3 << 39),
    ("0.5K", 512),
    ("10KB", 10 << 10),
    ("10KiB", 10 << 10),
    ("10 MiB", 10 << 20),
    ("7B", 7),
])
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("", "not a size: '' (expected e.g. 4096, 500M, 2T)"),
    ("G", "not a size: 'G' (expected e.g. 4096, 500M, 2T)"),
    ("-1G", "not a size: '-1G' (expected e.g. 4096, 500M, 2T)"),
    ("12X", "not a size: '12X' (expected e.g. 4096, 500M, 2T)"),
    ("1.2.3K", "not a size: '1.2.3K' (expected e.g. 4096, 500M, 2T)"),
    ("1E", "not a size: '1E' (expected e.g. 4096, 500M, 2T)"),
    ("1 G B", "not a size: '1 G B' (expected e.g. 4096, 500M, 2T)"),
    ("ten", "not a size: 'ten' (expected e.g. 4096, 500M, 2T)"),
    (-1, "size must not be negative: -1"),
    (True, "not a size: True"),
    (1.5, "not a size: 1.5"),
    ("1.5", "not a size: '1.5' (a fraction of a byte; give a suffix, e.g. 1.5M)"),
    (None, "not a size: None"),
])
def test_parse_size_rejects(value, message):
    with pytest.raises(ValueError) as e:
        parse_size(value)
    assert str(e.value) == message


@pytest.mark.parametrize(("n", "text"), [
    (0, "0"),
    (1, "1"),
    (1023, "1023"),
    (1024, "1K"),
    (1536, "1.5K"),
    (10 << 10, "10K"),
    (1 << 20, "1M"),
    (5 << 29, "2.5G"),
    (500 << 30, "500G"),
    (1 << 40, "1T"),
    (1 << 50, "1024T"),
    (-1536, "-1.5K"),
    (1048575, "1M"),  # rounds up into the next unit, never "1024K"
    ((1 << 30) - 1, "1G"),
])
def test_format_size(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("n", [0, 1024, 1536, 500 << 30, 3 << 39])
def test_format_then_parse_round_trips_exact_sizes(n):
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(("value", "seconds"), [
    ("250ms", 0.25),
    ("30s", 30.0),
    ("1.5s", 1.5),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1d", 86400.0),
    ("2", 2.0),
    (" 10 s ", 10.0),
    (2, 2.0),
    (0.5, 0.5),
    (0, 0.0),
])
def test_parse_duration(value, seconds):
    result = parse_duration(value)
    assert isinstance(result, float)
    assert result == seconds


@pytest.mark.parametrize(("value", "message"), [
    ("", "not a duration: '' (expected e.g. 250ms, 30s, 5m, 1h)"),
    ("5x", "not a duration: '5x' (expected e.g. 250ms, 30s, 5m, 1h)"),
    ("-1s", "not a duration: '-1s' (expected e.g. 250ms, 30s, 5m, 1h)"),
    ("s", "not a duration: 's' (expected e.g. 250ms, 30s, 5m, 1h)"),
    ("1w", "not a duration: '1w' (expected e.g. 250ms, 30s, 5m, 1h)"),
    ("1h30m", "not a duration: '1h30m' (expected e.g. 250ms, 30s, 5m, 1h)"),
    (None, "not a duration: None (expected e.g. 250ms, 30s, 5m, 1h)"),
    (-1, "duration must not be negative: -1"),
    (-0.5, "duration must not be negative: -0.5"),
    (True, "not a duration: True"),
])
def test_parse_duration_rejects(value, message):
    with pytest.raises(ValueError) as e:
        parse_duration(value)
    assert str(e.value) == message
