"""Where things live on one disk.

    <disk>/.oca-disk                       marker: JSON {"disk_id", "tier", "created"}
    <disk>/objects/<aa>/<bb>/<id>.<xxh3>   a committed object (aa, bb: xxh3-64 of the id)
    <disk>/tmp/<id>.<pid>.<rand>.tmp       an ingest or move in flight
    <disk>/tmp/<id>.<xxh3>.partial         a resumable stream ingest (Store.put_stream)
    <disk>/quarantine/<id>.<xxh3>.<ts>     a file scrub or recovery set aside

The digest in the file name makes a committed file self-describing: recovery can
tell an object renamed into place but not yet indexed (adopt it when its bytes
hash to that digest) from a stray copy left by a move or a replace (the index
names another disk or digest: remove it). A replaced object gets a new name, so
an open fd on the old one keeps reading the old bytes.

Two levels of 256 directories keep directories small (nginx's ``levels=1:2``
idea); the hash of the id, not the id, chooses them, so that ids with a common
prefix (one title's encodes) spread out.
"""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from ..digest import is_digest
from ..ids import is_valid_id

MARKER = ".oca-disk"
OBJECTS = "objects"
TMP = "tmp"
QUARANTINE = "quarantine"
TMP_SUFFIX = ".tmp"
PARTIAL_SUFFIX = ".partial"


def shard(object_id: str) -> tuple[str, str]:
    """The two directory levels for *object_id*."""
    h = xxhash.xxh3_64_hexdigest(object_id.encode())
    return h[:2], h[2:4]


def object_name(object_id: str, digest: str) -> str:
    return f"{object_id}.{digest}"


def object_path(disk: Path | str, object_id: str, digest: str) -> str:
    """Absolute path of a committed object. *object_id* must already be validated."""
    a, b = shard(object_id)
    return os.path.join(disk, OBJECTS, a, b, object_name(object_id, digest))


def parse_object_name(name: str) -> tuple[str, str] | None:
    """(id, digest) from a committed file's name, or None when it is not one of ours."""
    object_id, dot, digest = name.rpartition(".")
    if not dot or not is_digest(digest) or not is_valid_id(object_id):
        return None
    return object_id, digest


def tmp_dir(disk: Path | str) -> str:
    return os.path.join(disk, TMP)


def tmp_path(disk: Path | str, object_id: str) -> str:
    return os.path.join(
        disk, TMP, f"{object_id}.{os.getpid()}.{os.urandom(4).hex()}{TMP_SUFFIX}"
    )


def partial_path(disk: Path | str, object_id: str, digest: str) -> str:
    """The resumable temp file of a stream ingest of (*object_id*, *digest*): named by
    what it will be, not by the process, so a later process can resume it."""
    return os.path.join(disk, TMP, f"{object_id}.{digest}{PARTIAL_SUFFIX}")


def quarantine_path(disk: Path | str, object_id: str, digest: str, ts: float) -> str:
    return os.path.join(disk, QUARANTINE, f"{object_name(object_id, digest)}.{int(ts)}")


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in directory *path* durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: str) -> None:
    """Create *path* (and parents) if missing, fsyncing each parent that gained an entry."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    ensure_dir(parent)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    fsync_dir(parent)
