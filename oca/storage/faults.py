"""Fault injection for crash-consistency tests.

``OCA_FAULT=<point>`` kills the process with SIGKILL when it reaches the named
point, as a power cut or an OOM kill would; ``OCA_FAULT=<point>@<bytes>`` kills it
once a copy has written at least that many bytes. Points are named in store.py
(``put.write``, ``put.after_rename``, ``move.after_index`` ...). Read once at import;
with the variable unset every hook is a dictionary miss.
"""

import os
import signal

ENV = "OCA_FAULT"


def _parse(spec: str) -> tuple[str, int | None]:
    name, _, at = spec.partition("@")
    return name, int(at) if at else None


_POINT, _AT_BYTES = _parse(os.environ.get(ENV, "")) if os.environ.get(ENV) else ("", None)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def point(name: str) -> None:
    """Die here if this is the armed point (without a byte offset)."""
    if name == _POINT and _AT_BYTES is None:
        _die()


def bytes_written(name: str, written: int) -> None:
    """Die here if this copy is the armed point and has written at least the armed bytes."""
    if name == _POINT and _AT_BYTES is not None and written >= _AT_BYTES:
        _die()
