"""The sendfile loop in pure Python: the twin of ``_sendfile.pyx``, built on ``os.sendfile``."""

import os

IMPLEMENTATION = "python"


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
