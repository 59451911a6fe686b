"""Shared pieces of the benchmarks: where figures are collected and how they are printed.

Each benchmark stores its headline figures with ``bench_report``; the terminal
summary prints them, with the ratio against the peer, after pytest-benchmark's
table. Nothing here asserts a timing: benchmarks report, tests assert.
"""

from __future__ import annotations

import os
import platform
import time

import psutil
import pytest

from .machine import cpu_model

_FIGURES = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def bench_report(request: pytest.FixtureRequest) -> dict:
    """A dict the benchmarks fill: name -> figures, printed at the end of the run."""
    return request.config.stash.setdefault(_FIGURES, {})


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, {})
    if not figures:
        return
    tr = terminalreporter
    tr.section("oca benchmarks: figures and ratios against the peer")
    tr.write_line(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    tr.write_line(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, "
                  f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
                  f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    for name in sorted(figures):
        for line in figures[name].get("lines", []):
            tr.write_line(line)
    lookup = figures.get("lookup")
    if lookup and "map_ns" in lookup and "sqlite_ns" in lookup:
        tr.write_line(
            f"RATIO lookup id -> (path, size, digest, tier), {lookup['objects']:,} objects: "
            f"map {lookup['map_ns']:.0f} ns/op vs SQLite query per id "
            f"{lookup['sqlite_ns']:.0f} ns/op: map is "
            f"{lookup['sqlite_ns'] / lookup['map_ns']:.1f}x faster")
