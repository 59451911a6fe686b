"""Demand from the appliances' access logs: decayed requests per site and object.

The logs are the JSON lines of oca/http/accesslog.py, plain or gzip (told by the magic
bytes, not the name), a few GB in many files. They are streamed in three threads: one
reads (and inflates) 16 MiB blocks cut at a line end, one parses each block with polars
(simd-json) into columns, and the caller's folds the columns into running sums with
numpy. Memory stays at a few blocks plus the sums, whatever the size of the logs (1.8 GB
peak with the catalog for bench/fill/scale.py's 50M lines, 100 x 10 appliances, 1M
objects). ~1 CPU-second per million lines; docs/fill-inputs.md has the measurements.

What counts (docs/fill-inputs.md has the full rules):

* a line is **malformed** when it is not a JSON object or lacks a numeric ``ts``, a whole
  ``status`` or a whole non-negative ``bytes``, or has a non-string ``object`` or
  ``scope``. It is counted and skipped; one warning names how many and the first one.
* ``scope`` ``"fill"``: a copy of the object to another appliance during the nightly fill,
  not a view. Counted in ``fill_lines`` and ``fill_bytes`` (its body ``bytes``) and
  nothing else: no demand, no time span, whatever its object or status. ``scope`` absent,
  null or any other string (``"viewer"``) is a viewer's request.
* ``object`` null or absent (a URL that named no object), or not in the catalog
  (``unknown_objects``): no demand.
* by status: 200 and 206 are demand with their body bytes; 302, 404 and 503 (the viewer
  wanted the object here but was sent elsewhere or refused) are demand with the bytes
  asked: the single range's length, else the object's size; 304 is a request with
  0 bytes; any other status (400, 403, 416, 500, ...) is not demand (``ignored_status``).
* ``appliance`` names the site through the topology; absent or unknown: model.FLEET.
* a request at ``ts`` weighs ``0.5 ** ((now - ts) / half_life)`` in ``requests`` and
  ``bytes`` and the same with ``recent_half_life`` in ``recent``; a line after ``now``
  (clock skew between appliances and planner) weighs 1.

Sums are added line by line in file order (``np.add.at``), so the result does not depend
on where blocks are cut: a log and its gzip give identical Demand.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from isal import isal_zlib

from .errors import InputError
from .model import FLEET, Catalog, Demand, Topology

__all__ = ["read_demand", "LogDemand", "FIRST_DAY", "BLOCK_BYTES", "BODY_STATUSES",
           "WANTED_STATUSES", "NOT_MODIFIED", "FILL_SCOPE"]

log = logging.getLogger(__name__)

BLOCK_BYTES = 16 << 20
"""Uncompressed bytes parsed at a time: large enough that polars' per-call cost vanishes
(~60 ms of parsing per block), and under glibc's largest mmap threshold (32 MiB), so
block buffers are reused from the heap instead of being mapped and faulted in anew."""

FIRST_DAY = 86400.0
"""Seconds after an object's catalog `release` counted into Demand.first_day."""

BODY_STATUSES = (200, 206)
WANTED_STATUSES = (302, 404, 503)
NOT_MODIFIED = 304
FILL_SCOPE = "fill"
"""The ``scope`` of fill traffic's lines (DESIGN.md, access log): copies, not views."""

# Compressed bytes read at a time from a .gz file, and uncompressed bytes inflated at a
# time. A read inflates to less than a piece (logs compress ~6:1), so each call takes all
# its input: a call stopped by max_length copies the rest of the input into
# unconsumed_tail, and 4 MiB reads cut into 1 MiB pieces cost 40 % more CPU.
_RAW_READ = 256 << 10
_INFLATE_PIECE = 4 << 20
_PEEK = 1 << 20  # bytes looked at to find a block's last newline
_GZIP_MAGIC = b"\x1f\x8b"
_SCHEMA = {"ts": pl.Float64, "appliance": pl.String, "object": pl.String,
           "status": pl.Int64, "bytes": pl.Int64, "range": pl.String, "scope": pl.String}
# polars writes a value that is not a string into a String column as its JSON text (5 ->
# "5", true -> "true", [1] -> "[1]"), where json.loads sees a number, a bool, a list. A
# scope that could be such a text is read again with json to tell which it was.
_NOT_A_STRING = r"^(?:true|false|[-0-9\[{])"
_PIECE_LINES = 2048  # a block that fails to parse is retried in pieces of this many lines
_RANGE_RE = r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$"  # one range; a list does not match
_INT64 = 1 << 63
_ROOM = 1 << 26  # (site, object) pairs the sums have room for (virtually) before growing
_COPY_ROWS = 1 << 20  # rows of sums copied out into Demand at a time


def read_demand(paths: Iterable[str | os.PathLike], catalog: Catalog, topology: Topology,
                now: float, half_life: float, recent_half_life: float,
                on_bytes: Callable[[int], None] | None = None) -> LogDemand:
    """Stream the access logs at *paths* into decayed demand per (site, object).

    ``Demand.sites`` is the topology's sites in order, then model.FLEET; rows are sorted
    by (site, object). Lines of fill traffic are no demand: they are counted in
    ``fill_lines`` and ``fill_bytes``. *half_life* and *recent_half_life* are in seconds.
    *on_bytes* is called with the number of file bytes (compressed, for gzip) consumed
    since its previous call, for a progress bar. Raises InputError when a file cannot be
    opened; a damaged gzip stream is a warning and the rest of that file is skipped.
    """
    if not (half_life > 0 and recent_half_life > 0):
        raise ValueError("half_life and recent_half_life must be greater than zero")
    files = [Path(p) for p in paths]
    for f in files:
        if not os.access(f, os.R_OK) or f.is_dir():
            reason = "not found" if not f.exists() else "not a readable file"
            raise InputError(f"{f}: access log {reason}")
    # Three stages, each a thread: read (and inflate) -> parse -> sum. Reading, inflating
    # and polars release the GIL, so on two cores parsing one block overlaps summing the
    # one before and reading the one after. They start before the lookups below are
    # built (0.4 s for 1M objects).
    blocks = _Prefetch(_blocks_of(files))
    parsed = _Prefetch((block, _parse(block.data)) for block in blocks)
    try:
        sites = [s.name for s in topology.sites] + [FLEET]
        objects = _StringIndex(pl.Series(catalog.ids.tolist(), dtype=pl.String))
        site_of = topology.site_of()
        appliances = pl.Enum(sorted(site_of))  # a few thousand names: an Enum cast is fastest
        group_of_appliance = np.array(
            [sites.index(site_of[a]) for a in appliances.categories] + [len(sites) - 1],
            dtype=np.int64)
        sums = _Sums(len(sites), catalog, now, half_life, recent_half_life)
        seen = _Seen()
        for block, frame in parsed:
            seen.lines += frame.height
            sums.add_block(frame, objects, appliances, group_of_appliance, seen, block)
            if on_bytes is not None and block.consumed:
                on_bytes(block.consumed)
    finally:
        parsed.close()  # first: its thread may be waiting for a block
        blocks.close()

    if seen.malformed:
        log.warning("%d of %d access-log lines malformed, skipped (first: %s)",
                    seen.malformed, seen.lines, seen.first_malformed)
    if seen.unknown_objects:
        log.info("%d access-log lines name objects not in the catalog", seen.unknown_objects)
    if seen.fill_lines:
        log.info("%d access-log lines of fill traffic (%d bytes) left out of demand",
                 seen.fill_lines, seen.fill_bytes)
    return sums.demand(sites, seen)


@dataclass
class _Seen:
    """Counters over all lines, and where the first malformed line was."""

    lines: int = 0
    malformed: int = 0
    unknown_objects: int = 0
    ignored_status: int = 0
    fill_lines: int = 0
    fill_bytes: int = 0
    first_malformed: str = ""


@dataclass
class LogDemand(Demand):
    """Demand as read from access logs, and the fill traffic they showed besides: valid
    lines of ``scope`` ``"fill"`` (copies between appliances, not views; in no other
    figure but ``lines``) and the body bytes they sent."""

    fill_lines: int = 0
    fill_bytes: int = 0


@dataclass
class _Block:
    path: Path
    data: bytes  # whole lines (the last block of a file may lack the final newline)
    offset: int  # where data starts in the file (uncompressed)
    consumed: int  # file bytes read since the previous block


# --- reading -------------------------------------------------------------------------


def _blocks_of(files: list[Path]) -> Iterator[_Block]:
    for path in files:
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed by the `with` below)
        except OSError as e:
            raise InputError(f"{path}: cannot read access log: {e.strerror or e}") from None
        with f:
            if os.pread(f.fileno(), 2, 0) == _GZIP_MAGIC:
                yield from _gzip_blocks(path, f)
            else:
                yield from _plain_blocks(path, f.fileno())


def _plain_blocks(path: Path, fd: int) -> Iterator[_Block]:
    """Blocks of whole lines, each read straight into its own bytes object: finding
    where to cut first (by peeking back from the block's end) spares copying ~1 GB per
    GB of log, which costs as much CPU as reading it."""
    size = os.fstat(fd).st_size
    pos = 0
    while pos < size:
        end = _line_end(fd, pos, size)
        data = os.pread(fd, end - pos, pos)
        if not data:  # the file was truncated under us
            return
        yield _Block(path, data, pos, len(data))
        pos += len(data)


def _line_end(fd: int, pos: int, size: int) -> int:
    """End (after the newline) of the last line that starts before pos + BLOCK_BYTES."""
    end = pos + BLOCK_BYTES
    if end >= size:
        return size
    start = max(pos, end - _PEEK)
    cut = os.pread(fd, end - start, start).rfind(b"\n")
    if cut >= 0:
        return start + cut + 1
    while end < size:  # a line longer than the peek: read on to its end
        window = os.pread(fd, _PEEK, end)
        cut = window.find(b"\n")
        if cut >= 0:
            return end + cut + 1
        end += len(window) or size
    return size


def _gzip_blocks(path: Path, f) -> Iterator[_Block]:
    """Blocks of whole lines from the inflated pieces, each joined once: the piece
    holding the block's last newline is the only one split (a copy of at most
    _INFLATE_PIECE bytes, where cutting the joined block would copy all of it)."""
    pieces: list[bytes] = []
    size = 0
    last_nl = -1  # index in pieces of the last piece that holds a newline
    offset = 0
    consumed = 0
    for piece, n in _inflate(path, f):
        consumed += n
        if not piece:
            continue
        pieces.append(piece)
        size += len(piece)
        if b"\n" in piece:
            last_nl = len(pieces) - 1
        if size < BLOCK_BYTES or last_nl < 0:
            continue
        split = pieces[last_nl]
        cut = split.rfind(b"\n") + 1
        rest = pieces[last_nl + 1:]
        if cut < len(split):
            pieces[last_nl] = split[:cut]
            rest.insert(0, split[cut:])
        data = b"".join(pieces[:last_nl + 1])
        yield _Block(path, data, offset, consumed)
        offset += len(data)
        consumed = 0
        pieces = rest
        size = sum(map(len, rest))
        last_nl = -1  # the rest follows the block's last newline
    if pieces or consumed:
        yield _Block(path, b"".join(pieces), offset, consumed)


def _inflate(path: Path, f) -> Iterator[tuple[bytes, int]]:
    """(uncompressed bytes, file bytes read since the previous piece) of the gzip members
    one after another (as `cat a.gz b.gz` makes), _INFLATE_PIECE at most at a time. Damage
    is a warning, not an error. ISA-L inflates the same bytes as zlib 2.7x as fast
    (0.15 vs 0.39 CPU-s per 250 MB of log)."""
    z = isal_zlib.decompressobj(wbits=31)
    consumed = 0  # file bytes read since the last yield
    total = 0
    while raw := f.read(_RAW_READ):
        consumed += len(raw)
        total += len(raw)
        data = raw
        while True:
            if z.eof:  # a member ended: another follows, or zero padding
                if not data.strip(b"\x00"):
                    break
                z = isal_zlib.decompressobj(wbits=31)
            try:
                piece = z.decompress(data, _INFLATE_PIECE)
            except isal_zlib.error as e:
                log.warning("%s: damaged gzip data before byte %d (%s); the rest of the "
                            "file is skipped", path, total, e)
                yield b"", consumed
                return
            if piece:
                yield piece, consumed
                consumed = 0
            if z.eof:
                # The input after the member is left in unused_data *and*, when
                # max_length stopped the call, in unconsumed_tail: take it once.
                data = z.unused_data
                if not data:
                    break
                continue
            data = z.unconsumed_tail
            if not data and len(piece) < _INFLATE_PIECE:
                break  # input used up, and no output left waiting behind max_length
    if not z.eof:
        log.warning("%s: gzip stream ends early (a truncated file?); its last line may "
                    "count as malformed", path)
    if consumed:
        yield b"", consumed


class _Prefetch:
    """Iterator over *items* produced in a thread, *depth* ahead, from the moment it is
    made: reading and inflating (which release the GIL) overlap parsing, and the first
    blocks are read while the caller builds its lookups. Errors in the thread are raised
    by next(). close() stops the thread; the iterator closes itself at the end."""

    def __init__(self, items: Iterator, depth: int = 2):
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oca-fill-log-reader",
                                        daemon=True)
        self._thread.start()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # handed over to the consumer, raised there
            self._put(("error", e))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> _Prefetch:
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "item":
            return value
        self.close()
        if kind == "end":
            raise StopIteration
        raise value

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# --- parsing -------------------------------------------------------------------------


def _parse(data: bytes) -> pl.DataFrame:
    """The block's non-blank lines as rows of _SCHEMA; a malformed line is a row whose
    ts is null. Fast path: polars over the whole block. A block it rejects (one bad line
    fails it all) is retried in pieces, and a piece that still fails line by line."""
    try:
        return _read_ndjson(data)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        pass
    lines = data.split(b"\n")
    frames = []
    for i in range(0, len(lines), _PIECE_LINES):
        piece = lines[i:i + _PIECE_LINES]
        try:
            frames.append(_read_ndjson(b"\n".join(piece)))
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
            frames.append(_parse_lines(piece))
    return pl.concat(frames, how="vertical")


def _read_ndjson(data: bytes) -> pl.DataFrame:
    """polars' rows of *data*, by the rules of _read_line: a row whose scope may not have
    been a string (_NOT_A_STRING; none in logs of viewer and fill lines) is checked
    again with json, and is malformed (ts null) when _read_line says so."""
    frame = pl.read_ndjson(data, schema=_SCHEMA)
    scope = frame["scope"]
    if scope.null_count() == len(scope):
        return frame
    doubt = np.flatnonzero(scope.str.contains(_NOT_A_STRING).fill_null(False).to_numpy())
    if not doubt.size:
        return frame
    lines = [line for line in data.split(b"\n") if not _is_blank(line)]
    bad = np.zeros(frame.height, dtype=bool)
    for row in doubt.tolist():
        try:
            _read_line(lines[row])
        except _Malformed:
            bad[row] = True
    if not bad.any():
        return frame
    return frame.with_columns(
        pl.when(pl.Series(bad)).then(None).otherwise(pl.col("ts")).alias("ts"))


def _is_blank(line: bytes) -> bool:
    return not line.strip(b" \t\r")  # JSON whitespace, as polars skips such lines


def _parse_lines(lines: list[bytes]) -> pl.DataFrame:
    rows = []
    for line in lines:
        if _is_blank(line):
            continue
        try:
            rows.append(_read_line(line))
        except _Malformed:
            rows.append((None,) * len(_SCHEMA))
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


class _Malformed(ValueError):
    pass


def _read_line(line: bytes) -> tuple:
    """One line by the rules of the fast path: (ts, appliance, object, status, bytes,
    range, scope), or _Malformed saying why."""
    try:
        rec = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        raise _Malformed("not JSON") from None
    if not isinstance(rec, dict):
        raise _Malformed("not a JSON object")
    ts = rec.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise _Malformed("ts: missing or not a number")
    obj = rec.get("object")
    if obj is not None and not isinstance(obj, str):
        raise _Malformed("object: not a string")
    status = rec.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not -_INT64 <= status < _INT64:
        raise _Malformed("status: missing or not a whole number")
    nbytes = rec.get("bytes")
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes < _INT64:
        raise _Malformed("bytes: missing, negative or not a whole number")
    scope = rec.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise _Malformed("scope: not a string")
    app = rec.get("appliance")
    rng = rec.get("range")
    return (float(ts), app if isinstance(app, str) else None, obj, status, nbytes,
            rng if isinstance(rng, str) else None, scope)


def _describe_malformed(block: _Block, row: int) -> str:
    """'file:line: reason' of the block's *row*-th non-blank line (for the warning)."""
    number = _line_number(block.path, block.offset)
    for line in block.data.split(b"\n"):
        if not _is_blank(line):
            if row == 0:
                try:
                    _read_line(line)
                    reason = "malformed"
                except _Malformed as e:
                    reason = str(e)
                return f"{block.path}:{number}: {reason}"
            row -= 1
        number += 1
    return f"{block.path}:{number}"


def _line_number(path: Path, offset: int) -> int:
    """Number of the line starting at uncompressed *offset* (read again: once a run)."""
    lines = 1
    with open(path, "rb") as f:
        if os.pread(f.fileno(), 2, 0) == _GZIP_MAGIC:
            pieces = (piece for piece, _ in _inflate(path, f))
        else:
            pieces = iter(lambda: f.read(_RAW_READ), b"")
        for piece in pieces:
            if offset <= len(piece):
                return lines + piece.count(b"\n", 0, offset)
            lines += piece.count(b"\n")
            offset -= len(piece)
    return lines


# --- lookups and sums ----------------------------------------------------------------


class _StringIndex:
    """Vectorized string -> number (position in *keys*, unique strings), -1 if absent.

    Each string gets two independent 64-bit polars hashes (~0.5 ms per 100k strings).
    The keys sit in an open-addressing table (linear probing, at most a quarter full)
    of 16-byte rows (first hash, number + 1, low 32 bits of the second hash): a lookup
    is mostly one cache miss. A value is a key's only if all 96 bits match, so a string
    outside *keys* is mistaken for one with odds of ~1e-28 a line. (Joining each block
    with a 1M-row frame costs ~0.1 s a block; this ~4 ms. Half full with 32-byte rows,
    the table was as large but 36 % of the lines of bench/fill/scale.py's logs needed a
    second probe, 13 % now: 5.8 -> 3.6 ms a block.)
    """

    def __init__(self, keys: pl.Series):
        n = len(keys)
        self.n = n
        bits = n.bit_length() + 2
        self.shift = np.uint64(64 - bits)
        for seed in range(0, 32, 2):  # keys with equal first hashes would shadow one another
            first = keys.hash(seed=seed).to_numpy()
            by_hash = np.sort(first)
            if not (by_hash[1:] == by_hash[:-1]).any():
                break
        else:
            raise AssertionError("no hash seed separates the keys")
        self.seed = seed
        # Linear probing without wrap-around, built at once: keys taken in order of their
        # home slot each go to the first free slot from home on, which is
        # i + max(home[j] - j for j <= i). The table runs on past 2**bits as far as
        # needed, and always ends in an empty slot, which stops every lookup.
        order = np.argsort(first, kind="stable")  # home = top bits: same order
        home = (first[order] >> self.shift).astype(np.int64)
        rank = np.arange(n, dtype=np.int64)
        place = rank + np.maximum.accumulate(home - rank) if n else rank
        table = np.zeros(max(1 << bits, int(place[-1]) + 2 if n else 1), dtype=_ROW)
        table["first"][place] = first[order]
        table["num"][place] = order + 1
        table["second"][place] = keys.hash(seed=seed + 1).to_numpy()[order].astype(np.uint32)
        self.table = table

    def lookup(self, values: pl.Series) -> np.ndarray:
        """Number of each value; -1 for null or not a key."""
        m = len(values)
        if self.n == 0 or m == 0:
            return np.full(m, -1, dtype=np.int64)
        h = values.hash(seed=self.seed).to_numpy()
        slot = (h >> self.shift).astype(np.intp)
        row = self.table.take(slot)  # one 32-byte row per value: ~1 ms per 100k
        num = row["num"]
        hit = (row["first"] == h) & (num != 0)
        found = np.where(hit, num - 1, -1)
        check = row["second"].copy()
        todo = np.flatnonzero(~hit & (num != 0))
        while todo.size:  # walk on past other keys' slots, to a match or an empty slot
            slot[todo] += 1
            row = self.table.take(slot[todo])
            num = row["num"]
            hit = (row["first"] == h[todo]) & (num != 0)
            found[todo[hit]] = num[hit] - 1
            check[todo[hit]] = row["second"][hit]
            todo = todo[~hit & (num != 0)]
        second = values.hash(seed=self.seed + 1).to_numpy().astype(np.uint32)
        found[(check != second) | values.is_null().to_numpy()] = -1
        return found


_ROW = np.dtype([("first", np.uint64), ("num", np.int32), ("second", np.uint32)])


class _Sums:
    """Running decayed sums per (site group, object), in compact slots.

    A dense int32 table maps key = group * n_objects + object to its slot + 1. It is
    allocated zeroed (calloc): pages no key touches take no memory, and at most it is
    4 bytes per (site, object) pair: 400 MB for 100 sites x 1M objects. The sums of a
    slot sit side by side in one row of `acc` (requests, bytes, recent, last ts), so
    adding a line touches one cache line, not four.
    """

    def __init__(self, n_groups: int, catalog: Catalog, now: float, half_life: float,
                 recent_half_life: float):
        self.n_obj = len(catalog)
        self.size = catalog.size.astype(np.float64)
        self.release = catalog.release
        self.now = float(now)
        self.half_life = float(half_life)
        self.recent_half_life = float(recent_half_life)
        self.table = np.zeros(max(1, n_groups * self.n_obj), dtype=np.int32)
        self.count = 0
        # Room for 64M (site, object) pairs from the start: calloc'd, so rows not yet
        # used cost address space only, and growing (a copy of everything) is rare.
        self.acc = self._fresh(min(max(1, n_groups * self.n_obj), _ROOM))
        self.first_day = np.zeros(self.n_obj)
        self.start_ts = math.inf
        self.end_ts = -math.inf

    @staticmethod
    def _fresh(n: int) -> np.ndarray:
        # calloc: pages are zeroed by the kernel when first touched, not here; the
        # last-ts column of a slot is set when the slot is taken
        return np.zeros((n, 4))

    def add_block(self, frame: pl.DataFrame, objects: _StringIndex, appliances: pl.Enum,
                  group_of_appliance: np.ndarray, seen: _Seen, block: _Block) -> None:
        if frame.height == 0:
            return
        bad = 0
        if (frame["ts"].null_count() or frame["status"].null_count()
                or frame["bytes"].null_count() or frame["bytes"].min() < 0):
            valid = frame.select(
                pl.col("ts").is_not_null() & pl.col("status").is_not_null()
                & (pl.col("bytes") >= 0).fill_null(False)).to_series().to_numpy()
            bad = frame.height - int(np.count_nonzero(valid))
        if bad:
            if not seen.malformed:
                seen.first_malformed = _describe_malformed(block, int(np.argmin(valid)))
            seen.malformed += bad
            frame = frame.filter(pl.Series(valid))
            if frame.height == 0:
                return
        if frame["scope"].null_count() < frame.height:
            fill = (frame["scope"] == FILL_SCOPE).fill_null(False)
            n_fill = int(fill.sum())
            if n_fill:
                seen.fill_lines += n_fill
                seen.fill_bytes += int(frame["bytes"].filter(fill).sum())
                frame = frame.filter(~fill)
                if frame.height == 0:
                    return
        ts = frame["ts"].to_numpy()
        self.start_ts = min(self.start_ts, float(ts.min()))
        self.end_ts = max(self.end_ts, float(ts.max()))

        named = frame["object"]
        obj = objects.lookup(named)
        known = obj >= 0
        seen.unknown_objects += int(np.count_nonzero(~known)) - named.null_count()
        status = frame["status"].to_numpy()
        body = (status == 200) | (status == 206)
        wanted = (status == 302) | (status == 404) | (status == 503)
        demand = known & (body | wanted | (status == NOT_MODIFIED))
        seen.ignored_status += int(np.count_nonzero(known & ~demand))
        rows = np.flatnonzero(demand)
        if rows.size == 0:
            return
        obj = obj[rows]
        ts = ts[rows]
        nbytes = np.where(body, frame["bytes"].to_numpy(), 0)[rows].astype(np.float64)
        asked = np.flatnonzero(wanted[rows])
        if asked.size:
            nbytes[asked] = _asked_bytes(frame["range"].gather(rows[asked]),
                                         self.size[obj[asked]])
        appliance = (frame["appliance"].cast(appliances, strict=False).to_physical()
                     .fill_null(len(appliances.categories)).to_numpy())
        group = group_of_appliance[appliance[rows]]
        self._add(group * self.n_obj + obj, obj, ts, nbytes)

    def _add(self, keys: np.ndarray, obj: np.ndarray, ts: np.ndarray,
             nbytes: np.ndarray) -> None:
        slot = self.table[keys]
        new = np.flatnonzero(slot == 0)
        if new.size:
            fresh = np.sort(keys[new])  # np.unique hashes: 5x slower on 100k int64
            fresh = fresh[np.concatenate(([True], fresh[1:] != fresh[:-1]))]
            self._reserve(self.count + fresh.size)
            self.acc[self.count:self.count + fresh.size, 3] = -np.inf
            self.table[fresh] = np.arange(self.count + 1, self.count + fresh.size + 1)
            self.count += fresh.size
            slot[new] = self.table[keys[new]]
        slot = slot.astype(np.intp) - 1
        age = np.maximum(self.now - ts, 0.0)  # a line after `now` weighs 1
        w = np.exp2(-age / self.half_life)
        acc = self.acc
        np.add.at(acc[:, 0], slot, w)
        np.add.at(acc[:, 1], slot, w * nbytes)
        np.add.at(acc[:, 2], slot, np.exp2(-age / self.recent_half_life))
        np.maximum.at(acc[:, 3], slot, ts)
        since = ts - self.release[obj]  # NaN (no release) compares False
        first = (since >= 0) & (since < FIRST_DAY)
        if first.any():
            np.add.at(self.first_day, obj[first], 1.0)

    def _reserve(self, n: int) -> None:
        cap = len(self.acc)
        if n <= cap:
            return
        while cap < n:
            cap *= 2
        acc = self._fresh(cap)
        acc[:self.count] = self.acc[:self.count]
        self.acc = acc

    def demand(self, sites: list[str], seen: _Seen) -> LogDemand:
        # The table lists the keys in order: scanning it (~0.2 s for 100M pairs) sorts
        # the rows without a sort of tens of millions of keys.
        keys = np.flatnonzero(self.table)
        slots = self.table[keys]
        del self.table
        # Each slot's row is taken whole (32 bytes, one cache line), a million at a time,
        # and its sums copied out in order: 0.7 s for 19M rows, where gathering the four
        # columns one by one reads every row four times (2.1 s).
        columns = [np.empty(len(keys)) for _ in range(4)]
        rows = self.acc.view(np.dtype((np.void, 32))).reshape(-1)
        for i in range(0, len(keys), _COPY_ROWS):
            taken = rows.take(slots[i:i + _COPY_ROWS].astype(np.intp) - 1)
            taken = taken.view(np.float64).reshape(-1, 4)
            for column, values in zip(columns, taken.T, strict=True):
                column[i:i + _COPY_ROWS] = values
        del self.acc, rows, slots
        n_obj = max(1, self.n_obj)
        found = self.start_ts <= self.end_ts
        demand = LogDemand(
            sites=sites,
            site_idx=(keys // n_obj).astype(np.int32),
            obj_idx=keys % n_obj,
            requests=columns[0],
            bytes=columns[1],
            recent=columns[2],
            last_ts=columns[3],
            lines=seen.lines,
            malformed=seen.malformed,
            unknown_objects=seen.unknown_objects,
            ignored_status=seen.ignored_status,
            fill_lines=seen.fill_lines,
            fill_bytes=seen.fill_bytes,
            start_ts=self.start_ts if found else math.nan,
            end_ts=self.end_ts if found else math.nan,
            first_day=self.first_day,
        )
        return demand


def _asked_bytes(ranges: pl.Series, size: np.ndarray) -> np.ndarray:
    """Bytes a refused or redirected request asked for: the length of its one range
    (RFC 9110 section 14.1.2: first-last, first-, or -suffix, clipped to the object), or
    the whole object when it asked for none, for several, or for something unreadable."""
    parts = ranges.str.extract_groups(_RANGE_RE).struct.unnest()
    first = parts[parts.columns[0]].cast(pl.Float64, strict=False).to_numpy()
    last = parts[parts.columns[1]].cast(pl.Float64, strict=False).to_numpy()
    size = size.astype(np.float64)
    has_first = ~np.isnan(first)
    has_last = ~np.isnan(last)
    with np.errstate(invalid="ignore"):
        out = np.where(has_first & has_last, np.minimum(last, size - 1) - first + 1,
                       np.where(has_first, size - first,
                                np.where(has_last, np.minimum(last, size), size)))
        bad = has_first & has_last & (last < first)
    out = np.where(bad, size, out)
    return np.maximum(out, 0.0)
