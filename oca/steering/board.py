"""The steering mode as the serving workers see it: a few bytes of shared memory the
supervisor maps before it forks, written by the steering role at each change, read by a
worker's ``/health`` (and its 302s in ``isp-direct``) without a system call.

Layout: ``seq`` (uint64, odd while written: a seqlock with one writer), ``mode`` (uint8:
the index in ``policy.MODES``; 255 before the first decision), the reason's length
(uint16) and its UTF-8 bytes (at most 200).
"""

from __future__ import annotations

import mmap
import struct
import time

from .policy import MODES

_HEAD = struct.Struct("@QBH")
REASON_MAX = 200
UNSET = 255


class Board:
    def __init__(self):
        self.mem = mmap.mmap(-1, _HEAD.size + REASON_MAX)
        _HEAD.pack_into(self.mem, 0, 0, UNSET, 0)

    def write(self, mode: str, reason: str) -> None:
        data = reason.encode("utf-8")[:REASON_MAX]
        seq = _HEAD.unpack_from(self.mem, 0)[0] | 1
        struct.pack_into("@Q", self.mem, 0, seq)
        self.mem[_HEAD.size:_HEAD.size + len(data)] = data
        _HEAD.pack_into(self.mem, 0, seq, MODES.index(mode), len(data))
        struct.pack_into("@Q", self.mem, 0, seq + 1)

    def read(self) -> tuple[str, str] | None:
        """(mode, reason), or None before the first decision."""
        for attempt in range(100):
            seq, mode, n = _HEAD.unpack_from(self.mem, 0)
            if not seq & 1:
                reason = bytes(self.mem[_HEAD.size:_HEAD.size + n])
                if _HEAD.unpack_from(self.mem, 0)[0] == seq:
                    if mode == UNSET:
                        return None
                    return MODES[mode], reason.decode("utf-8", "replace")
            if attempt > 8:
                time.sleep(0.0001)
        return None
