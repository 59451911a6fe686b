"""The drain state the supervisor publishes to the serving workers, and their
confirmations, in shared memory (so a drain is answered only once every worker applied it).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import signal
import struct
import time
import zlib

log = logging.getLogger("oca.serve")


class Control:
    """Drain state in shared memory, written by the supervisor and read by every worker,
    and each worker's confirmation that it applied it.

    Layout (native byte order, every field 8 bytes and 8-byte aligned)::

        offset  0  seq       uint64  odd while the supervisor writes; generation = seq // 2
                8  crc32     uint64  of (seq, draining, deadline)
               16  draining  double  1.0 or 0.0
               24  deadline  double  epoch seconds at which connections close
               32  applied   uint64 x slots  the generation each worker applied last

    The state follows the seqlock protocol of the metrics slots (metrics.py; one writer,
    the supervisor's loop). The crc32 covers the generation too, so that on a weakly
    ordered CPU a read never pairs a new generation with an old state. Each ``applied``
    word is stored by its worker alone, as one aligned word, and read by the supervisor.
    """

    _WORD = struct.Struct("@Q")
    _STATE = struct.Struct("@dd")
    # (crc32, draining, deadline) as stored at offset 8; (seq, draining, deadline) as signed.
    _RECORD = struct.Struct("@Qdd")
    _APPLIED = 32

    def __init__(self, slots: int):
        self.mem = mmap.mmap(-1, self._APPLIED + self._WORD.size * slots)
        self.write(False, 0.0)

    def write(self, draining: bool, deadline: float) -> int:
        """Publish a new state; its generation, which the workers confirm."""
        seq = self._WORD.unpack_from(self.mem, 0)[0] | 1
        flag = 1.0 if draining else 0.0
        self._WORD.pack_into(self.mem, 0, seq)  # odd: a write is in progress
        self._WORD.pack_into(self.mem, 8, zlib.crc32(self._RECORD.pack(seq + 1, flag, deadline)))
        self._STATE.pack_into(self.mem, 16, flag, deadline)
        self._WORD.pack_into(self.mem, 0, seq + 1)
        return (seq + 1) // 2

    def read(self) -> tuple[int, bool, float] | None:
        """(generation, draining, deadline), or None when no consistent copy could be
        read within ~0.1 s (the supervisor stopped in the middle of a write)."""
        mem = self.mem
        for attempt in range(200):
            seq = self._WORD.unpack_from(mem, 0)[0]
            if not seq & 1:
                crc, flag, deadline = self._RECORD.unpack_from(mem, 8)
                if (self._WORD.unpack_from(mem, 0)[0] == seq
                        and zlib.crc32(self._RECORD.pack(seq, flag, deadline)) == crc):
                    return seq // 2, flag != 0.0, deadline
            if attempt >= 8:
                time.sleep(0.0005)
        return None

    def confirm(self, slot: int, generation: int) -> None:
        """In worker *slot*: it has applied the state of *generation*."""
        self._WORD.pack_into(self.mem, self._APPLIED + self._WORD.size * slot, generation)

    def applied(self, slot: int) -> int:
        """The generation worker *slot* confirmed last (0: none yet)."""
        return self._WORD.unpack_from(self.mem, self._APPLIED + self._WORD.size * slot)[0]


CONFIRM_TIMEOUT = 5.0
"""How long POST /drain and /undrain wait for every worker to apply the new state."""
CONFIRM_POLL = 0.005


class Drain:
    """The appliance's drain state: published through *control* to the workers of the
    supervisor's ``worker`` role (signalled with SIGUSR1), which confirm it."""

    def __init__(self, control: Control, supervisor, role: str = "worker"):
        self.control = control
        self.supervisor = supervisor
        self.role = role
        self.deadline: float | None = None  # epoch seconds; None: not draining

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    def drain(self, deadline_s: float) -> int:
        """Publish the drain and signal the workers; the generation they confirm."""
        self.deadline = time.time() + deadline_s
        generation = self.control.write(True, self.deadline)
        self.supervisor.signal(self.role, signal.SIGUSR1)
        log.info("draining: /health answers 503; connections close in %.0f s", deadline_s)
        return generation

    def undrain(self) -> int:
        """Publish the end of the drain and signal the workers; the generation to confirm."""
        self.deadline = None
        generation = self.control.write(False, 0.0)
        self.supervisor.signal(self.role, signal.SIGUSR1)
        log.info("undrained")
        return generation

    async def confirmed(self, generation: int,
                        timeout: float = CONFIRM_TIMEOUT) -> dict[int, int]:
        """Wait until every live worker has applied the drain state of *generation*; the
        workers (pid -> slot) that had not within *timeout* seconds. A worker that dies
        meanwhile drops out; its replacement counts once it has started."""
        deadline = time.monotonic() + timeout
        while True:
            pending = {pid: slot for pid, slot in self.supervisor.pids(self.role).items()
                       if self.control.applied(slot) < generation}
            if not pending or self.supervisor.stopping or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(CONFIRM_POLL)
