"""oca/progress.py: counting, and log lines when stderr is not a terminal."""

from __future__ import annotations

import logging

from oca import progress
from oca.progress import Progress


def test_each_counts_and_passes_items_through(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line on every update
    with caplog.at_level(logging.INFO, logger="oca.progress"):
        with Progress("sites placed", total=3, unit="site") as bar:
            assert list(bar.each(iter("abc"))) == ["a", "b", "c"]
        assert bar.done == 3
    assert [r.getMessage() for r in caplog.records] == [
        "sites placed: 1/3 site", "sites placed: 2/3 site", "sites placed: 3/3 site"]


def test_disabled_progress_says_nothing(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    with (caplog.at_level(logging.INFO, logger="oca.progress"),
          Progress("access logs", total=10, unit="B", enabled=False) as bar):
        bar.update(10)
    assert bar.done == 10 and caplog.records == []
