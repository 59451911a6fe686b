"""Disk probes with a timeout, each in a forked child.

A disk that stops answering (a dying HDD retrying a sector for 30 s, a hung NFS
or FUSE mount) blocks the calling thread in an uninterruptible wait: a thread
cannot be cancelled, and a process with such a thread cannot even exit. So every
probe that touches a disk (isdir, the marker read, statvfs, realpath for the
device) runs in a child forked for it, which sends its findings back on a pipe;
the parent polls all the pipes at once (the disks are probed in parallel) until
the timeout. A child that has not answered by then is abandoned, not waited for:
its pid is remembered per disk, reaped later with WNOHANG, and while it is still
stuck no second child is forked for that disk (it would only hang beside it) and
the disk is reported hung again at once.

A hung disk is reported ``failed`` with ``hung`` in the reason and
``DiskHealth.hung`` set; unlike an I/O error it is not made sticky in the index,
because a hang can clear by itself.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .disk import FAILED, Disk, DiskHealth


@dataclass
class DiskFacts:
    """What one probe learnt about a disk: health, filesystem space, I/O counters."""

    health: DiskHealth
    fs_size: int = 0
    fs_free: int = 0  # bytes free for us (f_bavail)
    io: dict | None = field(default=None)


def _facts(disk: Disk, with_io: bool) -> DiskFacts:
    """The probe itself (runs in the child): the calls that block on a hung mount."""
    h = disk.probe()
    if h.state == FAILED:
        return DiskFacts(h)
    size, free = disk.fs_space()
    return DiskFacts(h, size, free, disk.io_counters() if with_io else None)


def hung_health(reason: str) -> DiskHealth:
    return DiskHealth(FAILED, f"hung: {reason}", hung=True)


def _let_go(keep: int, close: Iterable[int]) -> None:
    """In a probe child, before it touches the disk: drop what a child stuck for hours
    must not hold. stdin/stdout/stderr go to /dev/null (a caller reading our output to
    its end, `oca status | ...`, would wait for the stuck child); sockets and pipes
    other than *keep* are closed (a listening socket or a client connection would
    outlive the parent); so are the fds in *close* (the store's flock). Files are left
    open: closing one on a hung FUSE disk waits for that disk (FLUSH); /proc's links
    tell sockets and pipes apart without asking any filesystem."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return  # no /proc (FreeBSD without linprocfs): sockets stay open in the child
    for fd in fds:
        if fd <= 2 or fd == keep:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            with contextlib.suppress(OSError):
                os.close(fd)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True  # reaped by someone else (a SIGCHLD handler): gone all the same


class DiskProber:
    """Runs probes in forked children; remembers the children that hung, per disk.

    One per process (``Store`` holds one). Not thread-safe.
    """

    def __init__(self, close_in_child: Iterable[int] = ()):
        # disk path -> (pid of the stuck child, monotonic time it was forked)
        self._stuck: dict[str, tuple[int, float]] = {}
        self._exiting: list[int] = []  # answered, closed the pipe, not yet reaped
        self.close_in_child = close_in_child

    def stuck(self) -> dict[str, int]:
        """disk path -> pid of a probe child that has not answered yet."""
        self._reap()
        return {path: pid for path, (pid, _) in self._stuck.items()}

    def _reap(self) -> None:
        self._exiting = [pid for pid in self._exiting if not _reaped(pid)]
        for path, (pid, _) in list(self._stuck.items()):
            if _reaped(pid):
                del self._stuck[path]

    def run(self, disks: Iterable[Disk], timeout: float, with_io: bool = False
            ) -> dict[str, DiskFacts]:
        """Probe *disks* in parallel; disk path -> facts, a disk that does not answer
        within *timeout* seconds reported hung."""
        self._reap()
        out: dict[str, DiskFacts] = {}
        pending: dict[int, tuple[Disk, int, bytearray]] = {}
        started = time.monotonic()
        for disk in disks:
            if disk.record is None or disk.record.failed:
                out[disk.path] = DiskFacts(disk.probe())  # answered from the index, no I/O
                continue
            if disk.path in self._stuck:
                since = self._stuck[disk.path][1]
                out[disk.path] = DiskFacts(hung_health(
                    f"a probe has had no answer for {started - since:.0f} s"))
                continue
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: probe, answer, exit without running any cleanup
                code = 1
                try:
                    os.close(r)
                    _let_go(w, self.close_in_child)
                    data = memoryview(pickle.dumps(_facts(disk, with_io)))
                    while data:
                        data = data[os.write(w, data):]
                    os.close(w)
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            pending[r] = (disk, pid, bytearray())
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLIN)
        deadline = started + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in poller.poll(left * 1000):
                disk, pid, buf = pending[fd]
                chunk = os.read(fd, 65536)
                if chunk:
                    buf += chunk
                    continue
                poller.unregister(fd)
                os.close(fd)
                del pending[fd]
                # The child closed the pipe by exiting; should its exit linger, reap later.
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    self._exiting.append(pid)
                try:
                    out[disk.path] = pickle.loads(buf)
                except Exception:  # the child died before answering (OOM kill, crash)
                    out[disk.path] = DiskFacts(DiskHealth(FAILED, "probe process died"))
        for fd, (disk, pid, _) in pending.items():
            os.close(fd)
            self._stuck[disk.path] = (pid, started)
            out[disk.path] = DiskFacts(hung_health(f"no answer to a probe in {timeout:g} s"))
        return out
