"""Errors of the data path, built in one place for the compiled module and its twin.

Both call these only on the failure path, so the hot path pays nothing for them.
"""

import errno


def file_short_error(file_fd: int, offset: int, count: int, body_sent: int) -> OSError:
    """The file ended before ``offset + count``: it shrank while it was being served.

    No errno names this; ENODATA ("no data available") is the closest, and it is the
    errno of the returned ``OSError`` so that callers can tell it from socket errors.
    """
    return OSError(
        errno.ENODATA,
        f"file shorter than expected: fd {file_fd} has no bytes at offset "
        f"{offset + body_sent}, but the response needs {count} bytes from offset {offset} "
        f"({body_sent} sent); the object was truncated or replaced on disk while served",
    )


def response_args_error(head_len: int, offset: int, count: int, sent: int) -> ValueError:
    """``send_response`` was called with a range or progress that cannot be."""
    return ValueError(
        "send_response needs offset >= 0, count >= 0 and 0 <= sent <= len(head) + count, "
        f"got offset={offset} count={count} sent={sent} len(head)={head_len}"
    )
