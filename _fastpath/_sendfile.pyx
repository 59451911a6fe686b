"""The sendfile loop, compiled: file bytes go to the socket inside the kernel."""

import os

from sendfile cimport EAGAIN, EINTR, errno, oca_sendfile, off_t

IMPLEMENTATION = "cython"


def send_file(int out_fd, int in_fd, long long offset, long long count):
    """Send ``count`` bytes of ``in_fd`` from ``offset`` to the socket ``out_fd``.

    Returns the number of bytes sent. That is less than ``count`` when the
    file ends first, or when ``out_fd`` is non-blocking and its buffer is full:
    wait until it is writable and call again for the rest. Any other failure
    raises ``OSError``. The file position of ``in_fd`` is not used or moved.
    """
    cdef long long total = 0
    cdef off_t sent
    cdef int rc
    cdef int err = 0

    if offset < 0 or count < 0:
        raise ValueError(f"offset and count must be >= 0, got {offset} and {count}")

    with nogil:
        while total < count:
            rc = oca_sendfile(out_fd, in_fd, offset + total, <size_t>(count - total), &sent)
            total += sent
            if rc == 0:
                if sent == 0:
                    break  # end of file
            elif errno == EAGAIN:
                break
            elif errno != EINTR:
                err = errno
                break

    if err:
        raise OSError(err, os.strerror(err))
    return total
