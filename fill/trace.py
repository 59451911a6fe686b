"""Request traces for `oca-fill simulate`: read a CSV trace or an access log into arrays.

Two formats (docs/fill-simulate.md):

* **CSV** with a header holding ``ts,id,size`` and optionally ``bytes``: one request per
  line, ``ts`` epoch seconds, ``id`` the object, ``size`` the whole object's bytes,
  ``bytes`` what the request sent (default ``size``). Other columns are ignored. With a
  catalog, ``size`` may be left out (the catalog's is used). Plain or ``.gz``.
* **Access-log JSONL** (the appliance's own log, ``oca serve``): ``ts``, ``object``,
  ``status``, ``bytes``, ``range``, ``scope``; needs the catalog for object sizes. Lines
  count as the planner's log reader counts demand: malformed lines (a non-string
  ``scope`` among them), fill traffic (``scope`` ``"fill"``: copies between appliances,
  not views), other statuses, lines without an object and objects the catalog does not
  know are skipped and counted in ``Trace.skipped``.

Requests come back in time order (a stable sort, when the file was not). Objects are
numbered like the planner's catalog: by sorted id. Errors in a CSV trace name the file,
the line and the field.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fill.errors import InputError
from fill.model import Catalog

__all__ = ["NEVER", "Trace", "read_trace", "trace_catalog", "extend_catalog", "next_access"]

NEVER = np.iinfo(np.int64).max
"""`next_access` of a request whose object is not requested again."""

# Access-log statuses that are demand for the object, as fill/logs.py counts them: 200 and
# 206 with the body bytes sent; 302, 404 and 503 (the viewer wanted the object here and
# was sent elsewhere or refused: exactly the misses of the appliance that logged them)
# with the bytes asked; 304 with none. Other statuses are not demand.
_SERVED = (200, 206)
_WANTED = (302, 404, 503)
_NOT_MODIFIED = 304
# One range, RFC 9110 14.1.2: first-last, first- or -suffix. A list of ranges does not
# match and counts as the whole object, as in fill/logs.py.
_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$")

# polars writes a non-string value into a String column as its JSON text (5 -> "5", true
# -> "true", [1] -> "[1]"). A scope that could be such a text is read again with json to
# tell which it was (the rule of fill/logs.py's fast path).
_NOT_A_STRING = r"^(?:true|false|[-0-9\[{])"

_ROWS_PER_CHUNK = 1 << 20


@dataclass(frozen=True)
class Trace:
    """Requests in time order, each naming an object of `catalog` by number."""

    path: str
    catalog: Catalog  # the planner's view: the catalog file's objects, plus any only in the trace
    ts: np.ndarray  # float64 epoch seconds, non-decreasing
    obj: np.ndarray  # int64 object number
    bytes: np.ndarray  # int64 bytes the request sent
    not_in_catalog: int = 0  # objects of the trace the catalog file did not list (added to it)
    skipped: dict[str, int] = field(default_factory=dict)  # access log: lines skipped, by reason

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def size(self) -> np.ndarray:
        """int64 size of each request's object."""
        return self.catalog.size[self.obj]


def next_access(obj: np.ndarray) -> np.ndarray:
    """For request i, the index j > i of the next request of the same object, or `NEVER`.

    This is what offline (Belady) caches need per request; indices are 0-based positions
    in *obj*.
    """
    obj = np.asarray(obj)
    order = np.argsort(obj, kind="stable")  # by object, then by position
    nxt = np.full(len(obj), NEVER, dtype=np.int64)
    same = obj[order[1:]] == obj[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def trace_catalog(ids: np.ndarray, size: np.ndarray) -> Catalog:
    """A catalog of the objects of a trace when no catalog file is given: each object is
    its own title, with no release date."""
    n = len(ids)
    return Catalog(ids=np.asarray(ids, dtype=object), size=np.asarray(size, dtype=np.int64),
                   xxh3=np.full(n, None, dtype=object), title=np.arange(n, dtype=np.int32),
                   titles=tuple(ids.tolist()), kind=np.full(n, None, dtype=object),
                   release=np.full(n, np.nan))


def extend_catalog(catalog: Catalog, ids: np.ndarray, size: np.ndarray) -> Catalog:
    """*catalog* with the objects *ids* (sorted, none of them in it) added, each its own
    title with no release date; objects renumbered by sorted id."""
    if len(ids) == 0:
        return catalog
    extra = trace_catalog(ids, size)
    all_ids = np.concatenate([catalog.ids, extra.ids])
    order = np.argsort(all_ids.astype(str), kind="stable")

    def cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, b])[order]

    return Catalog(ids=all_ids[order], size=cat(catalog.size, extra.size),
                   xxh3=cat(catalog.xxh3, extra.xxh3),
                   title=cat(catalog.title, extra.title + len(catalog.titles)).astype(np.int32),
                   titles=catalog.titles + extra.titles, kind=cat(catalog.kind, extra.kind),
                   release=cat(catalog.release, extra.release))


def read_trace(path: str | Path, catalog: Catalog | None = None) -> Trace:
    """Read a CSV trace or an access log (JSONL, needs *catalog*); see the module doc."""
    path = Path(path)
    if _is_jsonl(path):
        if catalog is None:
            raise InputError(f"{path}: an access log has no object sizes; give --catalog")
        return _read_jsonl(path, catalog)
    return _read_csv(path, catalog)


def _is_jsonl(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson", ".log")):
        return True
    if name.endswith((".csv", ".tsv")):
        return False
    try:
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    return line.lstrip().startswith("{")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    return False


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


# ---------------------------------------------------------------------------------- CSV


def _read_csv(path: Path, catalog: Catalog | None) -> Trace:
    try:
        with _open_text(path) as f:
            header = next(csv.reader([f.readline()]), [])
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} line 1: not UTF-8 text") from None
    header = [h.strip() for h in header]
    need = ["ts", "id"] + ([] if catalog is not None else ["size"])
    for col in need:
        if col not in header:
            raise InputError(f"{path} line 1: no column {col!r} in the header "
                             f"({','.join(header) or 'empty'}); expected ts,id,size[,bytes]")
    cols = {c: header.index(c) for c in ("ts", "id", "size", "bytes") if c in header}
    ts, code, uids, size, nbytes = _csv_columns(path, cols)
    if len(ts) == 0:
        raise InputError(f"{path}: no requests (only a header)")
    return _assemble(path, ts, code, uids, size, nbytes, catalog)


def _csv_columns(path: Path, cols: dict[str, int]):
    """(ts, id code, unique ids sorted, size or None, bytes or None) of every data line;
    id code i means uids[i]."""
    fast = _csv_columns_polars(path, cols)
    if fast is not None:
        return fast
    return _csv_columns_checked(path, cols)


def _csv_columns_polars(path: Path, cols: dict[str, int]):
    """The columns by polars (fast), or None when polars is missing or the file has a line
    it cannot parse: the checked reader then finds that line and names it."""
    try:
        import polars as pl
    except ImportError:
        return None
    types = {"ts": pl.Float64, "id": pl.String, "size": pl.Int64, "bytes": pl.Int64}
    try:
        df = pl.read_csv(path, columns=list(cols), schema_overrides={c: types[c] for c in cols},
                         has_header=True, encoding="utf8")
    except Exception:  # noqa: BLE001 - any parse problem: let the checked reader name it
        return None
    if df.select(pl.any_horizontal(pl.all().is_null().any())).item():
        return None
    ids = df["id"].unique().sort()
    numbers = pl.DataFrame({"id": ids, "n": np.arange(len(ids), dtype=np.int64)})
    code = df.select("id").join(numbers, on="id", how="left", maintain_order="left")["n"]
    return (df["ts"].to_numpy(), code.to_numpy(), np.asarray(ids.to_list(), dtype=object),
            df["size"].to_numpy() if "size" in cols else None,
            df["bytes"].to_numpy() if "bytes" in cols else None)


def _csv_columns_checked(path: Path, cols: dict[str, int]):
    """The columns by the csv module, chunk by chunk; the first bad field is an InputError
    naming its line."""
    ts_parts, code_parts, size_parts, bytes_parts = [], [], [], []
    codes: dict[str, int] = {}
    width = max(cols.values()) + 1
    try:
        with _open_text(path) as f:
            rows = csv.reader(f)
            next(rows, None)
            for first_line, chunk in _chunks(rows):
                for k, row in enumerate(chunk):
                    if len(row) < width:
                        raise InputError(f"{path} line {first_line + k}: {len(row)} fields, "
                                         f"expected at least {width}")
                ts_parts.append(_column(path, chunk, first_line, cols["ts"], "ts", float))
                ids = [row[cols["id"]] for row in chunk]
                for k, oid in enumerate(ids):
                    if not oid:
                        raise InputError(f"{path} line {first_line + k}: field id: empty")
                code_parts.append(np.fromiter((codes.setdefault(i, len(codes)) for i in ids),
                                              dtype=np.int64, count=len(ids)))
                if "size" in cols:
                    size_parts.append(_column(path, chunk, first_line, cols["size"], "size", int))
                if "bytes" in cols:
                    bytes_parts.append(_column(path, chunk, first_line, cols["bytes"], "bytes",
                                               int))
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    # Renumber ids from first-seen order to sorted order.
    seen = np.asarray(list(codes), dtype=object)
    order = np.argsort(seen.astype(str), kind="stable")
    rank = np.empty(len(seen), dtype=np.int64)
    rank[order] = np.arange(len(seen))
    code = rank[np.concatenate(code_parts)] if code_parts else np.zeros(0, np.int64)

    def cat(parts, dtype):
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    return (cat(ts_parts, np.float64), code, seen[order],
            cat(size_parts, np.int64) if "size" in cols else None,
            cat(bytes_parts, np.int64) if "bytes" in cols else None)


def _chunks(rows: Iterator[list[str]]) -> Iterator[tuple[int, list[list[str]]]]:
    """(line number of the chunk's first row, rows); data starts on line 2."""
    line = 2
    while True:
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == _ROWS_PER_CHUNK:
                break
        if not chunk:
            return
        yield line, chunk
        line += len(chunk)


def _column(path: Path, chunk: list[list[str]], first_line: int, col: int, name: str,
            kind: type) -> np.ndarray:
    values = [row[col] for row in chunk]
    try:
        if kind is float:
            return np.array(values, dtype=np.float64)
        return np.array([int(v) for v in values], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    for k, v in enumerate(values):
        try:
            kind(v)
        except (ValueError, OverflowError):
            what = "a number" if kind is float else "an integer"
            raise InputError(f"{path} line {first_line + k}: field {name}: {v!r} is not "
                             f"{what}") from None
    raise AssertionError("unreachable")


def _assemble(path: Path, ts: np.ndarray, code: np.ndarray, uids: np.ndarray,
              size: np.ndarray | None, nbytes: np.ndarray | None,
              catalog: Catalog | None) -> Trace:
    """Check values (naming the line of the first bad one), number objects like the
    planner's catalog and sort by time."""

    def fail(row: int, msg: str) -> InputError:
        return InputError(f"{path} line {int(row) + 2}: {msg}")

    bad = np.flatnonzero(~np.isfinite(ts))
    if len(bad):
        raise fail(bad[0], f"field ts: {ts[bad[0]]} is not a time")
    if size is not None:
        bad = np.flatnonzero(size <= 0)
        if len(bad):
            raise fail(bad[0], f"field size: {size[bad[0]]} (must be > 0)")
        # One size per object: the first line's; every later line must agree with it.
        first = np.full(len(uids), len(code), dtype=np.int64)
        np.minimum.at(first, code, np.arange(len(code)))
        obj_size = size[first]
        bad = np.flatnonzero(size != obj_size[code])
        if len(bad):
            f = first[code[bad[0]]]
            raise fail(bad[0], f"field size: {size[bad[0]]} for {uids[code[bad[0]]]!r}, which "
                       f"had size {size[f]} on line {f + 2}")

    not_in_catalog = 0
    if catalog is None:
        cat = trace_catalog(uids, obj_size)
        obj = code
    else:
        pos = np.searchsorted(catalog.ids.astype(str), uids.astype(str))
        pos = np.minimum(pos, len(catalog) - 1)
        known = catalog.ids[pos] == uids
        if size is None and not known.all():
            u = np.flatnonzero(~known)[0]
            raise fail(np.flatnonzero(code == u)[0],
                       f"field id: {uids[u]!r} is not in the catalog, and the trace has no "
                       f"size column")
        if size is not None:
            wrong = known & (catalog.size[pos] != obj_size)
            if wrong.any():
                u = np.flatnonzero(wrong)[0]
                raise fail(np.flatnonzero(code == u)[0],
                           f"field size: {obj_size[u]} for {uids[u]!r}, but the catalog says "
                           f"{catalog.size[pos[u]]}")
        not_in_catalog = int((~known).sum())
        cat = extend_catalog(catalog, uids[~known], obj_size[~known] if size is not None
                             else np.zeros(0, np.int64))
        number = np.searchsorted(cat.ids.astype(str), uids.astype(str))
        obj = number[code]
    req_size = cat.size[obj]
    if nbytes is None:
        nbytes = req_size.copy()
    else:
        bad = np.flatnonzero((nbytes < 0) | (nbytes > req_size))
        if len(bad):
            raise fail(bad[0], f"field bytes: {nbytes[bad[0]]} (must be in 0..size "
                       f"{req_size[bad[0]]})")
    if len(ts) > 1 and (np.diff(ts) < 0).any():
        order = np.argsort(ts, kind="stable")
        ts, obj, nbytes = ts[order], obj[order], nbytes[order]
    return Trace(path=str(path), catalog=cat, ts=np.ascontiguousarray(ts, dtype=np.float64),
                 obj=np.ascontiguousarray(obj, dtype=np.int64),
                 bytes=np.ascontiguousarray(nbytes, dtype=np.int64),
                 not_in_catalog=not_in_catalog)


# ---------------------------------------------------------------------------- access log


def _asked(rng: object, size: int) -> int:
    """Bytes a refused or redirected request asked for: its one range, else the object."""
    m = _RANGE.match(rng) if isinstance(rng, str) else None
    if not m or not (m.group(1) or m.group(2)):
        return size
    first, last = m.group(1), m.group(2)
    if first and last:
        return size if int(last) < int(first) else max(min(int(last), size - 1) - int(first)
                                                         + 1, 0)
    if first:
        return max(size - int(first), 0)
    return min(int(last), size)


def _read_jsonl(path: Path, catalog: Catalog) -> Trace:
    import polars as pl

    from fill.logs import FILL_SCOPE

    numbers = pl.DataFrame({"object": pl.Series(catalog.ids.tolist(), dtype=pl.String),
                            "n": np.arange(len(catalog), dtype=np.int64)})
    sizes = catalog.size
    ts_parts, obj_parts, bytes_parts = [], [], []
    skipped = {"malformed": 0, "fill": 0, "status": 0, "no_object": 0, "unknown_object": 0}
    try:
        for df in _jsonl_frames(path):
            ts = df["ts"].fill_null(np.nan).to_numpy()
            status = df["status"].fill_null(_MISSING).to_numpy()
            sent = df["bytes"].fill_null(-1).to_numpy()
            bad = np.isnan(ts) | (status == _MISSING) | (sent < 0)
            skipped["malformed"] += int(bad.sum())
            valid = ~bad
            scope = df["scope"]
            if scope.null_count() < len(scope):  # no scope on viewer lines: most logs
                fill = valid & (scope == FILL_SCOPE).fill_null(False).to_numpy()
                skipped["fill"] += int(fill.sum())
                valid &= ~fill
            none = valid & df["object"].is_null().to_numpy()
            skipped["no_object"] += int(none.sum())
            obj = (df.select("object").join(numbers, on="object", how="left",
                                            maintain_order="left")["n"]
                   .fill_null(-1).to_numpy())
            unknown = valid & ~none & (obj < 0)
            skipped["unknown_object"] += int(unknown.sum())
            ok = valid & ~none & ~unknown
            served = ok & np.isin(status, _SERVED)
            wanted = ok & np.isin(status, _WANTED)
            not_modified = ok & (status == _NOT_MODIFIED)
            skipped["status"] += int((ok & ~served & ~wanted & ~not_modified).sum())
            keep = served | wanted | not_modified
            size = sizes[np.where(keep, obj, 0)]
            # Multipart/byteranges framing can exceed the object: cap at its size.
            nbytes = np.where(served, np.minimum(sent, size), 0)
            asked = np.flatnonzero(wanted)
            if asked.size:
                rng = df["range"].gather(asked).to_list()
                nbytes[asked] = [_asked(r, int(z)) for r, z in zip(rng, size[asked],
                                                                      strict=True)]
            ts_parts.append(ts[keep])
            obj_parts.append(obj[keep])
            bytes_parts.append(nbytes[keep])
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    ts_a = np.concatenate(ts_parts) if ts_parts else np.zeros(0)
    if not len(ts_a):
        raise InputError(f"{path}: no request for an object of the catalog "
                         f"(skipped: {skipped})")
    obj_a = np.concatenate(obj_parts)
    b_a = np.concatenate(bytes_parts).astype(np.int64)
    order = np.argsort(ts_a, kind="stable")
    return Trace(path=str(path), catalog=catalog, ts=ts_a[order], obj=obj_a[order],
                 bytes=b_a[order], skipped={k: v for k, v in skipped.items() if v})


_MISSING = np.iinfo(np.int64).min  # status of a malformed line
_JSONL_BLOCK = 64 << 20  # uncompressed bytes parsed at a time


def _jsonl_frames(path: Path):
    """Frames of (ts, object, status, bytes, range, scope), a block of lines at a time, a
    malformed line as a row with null ts. polars parses a block (the reading of
    fill/logs.py); a block it rejects is parsed line by line with the json module."""
    import polars as pl

    schema = {"ts": pl.Float64, "object": pl.String, "status": pl.Int64, "bytes": pl.Int64,
              "range": pl.String, "scope": pl.String}
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as f:
        carry = b""
        while True:
            piece = f.read(_JSONL_BLOCK)
            data = carry + piece
            if not piece:
                carry = b""
            else:
                cut = data.rfind(b"\n") + 1
                data, carry = data[:cut], data[cut:]
            if data.strip():
                frame = _jsonl_polars(data, schema)
                if frame is None:
                    frame = pl.DataFrame(_jsonl_rows(data), schema=schema, orient="row")
                yield frame
            if not piece:
                return


def _jsonl_polars(data: bytes, schema: dict):
    """polars' rows of *data* by the rules of _jsonl_rows, or None when polars rejects the
    block. A row whose scope may not have been a string (_NOT_A_STRING; none in logs of
    viewer and fill lines) is read again by _jsonl_rows, and made malformed (ts null) when
    that says so."""
    import polars as pl

    try:
        frame = pl.read_ndjson(data, schema=schema)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        return None
    scope = frame["scope"]
    if scope.null_count() == len(scope):
        return frame
    doubt = np.flatnonzero(scope.str.contains(_NOT_A_STRING).fill_null(False).to_numpy())
    if not doubt.size:
        return frame
    # polars skips lines of JSON whitespace and makes one row of every other line; should
    # a block ever not match that, the json module reads it all.
    lines = [line for line in data.split(b"\n") if line.strip(b" \t\r")]
    if len(lines) != frame.height:
        return None
    again = _jsonl_rows(b"\n".join(lines[i] for i in doubt.tolist()))
    if len(again) != doubt.size:
        return None
    bad = np.zeros(frame.height, dtype=bool)
    bad[doubt] = [row[0] is None for row in again]
    if not bad.any():
        return frame
    return frame.with_columns(
        pl.when(pl.Series(bad)).then(None).otherwise(pl.col("ts")).alias("ts"))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _jsonl_rows(data: bytes) -> list[tuple]:
    """The rows of _jsonl_frames read line by line with json; a malformed line (not a JSON
    object; ts, status or bytes missing or of the wrong kind; object or scope neither a
    string nor null) is a row of nulls."""
    rows = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            t, o, st, b = rec.get("ts"), rec.get("object"), rec.get("status"), rec.get("bytes")
            s = rec.get("scope")
            if (isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)
                    or isinstance(st, bool) or not isinstance(st, int) or abs(st) >= 1 << 63
                    or isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < 1 << 63
                    or not (o is None or isinstance(o, str))
                    or not (s is None or isinstance(s, str))):
                raise ValueError
        except (ValueError, AttributeError):  # UnicodeDecodeError is a ValueError
            rows.append((None,) * 6)
            continue
        r = rec.get("range")
        rows.append((float(t), o, st, b, r if isinstance(r, str) else None, s))
    return rows
