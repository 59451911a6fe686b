"""One data disk: identity marker, health probe, space, I/O counters.

Health is one of:

``ok``        readable and writable
``full``      readable; no room for new objects (index accounting or the filesystem)
``readonly``  readable; the filesystem is mounted read-only
``failed``    not readable: I/O errors, the marker is gone (mount vanished) or
              belongs to another disk. Its objects are not servable. An I/O error
              makes the failure sticky (kept in the index) until an operator runs
              ``oca disk clear PATH``; a vanished mount heals by itself when the
              filesystem comes back, because the marker proves it is the same one.
"""

from __future__ import annotations

import errno
import json
import os
import time
import uuid
from dataclasses import dataclass

import psutil

from ..config import DiskConfig
from . import layout
from .index import DiskRecord

OK, FULL, READONLY, FAILED = "ok", "full", "readonly", "failed"
SERVABLE_STATES = frozenset({OK, FULL, READONLY})

MIN_FREE = 16 << 20
"""Filesystem headroom kept free on every disk (metadata, journals, temp files)."""

_FAILING_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.ESTALE,
                             errno.EUCLEAN, errno.ENOTCONN, errno.EBADMSG})


def error_state(exc: OSError) -> str:
    """What an OSError raised while using a disk says about the disk."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FULL
    if exc.errno == errno.EROFS:
        return READONLY
    if exc.errno in _FAILING_ERRNOS:
        return FAILED
    return OK  # not about the disk (e.g. the source file)


@dataclass
class DiskHealth:
    state: str
    reason: str | None = None
    error: int | None = None  # errno of the OSError that failed the probe, if one did
    hung: bool = False  # the probe did not answer in time (probe.py): failed, not sticky

    @property
    def servable(self) -> bool:
        return self.state in SERVABLE_STATES

    @property
    def writable(self) -> bool:
        return self.state == OK

    @property
    def io_error(self) -> bool:
        """The probe met an I/O error (not just a missing marker): the disk itself is bad."""
        return self.error in _FAILING_ERRNOS


def read_marker(path: str) -> dict | None:
    """The disk's marker, or None when it is missing. OSError other than ENOENT propagates."""
    try:
        with open(os.path.join(path, layout.MARKER), encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_marker(path: str, tier: str, disk_id: str | None = None) -> str:
    """Write the marker atomically and return the disk id (a new uuid unless given)."""
    disk_id = disk_id or uuid.uuid4().hex
    body = json.dumps({"disk_id": disk_id, "tier": tier, "created": time.time()}).encode()
    tmp = os.path.join(path, layout.MARKER + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(path, layout.MARKER))
    layout.fsync_dir(path)
    return disk_id


class Disk:
    """A configured disk together with what the index remembers about it."""

    def __init__(self, cfg: DiskConfig, record: DiskRecord | None):
        self.path = str(cfg.path)
        self.tier = cfg.tier
        self.configured_capacity = cfg.capacity
        self.record = record

    def __repr__(self) -> str:
        return f"Disk({self.path!r}, {self.tier})"

    def probe(self) -> DiskHealth:
        """Cheap health check: sticky failure, marker, read-only flag. Never raises."""
        if self.record is None:
            return DiskHealth(FAILED, "not initialised: run `oca init`")
        if self.record.failed:
            return DiskHealth(FAILED, self.record.reason)
        try:
            if not os.path.isdir(self.path):
                return DiskHealth(FAILED, f"{self.path} is missing or not a directory")
            marker = read_marker(self.path)
            if marker is None:
                return DiskHealth(FAILED,
                                  f"marker {layout.MARKER} missing: filesystem not mounted?")
            if marker.get("disk_id") != self.record.disk_id:
                return DiskHealth(
                    FAILED, f"another disk is mounted here (marker disk_id "
                    f"{marker.get('disk_id')!r}, expected {self.record.disk_id!r})")
            st = os.statvfs(self.path)
        except OSError as e:
            return DiskHealth(FAILED, f"probe failed: {e.strerror or e}", e.errno)
        if st.f_flag & os.ST_RDONLY:
            return DiskHealth(READONLY, "filesystem mounted read-only")
        return DiskHealth(OK)

    def fs_space(self) -> tuple[int, int]:
        """(size, free for us) of the filesystem in bytes; (0, 0) when it cannot be read."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return 0, 0
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def capacity(self, fs_size: int | None = None) -> int:
        """Configured capacity, or the filesystem's size when none is configured
        (*fs_size* when the caller has it from a probe, else statvfs now)."""
        if self.configured_capacity is not None:
            return self.configured_capacity
        return self.fs_space()[0] if fs_size is None else fs_size

    def device(self) -> str | None:
        """The block device holding this disk (longest mount point that contains it)."""
        best, dev = "", None
        real = os.path.realpath(self.path)
        try:
            parts = psutil.disk_partitions(all=True)
        except OSError:
            return None
        for p in parts:
            mp = p.mountpoint
            if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best, dev = mp, p.device
        return dev

    def io_counters(self) -> dict | None:
        """psutil's per-device counters for this disk's device, or None (tmpfs, overlay...)."""
        dev = self.device()
        if not dev or not dev.startswith("/dev/"):
            return None
        name = os.path.basename(os.path.realpath(dev))
        try:
            counters = psutil.disk_io_counters(perdisk=True) or {}
        except (OSError, RuntimeError):
            return None
        c = counters.get(name)
        if c is None:
            return None
        return {"read_bytes": c.read_bytes, "write_bytes": c.write_bytes,
                "read_count": c.read_count, "write_count": c.write_count,
                "read_time_ms": c.read_time, "write_time_ms": c.write_time}
