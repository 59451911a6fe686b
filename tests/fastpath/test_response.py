"""send_response against both implementations: head and body, resumption, budget, errors,
and (compiled module, Linux) head and first body bytes in one TCP segment."""

import errno
import importlib
import os
import select
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.fastpath.conftest import IMPLEMENTATIONS
from tests.fastpath.peer import Reader

SIZE = 3 * 1024 * 1024 + 77
HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: video/mp4\r\n"
    b'ETag: "0123456789abcdef0123456789abcdef"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"Content-Length: 3145805\r\n"
    b"\r\n"
)
# Bigger than the 64 KiB send buffers below: the first stop falls inside the head.
BIG_HEAD = os.urandom(256 * 1024)


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
def object_path(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "object.bin"
    path.write_bytes(data)
    return path


@pytest.fixture
def file_fd(object_path: Path) -> Iterator[int]:
    fd = os.open(object_path, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.fixture(params=["unix", "tcp"])
def conn(request: pytest.FixtureRequest) -> tuple[socket.socket, socket.socket]:
    """(sender, receiver) over AF_UNIX and over TCP on 127.0.0.1."""
    return request.getfixturevalue("pair" if request.param == "unix" else "tcp_pair")


def send_blocking(
    impl: ModuleType,
    conn: tuple[socket.socket, socket.socket],
    head: bytes,
    file_fd: int,
    offset: int,
    count: int,
    sent: int = 0,
    budget: int = 0,
) -> tuple[int, bytes]:
    """One call on a blocking socket with a reader draining the peer; (sent, bytes read)."""
    sender, receiver = conn
    reader = Reader(receiver)
    try:
        sent = impl.send_response(sender.fileno(), head, file_fd, offset, count, sent, budget)
    finally:
        sender.shutdown(socket.SHUT_WR)
    return sent, reader.result()


def make_small_buffers(sender: socket.socket, receiver: socket.socket) -> None:
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sender.setblocking(False)


def test_selector_exports_send_response():
    import _fastpath

    selected = importlib.import_module(IMPLEMENTATIONS[_fastpath.IMPLEMENTATION])
    assert _fastpath.send_response is selected.send_response


def test_head_and_whole_file(impl, conn, file_fd, data):
    sent, received = send_blocking(impl, conn, HEAD, file_fd, 0, SIZE)
    assert sent == len(HEAD) + SIZE
    assert received == HEAD + data


def test_head_and_range_at_odd_offset(impl, conn, file_fd, data):
    offset, count = 123_457, 1_000_003
    sent, received = send_blocking(impl, conn, HEAD, file_fd, offset, count)
    assert sent == len(HEAD) + count
    assert received == HEAD + data[offset : offset + count]


def test_head_only_needs_no_file(impl, conn):
    sent, received = send_blocking(impl, conn, HEAD, -1, 0, 0)
    assert (sent, received) == (len(HEAD), HEAD)


def test_empty_head_sends_the_body_only(impl, conn, file_fd, data):
    sent, received = send_blocking(impl, conn, b"", file_fd, 4097, 70_001)
    assert (sent, received) == (70_001, data[4097 : 4097 + 70_001])


def test_empty_response_sends_nothing(impl, pair):
    assert send_blocking(impl, pair, b"", -1, 0, 0) == (0, b"")


@pytest.mark.parametrize("already", [1, len(HEAD), len(HEAD) + 5000])
def test_resumes_after_the_bytes_already_sent(impl, pair, file_fd, data, already):
    offset, count = 999, 100_000
    whole = HEAD + data[offset : offset + count]
    sent, received = send_blocking(impl, pair, HEAD, file_fd, offset, count, sent=already)
    assert (sent, received) == (len(whole), whole[already:])


def test_done_response_sends_nothing(impl, pair, file_fd):
    total = len(HEAD) + 100
    assert send_blocking(impl, pair, HEAD, file_fd, 0, 100, sent=total) == (total, b"")


def test_file_position_is_not_moved(impl, pair, file_fd):
    send_blocking(impl, pair, HEAD, file_fd, 4096, 4096)
    assert os.lseek(file_fd, 0, os.SEEK_CUR) == 0


@pytest.mark.parametrize("head", [HEAD, BIG_HEAD], ids=["head", "big-head"])
@pytest.mark.parametrize("budget", [0, 50_000])
def test_full_socket_returns_progress_and_resumes(impl, conn, file_fd, data, head, budget):
    """The server's loop: call, wait for writability, call again with what came back."""
    sender, receiver = conn
    make_small_buffers(sender, receiver)
    total = len(head) + SIZE
    fd = sender.fileno()

    sent = 0
    while True:  # the peer does not read: calls stop at EAGAIN (or at the budget)
        before = sent
        sent = impl.send_response(fd, head, file_fd, 0, SIZE, sent, budget)
        assert sent >= before
        assert budget <= 0 or sent - before <= budget
        if sent == before:
            break
    assert 0 < sent < total
    if head is BIG_HEAD:
        assert sent < len(head)  # stopped inside the head; the next calls finish it

    reader = Reader(receiver)
    stalls = 0
    try:
        while sent < total:
            assert select.select([], [sender], [], 10)[1], "never writable again"
            before = sent
            sent = impl.send_response(fd, head, file_fd, 0, SIZE, sent, budget)
            assert budget <= 0 or sent - before <= budget
            stalls = 0 if sent > before else stalls + 1
            assert stalls < 100, f"no progress at {sent} of {total}"
    finally:
        sender.shutdown(socket.SHUT_WR)
    assert sent == total
    assert reader.result() == head + data


@pytest.mark.parametrize("budget", [64, 100_003, 1 << 20])
def test_budget_caps_every_call(impl, pair, file_fd, data, budget):
    """A call sends at most ``budget`` bytes, head bytes included; on a blocking socket
    that is exactly ``budget`` until the response runs out."""
    sender, receiver = pair
    count = 300_001 if budget == 64 else SIZE - 7
    total = len(HEAD) + count
    reader = Reader(receiver)
    steps = []
    sent = 0
    try:
        while sent < total:
            before = sent
            sent = impl.send_response(sender.fileno(), HEAD, file_fd, 7, count, sent, budget)
            steps.append(sent - before)
    finally:
        sender.shutdown(socket.SHUT_WR)
    assert steps == [min(budget, total - done) for done in range(0, total, budget)]
    assert reader.result() == HEAD + data[7 : 7 + count]


@pytest.mark.parametrize("budget", [0, -1])
def test_no_budget_sends_everything_in_one_call(impl, pair, file_fd, data, budget):
    sent, received = send_blocking(impl, pair, HEAD, file_fd, 0, SIZE, budget=budget)
    assert sent == len(HEAD) + SIZE
    assert received == HEAD + data


def test_file_shorter_than_count_raises_enodata(impl, pair, file_fd, data):
    sender, receiver = pair
    reader = Reader(receiver)
    try:
        with pytest.raises(OSError, match="file shorter than expected") as info:
            impl.send_response(sender.fileno(), HEAD, file_fd, SIZE - 1000, 5000, 0, 0)
    finally:
        sender.shutdown(socket.SHUT_WR)
    assert info.value.errno == errno.ENODATA
    assert type(info.value) is OSError
    assert reader.result() == HEAD + data[-1000:]  # what there was went out first


def test_offset_past_end_of_file_raises_enodata(impl, pair, file_fd):
    with pytest.raises(OSError) as info:
        impl.send_response(pair[0].fileno(), b"", file_fd, SIZE, 10, 0, 0)
    assert info.value.errno == errno.ENODATA


def test_file_truncated_between_calls_raises_enodata(impl, pair, object_path, file_fd):
    sender, receiver = pair
    make_small_buffers(sender, receiver)
    sent = impl.send_response(sender.fileno(), HEAD, file_fd, 0, SIZE, 0, 0)
    assert 0 < sent < len(HEAD) + SIZE
    os.truncate(object_path, sent - len(HEAD))  # ends exactly where the next call starts
    reader = Reader(receiver)
    try:
        with pytest.raises(OSError) as info:
            for _ in range(100):  # a short file must raise, not stall
                select.select([], [sender], [], 10)
                sent = impl.send_response(sender.fileno(), HEAD, file_fd, 0, SIZE, sent, 0)
    finally:
        sender.shutdown(socket.SHUT_WR)
        reader.result()
    assert info.value.errno == errno.ENODATA


@pytest.mark.parametrize(("head", "count"), [(HEAD, 0), (b"", 1000)], ids=["head", "body"])
def test_peer_closed_raises_broken_pipe(impl, pair, file_fd, head, count):
    sender, receiver = pair
    receiver.close()
    with pytest.raises(BrokenPipeError):
        impl.send_response(sender.fileno(), head, file_fd, 0, count, 0, 0)


def test_peer_reset_over_tcp_raises_connection_error(impl, tcp_pair, file_fd):
    sender, receiver = tcp_pair
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    receiver.close()  # RST
    sender.setblocking(False)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(100):  # the RST may land after the first bytes were queued
            impl.send_response(sender.fileno(), HEAD, file_fd, 0, SIZE, 0, 0)
            select.select([], [sender], [], 0.1)


def test_closed_file_fd_raises_ebadf(impl, pair, tmp_path):
    path = tmp_path / "closed.bin"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as info:
        impl.send_response(pair[0].fileno(), HEAD, fd, 0, 100, 0, 0)
    assert info.value.errno == errno.EBADF


def test_closed_socket_fd_raises_ebadf(impl, file_fd):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        impl.send_response(fd, HEAD, file_fd, 0, 100, 0, 0)
    assert info.value.errno == errno.EBADF


@pytest.mark.parametrize(
    ("offset", "count", "sent"),
    [(-1, 10, 0), (0, -1, 0), (0, 10, -1), (0, 10, len(HEAD) + 11)],
    ids=["offset", "count", "sent", "sent-past-end"],
)
def test_impossible_arguments_raise_value_error(impl, pair, file_fd, offset, count, sent):
    with pytest.raises(ValueError, match="send_response needs"):
        impl.send_response(pair[0].fileno(), HEAD, file_fd, offset, count, sent, 0)


@pytest.mark.parametrize("head", [bytearray(HEAD), HEAD.decode(), None])
def test_head_must_be_bytes(impl, pair, file_fd, head):
    with pytest.raises(TypeError):
        impl.send_response(pair[0].fileno(), head, file_fd, 0, 10, 0, 0)


# Coalescing. A recv() on the peer cannot tell segments apart (two segments queued
# before the read come back as one chunk), so these count the sender's data segments
# in TCP_INFO instead: no timing, no packet capture. tcpi_data_segs_out is the u32 at
# byte 156 of struct tcp_info (include/uapi/linux/tcp.h, Linux >= 4.6). On loopback the
# MSS is about 64 KiB, so 100 + 1000 bytes fit one segment.

needs_tcp_info = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="TCP_INFO layout read here is Linux's"
)


def data_segments_out(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < 160:
        pytest.skip("this kernel's tcp_info has no tcpi_data_segs_out (Linux >= 4.6)")
    return struct.unpack_from("I", info, 156)[0]


def receive_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        assert chunk, "peer closed early"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


@needs_tcp_info
def test_segment_counter_sees_a_lone_head(tcp_pair, file_fd, data):
    """The instrument: a head that left before the body was written is a segment of its own."""
    sender, receiver = tcp_pair
    before = data_segments_out(sender)
    sender.send(HEAD[:100])
    assert receive_exactly(receiver, 100) == HEAD[:100]
    os.sendfile(sender.fileno(), file_fd, 0, 1000)
    assert receive_exactly(receiver, 1000) == data[:1000]
    assert data_segments_out(sender) - before == 2


@needs_tcp_info
def test_head_and_first_body_bytes_share_a_segment(impl, tcp_pair, file_fd, data):
    if impl.IMPLEMENTATION == "python":
        pytest.skip("the pure-Python twin does not coalesce (docs/fastpath.md)")
    sender, receiver = tcp_pair
    head = HEAD[:100]
    before = data_segments_out(sender)
    assert impl.send_response(sender.fileno(), head, file_fd, 0, 1000, 0, 0) == 1100
    assert receive_exactly(receiver, 1100) == head + data[:1000]
    assert data_segments_out(sender) - before == 1


@needs_tcp_info
def test_head_only_is_not_held_back(impl, tcp_pair):
    """With no body to follow, the head is pushed at once, not corked (MSG_MORE would
    hold it for the kernel's 200 ms cork timer)."""
    sender, receiver = tcp_pair
    before = data_segments_out(sender)
    assert impl.send_response(sender.fileno(), HEAD, -1, 0, 0, 0, 0) == len(HEAD)
    assert data_segments_out(sender) - before == 1  # left inside the call
    assert receive_exactly(receiver, len(HEAD)) == HEAD
