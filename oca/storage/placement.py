"""Which disk of a tier takes a new object.

Rule: the disk with the largest share of its capacity still free, ties broken by
path. Video objects are large and few (thousands per disk, not millions), so
what matters is that disks of different sizes fill evenly and none runs out
while another is half empty; a stable id -> disk mapping (rendezvous hashing)
would buy nothing here because the index records where each object lives, and
it would fill a small disk as fast as a large one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A writable disk of the asked tier with its accounting."""

    path: str
    capacity: int
    used: int  # indexed bytes plus bytes reserved by ingests in flight
    room: int  # bytes a new object may take: min(capacity left, filesystem free - headroom)


def order(candidates: list[Candidate], size: int) -> list[Candidate]:
    """Candidates that can hold *size* bytes, best first."""
    fit = [c for c in candidates if c.room >= size]
    return sorted(fit, key=lambda c: (-(c.capacity - c.used) / c.capacity, c.path))
