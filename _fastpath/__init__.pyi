# The typed interface of _fastpath, for both implementations (the compiled modules, whose
# C-level fields are declared in _connection.pxd and _sendfile.pxd, and their pure-Python
# twins). The Protocols below are what the connection loop reads of the rest of oca serve:
# the worker's server, its handler, the object table, the counter sink (WorkerMetrics) and
# the log sink (AccessLog). A change to any of those is checked against this file.

from collections.abc import Callable, Iterator
from typing import Final, Protocol

IMPLEMENTATION: Final[str]  # "cython" or "python"
EXTENSIONS: Final[bool]
NO_EXTENSIONS_ENV: Final[str]

def send_response(sock_fd: int, head: bytes, file_fd: int, offset: int, count: int,
                  sent: int, budget: int) -> int: ...
def send_file(out_fd: int, in_fd: int, offset: int, count: int) -> int: ...

class Entry:
    """An object open for serving (oca.http.objects.OpenObject is its subclass)."""

    id: str
    fd: int
    size: int
    url: bytes  # b"/o/<id>"
    tier: str | None
    hits: int  # responses sent from this entry (HEAD and aborted ones included)
    body_bytes: int  # their body bytes that went out
    # Handler.render_heads (or redated by the loop: docs/fastpath.md), for the epoch second
    # [head_from, head_until):
    head200: bytes  # the whole keep-alive 200
    head206: bytes  # a keep-alive 206 up to "Content-Range: bytes "
    head_slice: bytes  # a /range/ URL's 200 up to its ETag's positions
    head_slice_mid: bytes  # from after them to the Content-Length value
    head_from: float
    head_until: float
    # oca.http.accesslog fragments: object_prefix("GET"/"HEAD", id), json_str(tier),
    # plain_get_fragments(id, size, tier).
    log_get: str
    log_head: str
    log_tier: str
    log_plain: tuple[str, str]
    def __init__(self, object_id: str, fd: int, size: int, tier: str | None) -> None: ...

class EntryTable:
    """The open entries, least recently used first out, by id and by target."""

    capacity: int
    def __init__(self, capacity: int) -> None: ...
    def add(self, entry: Entry) -> Entry | None:
        """The entry put out: replaced under the same id, or the least recent one."""
    def get(self, object_id: str) -> Entry | None: ...
    def by_url(self, url: bytes) -> Entry | None: ...
    def remove(self, object_id: str) -> Entry | None: ...
    def clear(self) -> list[Entry]: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Entry]: ...

class Parser(Protocol):
    """The parsed request, as the handler reads it (conn.parser): httptools'
    HttpRequestParser in the twin, the compiled loop's Reader (llhttp called from C)."""

    def get_method(self) -> bytes: ...
    def should_keep_alive(self) -> bool: ...
    def get_http_version(self) -> str: ...  # "1.1" or "1.0"

class Response:
    """A response decided in Python: the first *head_len* bytes of *head* are the head
    (the rest a short body), then *count* bytes of *entry*'s file from *offset*, then each
    of *parts* ``(part_head, offset, count)`` from the same file (multipart/byteranges).
    *method*, *oid*, *range* and *path* are what its access-log line names; *scope*
    (set after construction) the request token's scope when not ``viewer``."""

    status: int
    head: bytes
    entry: Entry | None
    offset: int
    count: int
    parts: list[tuple[bytes, int, int]] | None
    keep_alive: bool
    head_len: int
    method: str
    oid: str | None
    range: str | None
    path: str | None
    scope: str | None  # "fill" for a fill-scope token's request; None otherwise
    t0: float  # set by the loop: when the request's first byte was read
    def __init__(self, status: int, head: bytes, entry: Entry | None = None, offset: int = 0,
                 count: int = 0, parts: list[tuple[bytes, int, int]] | None = None,
                 keep_alive: bool = True, head_len: int = -1, method: str = "GET",
                 oid: str | None = None, range: str | None = None,
                 path: str | None = None) -> None: ...
    def body_sent(self) -> int: ...

class CounterSink(Protocol):
    """oca.http.metrics.WorkerMetrics, as the loop counts into it."""

    counts: list  # counters, then the seconds sum
    BUCKETS: tuple[float, ...]
    BUCKET0: int
    SECONDS: int
    @staticmethod
    def slots(status: int, tier: str | None, fastpath: bool) -> tuple[int, int, int]: ...
    def add_source(self, fold: Callable[[], None]) -> None:
        """The compiled Shared registers its fold: counts kept in C join ``counts``
        before each publish."""
    def record(self, status: int, tier: str | None, body_bytes: int, seconds: float,
               fastpath: bool) -> None: ...

class LogSink(Protocol):
    """oca.http.accesslog.AccessLog, as the loop writes lines into it."""

    MAX_BUFFERED_LINES: int
    lines: list[str]  # one list for the log's life (cleared in place, never rebound)
    appliance_json: str  # the "appliance" field's JSON string
    line_head: str
    ms_start: float
    ms_end: float
    def set_millisecond(self, ts: float) -> None: ...
    def add_source(self, fold: Callable[[], None]) -> None:
        """The compiled Shared registers its fold_log: lines kept in C join ``lines``
        first in every flush."""
    def flush(self) -> None: ...
    def log(self, ts: float, method: str, object_id: str | None, status: int,
            body_bytes: int, range_header: str | None, client: str, dur_ms: float,
            tier: str | None, path: str | None = None,
            scope: str | None = None) -> None: ...
    def log_object(self, ts: float, prefix: str, status: int, body_bytes: int,
                   range_header: str | None, client_json: str, dur_ms: float,
                   tier_json: str, scope: str | None = None) -> None: ...

class ObjectTable(Protocol):
    entries: EntryTable
    def fail_disk(self, disk: str, reason: str) -> None: ...

class Handler(Protocol):
    """oca.http.handler.Handler, as the loop asks it."""

    REQUEST_HEADERS: frozenset[bytes]
    objects: ObjectTable
    metrics: CounterSink
    access_log: LogSink | None
    logging: bool
    tokens: object | None
    max_ranges: int
    closing: bool
    def respond(self, conn: Connection) -> Response: ...
    def error(self, status: int) -> Response: ...
    def render_heads(self, entry: Entry, now: float) -> None: ...

class Server(Protocol):
    """oca.serve.connections.WorkerServer, as Shared reads it once."""

    loop: object  # add_reader, remove_reader, add_writer, remove_writer
    handler: Handler
    header_timeout: float
    keepalive_timeout: float
    send_timeout: float
    max_head_size: int
    max_header_size: int
    max_url_size: int
    sendfile_max_chunk: int
    def forget(self, conn: Connection) -> None: ...

class Shared:
    """What every connection of one worker reads, taken from the server once."""

    def __init__(self, server: Server) -> None: ...
    def fold(self) -> None:
        """Add the counts kept since the last fold to the handler's WorkerMetrics (the
        twin counts there directly: nothing to add)."""
    def fold_log(self) -> None:
        """Append the access-log lines kept since the last fold to AccessLog.lines (the
        twin logs there directly: nothing to add)."""

class Connection:
    """One client connection; it owns *fd* and closes it."""

    fd: int
    state: int
    deadline: float
    t0: float
    url: bytes
    headers: dict[bytes, bytes] | None
    client_json: str
    @property
    def client(self) -> str: ...
    @property
    def parser(self) -> Parser | None: ...  # while a request is read
    @property
    def idle(self) -> bool: ...
    def __init__(self, shared: Shared, fd: int, client_json: str) -> None: ...
    def close(self) -> None: ...
