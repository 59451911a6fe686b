"""send_file against both implementations: the Cython extension and its pure-Python twin."""

import errno
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.fastpath.conftest import CONNECTIONS, IMPLEMENTATIONS
from tests.fastpath.peer import Reader

SIZE = 3 * 1024 * 1024


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
def file_fd(tmp_path: Path, data: bytes) -> Iterator[int]:
    path = tmp_path / "object.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def send_and_receive(impl: ModuleType, pair, file_fd: int, offset: int, count: int):
    sender, receiver = pair
    reader = Reader(receiver)
    try:
        sent = impl.send_file(sender.fileno(), file_fd, offset, count)
    finally:
        sender.shutdown(socket.SHUT_WR)
    return sent, reader.result()


def test_whole_file(impl, pair, file_fd, data):
    sent, received = send_and_receive(impl, pair, file_fd, 0, SIZE)
    assert sent == SIZE
    assert received == data


def test_range_at_odd_offset(impl, pair, file_fd, data):
    offset, count = 123_457, 1_000_003
    sent, received = send_and_receive(impl, pair, file_fd, offset, count)
    assert sent == count
    assert received == data[offset : offset + count]


def test_file_position_is_not_moved(impl, pair, file_fd, data):
    send_and_receive(impl, pair, file_fd, 4096, 4096)
    assert os.lseek(file_fd, 0, os.SEEK_CUR) == 0


def test_count_past_eof_sends_up_to_eof(impl, pair, file_fd, data):
    offset = SIZE - 1001
    sent, received = send_and_receive(impl, pair, file_fd, offset, 50_000)
    assert sent == 1001
    assert received == data[offset:]


def test_offset_at_eof_sends_nothing(impl, pair, file_fd):
    assert send_and_receive(impl, pair, file_fd, SIZE, 10) == (0, b"")


def test_count_zero_sends_nothing(impl, pair, file_fd):
    assert send_and_receive(impl, pair, file_fd, 0, 0) == (0, b"")


@pytest.mark.parametrize(("offset", "count"), [(-1, 10), (0, -1)])
def test_negative_offset_or_count_is_refused(impl, pair, file_fd, offset, count):
    with pytest.raises(ValueError):
        impl.send_file(pair[0].fileno(), file_fd, offset, count)


def test_full_nonblocking_socket_returns_partial_count(impl, pair, file_fd, data):
    sender, receiver = pair
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sender.setblocking(False)

    sent = impl.send_file(sender.fileno(), file_fd, 0, SIZE)
    assert 0 < sent < SIZE

    reader = Reader(receiver)
    try:
        while sent < SIZE:
            select.select([], [sender], [])
            sent += impl.send_file(sender.fileno(), file_fd, sent, SIZE - sent)
    finally:
        sender.shutdown(socket.SHUT_WR)
    assert sent == SIZE
    assert reader.result() == data


def test_closed_file_fd_raises_ebadf(impl, pair, tmp_path):
    path = tmp_path / "closed.bin"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as info:
        impl.send_file(pair[0].fileno(), fd, 0, 100)
    assert info.value.errno == errno.EBADF


def test_peer_closed_raises_epipe(impl, pair, file_fd):
    sender, receiver = pair
    receiver.close()
    with pytest.raises(OSError) as info:
        impl.send_file(sender.fileno(), file_fd, 0, SIZE)
    assert info.value.errno == errno.EPIPE


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "cython"), ("", "cython"), ("0", "cython"), ("1", "python")]
)
def test_selector_honours_no_extensions_env(value, expected):
    import _fastpath

    env = dict(os.environ)
    env.pop(_fastpath.NO_EXTENSIONS_ENV, None)
    if value is not None:
        env[_fastpath.NO_EXTENSIONS_ENV] = value
    out = subprocess.run(
        [sys.executable, "-c", "import _fastpath; print(_fastpath.IMPLEMENTATION, "
         "_fastpath.Connection.__module__, _fastpath.send_response.__module__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # The connection loop and the send loop are chosen together: the compiled
    # connection calls the compiled sender at C level, the twin calls the twin.
    assert out.stdout.strip().split() == [expected, CONNECTIONS[expected],
                                          IMPLEMENTATIONS[expected]]
