"""fill/_greedy.pyx helpers that have no twin module of their own: the radix argsort."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fill import loops

_greedy = loops.compiled
pytestmark = pytest.mark.skipif(_greedy is None,
                                reason="fill/_greedy.pyx not built or OCA_NO_EXTENSIONS set")

KEYS = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324, -5e-324])),
                max_size=300)


@settings(max_examples=300, deadline=None)
@given(KEYS)
def test_argsort_is_numpys_stable_argsort(keys):
    key = np.array(keys, dtype=np.float64)
    assert np.array_equal(_greedy.argsort(key), np.argsort(key, kind="stable"))


def test_argsort_of_a_million_keys_with_ties():
    rng = np.random.default_rng(5)
    key = np.round(rng.normal(0, 3, 1_000_000), 2)  # many ties, both signs
    assert np.array_equal(_greedy.argsort(key), np.argsort(key, kind="stable"))
