"""tests/hangfs.py, the disk that hangs or fails on demand: passthrough, hang, fail, cleanup."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest

from oca.storage import layout
from tests.conftest import make_appliance, make_file
from tests.hangfs import HangControl, HangFS, hangfs
from tests.mounts import Mounts, mount_points, mounts, needs_root

__all__ = ["hangfs", "mounts"]  # the fixtures, imported for pytest
pytestmark = needs_root

# How long a parked operation must stay unfinished before we believe it waits for the switch.
STILL_BLOCKED = 1.0
# Generous bound for anything the switch lets go (a loaded 2-core machine).
DONE = 30.0

STAT_CHILD = "import os, sys; print(os.stat(sys.argv[1]).st_size)"


def _running(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie (an orphan's reaper may be slow or absent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_fuse_mount_and_options(hangfs: HangFS):
    line = next(ln for ln in Path("/proc/self/mounts").read_text().splitlines()
                if ln.split()[1] == str(hangfs.path.resolve()))
    source, _, fstype, *_ = line.split()
    assert (source, fstype) == ("hangfs", "fuse.hangfs")
    assert hangfs.mounted and hangfs.control.state == "ok"


def test_writes_land_in_the_backing_dir_with_exact_bytes(hangfs: HangFS):
    data = _bytes(3 * (1 << 20) + 12345, seed=1)  # several 128 KiB write requests
    with open(hangfs.path / "obj", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    assert (hangfs.backing / "obj").read_bytes() == data
    assert (hangfs.path / "obj").read_bytes() == data
    assert os.stat(hangfs.path / "obj").st_size == len(data)
    # And the other way: a file put in the backing dir is seen through the mount at once.
    (hangfs.backing / "direct").write_bytes(b"abc")
    assert (hangfs.path / "direct").read_bytes() == b"abc"
    assert os.stat(hangfs.path / "direct").st_ino == os.stat(hangfs.backing / "direct").st_ino
    # Partial writes and truncate.
    with open(hangfs.path / "obj", "r+b") as f:
        f.seek(10)
        f.write(b"XYZ")
        f.truncate(100)
    assert (hangfs.backing / "obj").read_bytes() == data[:10] + b"XYZ" + data[13:100]
    os.truncate(hangfs.path / "obj", 5)
    assert (hangfs.backing / "obj").read_bytes() == data[:5]


def test_sendfile_from_the_mount(hangfs: HangFS, tmp_path: Path):
    data = _bytes(1 << 20, seed=2)
    (hangfs.backing / "obj").write_bytes(data)
    src = os.open(hangfs.path / "obj", os.O_RDONLY)
    dst = os.open(tmp_path / "copy", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        sent = 0
        while sent < len(data):
            n = os.sendfile(dst, src, sent, len(data) - sent)
            assert n > 0
            sent += n
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "copy").read_bytes() == data


def test_statvfs_reports_the_backing_filesystem(mounts: Mounts):
    disk = mounts.tmpfs("backing", "16M")  # nobody else writes here: the figures hold still
    with HangFS(disk.path / "store", mounts.root / "hang") as fs:
        with open(fs.path / "fill", "wb") as f:
            f.write(b"\1" * (3 << 20))
            os.fsync(f.fileno())
        through, direct = os.statvfs(fs.path), os.statvfs(disk.path)
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail", "f_namemax"):
            assert getattr(through, field) == getattr(direct, field), field
        assert through.f_bfree < through.f_blocks


def test_the_store_operations(hangfs: HangFS):
    """What oca's atomic ingest and recovery do to a disk, one call at a time."""
    root = str(hangfs.path)
    layout.ensure_dir(os.path.join(root, "objects", "ab"))
    tmp = os.path.join(root, "objects", "ab", "x.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.posix_fallocate(fd, 0, 64 << 10)  # ENOSYS in fusepy: glibc writes the blocks
        os.pwrite(fd, b"payload", 0)
        os.ftruncate(fd, 7)
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    final = os.path.join(root, "objects", "ab", "x")
    Path(final).write_bytes(b"old")
    fd = os.open(final, os.O_RDONLY)  # held open across the replace: must not be hidden
    try:
        os.replace(tmp, final)
        assert os.pread(fd, 3, 0) == b"old"
    finally:
        os.close(fd)
    layout.fsync_dir(os.path.join(root, "objects", "ab"))
    assert sorted(os.listdir(os.path.join(root, "objects", "ab"))) == ["x"]
    assert (hangfs.backing / "objects" / "ab" / "x").read_bytes() == b"payload"
    os.utime(final, ns=(1_000_000_000_123, 2_000_000_000_456))
    assert os.stat(hangfs.backing / "objects/ab/x").st_mtime_ns == 2_000_000_000_456
    before = time.time_ns()
    os.utime(final)  # UTIME_NOW through libfuse
    assert os.stat(final).st_mtime_ns >= before - 10_000_000
    os.chmod(final, 0o600)
    assert os.stat(hangfs.backing / "objects/ab/x").st_mode & 0o777 == 0o600
    assert os.access(final, os.R_OK)
    os.rename(final, os.path.join(root, "objects", "y"))
    os.unlink(os.path.join(root, "objects", "y"))
    os.rmdir(os.path.join(root, "objects", "ab"))
    assert os.listdir(hangfs.backing / "objects") == []
    assert not any(n.startswith(".fuse_hidden") for n in os.listdir(hangfs.backing))


def test_an_appliance_disk_on_the_mount(hangfs: HangFS, tmp_path: Path):
    """``oca put`` and ``oca verify`` (processes of their own) on a tier whose disk is HangFS."""
    app = make_appliance(tmp_path / "app", {"ssd": ["64M"], "hdd": ["64M"]},
                         disk_paths={"hdd": [hangfs.path]})
    src = make_file(tmp_path / "src.bin", 700_000, seed=3)
    r = app.oca("put", "title.mp4", str(src), "--tier", "hdd")
    assert r.returncode == 0, r.stderr
    r = app.oca("verify")
    assert r.returncode == 0, r.stdout + r.stderr
    with app.open() as store:
        rec = store.get("title.mp4")
        assert rec.disk == str(hangfs.path)
        path = Path(store.path_of(rec))
    assert path.read_bytes() == src.read_bytes()
    backing = hangfs.backing / path.relative_to(hangfs.path)
    assert backing.read_bytes() == src.read_bytes()


# -- hang -------------------------------------------------------------------------------------


def test_a_stat_in_a_child_process_waits_for_release(hangfs: HangFS):
    (hangfs.backing / "obj").write_bytes(b"x" * 1234)
    hangfs.hang()
    child = subprocess.Popen([sys.executable, "-c", STAT_CHILD, str(hangfs.path / "obj")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    try:
        hangfs.wait_blocked(1, timeout=DONE)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=STILL_BLOCKED)
        assert hangfs.blocked >= 1
    finally:
        hangfs.release()
    out, err = child.communicate(timeout=DONE)
    assert (child.returncode, out.strip()) == (0, "1234"), err
    assert hangfs.blocked == 0


def _open_read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


# Each: what a disk probe or an ingest does, and what it returns once released.
OPERATIONS: dict[str, Callable[[Path], object]] = {
    "stat": lambda m: os.stat(m / "obj").st_size,
    "stat of the mount point": lambda m: os.path.isdir(m),
    "statvfs": lambda m: os.statvfs(m).f_namemax > 0,
    "listdir": lambda m: sorted(os.listdir(m)),
    "open and read": lambda m: _open_read(m / "obj"),
    "create": lambda m: (m / "new").write_bytes(b"n"),
    "mkdir": lambda m: os.mkdir(m / "dir"),
    "rename": lambda m: os.rename(m / "obj", m / "moved"),
    "unlink": lambda m: os.unlink(m / "obj"),
}
RESULTS = {"stat": 3, "stat of the mount point": True, "statvfs": True,
           "listdir": ["obj"], "open and read": b"abc", "create": 1}


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_waits_while_hung(hangfs: HangFS, name: str):
    (hangfs.backing / "obj").write_bytes(b"abc")
    hangfs.hang()
    # A thread: the caller sleeps in the kernel, this thread goes on and releases.
    pool = ThreadPoolExecutor(1)
    try:
        future = pool.submit(OPERATIONS[name], hangfs.path)
        hangfs.wait_blocked(1, timeout=DONE)
        with pytest.raises(FutureTimeout):
            future.result(timeout=STILL_BLOCKED)
    finally:
        hangfs.release()
        pool.shutdown(wait=True)
    assert future.result(timeout=0) == RESULTS.get(name)


def test_an_open_file_waits_while_hung(hangfs: HangFS):
    """read and fsync on a file opened before the hang go to the daemon too (no page yet)."""
    (hangfs.backing / "obj").write_bytes(b"abc")
    fd = os.open(hangfs.path / "obj", os.O_RDWR)
    pool = ThreadPoolExecutor(2)
    try:
        hangfs.hang()
        reads = pool.submit(os.pread, fd, 3, 0)
        syncs = pool.submit(os.fsync, fd)
        hangfs.wait_blocked(2, timeout=DONE)
        with pytest.raises(FutureTimeout):
            reads.result(timeout=STILL_BLOCKED)
        assert not syncs.done()
    finally:
        hangfs.release()
        pool.shutdown(wait=True)
        os.close(fd)
    assert reads.result(timeout=0) == b"abc"
    assert syncs.result(timeout=0) is None


def test_a_parked_process_survives_sigkill_until_release(hangfs: HangFS):
    """The kernel fact behind 'oca status blocked, unkillable': SIGKILL waits for the answer."""
    (hangfs.backing / "obj").write_bytes(b"abc")
    hangfs.hang()
    child = subprocess.Popen([sys.executable, "-c", STAT_CHILD, str(hangfs.path / "obj")],
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        hangfs.wait_blocked(1, timeout=DONE)
        child.send_signal(signal.SIGKILL)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=STILL_BLOCKED)
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "D"  # uninterruptible sleep, in fuse's request_wait_answer
    finally:
        hangfs.release()
    assert child.wait(timeout=DONE) == -signal.SIGKILL


def test_page_cache_answers_reads_of_an_open_file_while_hung(hangfs: HangFS):
    """What the kernel still serves: pages already read through a file opened before."""
    (hangfs.backing / "obj").write_bytes(b"cached")
    fd = os.open(hangfs.path / "obj", os.O_RDONLY)
    try:
        assert os.pread(fd, 6, 0) == b"cached"
        hangfs.hang()
        assert os.pread(fd, 6, 0) == b"cached"
        assert hangfs.blocked == 0
    finally:
        hangfs.release()
        os.close(fd)


def test_direct_io_sends_even_cached_reads_to_the_daemon(tmp_path: Path):
    with HangFS(tmp_path / "b", tmp_path / "m", direct_io=True) as fs:
        (fs.backing / "obj").write_bytes(b"direct")
        fd = os.open(fs.path / "obj", os.O_RDONLY)
        pool = ThreadPoolExecutor(1)
        try:
            assert os.pread(fd, 6, 0) == b"direct"
            fs.hang()
            future = pool.submit(os.pread, fd, 6, 0)
            fs.wait_blocked(1, timeout=DONE)
            assert not future.done()
        finally:
            fs.release()
            pool.shutdown(wait=True)
            os.close(fd)
        assert future.result(timeout=0) == b"direct"


# -- fail -------------------------------------------------------------------------------------


def test_fail_eio_on_read_and_stat_then_heal(hangfs: HangFS):
    (hangfs.backing / "obj").write_bytes(b"abc")
    fd = os.open(hangfs.path / "obj", os.O_RDONLY)  # opened while healthy; nothing cached
    try:
        hangfs.fail(errno.EIO)
        for call in (lambda: os.pread(fd, 3, 0), lambda: os.stat(hangfs.path / "obj"),
                     lambda: os.open(hangfs.path / "obj", os.O_RDONLY),
                     lambda: os.statvfs(hangfs.path), lambda: os.listdir(hangfs.path)):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EIO
        hangfs.heal()
        assert os.pread(fd, 3, 0) == b"abc"
        assert os.stat(hangfs.path / "obj").st_size == 3
    finally:
        hangfs.heal()
        os.close(fd)


def test_fail_with_another_errno(hangfs: HangFS):
    fd = os.open(hangfs.path / "obj", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        hangfs.fail(errno.ENOSPC)
        with pytest.raises(OSError) as e:
            os.write(fd, b"x" * 8192)
        assert e.value.errno == errno.ENOSPC
        hangfs.heal()
        assert os.write(fd, b"ok") == 2
    finally:
        hangfs.heal()
        os.close(fd)
    assert (hangfs.backing / "obj").read_bytes() == b"ok"
    with pytest.raises(ValueError):
        hangfs.fail(0)


# -- control and cleanup ----------------------------------------------------------------------


def test_another_process_works_the_switch(hangfs: HangFS):
    """The CLI (python -m tests.hangfs) and HangControl open the control file, not the mount."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def cli(command: str, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "tests.hangfs", command,
                            str(hangfs.control_path), *args], capture_output=True, text=True,
                           env=env, stdin=subprocess.DEVNULL, timeout=DONE)
        assert r.returncode == 0, r.stderr
        return r.stdout

    cli("hang")
    assert hangfs.control.state == "hang"
    cli("fail", "EROFS")
    assert hangfs.control.state == "fail"
    with pytest.raises(OSError) as e:
        os.mkdir(hangfs.path / "d")
    assert e.value.errno == errno.EROFS
    cli("heal")
    assert cli("state").startswith("ok blocked=0 calls=")
    other = HangControl(hangfs.control_path)
    try:
        other.hang()
        assert hangfs.control.state == "hang"
        other.release()
    finally:
        other.close()
    os.mkdir(hangfs.path / "d")


def test_cleanup_when_the_body_raises_while_hung(tmp_path: Path):
    fs = HangFS(tmp_path / "b", tmp_path / "m")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "obj").write_bytes(b"abc")
    child = None
    with pytest.raises(RuntimeError, match="the test failed"), fs:
        fs.hang()
        child = subprocess.Popen([sys.executable, "-c", STAT_CHILD, str(fs.path / "obj")],
                                 stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        fs.wait_blocked(1, timeout=DONE)
        raise RuntimeError("the test failed")
    assert str(fs.path.resolve()) not in mount_points()
    assert fs.process.returncode is not None
    out, _ = child.communicate(timeout=DONE)  # released before the unmount: answered
    assert (child.returncode, out.strip()) == (0, "3")
    assert not fs.control_path.exists()


def test_cleanup_with_a_file_held_open_by_another_process(tmp_path: Path):
    """A server still holding a file: fusermount -u is EBUSY, umount -l detaches."""
    fs = HangFS(tmp_path / "b", tmp_path / "m")
    with fs:
        (fs.backing / "obj").write_bytes(b"abc")
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'rb'); "
             "print(f.read(), flush=True); time.sleep(60)", str(fs.path / "obj")],
            stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        assert holder.stdout.readline().strip() == "b'abc'"
    try:
        assert str(fs.path.resolve()) not in mount_points()
        assert fs.process.returncode is not None
    finally:
        holder.kill()
        holder.communicate(timeout=DONE)


def test_the_daemon_unmounts_when_its_owner_dies(tmp_path: Path):
    """pytest killed mid-test (no teardown): the daemon releases and unmounts by itself."""
    script = textwrap.dedent(f"""
        import os
        from tests.hangfs import HangFS
        fs = HangFS({str(tmp_path / "b")!r}, {str(tmp_path / "m")!r}).start()
        fs.hang()
        print(fs.process.pid, flush=True)
        os._exit(0)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=DONE)
    assert r.returncode == 0, r.stderr
    daemon = int(r.stdout)
    mount = str((tmp_path / "m").resolve())
    deadline = time.monotonic() + DONE
    while mount in mount_points() or _running(daemon):
        if time.monotonic() > deadline:
            subprocess.run(["umount", "-l", mount], check=False)
            os.kill(daemon, signal.SIGKILL)
            pytest.fail(f"daemon {daemon} left {mount} mounted after its owner died")
        time.sleep(0.1)


def test_start_refuses_a_mount_point_in_use(hangfs: HangFS, tmp_path: Path):
    with pytest.raises(RuntimeError, match="already a mount point"):
        HangFS(tmp_path / "other", hangfs.path).start()
    assert hangfs.mounted
