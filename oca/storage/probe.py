"""Disk probes that cannot hang the caller.

A call into a hung filesystem (a dying HDD retrying a sector, a stuck network or FUSE
mount) does not return, and a thread blocked in one keeps its whole process from exiting:
once a FUSE request has gone to the daemon the kernel waits for the answer
uninterruptibly, SIGKILL included. So every probe runs in a forked child that sends its
findings back through a pipe; the caller waits at most *timeout* for all disks at once
and reports a disk whose child has not answered as failed, ``hung``. The child is left
to finish whenever the disk answers and reaped then; while it is still stuck no second
one is forked for that disk (the disk stays hung). A hang is not made sticky in the index:
it can clear, unlike an I/O error.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import time
from dataclasses import dataclass

from .disk import FAILED, Disk, DiskHealth

_stuck: dict[str, tuple[int, float]] = {}  # disk path -> (pid of its stuck probe, since)


@dataclass
class DiskFacts:
    """What a probe learnt of one disk: its health, its filesystem's size and free bytes
    ((0, 0) when failed), and, when asked, psutil's I/O counters of its device."""

    health: DiskHealth
    fs_size: int = 0
    fs_free: int = 0
    io: dict | None = None


def _gather(disk: Disk, io: bool) -> DiskFacts:
    h = disk.probe()
    if h.state == FAILED:
        return DiskFacts(h)
    size, free = disk.fs_space()
    return DiskFacts(h, size, free, disk.io_counters() if io else None)


def hung(timeout: float, since: float) -> DiskHealth:
    """A disk whose probe has not answered since *since* (epoch seconds)."""
    return DiskHealth(FAILED, f"hung: no answer to a probe in {timeout:g} s (since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))})")


def probe_disks(disks: list[Disk], timeout: float, io: bool = False) -> dict[str, DiskFacts]:
    """Probe every disk in *disks* in parallel, each in a child process; a disk that does
    not answer within *timeout* seconds is FAILED with ``hung`` in the reason."""
    _reap()
    out: dict[str, DiskFacts] = {}
    pending: dict[int, tuple[Disk, int, bytearray]] = {}  # read fd -> (disk, pid, data)
    for disk in disks:
        stuck = _stuck.get(disk.path)
        if stuck is not None:
            out[disk.path] = DiskFacts(hung(timeout, stuck[1]))
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: probe, answer, exit without running any cleanup
            code = 0
            try:
                # Keep nothing of the parent's open but the pipe: a child stuck on the
                # disk must not hold the caller's stdout (a shell waiting for EOF) or
                # sockets (peers waiting for the close) open.
                null = os.open(os.devnull, os.O_RDWR)
                for std in (0, 1, 2):
                    os.dup2(null, std)
                os.closerange(3, w)
                os.closerange(w + 1, _max_fd())
                data = pickle.dumps(_gather(disk, io))
                with contextlib.suppress(OSError):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(w, view):]
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        pending[r] = (disk, pid, bytearray())
    deadline = time.monotonic() + timeout
    try:
        while pending:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            ready, _, _ = select.select(list(pending), [], [], wait)
            for r in ready:
                chunk = os.read(r, 1 << 16)
                disk, pid, data = pending[r]
                if chunk:
                    data += chunk
                    continue
                del pending[r]
                os.close(r)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                try:
                    out[disk.path] = pickle.loads(data)
                except Exception:
                    out[disk.path] = DiskFacts(DiskHealth(FAILED, "probe failed: no answer"))
    finally:
        started = time.time() - timeout
        for r, (disk, pid, _) in pending.items():
            os.close(r)
            _stuck[disk.path] = (pid, started)
            out[disk.path] = DiskFacts(hung(timeout, started))
    return {d.path: out[d.path] for d in disks}


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1 << 16


def _reap() -> None:
    """Forget the stuck probes that have finished since."""
    for path, (pid, _) in list(_stuck.items()):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            del _stuck[path]
