"""What the figures were measured on: CPU model and the filesystem under a path."""

from __future__ import annotations

import os
import platform

import psutil


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def filesystem_of(path: str) -> str:
    """'ext4 /dev/vda on /' for the mount holding *path*."""
    path = os.path.realpath(path)
    best = None
    for p in psutil.disk_partitions(all=True):
        mp = p.mountpoint.rstrip("/") or "/"
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
                best is None or len(mp) > len(best.mountpoint)):
            best = p
    return f"{best.fstype} {best.device} on {best.mountpoint}" if best else "unknown"
