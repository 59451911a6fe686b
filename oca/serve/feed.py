"""The store watcher's feed to the serving workers: lines over a Unix stream socket.

The supervisor listens on ``<runtime dir>/watcher.sock`` before it forks anything; the
store watcher (watcher.py) inherits the listening socket and accepts, so a worker can
connect at any time, even while the watcher is being restarted (the connection waits in
the backlog). Each worker holds one connection. Every line is UTF-8, fields are split by
one TAB, and no field holds a TAB or a newline (object ids cannot; disk paths, tiers and
content types that would are refused by the watcher, reasons are cleaned)::

    worker -> watcher
      hello  SLOT SEQ        first line: send me what changed after SEQ (-1: everything)
      hits   ID HITS BYTES TS  responses and body bytes served from ID since the last
                             report, TS the epoch second of the report
      failed DISK REASON     an I/O error while serving from DISK (made sticky by the watcher)

    watcher -> worker
      D DISK STATE REASON    a disk's state (ok | full | readonly | failed); all disks
                             after hello, then each change
      B SEQ                  a whole map follows (the worker builds it aside, batch by batch)
      + ID SIZE XXH3 TIER CONTENT-TYPE DISK MTIME   the object is (now) there
      - ID                   the object is gone
      E SEQ                  end of the whole map: it replaces the old one, at SEQ
      S SEQ                  the lines before it bring the worker to change SEQ

A worker that connects again (the watcher was restarted) says the SEQ it has; the watcher
sends the changes after it, or a whole map when the change feed no longer reaches back
that far (index.prune_changes keeps the newest 100,000).
"""

from __future__ import annotations

import os
import socket

from ..storage.lookup import ObjectLocation

SOCKET_NAME = "watcher.sock"


def listen(runtime_dir: str) -> socket.socket:
    """The listening socket of the feed, in *runtime_dir* (the supervisor's)."""
    path = os.path.join(runtime_dir, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(256)
    except BaseException:
        sock.close()
        raise
    return sock


def clean(text: str) -> str:
    """*text* with TABs and newlines turned into spaces: a field of its own."""
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def disk_line(path: str, state: str, reason: str | None) -> str:
    return f"D\t{path}\t{state}\t{clean(reason or '')}\n"


def object_line(object_id: str, loc: ObjectLocation) -> str:
    return (f"+\t{object_id}\t{loc.size}\t{loc.xxh3}\t{loc.tier}\t{loc.content_type}\t"
            f"{loc.disk}\t{loc.mtime}\n")


def removed_line(object_id: str) -> str:
    return f"-\t{object_id}\n"


def fits(*fields: str) -> bool:
    """Whether every field can travel as one: no TAB, no newline."""
    return not any("\t" in f or "\n" in f or "\r" in f for f in fields)


class Lines:
    """Splits a byte stream into lines, keeping a partial last line for the next read."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[str]:
        """The complete lines in *data* (and what was left over), without newlines."""
        if self._tail:
            data = self._tail + data
        end = data.rfind(b"\n")
        if end < 0:
            self._tail = data
            return []
        self._tail = data[end + 1:]
        return data[:end].decode("utf-8", "replace").split("\n")

    @property
    def pending(self) -> int:
        """Bytes of a partial line held back."""
        return len(self._tail)
