"""Shared fixtures of the fill planner's tests."""

from __future__ import annotations

import pytest

from fill import loops


@pytest.fixture(params=["cython", "python"])
def both_loops(request, monkeypatch):
    """Run a test on fill/_greedy.pyx's compiled loops and on their numpy twins
    (`fill.loops.compiled` set to None): the two must give the same results."""
    if request.param == "python":
        monkeypatch.setattr(loops, "compiled", None)
    elif loops.compiled is None:
        pytest.skip("fill/_greedy.pyx not built or OCA_NO_EXTENSIONS set")
    return request.param
