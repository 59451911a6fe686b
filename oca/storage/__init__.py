"""The tiered object store: disks grouped into ssd, flash and hdd tiers, an
SQLite index, atomic ingest, moves between tiers, recovery and scrub.

See docs/storage.md for the on-disk layout and the crash-consistency argument.
"""

from .index import ObjectRecord
from .store import Store

__all__ = ["ObjectRecord", "Store"]
