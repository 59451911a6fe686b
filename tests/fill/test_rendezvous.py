"""Rendezvous hashing: the documented formula, computed independently with Python ints."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fill.model import Catalog
from fill.rendezvous import (
    appliance_hashes,
    catalog_hashes,
    catalog_lookup,
    mix,
    object_hashes,
    order,
    rank,
    scores,
)

M64 = (1 << 64) - 1
C1, C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def mix_int(x: int) -> int:
    x = ((x ^ (x >> 30)) * C1) & M64
    x = ((x ^ (x >> 27)) * C2) & M64
    return x ^ (x >> 31)


def unmix_int(y: int) -> int:
    """Inverse of mix_int (each step of the finalizer is a bijection)."""
    def unshift(v: int, s: int) -> int:
        x = v
        for _ in range(64 // s + 1):
            x = v ^ (x >> s)
        return x

    x = unshift(y, 31)
    x = (x * pow(C2, -1, 1 << 64)) & M64
    x = unshift(x, 27)
    x = (x * pow(C1, -1, 1 << 64)) & M64
    return unshift(x, 30)


def rank_int(obj_id: str, names: list[str]) -> list[int]:
    h = xxhash.xxh3_64_intdigest(obj_id.encode())
    s = [mix_int(h ^ xxhash.xxh3_64_intdigest(a.encode())) for a in names]
    return sorted(range(len(names)), key=lambda i: (-s[i], i))


ids_st = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                 max_size=20)


def test_splitmix64_reference_value():
    # splitmix64 seeded with 0: first output is mix(0x9E3779B97F4A7C15) = 0xE220A8397B1DCDAF.
    x = np.array([0x9E3779B97F4A7C15, 0], dtype=np.uint64)
    assert mix(x).tolist() == [0xE220A8397B1DCDAF, 0]
    assert unmix_int(0xE220A8397B1DCDAF) == 0x9E3779B97F4A7C15


@given(st.lists(st.integers(0, M64), min_size=1, max_size=50))
def test_mix_matches_python_ints(xs):
    assert mix(np.array(xs, dtype=np.uint64)).tolist() == [mix_int(x) for x in xs]


@given(st.lists(ids_st, max_size=20))
def test_object_hashes_are_xxh3_64_of_utf8(ids):
    got = object_hashes(ids)
    assert got.dtype == np.uint64
    assert got.tolist() == [xxhash.xxh3_64_intdigest(i.encode("utf-8")) for i in ids]
    assert appliance_hashes(ids).tolist() == got.tolist()


@settings(max_examples=50)
@given(st.lists(ids_st, min_size=0, max_size=30),
       st.lists(ids_st, min_size=1, max_size=12, unique=True))
def test_rank_matches_the_documented_formula(ids, names):
    got = rank(object_hashes(ids), names)
    assert got.shape == (len(ids), len(names))
    assert got.dtype == np.int64
    assert got.tolist() == [rank_int(i, names) for i in ids]
    # Names or their hashes: same answer.
    assert np.array_equal(rank(object_hashes(ids), appliance_hashes(names)), got)


@settings(max_examples=50)
@given(st.lists(ids_st, min_size=1, max_size=30),
       st.lists(ids_st, min_size=2, max_size=12, unique=True), st.data())
def test_removing_an_appliance_keeps_the_others_order(ids, names, data):
    gone = data.draw(st.integers(0, len(names) - 1))
    rest = names[:gone] + names[gone + 1:]
    before = rank(object_hashes(ids), names)
    after = rank(object_hashes(ids), rest)
    for row_b, row_a in zip(before.tolist(), after.tolist(), strict=True):
        assert [rest[i] for i in row_a] == [names[i] for i in row_b if i != gone]


def test_equal_scores_break_by_position():
    # Two appliances of one name score alike for every object.
    r = rank(object_hashes(["a", "b", "c"]), ["x", "y", "x"])
    for row in r.tolist():
        assert row.index(0) < row.index(2)


def test_scores_equal_above_the_packed_bits_are_still_exact():
    # Scores that differ only in their lowest bits: the packed fast path sees a clash
    # and must fall back to the exact comparison.
    base = 0x123456789ABCDEF0
    want = [base | 1, base | 3, base | 2, base]  # exact order: positions 1, 2, 0, 3
    obj = unmix_int(want[0])
    apps = np.array([0] + [obj ^ unmix_int(w) for w in want[1:]], dtype=np.uint64)
    objs = np.array([obj], dtype=np.uint64)
    assert scores(objs, apps).tolist() == [want]
    assert rank(objs, apps).tolist() == [[1, 2, 0, 3]]


def test_order_of_one_or_no_appliance():
    assert rank(object_hashes(["a", "b"]), ["only"]).tolist() == [[0], [0]]
    assert rank(object_hashes(["a"]), []).shape == (1, 0)
    assert order(np.zeros((0, 3), dtype=np.uint64)).shape == (0, 3)


def _catalog(ids: list[str]) -> Catalog:
    n = len(ids)
    none = np.full(n, None, dtype=object)
    return Catalog(np.array(sorted(ids), dtype=object), np.ones(n, dtype=np.int64), none,
                   np.arange(n, dtype=np.int32), tuple(sorted(ids)), none, np.full(n, np.nan))


def test_catalog_hashes_and_lookup():
    cat = _catalog(["b", "a", "c/d", "é"])
    assert catalog_hashes(cat).tolist() == object_hashes(cat.ids.tolist()).tolist()
    assert catalog_lookup(cat, ["c/d", "zz", "a", "é"]).tolist() == [2, -1, 0, 3]
    assert catalog_lookup(cat, []).tolist() == []
    other = _catalog(["x"])  # a new catalog replaces the cached one
    assert catalog_lookup(other, ["x", "a"]).tolist() == [0, -1]
    assert catalog_lookup(cat, {"a": "ssd"}.keys()).tolist() == [0]


@pytest.mark.parametrize("n", [1, 1000])
def test_rank_is_a_permutation(n):
    r = rank(object_hashes([f"o{i}" for i in range(n)]), [f"a{j}" for j in range(10)])
    assert (np.sort(r, axis=1) == np.arange(10)).all()


def test_documented_example():
    """The worked example in docs/fill-placement.md."""
    names = ["isp-a0", "isp-a1", "isp-a2"]
    h = object_hashes(["t0000001-1080p.mp4"])
    assert h.tolist() == [0x827E4E5C7E8CF18F]
    assert appliance_hashes(names).tolist() == [0x1372F02BD0029E49, 0x16B1CD5F4C5E1142,
                                                0x0511C751554C85D4]
    assert scores(h, appliance_hashes(names)).tolist() == [
        [0xCDFB73CB770DC6B1, 0x28EAAB8DB6DEFD5F, 0xED076A890E6EC840]]
    assert rank(h, names).tolist() == [[2, 0, 1]]
