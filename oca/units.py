"""Sizes and durations as operators write them in config and on the command line."""

import re

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*\Z", re.IGNORECASE)
_SIZE_SCALE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")
_DURATION_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_size(value: str | int) -> int:
    """Bytes from ``500G``, ``1.5T``, ``4096`` or an int (K/M/G/T/P are powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a size: {value!r}")
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r} (expected e.g. 4096, 500M, 2T)")
    if "." in m.group(1) and not m.group(2):
        raise ValueError(f"not a size: {value!r} (a fraction of a byte; give a suffix, e.g. 1.5M)")
    return int(float(m.group(1)) * _SIZE_SCALE[m.group(2).upper()])


def format_size(n: int) -> str:
    """Short human form, powers of 1024: 1536 -> '1.5K'."""
    if abs(n) < 1024:
        return str(n)
    value = float(n)
    for unit in ("K", "M", "G", "T"):
        value /= 1024
        # Choose the unit after rounding, so 1048575 is "1M", not "1024.0K".
        if round(abs(value), 1) < 1024 or unit == "T":
            return f"{value:.1f}".removesuffix(".0") + unit
    raise AssertionError("unreachable")


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``250ms``, ``30s``, ``5m``, ``1h``, ``1d`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value}")
        return float(value)
    m = _DURATION_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 250ms, 30s, 5m, 1h)")
    return float(m.group(1)) * _DURATION_SCALE[m.group(2)]


_RATE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKMGT]?)(?:bit/s|bps|b/s)?\s*\Z")
_RATE_SCALE = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_rate(value: str | int | float) -> float:
    """Bits per second from ``1.2G``, ``800M``, ``100k`` or a number (k/M/G/T are powers
    of 1000, as link rates are written; ``1.2Gbps`` and ``1.2Gbit/s`` read the same)."""
    if isinstance(value, bool):
        raise ValueError(f"not a rate: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"rate must not be negative: {value}")
        return float(value)
    m = _RATE_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"not a rate: {value!r} (expected bits per second, e.g. 800M, 1.2G)")
    return float(m.group(1)) * _RATE_SCALE[m.group(2)]


def format_rate(bits_per_second: float) -> str:
    """Short human form, powers of 1000: 1.2e9 -> '1.2Gbit/s'."""
    value = float(bits_per_second)
    for unit in ("", "k", "M", "G"):
        if abs(value) < 1000:
            return f"{value:.1f}".removesuffix(".0") + f"{unit}bit/s"
        value /= 1000
    return f"{value:.1f}".removesuffix(".0") + "Tbit/s"
