"""The catalog CSV: what loads, and the exact message of every kind of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fill.catalog import load_catalog
from fill.errors import InputError

H = "0123456789abcdef0123456789abcdef"


def write(tmp_path, text: str | bytes, name: str = "catalog.csv"):
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def error_of(path) -> str:
    with pytest.raises(InputError) as info:
        load_catalog(path)
    return str(info.value)


def test_minimal_columns_sorted_by_id(tmp_path):
    cat = load_catalog(write(tmp_path, "id,size\nb.mp4,20\na.mp4,10\nc,0\n"))
    assert cat.ids.tolist() == ["a.mp4", "b.mp4", "c"]
    assert cat.ids.dtype == object
    assert cat.size.tolist() == [10, 20, 0] and cat.size.dtype == np.int64
    assert cat.xxh3.tolist() == [None, None, None]
    assert cat.kind.tolist() == [None, None, None]
    assert np.isnan(cat.release).all() and cat.release.dtype == np.float64
    # no title: each object is its own title
    assert cat.titles == ("a.mp4", "b.mp4", "c")
    assert cat.title.tolist() == [0, 1, 2] and cat.title.dtype == np.int32
    assert len(cat) == 3


def test_all_columns_and_extra_ones(tmp_path):
    text = (
        "release,extra,id,size,xxh3,title,type\n"
        f"1700000000,x,t2-hd,300,{H},t2,hd\n"
        ",y,t1-sd,100,,t1,sd\n"
        f"5,z,t1-hd,200,{H},t1,hd\n"
        ",,solo,7,,,\n"
    )
    cat = load_catalog(write(tmp_path, text))
    assert cat.ids.tolist() == ["solo", "t1-hd", "t1-sd", "t2-hd"]
    assert cat.size.tolist() == [7, 200, 100, 300]
    assert cat.xxh3.tolist() == [None, H, None, H]
    assert cat.kind.tolist() == [None, "hd", "sd", "hd"]
    assert cat.release[1] == 5.0 and cat.release[3] == 1700000000.0
    assert math.isnan(cat.release[0]) and math.isnan(cat.release[2])
    assert cat.titles == ("solo", "t1", "t2")
    assert [cat.titles[t] for t in cat.title] == ["solo", "t1", "t1", "t2"]


def test_header_only_is_an_empty_catalog(tmp_path):
    cat = load_catalog(write(tmp_path, "id,size,title\n"))
    assert len(cat) == 0 and cat.titles == ()
    assert cat.size.dtype == np.int64 and cat.release.dtype == np.float64


def test_blank_lines_skipped_and_crlf_and_bom(tmp_path):
    cat = load_catalog(write(tmp_path, b"\xef\xbb\xbfid,size\r\na,1\r\n\r\nb,2\r\n\n"))
    assert cat.ids.tolist() == ["a", "b"] and cat.size.tolist() == [1, 2]


def test_quoted_fields(tmp_path):
    cat = load_catalog(write(tmp_path, 'id,size,title\na,1,"Title, with comma"\n'))
    assert cat.titles == ("Title, with comma",)


@pytest.mark.parametrize("value", ["abc", "1G", "-5", "1.5", " 12", "", "99999999999999999999"])
def test_size_must_be_plain_bytes(tmp_path, value):
    path = write(tmp_path, f"id,size\na,1\nb,{value}\n")
    shown = repr(value)
    assert error_of(path) == f"{path}: line 3: size: {shown} is not a whole number of bytes"


def test_size_error_on_line_17(tmp_path):
    rows = "".join(f"o{i},{i}\n" for i in range(15))
    path = write(tmp_path, "id,size\n" + rows + "bad,abc\n")
    assert error_of(path) == f"{path}: line 17: size: 'abc' is not a whole number of bytes"


def test_bad_id(tmp_path):
    path = write(tmp_path, "id,size\ngood,1\nhas space,2\n")
    assert error_of(path) == (f"{path}: line 3: id: invalid object id 'has space': character "
                              "' ' not allowed (A-Z a-z 0-9 . _ -)")
    path = write(tmp_path, "id,size\n.hidden,2\n", "dot.csv")
    assert error_of(path) == (f"{path}: line 2: id: invalid object id '.hidden': must start "
                              "with a letter or digit")
    path = write(tmp_path, "id,size\n,2\n", "empty.csv")
    assert error_of(path) == f"{path}: line 2: id: invalid object id '': must not be empty"
    path = write(tmp_path, "id,size\n" + "x" * 129 + ",2\n", "long.csv")
    assert error_of(path) == (f"{path}: line 2: id: invalid object id '{'x' * 37}...': 129 "
                              "characters, at most 128")


def test_repeated_id_names_both_lines(tmp_path):
    path = write(tmp_path, "id,size\nb,1\na,2\nc,3\na,4\n")
    assert error_of(path) == f"{path}: line 5: id: 'a' appears twice (first on line 3)"


def test_xxh3_and_release(tmp_path):
    path = write(tmp_path, f"id,size,xxh3\na,1,{H.upper()}\n")
    assert error_of(path) == (f"{path}: line 2: xxh3: '{H.upper()}' is not 32 lowercase hex "
                              "digits")
    path = write(tmp_path, "id,size,xxh3\na,1,abc\n", "short.csv")
    assert error_of(path) == f"{path}: line 2: xxh3: 'abc' is not 32 lowercase hex digits"
    path = write(tmp_path, "id,size,release\na,1,soon\n", "rel.csv")
    assert error_of(path) == (f"{path}: line 2: release: 'soon' is not an epoch second (a "
                              "whole number)")
    path = write(tmp_path, "id,size,release\na,1,1700000000.5\n", "frac.csv")
    assert "line 2: release: '1700000000.5' is not an epoch second" in error_of(path)


def test_first_bad_row_in_file_order_wins(tmp_path):
    # sorted by id the bad size (id "a") would come first; in the file the bad xxh3 does
    path = write(tmp_path, "id,size,xxh3\nz,1,nothex\na,oops,\n")
    assert error_of(path) == f"{path}: line 2: xxh3: 'nothex' is not 32 lowercase hex digits"


def test_line_numbers_count_blank_and_multiline_records(tmp_path):
    path = write(tmp_path, 'id,size,title\na,1,"two\nlines"\n\nb,x,t\n')
    assert error_of(path) == f"{path}: line 5: size: 'x' is not a whole number of bytes"


def test_missing_columns_and_empty_file(tmp_path):
    path = write(tmp_path, "id,bytes\na,1\n")
    assert error_of(path) == (f"{path}: line 1: no 'size' column (the header needs at least "
                              "id,size; found id,bytes)")
    path = write(tmp_path, "name,size\na,1\n", "noid.csv")
    assert error_of(path).startswith(f"{path}: line 1: no 'id' column")
    path = write(tmp_path, "", "empty.csv")
    assert error_of(path) == (f"{path}: line 1: empty; expected a header with at least "
                              "id,size")
    path = write(tmp_path, "id,size,id\na,1,b\n", "twice.csv")
    assert error_of(path) == f"{path}: line 1: column 'id' appears twice"


def test_unreadable_files(tmp_path):
    path = write(tmp_path, "id,size\na,1\nb,2,extra\n")
    assert error_of(path) == f"{path}: line 3: 3 fields, the header has 2"
    path = write(tmp_path, b"id,size,title\na,1,ok\nb,2,\xff\xfe\n", "latin.csv")
    assert error_of(path) == f"{path}: line 3: not UTF-8 text"
    missing = tmp_path / "nope.csv"
    assert error_of(missing) == f"{missing}: catalog file not found"


def test_large_catalog_loads(tmp_path):
    """200,000 rows in reverse order: all read, ids sorted (bench/test_catalog.py times it)."""
    n = 200_000
    rows = "".join(f"t{i // 4:06d}-e{i % 4}.mp4,{1000 + i},,t{i // 4:06d},e{i % 4},\n"
                   for i in reversed(range(n)))
    path = write(tmp_path, "id,size,xxh3,title,type,release\n" + rows)
    cat = load_catalog(path)
    assert len(cat) == n and len(cat.titles) == n // 4
    assert cat.ids[0] == "t000000-e0.mp4" and cat.size[0] == 1000
    assert (cat.ids[1:] > cat.ids[:-1]).all()
