"""The access log: one JSON line per response, buffered in memory, written once a second.

This is also the fill planner's popularity input (DESIGN.md, "Access log"). A line::

    {"ts":1700000000.123,"appliance":"a1","method":"GET","object":"title-1.mp4","status":206,
     "bytes":1048576,"range":"bytes=0-1048575","client":"192.0.2.7","dur_ms":0.412,"tier":"ssd"}

``object`` is null when the URL named no valid object id; the line then carries ``path``
(the raw request target, at most 256 characters). ``range`` is the Range header as asked
(at most 1024 characters), or null. ``tier`` is the tier that served the body, or null.

Hot path cost: :meth:`AccessLog.log` formats the line with one f-string and appends it
to a list; no lock, no syscall. Every string that comes from the client (method, path,
range) goes through ``json.encoder.encode_basestring_ascii``, the C escaper behind
``json.dumps``: ~45 ns for a typical Range header, less than testing the string against
a safe character set would cost, and correct for any input (lone surrogates included).
The whole line is therefore ASCII. The server calls :meth:`flush` once a second.
"""

from __future__ import annotations

import errno
import json
import os
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path

from ..errors import OcaError

MAX_BUFFERED_LINES = 1_000
"""Lines held before :meth:`AccessLog.log` flushes early: about 150 KB a write, as
nginx's ``access_log ... buffer=``. Each flush joins, encodes and writes its lines while
the worker's loop waits; 10,000 lines (1.5 MB) a flush made those waits long enough to
show in the slowest responses (bench/RESULTS.md, 2026-12-08)."""

MAX_PATH_CHARS = 256
MAX_RANGE_CHARS = 1024
MAX_METHOD_CHARS = 32

# Values the server passes every time, rendered once (bound .get: no attribute lookup).
_tier_json = {None: "null", "ssd": '"ssd"', "flash": '"flash"', "hdd": '"hdd"'}.get
_method_json = {"GET": '"GET"', "HEAD": '"HEAD"'}.get

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def object_prefix(method: str, object_id: str) -> str:
    """The ``"GET","object":"<id>"`` fragment of :meth:`AccessLog.log_object`."""
    return f'{_method_json(method) or _json_str(method[:MAX_METHOD_CHARS])},"object":' \
        f'{_json_str(object_id)}'


def plain_get_fragments(object_id: str, size: int, tier: str | None) -> tuple[str, str]:
    """The two fixed pieces of the line of a whole 200 to a plain GET of an object of *size*
    bytes from *tier*, for :meth:`AccessLog.log_plain`: up to ``"client":`` and from
    ``,"tier"`` to the end."""
    return (f'{object_prefix("GET", object_id)},"status":200,"bytes":{size},"range":null,'
            '"client":', f',"tier":{_tier_json(tier) or json.dumps(tier)}}}\n')


def json_str(value: str | None) -> str:
    """A JSON string (or null), for fragments rendered once."""
    return "null" if value is None else _json_str(value)


class AccessLog:
    """The access log of one worker process.

    Each worker owns one ``AccessLog`` (open it after the fork, or flush before forking: a
    buffer copied into a child would be written twice). Several workers append to the same
    file; see :meth:`flush` for why their lines never mix.

    ``write_errors`` counts failed flushes (disk full, I/O error) and ``lines_dropped`` the
    lines they lost; ``last_error`` keeps the latest ``OSError``. Serving goes on regardless.

    ``lines`` is the buffer. ``line_head`` is the text of a line up to its method for a
    ``ts`` in ``[ms_start, ms_end)``; :meth:`set_millisecond` renders it for another one.
    The compiled connection loop (``_fastpath``) puts the lines of :meth:`log_plain` and
    :meth:`log_object` together in C from ``appliance_json`` and the same fragments, in a
    buffer of its own that it appends to ``lines`` as one str (when the buffer is full,
    before a line made here, and first in :meth:`flush`, through :meth:`add_source`),
    and flushes at ``MAX_BUFFERED_LINES``; every other caller calls the methods.
    """

    MAX_BUFFERED_LINES = MAX_BUFFERED_LINES

    def __init__(self, path: Path | None, appliance: str):
        """Open *path* for appending (creating it and its folder); ``None`` turns logging off.

        Raises OcaError naming the file and the reason when it cannot be opened.
        """
        self.path = Path(path) if path is not None else None
        self.appliance = appliance
        self.write_errors = 0
        self.lines_dropped = 0
        self.last_error: OSError | None = None
        self.appliance_json = json.dumps(appliance)
        self.lines: list[str] = []
        self._sources: list = []
        self._fd: int | None = None
        self._torn = False  # a failed write left a partial line at the end of the file
        self.ms_start = self.ms_end = 0.0  # the millisecond line_head was made for
        self.line_head = ""
        if self.path is None:
            self.log = self._log_nothing  # type: ignore[method-assign]
            self.log_object = self._log_nothing  # type: ignore[method-assign]
            self.log_plain = self._log_nothing  # type: ignore[method-assign]
        else:
            self._fd = self._open()

    @property
    def enabled(self) -> bool:
        """False when logging is off (no path): the server may skip calling :meth:`log`."""
        return self.path is not None

    def _open(self) -> int:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as e:
            raise OcaError(
                f"cannot open access log {self.path}: {e.strerror or e}"
                " (fix the folder's permissions or set [server] access_log)"
            ) from e

    def log(self, ts: float, method: str, object_id: str | None, status: int, body_bytes: int,
            range_header: str | None, client: str, dur_ms: float, tier: str | None,
            path: str | None = None, scope: str | None = None) -> None:
        """Buffer the line of one response.

        *ts* is the epoch second the response ended; *object_id* a valid object id, or None
        when the URL named none (then *path*, the raw request target, is logged instead);
        *range_header* the Range header as received or None; *client* the peer's IP
        address; *dur_ms* the time taken in milliseconds; *tier* the tier that served the
        body or None; *scope* the scope of the request's token when not ``viewer``
        (``fill``: a copy, left out of popularity), else None (no field).
        """
        if not self.ms_start <= ts < self.ms_end:
            self.set_millisecond(ts)
        if object_id is not None:
            obj = _json_str(object_id)
        else:
            obj = 'null,"path":' + ("null" if path is None else _json_str(path[:MAX_PATH_CHARS]))
        rng = "null" if range_header is None else _json_str(range_header[:MAX_RANGE_CHARS])
        buf = self.lines
        buf.append(
            f'{self.line_head}{_method_json(method) or _json_str(method[:MAX_METHOD_CHARS])}'
            f',"object":{obj},"status":{status},"bytes":{body_bytes},"range":{rng},'
            f'"client":{_json_str(client)},"dur_ms":{dur_ms:.3f},'
            f'"tier":{_tier_json(tier) or json.dumps(tier)}{_scope_json(scope)}}}\n'
        )
        if len(buf) >= MAX_BUFFERED_LINES:
            self.flush()

    def log_object(self, ts: float, prefix: str, status: int, body_bytes: int,
                   range_header: str | None, client_json: str, dur_ms: float,
                   tier_json: str, scope: str | None = None) -> None:
        """:meth:`log` for an object request, from fragments rendered once per object and
        per connection (:func:`object_prefix`, :func:`json_str`): the hot path."""
        if not self.ms_start <= ts < self.ms_end:
            self.set_millisecond(ts)
        rng = "null" if range_header is None else _json_str(range_header[:MAX_RANGE_CHARS])
        buf = self.lines
        buf.append(
            f'{self.line_head}{prefix},"status":{status},"bytes":{body_bytes},"range":{rng},'
            f'"client":{client_json},"dur_ms":{dur_ms:.3f},"tier":{tier_json}'
            f'{_scope_json(scope)}}}\n')
        if len(buf) >= MAX_BUFFERED_LINES:
            self.flush()

    def log_plain(self, ts: float, before: str, client_json: str, dur_ms: float,
                  after: str) -> None:
        """:meth:`log` for a whole 200 to a plain GET, from the two pieces of
        :func:`plain_get_fragments` and the client's JSON string: the hottest path."""
        if not self.ms_start <= ts < self.ms_end:
            self.set_millisecond(ts)
        buf = self.lines
        buf.append(f'{self.line_head}{before}{client_json},"dur_ms":{dur_ms:.3f}{after}')
        if len(buf) >= MAX_BUFFERED_LINES:
            self.flush()

    def set_millisecond(self, ts: float) -> None:
        """Render ``line_head`` for the millisecond *ts* rounds to."""
        # Formatting a float costs ~190 ns; at more than one response per millisecond
        # most lines reuse the text of the millisecond they round to.
        ms = round(ts * 1000)
        self.ms_start = (ms - 0.5) / 1000
        self.ms_end = (ms + 0.5) / 1000
        self.line_head = (f'{{"ts":{ms / 1000:.3f},"appliance":{self.appliance_json},'
                           f'"method":')

    def _log_nothing(self, *args, **kwargs) -> None:
        pass

    def add_source(self, fold) -> None:
        """Call *fold* (no arguments) first in every :meth:`flush`: it appends the lines
        it buffered elsewhere to ``lines`` (the compiled connection loop's C buffer)."""
        self._sources.append(fold)

    def flush(self) -> None:
        """Write the buffered lines with one ``write`` and empty the buffer.

        Called once a second by the server and at exit. The file is opened O_APPEND:
        on a local filesystem the kernel moves the offset to the end and copies the
        data under the inode lock in one step (Linux: i_rwsem held across the whole
        buffered write; FreeBSD: the vnode lock), so one ``write`` never interleaves
        with another process's, and the lines of one flush stay together. This does not
        hold over NFS, which emulates O_APPEND on the client. A regular file returns a
        short count only when the filesystem fills up (or RLIMIT_FSIZE): the rest is
        then written by a second call, which another writer may precede.

        An OSError (ENOSPC, EIO) drops the buffer and is counted, never raised: the log
        must not stop the serving. If it left a partial line in the file, the next write
        starts with a newline so that the following lines stay whole.
        """
        for fold in self._sources:
            fold()
        buf = self.lines
        if not buf or self._fd is None:
            buf.clear()
            return
        data = "".join(buf).encode("ascii")
        count = data.count(b"\n")  # an item of lines may hold several (a C buffer's)
        head = b"\n" if self._torn else b""
        data = head + data
        buf.clear()
        written = 0
        with memoryview(data) as view:
            try:
                while written < len(data):
                    n = os.write(self._fd, view[written:])
                    if n == 0:  # no progress and no errno: treat as a full device
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    written += n
                self._torn = False
            except OSError as e:
                self.write_errors += 1
                self.last_error = e
                self.lines_dropped += count - data.count(b"\n", len(head), written)
                if written:
                    self._torn = data[written - 1] != 0x0A

    def reopen(self) -> None:
        """Flush, then open the path again (log rotation: logrotate renamed the file).

        Raises OcaError when the path cannot be opened; the old file stays in use then.
        """
        if self.path is None:
            return
        self.flush()
        fd = self._open()
        old, self._fd = self._fd, fd
        self._torn = False
        if old is not None:
            os.close(old)

    def close(self) -> None:
        """Flush and close; later calls to :meth:`log` are dropped at the next flush."""
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AccessLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _scope_json(scope: str | None) -> str:
    """The ``scope`` field of a line (DESIGN.md: only for a scope other than viewer)."""
    return "" if scope is None else f',"scope":{_json_str(scope)}'
