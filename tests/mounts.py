"""Real disks for storage tests: loop-mounted ext4 images and tmpfs mounts.

Import what you use explicitly (``from tests.mounts import mounts, needs_root``).
Every mount made through the ``mounts`` fixture is undone in its teardown, whether
the test passed or not: unmounted (lazily when still busy, e.g. after a
filesystem shutdown or with a file held open) and its loop device detached.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oca.units import parse_size

needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loop devices and mounts"),
]
"""``pytestmark = needs_root`` (or ``@pytest.mark.usefixtures`` style per test)."""

# <linux/ext4.h>: EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32); with
# EXT4_GOING_FLAGS_NOLOGFLUSH every later open/read/write on the filesystem fails
# with EIO, as when the device under it dies.
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _check(*cmd: str) -> str:
    r = _run(*cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def mount_points() -> list[str]:
    """Mount points of this mount namespace, innermost last (from /proc/self/mountinfo)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        # Field 5 is the mount point, with space, tab, newline and backslash as \ooo.
        return [line.split()[4].encode().decode("unicode_escape") for line in f]


class Mount:
    """One mounted filesystem used as a disk: ``path`` is its mount point."""

    def __init__(self, path: Path, fstype: str, size: int, image: Path | None = None,
                 loop: str | None = None, options: str = ""):
        self.path = path
        self.fstype = fstype
        self.size = size
        self.image = image
        self.loop = loop
        self.options = options

    def __repr__(self) -> str:
        return f"Mount({str(self.path)!r}, {self.fstype}, {self.loop or 'no loop'})"

    @property
    def mounted(self) -> bool:
        return str(self.path) in mount_points()

    def mount(self) -> None:
        """Mount (again): the same image, or a fresh empty tmpfs."""
        if self.fstype == "tmpfs":
            opts = f"size={self.size}" + (f",{self.options}" if self.options else "")
            _check("mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.path))
        else:
            args = ["mount", "-t", self.fstype]
            if self.options:
                args += ["-o", self.options]
            _check(*args, str(self.loop), str(self.path))

    def unmount(self, lazy: bool = False) -> None:
        """``umount`` (``umount -l`` when *lazy*): the mount point becomes a plain folder."""
        _check("umount", *(["-l"] if lazy else []), str(self.path))

    def remount(self, options: str) -> None:
        """``mount -o remount,<options>``, e.g. ``ro`` or ``rw``."""
        _check("mount", "-o", f"remount,{options}", str(self.path))

    def shutdown(self) -> None:
        """Make the filesystem fail every later I/O with EIO (ext4 only); stays mounted."""
        if self.fstype != "ext4":
            raise ValueError(f"{self}: only ext4 can be shut down")
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def free(self) -> int:
        """Bytes an unprivileged writer may still use (statvfs f_bavail)."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int, name: str = "filler") -> Path:
        """Write a file outside the store so that about *leave* bytes stay free."""
        path = self.path / name
        todo = self.free() - leave
        block = b"\0" * (1 << 20)
        with open(path, "ab") as f:
            while todo > 0:
                n = min(todo, len(block))
                f.write(block[:n])
                todo -= n
            f.flush()
            os.fsync(f.fileno())
        return path

    def teardown(self) -> None:
        """Unmount every layer at the mount point (lazily if busy) and detach the loop."""
        errors = []
        for _ in range(8):
            if not self.mounted:
                break
            r = _run("umount", str(self.path))
            if r.returncode != 0:
                r = _run("umount", "-l", str(self.path))
                if r.returncode != 0:
                    errors.append(r.stderr.strip())
                    break
        if self.loop:
            # A loop still held by a lazily unmounted filesystem gets autoclear from
            # LOOP_CLR_FD and goes away with its last user; retry briefly anyway.
            for _ in range(20):
                r = _run("losetup", "-d", self.loop)
                if r.returncode == 0 or "No such device" in r.stderr:
                    break
                time.sleep(0.05)
            else:
                errors.append(r.stderr.strip())
            self.loop = None
        if self.image is not None:
            self.image.unlink(missing_ok=True)
        if errors:
            raise RuntimeError(f"teardown of {self}: {'; '.join(errors)}")


class Mounts:
    """Makes mounts under *root* and undoes them all in :meth:`cleanup`."""

    def __init__(self, root: Path):
        self.root = root
        self.made: list[Mount] = []

    def _mount_point(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def ext4(self, name: str, size: str | int = "48M", options: str = "",
             mkfs_args: tuple[str, ...] = ()) -> Mount:
        """A fresh ext4 filesystem of *size* in an image file, on its own loop device."""
        nbytes = parse_size(size) if isinstance(size, str) else size
        path = self._mount_point(name)
        image = self.root / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(nbytes)
        # -m 0: no blocks reserved for root, so statvfs free space is what root gets.
        # No lazy init: no kernel thread writing to the image behind the test's back.
        _check("mkfs.ext4", "-q", "-F", "-m", "0",
               "-E", "lazy_itable_init=0,lazy_journal_init=0", *mkfs_args, str(image))
        loop = _check("losetup", "--find", "--show", str(image))
        m = Mount(path, "ext4", nbytes, image=image, loop=loop, options=options)
        self.made.append(m)
        m.mount()
        return m

    def tmpfs(self, name: str, size: str | int = "32M", options: str = "") -> Mount:
        """A fresh tmpfs of *size*."""
        nbytes = parse_size(size) if isinstance(size, str) else size
        m = Mount(self._mount_point(name), "tmpfs", nbytes, options=options)
        self.made.append(m)
        m.mount()
        return m

    def cleanup(self) -> None:
        errors = []
        for m in reversed(self.made):
            try:
                m.teardown()
            except Exception as e:  # keep tearing the others down
                errors.append(str(e))
        self.made.clear()
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    """Factory for real disks; everything it mounted is unmounted and detached afterwards."""
    made = Mounts(tmp_path / "mnt")
    try:
        yield made
    finally:
        made.cleanup()
