"""The sendfile loop and the response sender, compiled: file bytes go to the socket inside
the kernel, and one call from Python sends as much of a response as the socket takes."""

import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from sendfile cimport (
    EAGAIN,
    EINTR,
    OCA_SEND_FILE_SHORT,
    errno,
    oca_send_response,
    oca_sendfile,
    off_t,
)

from ._errors import file_short_error, response_args_error

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


def send_response(int sock_fd, bytes head not None, int file_fd, long long offset,
                  long long count, long long sent, long long budget):
    """Send a response: ``head``, then ``count`` bytes of ``file_fd`` from ``offset``.

    ``sent`` is how many bytes of the whole response (``len(head) + count``)
    earlier calls sent; 0 on the first call. Returns the new total: the
    response is done when it equals ``len(head) + count``. Less means the
    socket was full (wait until it is writable) or this call sent ``budget``
    bytes (call again soon); a call never sends more than ``budget`` bytes
    when ``budget > 0``. ``file_fd`` is not read when ``count`` is 0 (-1 will
    do). On Linux the head goes with ``MSG_MORE`` when body bytes follow, so
    head and body share their first TCP segment; on FreeBSD sendfile's
    header iovec does the same.

    Raises ``OSError(ENODATA)`` when the file ends before ``offset + count``,
    and ``OSError`` with the errno of any other failure (``BrokenPipeError``,
    ``ConnectionResetError``, ...); the connection is then unusable.
    """
    return send_response_gil(sock_fd, head, file_fd, offset, count, sent, budget, True)


cdef long long send_response_c(int sock_fd, bytes head, int file_fd, long long offset,
                               long long count, long long sent, long long budget) except -1:
    # send_response without the Python call around it, for the connection loop: its
    # sockets are non-blocking, and the GIL stays held. A worker's loop is its only
    # thread that serves, the release and take cost ~0.15 us a call (perf, 16 KiB
    # objects: take_gil + PyEval_RestoreThread 3.5% of a worker's user time), and a
    # sendfile that blocks on a disk blocks the loop either way.
    return send_response_gil(sock_fd, head, file_fd, offset, count, sent, budget, False)


cdef long long send_response_gil(int sock_fd, bytes head, int file_fd, long long offset,
                                 long long count, long long sent, long long budget,
                                 bint release) except -1:
    # send_response; *release*: let other threads run during the calls (a blocking
    # socket may wait for its reader, which may be a thread of this process).
    cdef off_t done = sent
    cdef const char *data
    cdef size_t head_len
    cdef int rc

    if head is None:
        raise TypeError("head must be bytes, not None")
    data = PyBytes_AS_STRING(head)
    head_len = <size_t>PyBytes_GET_SIZE(head)
    if offset < 0 or count < 0 or sent < 0 or sent > <long long>head_len + count:
        raise response_args_error(head_len, offset, count, sent)

    if release:
        with nogil:
            rc = oca_send_response(sock_fd, data, head_len, file_fd, offset, count, &done,
                                   budget)
    else:
        rc = oca_send_response(sock_fd, data, head_len, file_fd, offset, count, &done, budget)

    if rc == OCA_SEND_FILE_SHORT:
        raise file_short_error(file_fd, offset, count, done - <off_t>head_len)
    if rc:
        raise OSError(rc, os.strerror(rc))
    return done
