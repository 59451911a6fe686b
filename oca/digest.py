"""xxh3-128 digests, written as 32 lowercase hex digits everywhere (DESIGN.md)."""

import os
import re

import xxhash

DIGEST_HEX_LEN = 32
_DIGEST_RE = re.compile(r"[0-9a-f]{32}\Z")
READ_CHUNK = 1 << 20


def new_hasher() -> "xxhash.xxh3_128":
    """A fresh streaming xxh3-128 hasher."""
    return xxhash.xxh3_128()


def is_digest(value: str) -> bool:
    """True for 32 lowercase hex digits."""
    return isinstance(value, str) and _DIGEST_RE.match(value) is not None


def digest_bytes(data: bytes) -> str:
    """Digest of an in-memory buffer."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_fd(fd: int, chunk: int = READ_CHUNK, on_bytes=None) -> tuple[str, int]:
    """Hash an open file from its current offset to EOF; return (digest, bytes read).

    *on_bytes(n)* is called after each chunk with the bytes read so far (progress).
    """
    h = new_hasher()
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    while True:
        n = os.readv(fd, [buf])
        if n == 0:
            break
        h.update(view[:n])
        total += n
        if on_bytes is not None:
            on_bytes(total)
    return h.hexdigest(), total


def digest_file(path: str | os.PathLike, on_bytes=None) -> tuple[str, int]:
    """Hash a file by path; return (digest, size)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return digest_fd(fd, on_bytes=on_bytes)
    finally:
        os.close(fd)
