"""Serving metrics: counters kept per worker, summed by the supervisor for ``GET /metrics``.

Each worker counts into plain Python lists (:meth:`WorkerMetrics.record`, a few list
increments: no lock, no syscall) and once a second copies them into its own slot of a
shared anonymous mapping (:meth:`WorkerMetrics.publish`). The supervisor creates the
mapping before it forks (``mmap.mmap(-1, n)`` is MAP_SHARED|MAP_ANONYMOUS on Linux and
FreeBSD, so the children see the same pages), reads every slot when scraped and renders
the Prometheus text exposition format 0.0.4 (:meth:`MetricsArea.render`).

Slot layout (native byte order, every field 8 bytes and 8-byte aligned; ``seq`` is stored
and loaded as one aligned word, struct ``@Q``: a single instruction on x86-64 and arm64)::

    offset  0  seq     uint64  odd while a publish is in progress
            8  crc32   uint64  of the body below
           16  body    uint64 x 37  requests by status (STATUSES, then "other"),
                                    body bytes by tier (TIERS, then "none"),
                                    sends (fastpath, fallback),
                                    responses per time bucket (BUCKETS, then +Inf)
                       double       response seconds, summed
                       int64        active connections

Slot ``slots`` (the last one) is the accumulator: what retired workers had counted.

Torn reads. A slot is written by its worker and read by the supervisor without a lock,
so a read may overlap a publish. The writer follows the seqlock protocol: make ``seq``
odd, write crc32 and body, make ``seq`` even again. The reader copies the slot and keeps
the copy only if ``seq`` was even and unchanged around the copy, otherwise it retries.
Python offers no memory fences: on x86-64 (stores seen in program order) the seqlock
alone is sound; on weakly ordered CPUs (arm64) the crc32 of the body, checked by the
reader, catches what reordered stores could still let through. A slot that cannot be
read consistently within ~0.1 s (its worker was killed in the middle of a publish)
counts as its last consistent copy.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
import time
import zlib
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

STATUSES = (200, 206, 302, 304, 400, 403, 404, 405, 412, 413, 414, 416, 431, 500, 503)
"""Statuses counted apiece; any other lands in ``status="other"``."""
TIERS = ("ssd", "flash", "hdd")
"""Tiers counted apiece; a body served from no tier (errors, redirects) is ``tier="none"``."""
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Upper bounds (seconds) of the response-time histogram; +Inf follows."""

STATUS_LABELS = tuple(str(s) for s in STATUSES) + ("other",)
TIER_LABELS = TIERS + ("none",)
SEND_LABELS = ("fastpath", "fallback")

# Offsets into the flat counter list (and the slot body).
_N_STATUS = len(STATUS_LABELS)
_N_TIER = len(TIER_LABELS)
_TIER0 = _N_STATUS
_SEND0 = _TIER0 + _N_TIER
_BUCKET0 = _SEND0 + len(SEND_LABELS)
_N_COUNTERS = _BUCKET0 + len(BUCKETS) + 1

_SECONDS = _N_COUNTERS  # the response seconds sum follows the counters

# Bound methods at module level: record() saves the attribute lookups (~70 ns a call).
_status_index = {s: i for i, s in enumerate(STATUSES)}.get
_STATUS_OTHER = len(STATUSES)
_tier_index = {t: _TIER0 + i for i, t in enumerate(TIERS)}.get
_TIER_NONE = _TIER0 + len(TIERS)
_FASTPATH = _SEND0
_BUCKET_FIRST = BUCKETS[0]
_FALLBACK = _SEND0 + 1

_WORD = struct.Struct("@Q")
_BODY = struct.Struct(f"@{_N_COUNTERS}Qdq")
_HEAD_SIZE = 2 * _WORD.size  # seq, crc32
SLOT_SIZE = _HEAD_SIZE + _BODY.size

_READ_TRIES = 200  # spins first, then 0.5 ms sleeps: ~0.1 s before giving up on a slot

_ZERO_BODY = (0,) * _N_COUNTERS + (0.0, 0)


class WorkerMetrics:
    """One worker's counters, published into its slot of a :class:`MetricsArea`.

    Get it with ``area.worker(index)`` in the child after the fork. Only this process
    writes the slot. ``active_connections`` is a plain attribute the server sets.

    ``counts`` holds the counters, then the seconds sum (the slot body's order). Besides
    :meth:`record`, the compiled connection loop counts in C, at the indexes
    :meth:`slots`, ``BUCKET0`` and ``SECONDS`` give, with the bounds ``BUCKETS``, and adds
    its counts to ``counts`` when :meth:`publish` calls the fold it registered with
    :meth:`add_source`.
    """

    BUCKETS = BUCKETS
    BUCKET0 = _BUCKET0
    SECONDS = _SECONDS

    def __init__(self, area: mmap.mmap, offset: int, seq: int):
        self._area = area
        self._offset = offset
        self._seq = seq
        self.counts: list = [0] * _N_COUNTERS + [0.0]  # counters, then the seconds sum
        self.active_connections = 0
        self._sources: list = []

    def add_source(self, fold) -> None:
        """Call *fold* (no arguments) before each publish: it adds the counts it kept
        elsewhere since its last call to ``counts``."""
        self._sources.append(fold)

    @staticmethod
    def slots(status: int, tier: str | None, fastpath: bool) -> tuple[int, int, int]:
        """Where :meth:`record` counts a response: the indexes in ``counts`` of its status,
        of its tier's body bytes and of its send path. Its time goes to ``BUCKET0 +
        bisect_left(BUCKETS, seconds)`` and is added to ``SECONDS``."""
        return (_status_index(status, _STATUS_OTHER), _tier_index(tier, _TIER_NONE),
                _FASTPATH if fastpath else _FALLBACK)

    def record(self, status: int, tier: str | None, body_bytes: int, seconds: float,
               fastpath: bool) -> None:
        """Count one response: its status, the body bytes sent from *tier* (None: no tier),
        its duration in *seconds*, and whether the body went out through the compiled
        fast path or the pure-Python fallback."""
        c = self.counts
        c[_status_index(status, _STATUS_OTHER)] += 1
        c[_tier_index(tier, _TIER_NONE)] += body_bytes
        c[_FASTPATH if fastpath else _FALLBACK] += 1
        # bisect_left: the first bound >= seconds, i.e. Prometheus' "le" (less or equal).
        # Most responses fall in the first bucket: no call for them.
        c[_BUCKET0 if seconds <= _BUCKET_FIRST else _BUCKET0 + bisect_left(BUCKETS, seconds)] += 1
        c[_SECONDS] += seconds

    def publish(self) -> None:
        """Copy the counters into the shared slot (once a second and at exit)."""
        for fold in self._sources:
            fold()
        _write_slot(self._area, self._offset, self._seq,
                    _BODY.pack(*self.counts, self.active_connections))
        self._seq += 2


def _write_slot(area: mmap.mmap, offset: int, seq: int, body: bytes) -> None:
    """Seqlock write: *seq* is the slot's current (even) sequence number."""
    _WORD.pack_into(area, offset, seq + 1)  # odd: a write is in progress
    _WORD.pack_into(area, offset + _WORD.size, zlib.crc32(body))
    area[offset + _HEAD_SIZE:offset + SLOT_SIZE] = body
    _WORD.pack_into(area, offset, seq + 2)


@dataclass
class Totals:
    """Counters summed over workers and the retired ones (the accumulator)."""

    requests: dict[str, int]  # status label -> responses
    body_bytes: dict[str, int]  # tier label -> bytes
    sends: dict[str, int]  # "fastpath" | "fallback" -> responses
    buckets: list[int]  # per bucket, not cumulative; the last one is +Inf
    seconds_sum: float
    active_connections: int

    @property
    def count(self) -> int:
        """Responses observed by the histogram."""
        return sum(self.buckets)


class MetricsArea:
    """Shared memory holding one slot per worker plus the accumulator.

    The supervisor creates it before forking the workers, calls :meth:`retire` for each
    worker it reaps (before forking the replacement with the same index) and
    :meth:`render` when ``/metrics`` is asked for.
    """

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"MetricsArea needs at least one worker slot, not {slots}")
        self.slots = slots
        self._area = mmap.mmap(-1, SLOT_SIZE * (slots + 1))
        self._accumulated = list(_ZERO_BODY)
        # The last consistent copy of each slot: what a slot counts as when a read keeps
        # failing (its worker died in the middle of a publish).
        self._last = [_ZERO_BODY] * (slots + 1)
        for index in range(slots + 1):
            # A zero-filled slot has no valid crc32: give every slot a proper empty body.
            _write_slot(self._area, index * SLOT_SIZE, 0, _BODY.pack(*_ZERO_BODY))

    def worker(self, index: int) -> WorkerMetrics:
        """The counters of worker *index* (0 <= index < slots), starting at zero."""
        offset = self._offset(index)
        seq = _WORD.unpack_from(self._area, offset)[0]
        return WorkerMetrics(self._area, offset, seq + (seq & 1))

    def retire(self, index: int) -> None:
        """Fold a dead worker's counters into the accumulator and zero its slot.

        Counters stay monotonic across worker restarts; the worker's active connections
        are dropped (they died with it).
        """
        offset = self._offset(index)
        values = self._read(index)
        acc = self._accumulated
        for i in range(_SECONDS + 1):  # counters and the seconds sum, not the gauge
            acc[i] += values[i]
        self._last[index] = _ZERO_BODY
        seq = _WORD.unpack_from(self._area, offset)[0]
        _write_slot(self._area, offset, seq + (seq & 1), _BODY.pack(*_ZERO_BODY))
        acc_offset = self.slots * SLOT_SIZE
        seq = _WORD.unpack_from(self._area, acc_offset)[0]
        _write_slot(self._area, acc_offset, seq, _BODY.pack(*acc))

    def totals(self) -> Totals:
        """Sum of every worker slot and the accumulator, each read consistently."""
        sums = [0] * _N_COUNTERS
        seconds = 0.0
        active = 0
        for index in range(self.slots + 1):
            values = self._read(index)
            for i in range(_N_COUNTERS):
                sums[i] += values[i]
            seconds += values[_SECONDS]
            active += values[_SECONDS + 1]
        return Totals(
            requests=dict(zip(STATUS_LABELS, sums[:_TIER0], strict=True)),
            body_bytes=dict(zip(TIER_LABELS, sums[_TIER0:_SEND0], strict=True)),
            sends=dict(zip(SEND_LABELS, sums[_SEND0:_BUCKET0], strict=True)),
            buckets=sums[_BUCKET0:],
            seconds_sum=seconds,
            active_connections=active,
        )

    def render(self, gauges: Mapping[str, float] | None = None,
               gauge_help: Mapping[str, str] | None = None) -> str:
        """The Prometheus text exposition (format 0.0.4) of the totals and *gauges*.

        *gauges* maps a sample to its value: a key is a metric name (``oca_workers``) or a
        name with one label, written ``name{label=value}`` (``oca_disk_up{disk=/data/ssd0}``):
        the value is everything between the first ``=`` and the final ``}``, taken as is
        (quotes, commas and backslashes included; they are escaped here). Samples of one
        name form one family, in the order first seen. *gauge_help* adds or overrides
        HELP texts (see ``GAUGE_HELP``).
        """
        t = self.totals()
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n")

        family("oca_requests_total", "counter", "Responses sent, by HTTP status.")
        out += [f'oca_requests_total{{status="{k}"}} {v}\n' for k, v in t.requests.items()]
        family("oca_body_bytes_total", "counter",
               "Response body bytes sent, by the storage tier they came from.")
        out += [f'oca_body_bytes_total{{tier="{k}"}} {v}\n' for k, v in t.body_bytes.items()]
        family("oca_sends_total", "counter",
               "Responses by send path: compiled fast path or pure-Python fallback.")
        out += [f'oca_sends_total{{path="{k}"}} {v}\n' for k, v in t.sends.items()]
        family("oca_active_connections", "gauge", "Client connections open now.")
        out.append(f"oca_active_connections {t.active_connections}\n")
        family("oca_response_seconds", "histogram",
               "Time from the request read to the response handed to the kernel.")
        cumulative = 0
        for bound, n in zip(BUCKETS + (math.inf,), t.buckets, strict=True):
            cumulative += n
            out.append(f'oca_response_seconds_bucket{{le="{_format_value(bound)}"}} '
                       f"{cumulative}\n")
        out.append(f"oca_response_seconds_sum {_format_value(t.seconds_sum)}\n")
        out.append(f"oca_response_seconds_count {cumulative}\n")

        helps = {**GAUGE_HELP, **(gauge_help or {})}
        for name, samples in _group_gauges(gauges or {}).items():
            family(name, "gauge", helps.get(name, "Set by the supervisor."))
            for label, value in samples:
                out.append(f"{name}{label} {_format_value(value)}\n")
        return "".join(out)

    def close(self) -> None:
        """Unmap the area (in the supervisor at exit; workers simply exit)."""
        self._area.close()

    def _offset(self, index: int) -> int:
        if not 0 <= index < self.slots:
            raise IndexError(f"worker slot {index} out of range 0..{self.slots - 1}")
        return index * SLOT_SIZE

    def _read(self, index: int) -> tuple:
        """Slot *index* (``slots`` = the accumulator), read with the seqlock protocol."""
        area = self._area
        offset = index * SLOT_SIZE
        for attempt in range(_READ_TRIES):
            seq = _WORD.unpack_from(area, offset)[0]
            if not seq & 1:
                snapshot = area[offset + _WORD.size:offset + SLOT_SIZE]
                if _WORD.unpack_from(area, offset)[0] == seq:
                    body = snapshot[_WORD.size:]
                    if zlib.crc32(body) == _WORD.unpack_from(snapshot, 0)[0]:
                        values = self._last[index] = _BODY.unpack(body)
                        return values
            if attempt >= 8:
                time.sleep(0.0005)
        return self._last[index]


GAUGE_HELP = {
    "oca_workers": "Worker processes running.",
    "oca_draining": "1 while the appliance is draining (refusing new viewers), else 0.",
    "oca_disk_up": "1 when the disk is in service, 0 when it failed or is out of service.",
}
"""HELP texts of the gauges the supervisor is expected to pass to :meth:`MetricsArea.render`."""

_OWN_FAMILIES = frozenset({
    "oca_requests_total", "oca_body_bytes_total", "oca_sends_total", "oca_active_connections",
    "oca_response_seconds", "oca_response_seconds_bucket", "oca_response_seconds_sum",
    "oca_response_seconds_count", "oca_requests", "oca_body_bytes", "oca_sends",
})
_GAUGE_KEY = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([a-zA-Z_][a-zA-Z0-9_]*)=(.*)\})?\Z",
                        re.DOTALL)


def _group_gauges(gauges: Mapping[str, float]) -> dict[str, list[tuple[str, float]]]:
    families: dict[str, list[tuple[str, float]]] = {}
    for key, value in gauges.items():
        m = _GAUGE_KEY.match(key)
        if m is None:
            raise ValueError(f"bad gauge key {key!r}: expected name or name{{label=value}}")
        name, label, label_value = m.groups()
        if name.startswith("__") or (label or "").startswith("__"):
            raise ValueError(f"bad gauge key {key!r}: names starting with __ are reserved")
        if name in _OWN_FAMILIES:
            raise ValueError(f"bad gauge key {key!r}: {name} is rendered from the counters")
        labels = "" if label is None else f'{{{label}="{_escape_label(label_value)}"}}'
        families.setdefault(name, []).append((labels, value))
    return families


def _escape_label(value: str) -> str:
    # Text format 0.0.4: in label values, backslash, double quote and line feed are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    # In HELP lines only backslash and line feed are escaped.
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    """A sample value or ``le`` bound as Prometheus writes it (Go's float formatting)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
