"""Shared fixtures of the fill planner's tests."""

from __future__ import annotations

import pytest

from fill import backbone, manifest, placement


@pytest.fixture(params=["cython", "python"])
def both_loops(request, monkeypatch):
    """Run a test on fill/_greedy.pyx's compiled loops and on their numpy twins (the
    modules' `_cgreedy` set to None): the two must give the same results."""
    if request.param == "python":
        for module in (placement, backbone, manifest):
            monkeypatch.setattr(module, "_cgreedy", None)
    elif placement._cgreedy is None:
        pytest.skip("fill/_greedy.pyx is not built")
    return request.param
