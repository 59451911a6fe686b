"""A disk that hangs or fails on demand: a FUSE passthrough filesystem for tests.

``HangFS(backing, mountpoint)`` mounts *backing* (a folder) at *mountpoint* through a FUSE
daemon (fusepy over libfuse 2) that runs in a process of its own; every operation is passed
through to *backing* unless the test says otherwise:

- ``hang()``: from now on every operation parks inside the daemon (the caller sleeps in the
  kernel) until ``release()``, which lets the parked ones and all later ones proceed. This is
  a dying HDD with 30-second I/O timeouts, or a stuck NFS/iSCSI mount.
- ``fail(errno)``: every operation fails with *errno* (``EIO`` by default) until ``heal()``.

Import what you use (``from tests.hangfs import HangFS, hangfs``); the ``hangfs`` fixture is
one HangFS over ``tmp_path/"hangfs-backing"`` at ``tmp_path/"hangfs"``. Mounting needs root
(``/dev/fuse`` is ``crw-------``): mark the tests with ``tests.mounts.needs_root``.

The switch is a 16-byte control file outside the mount (``control_path``) that the daemon
maps shared and reads on every operation, so a change takes effect at the next operation,
with no round trip. The test process holds the switch; a server under test (``oca serve`` in
a subprocess) only uses ``path`` as a disk. Another process can work it with
``HangControl(control_path)``, and a person at a shell with
``python -m tests.hangfs release CONTROL_PATH``. ``blocked`` (operations parked now),
``wait_blocked(n)`` and ``calls`` (operations seen) tell a test that the code under test has
reached the disk, without timing anything.

With a server in a subprocess: ask for ``hangfs`` before the server's fixture (pytest tears
fixtures down in reverse, so the mount outlives the server), give ``hangfs.path`` as the
tier's disk, and call ``hangfs.release()`` before stopping the server: a worker parked on
the disk cannot die until the disk answers (see below).

Kernel facts that shape the fixture and any test that uses it:

- The kernel caches lookups and attributes of a FUSE filesystem for a second by default and
  answers ``stat`` from that cache without asking the daemon, so a hung disk would not look
  hung. The mount uses ``attr_timeout=0,entry_timeout=0,negative_timeout=0``: every path
  walk and every ``stat``/``fstat`` reaches the daemon.
- What the kernel still answers while hung: file data already in the page cache for a file
  opened before the hang (``read``/``sendfile`` of pages read or written earlier on that
  open file), as with a real disk's page cache; ``direct_io=True`` sends every read and
  write to the daemon instead (it breaks ``mmap`` of files on the mount). ``close()`` itself
  returns only after FLUSH, which parks too. Reading ``/proc/mounts`` never touches the
  filesystem.
- A process whose request the daemon has read cannot be killed, not even by SIGKILL: it
  sleeps in the kernel (state D) until the daemon answers it (``release()``) or the daemon
  dies (the kernel then fails every pending and later request with ENOTCONN). So never
  touch ``path`` from the process that holds the switch while hung, except from a thread or
  a child you can give up on; and release a hang before reaping anything that used the mount.
- ``fusermount -u`` works even while hung (as root it does not look into the filesystem),
  but refuses (EBUSY) while a file on it is open; ``umount -l`` then detaches it at once
  and the filesystem goes away with its last open file. Cleanup releases first (so parked
  callers get their real answers, not ENOTCONN), then unmounts (``fusermount -u``, else
  ``umount -l``), then waits for the daemon to exit on its own, then stops it (SIGTERM,
  SIGKILL), and checks that no mount is left behind, whether the test passed or not. A
  daemon whose owner dies (pytest killed mid-test) releases and unmounts by itself.
- ``statvfs`` through the mount gives the backing filesystem's sizes and counts; only
  ``f_flag`` is the FUSE mount's own (``nosuid,nodev`` added).
- Performance: every operation is a round trip through Python, about 0.1 ms here (a
  ``stat`` is a lookup and a getattr: 0.19 ms); writes come in 128 KiB requests
  (``big_writes``: 8 MiB in 72 operations, 17 ms). fusepy 3.0 has no ``fallocate``, so
  ``posix_fallocate`` falls back to glibc's emulation, one one-byte write per 4 KiB block:
  fine for test objects, slow for gigabytes.
- Unlinking or replacing a file that is open removes it at once (``hard_remove``), as on a
  local filesystem, instead of libfuse's default of renaming it to ``.fuse_hidden*``.
"""

from __future__ import annotations

import argparse
import errno
import mmap
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fuse
import pytest

from tests.mounts import mount_points

# The control file: state and errno (written by whoever holds the switch), then the number
# of operations parked in the daemon now and of operations seen so far (written by the daemon).
_SWITCH = struct.Struct("=ii")
_COUNTS = struct.Struct("=II")
_CONTROL_SIZE = _SWITCH.size + _COUNTS.size
OK, HANG, FAIL = 0, 1, 2
_STATE_NAMES = {OK: "ok", HANG: "hang", FAIL: "fail"}
_PARK_POLL = 0.005  # seconds between looks at the switch while parked

# <sys/stat.h> utimensat's special nanosecond values; libfuse passes them with tv_sec = 0
# when the operations set flag_utime_omit_ok (touch, os.utime(path) without times).
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2

_REPO = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


class HangControl:
    """The switch of one HangFS daemon, through its control file; any process may open it."""

    def __init__(self, control_path: Path | str):
        self.path = Path(control_path)
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, _CONTROL_SIZE)
        finally:
            os.close(fd)

    @staticmethod
    def create(control_path: Path | str) -> HangControl:
        """Write a fresh control file (state ok, counters zero) and open it."""
        Path(control_path).write_bytes(b"\0" * _CONTROL_SIZE)
        return HangControl(control_path)

    def _set(self, state: int, err: int) -> None:
        # errno first: a daemon that sees FAIL must see its errno.
        struct.pack_into("=i", self._map, 4, err)
        struct.pack_into("=i", self._map, 0, state)

    def hang(self) -> None:
        """From now on every operation parks in the daemon until :meth:`release`."""
        self._set(HANG, 0)

    def release(self) -> None:
        """Parked and later operations proceed (also ends a :meth:`fail`)."""
        self._set(OK, 0)

    def fail(self, errno_value: int = errno.EIO) -> None:
        """From now on every operation fails with *errno_value* until :meth:`heal`."""
        if errno_value <= 0:
            raise ValueError(f"errno must be positive, got {errno_value}")
        self._set(FAIL, errno_value)

    def heal(self) -> None:
        """Operations succeed again (also ends a :meth:`hang`)."""
        self._set(OK, 0)

    @property
    def state(self) -> str:
        """``"ok"``, ``"hang"`` or ``"fail"``."""
        return _STATE_NAMES[_SWITCH.unpack_from(self._map, 0)[0]]

    @property
    def blocked(self) -> int:
        """Operations parked in the daemon now."""
        return _COUNTS.unpack_from(self._map, _SWITCH.size)[0]

    @property
    def calls(self) -> int:
        """Operations the daemon has been asked for since it started (parked ones included)."""
        return _COUNTS.unpack_from(self._map, _SWITCH.size)[1]

    def wait_blocked(self, n: int = 1, timeout: float = 10.0) -> None:
        """Return once at least *n* operations are parked; TimeoutError after *timeout* s."""
        deadline = time.monotonic() + timeout
        while self.blocked < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: {self.blocked} operations parked after "
                                   f"{timeout} s, waited for {n}")
            time.sleep(0.01)

    def close(self) -> None:
        self._map.close()


class HangFS:
    """A FUSE passthrough of *backing* at *mountpoint* that hangs or fails on demand.

    Use as a context manager (or :meth:`start` / :meth:`close`); ``path`` is the mount
    point to give the code under test as a disk. Both folders are created if missing. The
    control file defaults to ``<mountpoint>.hangfs-control`` beside the mount point, and the
    daemon's log to ``<mountpoint>.hangfs-log``. *direct_io* sends every read and write to
    the daemon, even of pages the kernel has cached (see the module docstring).
    """

    def __init__(self, backing: Path | str, mountpoint: Path | str,
                 control_path: Path | str | None = None, direct_io: bool = False,
                 start_timeout: float = 10.0):
        self.backing = Path(backing)
        self.path = Path(mountpoint)
        self.control_path = Path(control_path or f"{self.path}.hangfs-control")
        self.log_path = Path(f"{self.path}.hangfs-log")
        self.direct_io = direct_io
        self.start_timeout = start_timeout
        self.control: HangControl | None = None
        self.process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"HangFS({str(self.backing)!r} at {str(self.path)!r}, daemon pid {pid})"

    # -- the switch ------------------------------------------------------------------------

    def _switch(self) -> HangControl:
        if self.control is None:
            raise RuntimeError(f"{self}: not started")
        return self.control

    def hang(self) -> None:
        """From now on every operation parks in the daemon until :meth:`release`."""
        self._switch().hang()

    def release(self) -> None:
        """Parked and later operations proceed (also ends a :meth:`fail`)."""
        self._switch().release()

    def fail(self, errno_value: int = errno.EIO) -> None:
        """From now on every operation fails with *errno_value* until :meth:`heal`."""
        self._switch().fail(errno_value)

    def heal(self) -> None:
        """Operations succeed again (also ends a :meth:`hang`)."""
        self._switch().heal()

    @property
    def blocked(self) -> int:
        """Operations parked in the daemon now."""
        return self._switch().blocked

    @property
    def calls(self) -> int:
        """Operations the daemon has been asked for since it started."""
        return self._switch().calls

    def wait_blocked(self, n: int = 1, timeout: float = 10.0) -> None:
        """Return once at least *n* operations are parked; TimeoutError after *timeout* s."""
        self._switch().wait_blocked(n, timeout)

    # -- mount and unmount -----------------------------------------------------------------

    @property
    def mounted(self) -> bool:
        """Whether the mount point is mounted (from /proc/self/mountinfo; never blocks)."""
        return str(self.path.resolve()) in mount_points()

    def start(self) -> HangFS:
        """Start the daemon and return once the mount answers; cleans up if it does not."""
        self.backing.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        if self.mounted:
            raise RuntimeError(f"{self.path} is already a mount point")
        self.control = HangControl.create(self.control_path)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "tests.hangfs", "serve", str(self.backing.resolve()),
               str(self.path.resolve()), str(self.control_path.resolve())]
        if self.direct_io:
            cmd.append("--direct-io")
        try:
            with open(self.log_path, "wb") as log:
                # Own session: a Ctrl-C meant for pytest must not kill the daemon before the
                # fixture has released and unmounted.
                self.process = subprocess.Popen(cmd, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=log, start_new_session=True)
            deadline = time.monotonic() + self.start_timeout
            while not self.mounted:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self}: daemon exited with {self.process.returncode} "
                                       f"before mounting: {self._log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self}: not mounted after {self.start_timeout} s: "
                                       f"{self._log_tail()}")
                time.sleep(0.02)
            os.stat(self.path)  # the first request waits for the daemon's INIT reply
        except BaseException:
            self.close()
            raise
        return self

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip() or "(no output)"
        except OSError as e:
            return f"(no log: {e})"

    def close(self) -> None:
        """Release, unmount, stop the daemon; raise if a mount or a daemon is left behind."""
        errors = []
        if self.control is not None:
            self.control.release()  # before anything below looks the mount point up
        if self.mounted:
            r = _run("fusermount", "-u", str(self.path))
            if r.returncode != 0:
                # Busy (a file still open) or not answering: detach now, it goes with its
                # last open file.
                r = _run("umount", "-l", str(self.path))
                if r.returncode != 0:
                    errors.append(f"umount -l: {r.stderr.strip()}")
        if self.process is not None:
            # After a lazy unmount the daemon serves the open files until they are closed;
            # then libfuse's loop ends. SIGTERM ends it now (open files get ENOTCONN).
            for stop in (None, self.process.terminate, self.process.kill):
                if stop is not None:
                    stop()
                try:
                    self.process.wait(timeout=2 if stop is None else 5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                errors.append(f"daemon pid {self.process.pid} did not exit after SIGKILL")
        if self.mounted:
            # A daemon killed before the unmount leaves a dead mount (ENOTCONN) behind.
            r = _run("umount", "-l", str(self.path))
            if r.returncode != 0 or self.mounted:
                errors.append(f"still mounted: {r.stderr.strip()}")
        if self.control is not None:
            self.control.close()
            self.control = None
            self.control_path.unlink(missing_ok=True)
        if errors:
            raise RuntimeError(f"cleanup of {self}: {'; '.join(errors)}; {self._log_tail()}")
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> HangFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def hangfs(tmp_path: Path) -> Iterator[HangFS]:
    """A HangFS over ``tmp_path/"hangfs-backing"`` at ``tmp_path/"hangfs"``; always cleaned up."""
    with HangFS(tmp_path / "hangfs-backing", tmp_path / "hangfs") as fs:
        yield fs


# -- the daemon (python -m tests.hangfs serve ...) ------------------------------------------


class _Passthrough(fuse.Operations):
    """Every operation on *root*, behind the switch in the control map."""

    # fusepy 3.0: times as integer nanoseconds (the float seconds API is deprecated and warns).
    use_ns = True
    # libfuse hands utimens UTIME_NOW/UTIME_OMIT through instead of guessing (see utimens).
    flag_utime_omit_ok = 1
    # Calls on an open file come with path None once the file is unlinked or replaced
    # (hard_remove); without this flag libfuse fails them with ENOENT.
    flag_nullpath_ok = 1

    def __init__(self, root: str, switch: mmap.mmap, direct_io: bool):
        self.root = root
        self.switch = switch
        self.direct_io = direct_io
        self._lock = threading.Lock()
        self._blocked = 0
        self._calls = 0

    def _count(self, blocked: int = 0, calls: int = 0) -> None:
        with self._lock:
            self._blocked += blocked
            self._calls += calls
            _COUNTS.pack_into(self.switch, _SWITCH.size, self._blocked, self._calls)

    def _gate(self) -> None:
        self._count(calls=1)
        parked = False
        try:
            while True:
                state, err = _SWITCH.unpack_from(self.switch, 0)
                if state != HANG:
                    break
                if not parked:
                    self._count(blocked=1)
                    parked = True
                time.sleep(_PARK_POLL)
        finally:
            if parked:
                self._count(blocked=-1)
        if state == FAIL:
            raise fuse.FuseOSError(err if err > 0 else errno.EIO)

    def __call__(self, op, *args):
        if op not in ("init", "destroy"):
            self._gate()
        return super().__call__(op, *args)

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # Metadata.
    def getattr(self, path, fh=None):
        # fgetattr gets libfuse's fuse_file_info, getattr a NULL pointer (false).
        st = os.fstat(fh.fh) if fh else os.lstat(self._full(path))
        attrs = {key: getattr(st, key) for key in (
            "st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
            "st_blksize", "st_rdev")}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def access(self, path, amode):
        if not os.access(self._full(path), amode):
            raise fuse.FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        full = self._full(path)
        if times is None:
            os.utime(full)
            return
        if _UTIME_NOW in times or _UTIME_OMIT in times:
            st = os.lstat(full)
            now = time.time_ns()
            old = (st.st_atime_ns, st.st_mtime_ns)
            times = tuple(now if t == _UTIME_NOW else o if t == _UTIME_OMIT else t
                          for t, o in zip(times, old, strict=True))
        os.utime(full, ns=times)

    def statfs(self, path):
        sv = os.statvfs(self._full(path))
        return {key: getattr(sv, key) for key in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    # Names.
    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def unlink(self, path):
        os.unlink(self._full(path))

    def rename(self, old, new):
        os.rename(self._full(old), self._full(new))  # replaces *new*, atomically

    def opendir(self, path):
        return os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._full(path))]

    def fsyncdir(self, path, datasync, fh):
        os.fsync(fh)

    def releasedir(self, path, fh):
        os.close(fh)

    # Files (raw_fi: *fi* is libfuse's fuse_file_info; our fd is fi.fh).
    def create(self, path, mode, fi):
        fi.fh = os.open(self._full(path), fi.flags | os.O_CLOEXEC, mode)
        fi.direct_io = self.direct_io
        return 0

    def open(self, path, fi):
        fi.fh = os.open(self._full(path), fi.flags | os.O_CLOEXEC)
        fi.direct_io = self.direct_io
        return 0

    def read(self, path, size, offset, fi):
        return os.pread(fi.fh, size, offset)

    def write(self, path, data, offset, fi):
        return os.pwrite(fi.fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh:  # ftruncate: libfuse's fuse_file_info; truncate: None
            os.ftruncate(fh.fh, length)
        else:
            os.truncate(self._full(path), length)

    def fsync(self, path, datasync, fi):
        (os.fdatasync if datasync else os.fsync)(fi.fh)

    def flush(self, path, fi):
        return 0

    def release(self, path, fi):
        os.close(fi.fh)


def _watch_owner(owner: int, switch: mmap.mmap, mountpoint: str) -> None:
    """When the process that started us is gone, release and unmount: leave nothing behind."""
    while os.getppid() == owner:
        time.sleep(0.5)
    struct.pack_into("=i", switch, 0, OK)
    _run("fusermount", "-u", "-z", mountpoint)


def serve(backing: str, mountpoint: str, control_path: str, direct_io: bool = False) -> None:
    """Run the daemon in the foreground until unmounted or SIGTERM."""
    fd = os.open(control_path, os.O_RDWR | os.O_CLOEXEC)
    try:
        switch = mmap.mmap(fd, _CONTROL_SIZE)
    finally:
        os.close(fd)
    threading.Thread(target=_watch_owner, args=(os.getppid(), switch, mountpoint),
                     daemon=True).start()
    fuse.FUSE(
        _Passthrough(backing, switch, direct_io), mountpoint, raw_fi=True,
        foreground=True, nothreads=False, fsname="hangfs", subtype="hangfs",
        # Every lookup and stat reaches the daemon (see the module docstring).
        attr_timeout=0, entry_timeout=0, negative_timeout=0,
        use_ino=True, hard_remove=True, big_writes=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hangfs", description=__doc__.split(
        "\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the FUSE daemon in the foreground")
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("control")
    p.add_argument("--direct-io", action="store_true")
    for name in ("hang", "release", "heal", "fail", "state"):
        p = sub.add_parser(name, help=f"{name} a running HangFS through its control file")
        p.add_argument("control")
        if name == "fail":
            p.add_argument("errno", nargs="?", default="EIO", help="name or number (EIO)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.backing, args.mountpoint, args.control, args.direct_io)
        return 0
    control = HangControl(args.control)
    if args.command == "state":
        print(f"{control.state} blocked={control.blocked} calls={control.calls}")
    elif args.command == "fail":
        value = args.errno
        control.fail(int(value) if value.isdigit() else getattr(errno, value))
    else:
        getattr(control, args.command)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
