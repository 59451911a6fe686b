"""The sendfile loop and the response sender in pure Python: the twin of ``_sendfile.pyx``,
built on ``os.sendfile``."""

import os

from ._errors import file_short_error, response_args_error

IMPLEMENTATION = "python"

# Linux moves at most MAX_RW_COUNT = 0x7ffff000 bytes per sendfile call.
SENDFILE_MAX = 0x7FFFF000


def send_file(out_fd: int, in_fd: int, offset: int, count: int) -> int:
    """Send ``count`` bytes of ``in_fd`` from ``offset`` to the socket ``out_fd``.

    Returns the number of bytes sent. That is less than ``count`` when the
    file ends first, or when ``out_fd`` is non-blocking and its buffer is full:
    wait until it is writable and call again for the rest. Any other failure
    raises ``OSError``. The file position of ``in_fd`` is not used or moved.
    """
    if offset < 0 or count < 0:
        raise ValueError(f"offset and count must be >= 0, got {offset} and {count}")

    total = 0
    # os.sendfile retries EINTR itself (PEP 475). On FreeBSD it returns the
    # partial count that the kernel reports alongside EAGAIN.
    while total < count:
        try:
            sent = os.sendfile(out_fd, in_fd, offset + total, count - total)
        except BlockingIOError:
            break
        if sent == 0:
            break  # end of file
        total += sent
    return total


def send_response(
    sock_fd: int, head: bytes, file_fd: int, offset: int, count: int, sent: int, budget: int
) -> int:
    """Send a response: ``head``, then ``count`` bytes of ``file_fd`` from ``offset``.

    ``sent`` is how many bytes of the whole response (``len(head) + count``)
    earlier calls sent; 0 on the first call. Returns the new total: the
    response is done when it equals ``len(head) + count``. Less means the
    socket was full (wait until it is writable) or this call sent ``budget``
    bytes (call again soon); a call never sends more than ``budget`` bytes
    when ``budget > 0``. ``file_fd`` is not read when ``count`` is 0 (-1 will
    do). Unlike the compiled module this twin does not coalesce: the head is
    written by ``os.write`` (no ``MSG_MORE`` on a bare fd), so under
    TCP_NODELAY it leaves in a segment of its own.

    Raises ``OSError(ENODATA)`` when the file ends before ``offset + count``,
    and ``OSError`` with the errno of any other failure (``BrokenPipeError``,
    ``ConnectionResetError``, ...); the connection is then unusable.
    """
    if not isinstance(head, bytes):
        raise TypeError(f"head must be bytes, not {type(head).__name__}")
    head_len = len(head)
    total = head_len + count
    if offset < 0 or count < 0 or sent < 0 or sent > total:
        raise response_args_error(head_len, offset, count, sent)

    # os.write and os.sendfile retry EINTR themselves (PEP 475).
    start = sent
    while sent < total:
        room = total - sent
        if budget > 0:
            room = min(room, budget - (sent - start))
            if room <= 0:
                break
        try:
            if sent < head_len:
                end = min(head_len, sent + room)
                n = os.write(sock_fd, head if sent == 0 and end == head_len else head[sent:end])
            else:
                n = os.sendfile(sock_fd, file_fd, offset + sent - head_len, min(room, SENDFILE_MAX))
                if n == 0:
                    raise file_short_error(file_fd, offset, count, sent - head_len)
        except BlockingIOError:
            break
        sent += n
    return sent
