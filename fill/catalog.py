"""The catalog: one CSV row per object (one encode of one title), read into a Catalog.

Format (DESIGN.md, "Fill planner command"; docs/fill-inputs.md)::

    id,size,xxh3,title,type,release
    t1-1080p.mp4,4294967296,0123456789abcdef0123456789abcdef,t1,1080p,1700000000

``id`` and ``size`` are required columns, the others optional; columns not named here
are ignored. ``size`` is plain bytes (no K/M/G/T: a catalog is written by a program,
and a suffix would round the size the fill agent verifies). Empty ``xxh3``, ``type`` and
``release`` mean unknown; an empty ``title`` makes the object its own title. Blank lines
are skipped. Any bad value is an InputError naming the file, the line (the header is
line 1) and the column, e.g. ``catalog.csv: line 17: size: 'abc' is not a whole number
of bytes``; when several rows are bad, the first one is named.

1M rows load in about 1.5 s: polars reads every column as a string, every check is one
vectorized expression, and the rows are numbered only when a message needs a line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import polars as pl

from oca.ids import BadIdError, check_id

from .errors import InputError
from .model import Catalog

__all__ = ["load_catalog", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS"]

REQUIRED_COLUMNS = ("id", "size")
OPTIONAL_COLUMNS = ("xxh3", "title", "type", "release")

# Same language as oca.ids (rust regex: `$` is the end of the text, like Python's \Z).
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_DIGITS = r"^[0-9]+$"
_XXH3 = r"^[0-9a-f]{32}$"


def load_catalog(path: str | os.PathLike) -> Catalog:
    """Read and validate the catalog CSV at *path*; objects come back sorted by id.

    Raises InputError naming the file, line and column of the first bad value, a missing
    ``id`` or ``size`` column, a repeated id, or a file that is not CSV.
    """
    file = Path(path)
    header = _read_header(file)
    wanted = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in header]
    try:
        df = pl.read_csv(file, infer_schema=False, columns=wanted, encoding="utf8",
                         raise_if_empty=False)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise _unreadable(file, len(header), e) from None
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    # polars turns a blank line into a row of nulls; keep the row number (for messages)
    # and drop such rows.
    df = df.with_row_index("_row").filter(
        ~pl.all_horizontal(pl.col(c).is_null() for c in wanted))
    if not df["id"].is_sorted():
        df = df.sort("id", maintain_order=True)
    _validate(file, df)

    df = df.with_columns(
        pl.col("size").cast(pl.Int64),
        pl.col("release").cast(pl.Float64),
        pl.coalesce("title", "id").alias("title"),
    )
    # Titles numbered in sorted order; objects of one title are mostly adjacent in id
    # order, so this rank is cheap.
    titles = df["title"].unique().sort()
    title_idx = (df["title"].rank("dense") - 1).cast(pl.Int32)
    return Catalog(
        ids=_object_array(df["id"]),
        size=df["size"].to_numpy().astype(np.int64, copy=False),
        xxh3=_object_array(df["xxh3"]),
        title=title_idx.to_numpy().astype(np.int32, copy=False),
        titles=tuple(titles.to_list()),
        kind=_object_array(df["type"], few_values=True),
        release=df["release"].fill_null(float("nan")).to_numpy().astype(np.float64,
                                                                         copy=False),
    )


def _object_array(s: pl.Series, few_values: bool = False) -> np.ndarray:
    """A numpy object array of str (None for null), as the model wants it."""
    if s.null_count() == len(s):
        return np.full(len(s), None, dtype=object)
    if few_values:  # e.g. `type`: one str object per distinct value, not per row
        values = s.unique(maintain_order=True)
        codes = s.replace_strict(values, pl.int_range(len(values), eager=True),
                                 return_dtype=pl.Int64, default=len(values))
        table = np.array(values.to_list() + [None], dtype=object)
        return table[codes.fill_null(len(values)).to_numpy()]
    return s.to_numpy().astype(object, copy=False)


def _read_header(file: Path) -> list[str]:
    try:
        with open(file, "rb") as f:
            first = f.readline()
    except FileNotFoundError:
        raise InputError(f"{file}: catalog file not found") from None
    except OSError as e:
        raise InputError(f"{file}: cannot read catalog: {e.strerror or e}") from None
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{file}: line 1: not UTF-8 text") from None
    header = next(csv.reader([text.rstrip("\r\n")]), None)
    if not header:
        raise InputError(f"{file}: line 1: empty; expected a header with at least id,size")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"{file}: line 1: column {name!r} appears twice")
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            raise InputError(f"{file}: line 1: no {name!r} column (the header needs at least "
                             f"id,size; found {','.join(header)})")
    return header


def _show(value: str | None) -> str:
    if value is None:
        return "''"
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _validate(file: Path, df: pl.DataFrame) -> None:
    """Raise InputError for the first bad row in file order; *df* is sorted by id."""
    ids, size, xxh3, release = (pl.col(c) for c in ("id", "size", "xxh3", "release"))
    checks = {  # name -> expression true on a bad row (this order decides ties)
        "id": ids.is_null() | ~ids.str.contains(_ID_PATTERN),
        # sorted by id, with file order kept among equal ids: a repeat follows its first
        "repeat": (ids == ids.shift(1)).fill_null(False),
        "size": size.is_null() | ~size.str.contains(_DIGITS)
        | size.cast(pl.Int64, strict=False).is_null(),
        "xxh3": xxh3.is_not_null() & ~xxh3.str.contains(_XXH3),
        "release": release.is_not_null() & (~release.str.contains(_DIGITS)
                                             | release.cast(pl.Int64, strict=False).is_null()),
    }
    bad = df.select(pl.col("_row").filter(e).min().alias(k) for k, e in checks.items()).row(0)
    found = [(row, i) for i, row in enumerate(bad) if row is not None]
    if not found:
        return
    row, i = min(found)
    check = list(checks)[i]
    rec = df.filter(pl.col("_row") == row).row(0, named=True)
    line = _line_of(file, row)
    if check == "id":
        try:
            check_id(rec["id"] or "")
            reason = f"invalid object id {_show(rec['id'])}"
        except BadIdError as e:
            reason = str(e)
        message = f"id: {reason}"
    elif check == "repeat":
        first = df.filter(pl.col("id") == rec["id"])["_row"].min()
        message = f"id: {_show(rec['id'])} appears twice (first on line {_line_of(file, first)})"
    elif check == "size":
        message = f"size: {_show(rec['size'])} is not a whole number of bytes"
    elif check == "xxh3":
        message = f"xxh3: {_show(rec['xxh3'])} is not 32 lowercase hex digits"
    else:
        message = f"release: {_show(rec['release'])} is not an epoch second (a whole number)"
    raise InputError(f"{file}: line {line}: {message}")


def _line_of(file: Path, row: int) -> int:
    """The line on which data row *row* (0-based, blank lines counted as rows) starts.

    Found by reading the file again with the csv module: only needed for a message, and
    a quoted field may span lines, so row + 2 is not always right.
    """
    with open(file, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        line_end = 0
        for i, _record in enumerate(reader):
            if i == row + 1:
                return line_end + 1
            line_end = reader.line_num
    return row + 2


def _unreadable(file: Path, n_columns: int, error: Exception) -> InputError:
    """An InputError for a file polars could not parse, naming the line when we can."""
    try:
        with open(file, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return InputError(f"{file}: line {number}: not UTF-8 text")
        with open(file, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            line = 1
            for record in reader:
                if len(record) > n_columns:
                    return InputError(f"{file}: line {line}: {len(record)} fields, the header "
                                      f"has {n_columns}")
                line = reader.line_num + 1
    except csv.Error as e:
        return InputError(f"{file}: line {line}: not CSV: {e}")
    except OSError as e:
        return InputError(f"{file}: cannot read catalog: {e.strerror or e}")
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return InputError(f"{file}: not a readable CSV file: {first}")
